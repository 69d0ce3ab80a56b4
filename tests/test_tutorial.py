"""The tutorial's figures as workflows (workflows/tutorial/*.json) and the inspection nodes they use."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from graph import Env, Loom, Registry
from graph.node import In, Node, Out
from nodes.inspect.grid import layout, make_grid, parse_titles
from nodes.inspect.inspection import AddNoise, AddNoiseToImage
from tests._sd import ROOT, make_loom, pin_threads
from nodes.latent_value import Latent

TUTORIAL = ROOT / "workflows" / "tutorial"


def tutorial(name: str, **changes) -> dict:
    wf = json.loads((TUTORIAL / f"{name}.json").read_text())
    for node_id, inputs in changes.items():
        wf[node_id]["inputs"].update(inputs)
    return wf


class ConstLatent(Node):
    """Test source: a LATENT built from a fixed formula (channel c differs from every other)."""
    outputs = (Out("LATENT"),)

    def run(self, ctx):
        return Latent(constructed_latent())


def constructed_latent() -> torch.Tensor:
    b, c, h, w = 2, 3, 4, 5
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    maps = [[(x * (ci + 1) - y * (bi + 2)) * (ci - 1.5) + 10 * ci for ci in range(c)] for bi in range(b)]
    return torch.stack([torch.stack(m) for m in maps])


@pytest.fixture(scope="module")
def loom(tmp_path_factory):
    """A Loom on a models folder holding the shipped text-to-image model, as a fresh data folder."""
    from nodes.textcond.model import install_shipped

    pin_threads()
    registry = Registry()
    registry.add_package("nodes")
    registry.add(ConstLatent)
    models = tmp_path_factory.mktemp("tutorial_models")
    install_shipped(models)
    env = Env.from_data_dir(tmp_path_factory.mktemp("tutorial_data"), models_dir=models, device="cpu",
                            dtype="float32")
    return Loom(env, registry=registry)


@pytest.fixture(scope="module")
def shipped():
    from nodes.textcond.model import shipped_folder

    return shipped_folder()


def run(loom: Loom, wf: dict, extra_outputs: tuple = ()):
    validation = loom.validate(wf)
    assert validation.ok, validation.response()
    if extra_outputs:
        validation = loom.validate(wf, outputs=validation.outputs + list(extra_outputs))
    result = loom.run(validation)
    assert result.ok, result.error
    json.dumps(result.outputs, allow_nan=False)  # what the history and the WebSocket carry
    return result


def saved(loom: Loom, result, node: str) -> np.ndarray:
    [ref] = result.outputs[node]["images"]
    with Image.open(loom.env.safe_path(ref["type"], ref["filename"], ref["subfolder"])) as png:
        return np.asarray(png.convert("RGB"))


def grid_shape(count: int, cell: int, columns: int, rows=(), cols=()) -> tuple:
    return layout(count, (cell, cell), columns, list(rows), list(cols)).shape


# --- forward process -------------------------------------------------------------------------------

def test_forward_noising_grid(loom):
    wf = tutorial("forward_noising")
    result = run(loom, wf, extra_outputs=("3", "6"))
    pixels, latents = result.values["3"][0], result.values["6"][0]
    assert pixels.shape == latents.shape == (8, 64, 64, 3)
    # From clean to noise: the distance to the clean picture grows along the row.
    clean = result.values["3"][0][0]
    distance = [(p - clean).abs().mean().item() for p in pixels]
    assert distance == sorted(distance) and distance[-1] > 0.2
    titles = wf["7"]["inputs"]
    assert saved(loom, result, "8").shape[:2] == grid_shape(
        16, 64, 8, parse_titles(titles["row_titles"]), parse_titles(titles["column_titles"]))


def test_add_noise_equals_scheduler_add_noise(tiny_sd):
    from diffusers import PNDMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    from nodes.loading.loaders import scheduler_config
    from nodes.schedulers import CHECKPOINT, SchedulerSpec

    config = scheduler_config(json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text()))
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    node = AddNoise()
    node.scheduler, node.latents, node.timesteps, node.seed = SchedulerSpec(CHECKPOINT, config), Latent(x0), \
        "0, 500,999", 7
    out = node.run(None)["samples"]
    reference = PNDMScheduler.from_config(config)  # the checkpoint's own scheduler class
    t = torch.tensor([0, 500, 999])
    for i in range(2):  # image i: its own seed, all timesteps in a row
        noise = randn_tensor((1, 4, 8, 8), generator=[torch.Generator().manual_seed(7 + i)])
        expected = reference.add_noise(x0[i:i + 1].repeat(3, 1, 1, 1), noise.repeat(3, 1, 1, 1), t)
        assert torch.equal(out[3 * i:3 * i + 3], expected)

    image = AddNoiseToImage()
    image.scheduler, image.timesteps, image.seed = node.scheduler, "999", 3
    image.image = torch.rand(1, 8, 8, 3, generator=torch.Generator().manual_seed(2))
    noise = randn_tensor((1, 3, 8, 8), generator=[torch.Generator().manual_seed(3)])
    x = reference.add_noise(2 * image.image.permute(0, 3, 1, 2) - 1, noise, torch.tensor([999]))
    assert torch.equal(image.run(None), ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1))


def test_add_noise_rejects_bad_timesteps(loom):
    v = loom.validate(tutorial("forward_noising", **{"3": {"timesteps": "0, half"}}))
    assert not v.ok and v.node_errors["3"]["errors"][0]["extra_info"]["input_name"] == "timesteps"
    result = loom.run(tutorial("forward_noising", **{"5": {"timesteps": "0, 1000"}}))
    assert result.status == "error" and result.error["node_type"] == "AddNoise"
    assert "below the model's 1000 training timesteps" in result.error["exception_message"]


# --- class-conditional grid on the shipped model ---------------------------------------------------

def test_class_grid_on_the_shipped_model(loom):
    from nodes.classcond.data import CLASS_NAMES

    wf = tutorial("class_grid", **{"2": {"count": 2, "steps": 2}})
    result = run(loom, wf, extra_outputs=("2",))
    assert result.values["2"][0].shape == (20, 32, 32, 3)
    rows = parse_titles(wf["3"]["inputs"]["row_titles"])
    assert rows == list(CLASS_NAMES)
    assert saved(loom, result, "4").shape[:2] == grid_shape(20, 32, 2, rows)


# --- tokens and embeddings --------------------------------------------------------------------------

def test_tokens_table(loom, shipped):
    from transformers import CLIPTokenizer

    wf = tutorial("tokens")
    ui = run(loom, wf).outputs["3"]
    tokenizer = CLIPTokenizer.from_pretrained(shipped / "tokenizer")
    ids = tokenizer(wf["2"]["inputs"]["text"]).input_ids  # bos, the prompt's pieces, eos
    assert [row["id"] for row in ui["tokens"]] == ids
    assert [row["piece"] for row in ui["tokens"]] == tokenizer.convert_ids_to_tokens(ids)
    assert ui["tokens"][0]["piece"] == "<|startoftext|>" and ui["tokens"][-1]["piece"] == "<|endoftext|>"
    assert ui["text"][-1] == f"77 positions: {len(ids)} tokens, then {77 - len(ids)} padding"
    assert any(line.split()[1:] == [str(ids[2]), ui["tokens"][2]["piece"]] for line in ui["text"])


def test_embeddings_shape(loom, shipped):
    hidden = json.loads((shipped / "text_encoder" / "config.json").read_text())["hidden_size"]
    result = run(loom, tutorial("embeddings"), extra_outputs=("3",))
    [info] = result.outputs["5"]["tensors"]
    embeddings = result.values["3"][0][0].embeds  # the CONDITIONING's one entry
    assert info["shape"] == [1, 77, hidden] and info["dtype"] == "float32" and info["device"] == "cpu"
    assert info["min"] == embeddings.min().item() and info["max"] == embeddings.max().item()
    assert info["mean"] == pytest.approx(embeddings.mean().item())
    assert result.outputs["5"]["text"][0].startswith(f"Text embeddings: shape (1, 77, {hidden}) float32")
    assert result.outputs["4"]["tensors"][0]["shape"] == [1, 77]


def test_tensor_info_of_a_latent_with_nan():
    from nodes.inspect.inspection import tensor_info, tensors_in

    from nodes.latent_value import Dist

    latent = Latent(torch.tensor([[1.0, float("nan")]]), seeds=[3], dist=Dist(torch.zeros(2), torch.ones(2), 1.0))
    named = tensors_in(latent, "VAEEncode")
    assert [name for name, _ in named] == ["VAEEncode.samples", "VAEEncode.dist.mean", "VAEEncode.dist.std"]
    info = tensor_info(*named[0])
    assert info["shape"] == [1, 2] and info["max"] == "nan"
    json.dumps(info, allow_nan=False)


# --- CFG sweep: one encoding, one noise, four samples -----------------------------------------------

def test_cfg_sweep_shares_encoding_and_noise(loom):
    loom = Loom(loom.env, registry=loom.registry)  # an empty cache: everything runs, once
    wf = tutorial("cfg_sweep", **{"6": {"steps": 3}})
    first = run(loom, wf, extra_outputs=("20", "21", "22", "23"))
    assert sorted(first.executed) == sorted(wf) and len(first.executed) == len(set(first.executed))
    assert not first.cached  # so text encodings "4", "5" and noise "7" ran exactly once, for all four samples
    images = [first.values[n][0] for n in ("21", "22", "23")]  # guidance 1, 2, 10
    assert all(not torch.equal(a, b) for i, a in enumerate(images) for b in images[i + 1:])
    assert saved(loom, first, "31").shape[:2] == grid_shape(4, 64, 4, (), parse_titles(wf["30"]["inputs"]["column_titles"]))
    # Another guidance for one sample re-runs that sample only; encoding and noise come from the cache.
    again = run(loom, tutorial("cfg_sweep", **{"6": {"steps": 3}, "13": {"guidance_scale": 12.0}}))
    assert sorted(again.executed) == ["13", "23", "30", "31"]
    assert {"4", "5", "7"} <= set(again.cached)


def test_one_word_changed_shares_the_noise_and_the_negative_prompt(loom):
    loom = Loom(loom.env, registry=loom.registry)  # an empty cache: everything runs, once
    wf = tutorial("one_word", **{"6": {"steps": 3}})
    result = run(loom, wf, extra_outputs=("13", "23", "33", "53"))
    assert not result.cached and len(result.executed) == len(set(result.executed)) == len(wf)
    prompts = [wf[n]["inputs"]["text"] for n in ("10", "20", "30", "50")]
    assert prompts == ["a red circle", "a blue circle", "a red square", "a green circle"]
    assert parse_titles(wf["40"]["inputs"]["column_titles"]) == prompts
    images = [result.values[n][0] for n in ("13", "23", "33", "53")]
    assert all(not torch.equal(a, b) for i, a in enumerate(images) for b in images[i + 1:])
    assert saved(loom, result, "41").shape[:2] == grid_shape(4, 64, 4, (), prompts)


# --- VAE round trip and the channel maps --------------------------------------------------------------

def test_vae_roundtrip(loom):
    result = run(loom, tutorial("vae_roundtrip"), extra_outputs=("4", "5"))
    maps, decoded = result.values["4"][0], result.values["5"][0]
    assert maps.shape == (4, 64, 64, 3) and decoded.shape == (1, 64, 64, 3)
    assert [s["channel"] for s in result.outputs["4"]["channels"]] == [0, 1, 2, 3]
    assert result.outputs["6"]["tensors"][0]["shape"] == [1, 4, 16, 16]  # 4x downsampling
    assert saved(loom, result, "8").shape[:2] == grid_shape(6, 64, 6, (), ["image"])


def test_preview_latent_channels_shows_exactly_the_channels(loom):
    x = constructed_latent()
    b, c, h, w = x.shape
    wf = {"1": {"class_type": "ConstLatent", "inputs": {}},
          "2": {"class_type": "PreviewLatentChannels", "inputs": {"latents": ["1", 0], "pixel_size": 3,
                                                                    "normalize": "per channel"}}}
    result = run(loom, wf)
    maps = result.values["2"][0]
    assert maps.shape == (b * c, 3 * h, 3 * w, 3)
    expected = []
    for bi in range(b):
        for ci in range(c):
            m = x[bi, ci]
            expected.append((m - m.min()) / (m.max() - m.min()))
    for k, e in enumerate(expected):
        assert torch.allclose(maps[k, ::3, ::3, 0], e, atol=1e-6) and torch.equal(maps[k, :, :, 0], maps[k, :, :, 2])
        assert torch.equal(maps[k], maps[k, ::3, ::3].repeat_interleave(3, 0).repeat_interleave(3, 1))
    stats = result.outputs["2"]["channels"]
    assert [(s["image"], s["channel"]) for s in stats] == [(bi, ci) for bi in range(b) for ci in range(c)]
    assert [s["max"] for s in stats] == [x[bi, ci].max().item() for bi in range(b) for ci in range(c)]
    # The preview: exactly b x c cells, each the channel's map in grey.
    png = saved(loom, result, "2")
    grid = layout(b * c, (3 * h, 3 * w), c, ["image 0", "image 1"], [f"channel {i}" for i in range(c)])
    assert png.shape[:2] == grid.shape
    for k, e in enumerate(expected):
        px, py = grid.box(k)
        cell = png[py:py + 3 * h:3, px:px + 3 * w:3]
        assert np.array_equal(cell[..., 0], (e.numpy() * 255).round().astype(np.uint8))
    whole = json.loads(json.dumps(wf))
    whole["2"]["inputs"]["normalize"] = "whole latent"
    maps = run(loom, whole).values["2"][0]
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)  # one scale per image
    assert torch.allclose(maps[:, ::3, ::3, 0], ((x - lo) / (hi - lo)).reshape(b * c, h, w), atol=1e-6)


# --- the annotated loop --------------------------------------------------------------------------------

def test_annotated_loop_taps_show_the_decoded_steps(loom):
    wf = tutorial("annotated_loop")
    taps = [n for n, node in wf.items() if node["class_type"] == "PreviewLatent"]
    assert len(taps) == 3
    wf["300"] = {"class_type": "VAEDecode", "inputs": {"vae": ["1", 3], "latents": wf[taps[1]]["inputs"]["latents"]}}
    result = run(loom, wf, extra_outputs=("300",))
    for tap in taps:
        [ref] = result.outputs[tap]["images"]
        assert ref["type"] == "temp" and loom.env.safe_path("temp", ref["filename"]).is_file()
    assert torch.equal(result.values[taps[1]][0], result.values["300"][0])
    assert saved(loom, result, "11").shape[:2] == grid_shape(4, 64, 4, (), ["step 1"])
    # Without a VAE: the quick colour projection, same number of pictures.
    del wf[taps[0]]["inputs"]["vae"]
    quick = loom.run(loom.validate(wf, outputs=[taps[0]]))
    assert quick.ok and quick.values[taps[0]][0].shape == (1, 256, 256, 3)  # 16 x 16 latents, 16 px each
    assert len(quick.outputs[taps[0]]["images"]) == 1


# --- ImageGrid ---------------------------------------------------------------------------------------

def test_image_grid_places_cells_and_names_bad_inputs(loom):
    def grid_wf(**inputs):
        return {"1": {"class_type": "ExampleImage", "inputs": {"width": 16, "height": 16}},
                "2": {"class_type": "ExampleImage", "inputs": {"width": 24, "height": 16}},
                "3": {"class_type": "ImageGrid", "inputs": {"images_1": ["1", 0], **inputs}},
                "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}

    result = run(loom, grid_wf(images_2=["1", 0], images_3=["1", 0], columns=2), extra_outputs=("1", "3"))
    image, grid = result.values["1"][0], result.values["3"][0]
    expected, shape = make_grid(torch.cat([image] * 3), 2)
    assert torch.equal(grid, expected) and grid.shape[1:3] == (16 * 2 + 2, 16 * 2 + 2)
    x, y = shape.box(2)
    assert torch.equal(grid[0, y:y + 16, x:x + 16], image[0])
    mixed = loom.run(grid_wf(images_2=["2", 0]))
    assert mixed.status == "error" and "input 'images_2'" in mixed.error["exception_message"]
    titles = loom.run(grid_wf(columns=1, row_titles="a, b"))
    assert titles.status == "error" and "input 'row_titles' has 2 titles for 1 rows" in titles.error["exception_message"]

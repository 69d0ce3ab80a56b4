"""The text-to-image model: captioned data, tokenizer, the two training stages, the nodes, the shipped
model against diffusers' own pipeline, its single-file export and the demo models of a fresh folder."""
import json

import numpy as np
import pytest
import torch

from graph import Env, Loom, Registry
from nodes.textcond import model as tm
from nodes.textcond.data import COLOUR_NAMES, COLOURS, SHAPES, caption_words, make_batch
from nodes.textcond.nodes import SHIPPED
from nodes.textcond.train import StageConfig, UNetConfig, fold_scaling, train_unet, train_vae

# sha256 of the shipped weight files (names and bytes, see model.weights_digest): a retrain or an
# accidental rewrite of assets/textcond changes it. Update it together with the numbers in docs/builtin-models.md.
SHIPPED_DIGEST = "ed57bb4058eb7fab32e79107464cd9d956d9cae9ba88ed6905db9b5f3ae259e0"
PROMPT = "a red circle"


# --- data set and tokenizer ----------------------------------------------------------------------

def test_batches_are_deterministic_and_captions_name_colour_and_shape():
    images, captions, colours, shapes = make_batch(40, torch.Generator().manual_seed(0), partial=0)
    assert images.shape == (40, 3, 64, 64) and 0 <= images.min() and images.max() <= 1
    again = make_batch(40, torch.Generator().manual_seed(0), partial=0)
    assert torch.equal(images, again[0]) and captions == again[1]
    for text, c, s in zip(captions, colours, shapes):
        assert COLOUR_NAMES[c] in text.split() and SHAPES[s] in text
    # The shape's colour is the named one: the brightest pixels are close to it.
    picked = make_batch(6, torch.Generator().manual_seed(1), colours=torch.arange(6), shapes=torch.zeros(6))
    for image, name in zip(picked[0], COLOUR_NAMES):
        inside = image.flatten(1)[:, image.sum(0).flatten() > image.sum(0).flatten().quantile(0.9)]
        assert (inside.mean(1) - torch.tensor(COLOURS[name])).abs().max() < 0.25, name
    with pytest.raises(ValueError, match="colours lie in"):
        make_batch(1, colours=torch.tensor([6]))


def test_every_caption_word_is_one_token_of_a_vocabulary_unlike_tiny_sd():
    from nodes.loading.clip_bpe import TINY_VOCAB_SIZE

    tok = tm.tokenizer()
    assert len(tok) == 1024 != TINY_VOCAB_SIZE  # single-file loading tells them apart by size
    for word in caption_words():
        assert tok.tokenize(word) == [word + "</w>"]


# --- training --------------------------------------------------------------------------------------

def test_folding_the_scaling_factor_keeps_the_autoencoder_exact():
    torch.manual_seed(0)
    vae = tm.new_vae().eval()
    x = make_batch(2, torch.Generator().manual_seed(2))[0] * 2 - 1
    with torch.no_grad():
        before = vae.encode(x).latent_dist
        decoded = vae.decode(before.mean).sample
        fold_scaling(vae, 0.5)  # k = 0.5 / 0.18215
        after = vae.encode(x).latent_dist
        k = 0.5 / 0.18215
        torch.testing.assert_close(after.mean, before.mean * k)
        torch.testing.assert_close(after.std, before.std * k)
        torch.testing.assert_close(vae.decode(after.mean).sample, decoded, atol=1e-5, rtol=1e-5)
    assert vae.config.scaling_factor == 0.18215


def test_two_stages_train_resume_and_save_a_pipeline_folder(tmp_path):
    from diffusers import StableDiffusionPipeline

    losses = []
    train_vae(StageConfig(steps=2, batch=2, lr=1e-3, save_every=1), tmp_path, on_step=lambda *a: losses.append(a))
    train_vae(StageConfig(steps=3, batch=2, lr=1e-3, save_every=1), tmp_path, resume=True,
              on_step=lambda *a: losses.append(a))
    assert [(s, n) for s, n, _ in losses] == [(1, 2), (2, 2), (3, 3)]
    cfg = UNetConfig(steps=2, batch=2, lr=1e-3, save_every=1, preview_every=0, pool=4)
    vae, text_encoder, unet = train_unet(cfg, tmp_path)
    assert vae.config.scaling_factor == 0.18215
    state = torch.load(tmp_path / "unet_state.pt", weights_only=False)
    assert state["step"] == 2 and state["pool"]["ids"].shape == (4, 77)
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "pipeline")
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    resumed = []
    train_unet(UNetConfig(steps=3, batch=2, lr=1e-3, preview_every=0, pool=4), tmp_path, resume=True,
               on_step=lambda s, n, loss: resumed.append(s))
    assert resumed == [3]
    # a fine-tuning run starts from another run's EMA weights and folded VAE, with a fresh schedule
    tuned = tmp_path / "tuned"
    (tuned / "vae").mkdir(parents=True)
    for f in (tmp_path / "vae").iterdir():
        (tuned / "vae" / f.name).write_bytes(f.read_bytes())
    start = torch.load(tmp_path / "unet_state.pt", weights_only=False)
    steps = []
    vae, text_encoder, unet = train_unet(UNetConfig(steps=1, batch=2, lr=0.0, preview_every=0, pool=4, warmup=1),
                                         tuned, init=tmp_path / "unet_state.pt", on_step=lambda s, n, l: steps.append(s))
    assert steps == [1]
    for name, value in unet.state_dict().items():  # lr 0: the EMA of the start's EMA is the start's EMA
        torch.testing.assert_close(value, start["ema_unet"][name], msg=name)
    for name, value in vae.state_dict().items():
        assert torch.equal(value, start["vae"][name]), name


def test_train_node_reports_progress_and_saves_a_loadable_model(tmp_path):
    models = tmp_path / "models"
    registry = Registry()
    registry.add_package("nodes")
    loom = Loom(Env.from_data_dir(tmp_path, models_dir=models, device="cpu"), registry=registry)
    inputs = {"name": "textcond/mini", "vae_steps": 2, "unet_steps": 2, "vae_batch_size": 2, "unet_batch_size": 2,
              "learning_rate": 1e-3, "seed": 0}
    events = []
    result = loom.run({"1": {"class_type": "TrainTextConditional", "inputs": inputs}},
                      emit=lambda e, d: events.append((e, d)))
    assert result.status == "success", result.error
    assert [(d["value"], d["max"]) for e, d in events if e == "progress"] == [(i, 4) for i in range(1, 5)]
    assert sorted(p.name for p in (models / "textcond").iterdir()) == ["mini"]  # no training leftovers
    assert (models / "textcond" / "mini" / "model_index.json").is_file()
    tokenizer, text_encoder, unet, vae, scheduler = result.values["1"]
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size and len(tokenizer) == 1024
    info = loom.registry.get("LoadTextConditionalModel").object_info(loom.env)["input"]["required"]
    assert info["model_name"][0] == [SHIPPED, "textcond/mini"]
    bad = loom.validate({"1": {"class_type": "TrainTextConditional", "inputs": dict(inputs, name="../outside")}})
    assert [e["extra_info"]["input_name"] for e in bad.node_errors["1"]["errors"]] == ["name"]


# --- the shipped model -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped_loom(tmp_path_factory):
    """A Loom whose models folder holds a copy of the shipped model (as a fresh data folder gets it)."""
    from tests._sd import pin_threads

    pin_threads()
    models = tmp_path_factory.mktemp("models")
    assert tm.install_shipped(models) == models / tm.NAME
    return Loom(Env.from_data_dir(tmp_path_factory.mktemp("data"), models_dir=models, device="cpu",
                                  dtype="float32"))


def txt2img(model="shapes64", loader="LoadCheckpoint", guidance=7.5, kind="dpmpp_2m", steps=12, seed=3):
    """workflows/shapes.json ("a red circle", empty negative prompt) with these settings."""
    from tests._sd import workflow

    wf = workflow("shapes", **{"6": {"kind": kind, "steps": steps}, "7": {"seed": seed},
                               "8": {"guidance_scale": guidance}})
    wf["1"] = {"class_type": loader, "inputs": {"model_name" if loader != "LoadCheckpoint" else "model": model}}
    return wf


def image_of(loom, wf):
    from tests._sd import run_node

    return run_node(loom, wf).numpy()


def test_shipped_files_are_float16_small_and_unchanged():
    folder = tm.shipped_folder()
    weights = sorted(folder.rglob("*.safetensors"))
    assert [w.parent.name for w in weights] == ["text_encoder", "unet", "vae"]
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 20_000_000
    from safetensors import safe_open

    for path in weights:
        with safe_open(str(path), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}, path
    assert tm.weights_digest(folder) == SHIPPED_DIGEST, "the shipped weights changed: retrained or rewritten?"
    assert json.loads((folder / "vae" / "config.json").read_text())["scaling_factor"] == 0.18215


@pytest.mark.parametrize("kind", ["pndm", "dpmpp_2m"])
def test_shipped_model_gives_the_pipelines_pixels(shipped_loom, kind):
    """StableDiffusionPipeline.from_pretrained loads the shipped folder unchanged, and Loom's graph
    gives its pixels exactly (guidance > 1)."""
    from diffusers import StableDiffusionPipeline

    from tests._sd import pipeline_scheduler

    pipe = StableDiffusionPipeline.from_pretrained(tm.shipped_folder(), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = pipeline_scheduler(pipe.scheduler.config, kind)
    expected = pipe(PROMPT, negative_prompt="", num_inference_steps=12, guidance_scale=7.5, height=64, width=64,
                    generator=torch.Generator().manual_seed(3), output_type="np").images
    ours = image_of(shipped_loom, txt2img(kind=kind))
    assert ours.shape == expected.shape == (1, 64, 64, 3)
    assert np.abs(ours - expected).max() == 0.0
    built_in = image_of(shipped_loom, txt2img(model=SHIPPED, loader="LoadTextConditionalModel", kind=kind))
    assert np.abs(built_in - expected).max() == 0.0


def test_shipped_model_draws_what_the_prompt_says(shipped_loom):
    """A red circle is mostly red where it is bright; a blue one mostly blue (one word changed)."""
    red = image_of(shipped_loom, txt2img())[0]
    wf = txt2img()
    wf["2"]["inputs"]["text"] = "a blue circle"
    blue = image_of(shipped_loom, wf)[0]
    for image, channel in ((red, 0), (blue, 2)):
        bright = image[image.sum(-1) > 1.0]
        assert len(bright) > 50 and bright.mean(0).argmax() == channel


def test_single_file_export_loads_back_with_the_same_pixels(shipped_loom, tmp_path):
    from nodes.loading.ldm_layout import write_single_file

    models = shipped_loom.env.models_dir
    write_single_file(models / tm.NAME, models / "shapes64.safetensors", dtype=torch.float16)
    assert (models / "shapes64.safetensors").stat().st_size < 12_000_000
    folder = image_of(shipped_loom, txt2img(steps=6))
    single = image_of(shipped_loom, txt2img(model="shapes64.safetensors", steps=6))
    # exact: both float16 files are cast to float32 into fresh (aligned) memory, so even the addresses agree
    assert np.abs(single - folder).max() == 0.0


def test_a_fresh_models_folder_gets_the_shapes_model_and_tiny_sd(tmp_path):
    from loomserver.engine import ensure_demo_model
    from nodes.loading.model_files import list_models

    ensure_demo_model(tmp_path / "fresh")
    assert list_models(tmp_path / "fresh") == ["shapes64", "tiny-sd"]
    assert tm.weights_digest(tmp_path / "fresh" / "shapes64") == tm.weights_digest(tm.shipped_folder())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.safetensors").write_bytes(b"")
    ensure_demo_model(tmp_path / "mine")
    assert list_models(tmp_path / "mine") == ["model.safetensors"]

"""Single-file SD 1.x checkpoints (LDM key layout) load offline and give the diffusers folder's pixels.

The checkpoints are written here from diffusers weights (nodes/loading/ldm_layout.py), in two shapes: the
tiny demo model and one with three levels, one block per level, attention on the first two levels,
a wider text encoder and a three-level VAE."""
import pickle
import shutil

import numpy as np
import pytest
import torch

from tests._sd import as_array, make_loom, pin_threads, run_node, workflow
from tests._tolerances import single_file_atol

SHAPE_B = dict(
    unet=dict(block_out_channels=(32, 64, 64), layers_per_block=1,
              down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=48),
    vae=dict(block_out_channels=[32, 64, 64], down_block_types=["DownEncoderBlock2D"] * 3,
             up_block_types=["UpDecoderBlock2D"] * 3, layers_per_block=2),
    clip=dict(hidden_size=48, intermediate_size=64, num_attention_heads=6, num_hidden_layers=3),
)


def write_ldm(folder, path, extra=None):
    from nodes.loading.ldm_layout import write_single_file

    return write_single_file(folder, path, extra=extra)


@pytest.fixture(scope="module")
def loom(tiny_sd, tmp_path_factory):
    from nodes.loading.tiny import write_tiny_model

    pin_threads()
    models = tmp_path_factory.mktemp("sf_models")
    shutil.copytree(tiny_sd, models / "tiny-sd")
    write_tiny_model(models / "shape-b", seed=7, **SHAPE_B)
    write_ldm(models / "tiny-sd", models / "tiny.safetensors")
    # Real checkpoints carry extra tensors; CLIP's position_ids is one that must be tolerated.
    write_ldm(models / "shape-b", models / "checkpoints" / "shape-b.safetensors",
              {"cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
               "alphas_cumprod": torch.linspace(1, 0, 1000)})
    return make_loom(tmp_path_factory.mktemp("sf_data"), models)


def outputs_of(loom, wf, node):
    validation = loom.validate(wf, outputs=[node])
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    return result.values[node]


def test_models_folder_lists_folders_and_files(loom):
    from nodes.loading.model_files import list_models

    assert list_models(loom.env.models_dir) == ["checkpoints/shape-b.safetensors", "shape-b", "tiny-sd",
                                               "tiny.safetensors"]


@pytest.mark.parametrize("single, folder", [("tiny.safetensors", "tiny-sd"),
                                            ("checkpoints/shape-b.safetensors", "shape-b")])
def test_single_file_gives_the_folder_pixels(loom, single, folder):
    changes = {"6": {"kind": "euler_ancestral"}}
    from_file = outputs_of(loom, workflow("txt2img", **{"1": {"model": single}}, **changes), "1")
    from_folder = outputs_of(loom, workflow("txt2img", **{"1": {"model": folder}}, **changes), "1")
    tokenizer, text_encoder, unet, vae, scheduler, *_ = from_file
    for name in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types",
                 "cross_attention_dim", "attention_head_dim", "transformer_layers_per_block"):
        assert list(np.ravel(unet.config[name])) == list(np.ravel(from_folder[2].config[name])), name
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        assert getattr(text_encoder.config, name) == getattr(from_folder[1].config, name), name
    assert list(vae.config.block_out_channels) == list(from_folder[3].config.block_out_channels)
    assert scheduler == from_folder[4]
    assert tokenizer("a cat on a horse").input_ids == from_folder[0]("a cat on a horse").input_ids
    image = as_array(run_node(loom, workflow("txt2img", **{"1": {"model": single}}, **changes)))
    expected = as_array(run_node(loom, workflow("txt2img", **{"1": {"model": folder}}, **changes)))
    assert np.abs(image - expected).max() <= single_file_atol(single)  # same weights, other addresses


def test_ckpt_is_read_without_unpickling_code(loom, tmp_path):
    from safetensors.torch import load_file

    from nodes.loading.single_file import read_state_dict

    state = load_file(str(loom.env.models_dir / "tiny.safetensors"))
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": state}, good)
    loaded = read_state_dict(good)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)

    class Boom:
        def __reduce__(self):
            return (print, ("unpickled code ran",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": Boom()}))
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(evil)


def test_replaced_file_is_loaded_again(loom):
    """LoadCheckpoint's fingerprint (mtime, size) makes a replaced file load again."""
    path = loom.env.models_dir / "swap.safetensors"
    shutil.copy(loom.env.models_dir / "tiny.safetensors", path)
    wf = workflow("txt2img", **{"1": {"model": "swap.safetensors"}})
    first = outputs_of(loom, wf, "1")[2]
    assert outputs_of(loom, wf, "1")[2] is first  # unchanged file: served from the cache
    shutil.copy(loom.env.models_dir / "checkpoints" / "shape-b.safetensors", path)
    assert list(outputs_of(loom, wf, "1")[2].config.block_out_channels) == [32, 64, 64]


def test_not_a_checkpoint_is_a_clear_error(loom):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(loom.env.models_dir / "lora.safetensors"))
    validation = loom.validate(workflow("txt2img", **{"1": {"model": "lora.safetensors"}}), outputs=["1"])
    result = loom.run(validation)
    assert result.status == "error" and result.error["node_type"] == "LoadCheckpoint"
    assert "lora.safetensors: holds no UNet" in result.error["exception_message"]


def test_real_size_clip_vocabulary_uses_openai_merges():
    """A 49408-entry CLIP (real SD 1.x) gets OpenAI CLIP's BPE, read from open_clip's merges file
    (the real SD 1.5, 2.1 and XL layouts are checked in tests/test_model_families.py)
    (installed by setup.sh with --no-deps); ids as CLIP's own tokenizer gives them."""
    from nodes.loading.clip_bpe import real_clip_merges_file
    from nodes.loading.clip_bpe import tokenizer_for

    if real_clip_merges_file() is None:
        pytest.skip("open_clip_torch is not installed (setup.sh installs it)")
    tokenizer = tokenizer_for(49408, 77)
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tokenizer("a cat", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(padded) == 77 and padded[:4] == [49406, 320, 2368, 49407] and set(padded[4:]) == {49407}


def test_shipped_merges_are_read_and_equal_learning_them(monkeypatch, tmp_path):
    """assets/bpe/ holds the merges of the built-in vocabularies, learned from the current word lists
    (scripts/bpe_merges.py): a single file of those models reads them instead of learning them again.
    A file learned from other words is not used."""
    import nodes.loading.clip_bpe as bpe

    for name, words, n in (("tiny", bpe.WORDS, bpe.TINY_MERGES), ("shapes64", bpe.shapes_merge_words(), bpe.SHAPES_MERGES)):
        assert bpe.merges_file(name).read_text().split("\n", 1)[0] == bpe.merges_key(words, n), \
            f"assets/bpe/{name}.txt is stale: run scripts/bpe_merges.py"
        learned = tuple(bpe.train_merges(words, n))
        monkeypatch.setattr(bpe, "train_merges", lambda *a: pytest.fail("learned, not read"))
        assert bpe.learned_merges(name, words, n) == learned
        monkeypatch.undo()
    monkeypatch.setattr(bpe, "merges_file", lambda name: tmp_path / f"{name}.txt")
    bpe.write_merges("tiny", bpe.WORDS, bpe.TINY_MERGES)
    assert bpe.learned_merges("tiny", bpe.WORDS[:-1], 40) == tuple(bpe.train_merges(bpe.WORDS[:-1], 40))


def test_half_precision_file_loads_in_the_asked_dtype(loom, tmp_path):
    """Weights are cast to the environment's dtype whatever the file holds (fp16 files are common)."""
    from safetensors.torch import load_file, save_file

    from nodes.loading.single_file import load_single_file

    state = load_file(str(loom.env.models_dir / "tiny.safetensors"))
    save_file({k: v.half() for k, v in state.items()}, str(tmp_path / "half.safetensors"))
    parts = load_single_file(tmp_path / "half.safetensors", torch.device("cpu"), torch.float32)
    text_encoder, unet, vae = parts["text_encoder"], parts["unet"], parts["vae"]
    for model in (text_encoder, unet, vae):
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    key = "model.diffusion_model.out.2.weight"
    assert torch.equal(unet.conv_out.weight, state[key].half().float())

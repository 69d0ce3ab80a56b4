"""LoRA (nodes.lora, LoraLoader, LoraLoaderModelOnly): the same pixels as StableDiffusionPipeline after
`load_lora_weights` of the same file, in the diffusers/PEFT and the kohya/A1111 formats; strengths,
stacking, and the cached base model never left patched.

The LoRA files are made locally (tests/_tiny_assets.py): random PEFT adapters on the tiny SD 1.x UNet and
text encoder, saved by diffusers' `save_lora_weights`, and renamed to kohya's key layout (with alphas)."""
import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from graph import Env, Loom
from tests._tiny_assets import write_diffusers_lora, write_kohya_lora

ROOT = Path(__file__).resolve().parent
@pytest.fixture(scope="module")
def setup(tiny_sd, tmp_path_factory):
    torch.set_num_threads(1)
    models = tmp_path_factory.mktemp("lora_models")
    shutil.copytree(tiny_sd, models / "checkpoints" / "tiny-sd")
    loras = models / "loras"
    loras.mkdir()
    write_diffusers_lora(tiny_sd, loras / "style_diffusers.safetensors", seed=1)
    write_kohya_lora(tiny_sd, loras / "style_kohya.safetensors", seed=2)
    write_diffusers_lora(tiny_sd, loras / "other.safetensors", seed=3)
    env = Env.from_data_dir(tmp_path_factory.mktemp("lora_data"), models_dir=models, device="cpu", dtype="float32")
    return Loom(env), models


def workflow(*loras, model_only=False) -> dict:
    """The tiny txt2img fixture with LoraLoader (or LoraLoaderModelOnly) nodes chained after the loader."""
    wf = json.loads((ROOT / "fixtures" / "comfy" / "txt2img_api.json").read_text())
    model, clip = ["4", 0], ["4", 1]
    for i, (name, strength_model, strength_clip) in enumerate(loras):
        node = f"2{i}"
        if model_only:
            wf[node] = {"class_type": "LoraLoaderModelOnly",
                        "inputs": {"model": model, "lora_name": name, "strength_model": strength_model}}
            model = [node, 0]
        else:
            wf[node] = {"class_type": "LoraLoader", "inputs": {"model": model, "clip": clip, "lora_name": name,
                                                               "strength_model": strength_model,
                                                               "strength_clip": strength_clip}}
            model, clip = [node, 0], [node, 1]
    wf["3"]["inputs"]["model"] = model
    wf["6"]["inputs"]["clip"] = wf["7"]["inputs"]["clip"] = clip
    return copy.deepcopy(wf)


def decoded(loom, wf) -> np.ndarray:
    validation = loom.validate(wf, outputs=["8"])
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    return result.values["8"][0].numpy()


def pipeline_image(tiny_sd, wf, lora_file=None, weight=None) -> np.ndarray:
    from diffusers import StableDiffusionPipeline

    from tests._comfy_euler import ComfyEulerScheduler

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = ComfyEulerScheduler(pipe.scheduler.config)  # KSampler samples as ComfyUI's euler + normal
    if lora_file is not None:
        pipe.load_lora_weights(str(lora_file), adapter_name="x")
        if weight is not None:
            pipe.set_adapters(["x"], adapter_weights=[weight])
    k = wf["3"]["inputs"]
    return pipe(wf["6"]["inputs"]["text"], negative_prompt=wf["7"]["inputs"]["text"], num_inference_steps=k["steps"],
                guidance_scale=k["cfg"], height=64, width=64, output_type="np",
                generator=torch.Generator("cpu").manual_seed(k["seed"])).images


@pytest.mark.parametrize("name, strength", [("style_diffusers.safetensors", 1.0), ("style_kohya.safetensors", 1.0),
                                            ("style_diffusers.safetensors", 0.6)])
def test_lora_matches_the_pipeline_after_load_lora_weights(setup, tiny_sd, name, strength, record_property):
    loom, models = setup
    wf = workflow((name, strength, strength))
    ours = decoded(loom, wf)
    expected = pipeline_image(tiny_sd, wf, models / "loras" / name, None if strength == 1.0 else strength)
    without = pipeline_image(tiny_sd, wf)
    assert np.abs(expected - without).max() > 0.01  # the LoRA changes the image
    diff = float(np.abs(ours - expected).max())
    record_property("max_abs_diff", diff)
    print(f"LoRA {name} strength {strength}: max abs difference vs the pipeline {diff}")
    assert diff == 0.0


def test_base_model_is_never_left_patched(setup):
    """After LoRA runs, the cached base model gives the plain image again, bit for bit, and a changed
    strength or file changes only what it should."""
    loom, _ = setup
    plain = decoded(loom, workflow())
    with_lora = decoded(loom, workflow(("style_diffusers.safetensors", 1.0, 1.0)))
    assert np.abs(with_lora - plain).max() > 0.01
    assert np.array_equal(decoded(loom, workflow()), plain)
    half = decoded(loom, workflow(("style_diffusers.safetensors", 0.5, 0.5)))
    assert not np.array_equal(half, with_lora) and not np.array_equal(half, plain)
    assert np.array_equal(decoded(loom, workflow(("style_diffusers.safetensors", 1.0, 1.0))), with_lora)
    assert np.array_equal(decoded(loom, workflow(("style_diffusers.safetensors", 0.0, 0.0))), plain)
    assert np.array_equal(decoded(loom, workflow()), plain)


def test_loras_stack_and_strengths_are_separate(setup):
    loom, _ = setup
    plain = decoded(loom, workflow())
    a = decoded(loom, workflow(("style_diffusers.safetensors", 1.0, 1.0)))
    both = decoded(loom, workflow(("style_diffusers.safetensors", 1.0, 1.0), ("other.safetensors", 1.0, 1.0)))
    assert np.abs(both - a).max() > 0.01
    unet_only = decoded(loom, workflow(("style_diffusers.safetensors", 1.0, 0.0)))
    text_only = decoded(loom, workflow(("style_diffusers.safetensors", 0.0, 1.0)))
    model_only = decoded(loom, workflow(("style_diffusers.safetensors", 1.0, 0.0), model_only=True))
    assert np.array_equal(unet_only, model_only)
    for image in (unet_only, text_only):
        assert np.abs(image - plain).max() > 0.01 and np.abs(image - a).max() > 0.01
    assert np.array_equal(decoded(loom, workflow()), plain)


def test_dropped_views_free_their_adapters(setup):
    """An adapter is removed from the base model once the cache no longer holds a view using it."""
    import gc

    from nodes.lora import _purge

    loom, _ = setup
    decoded(loom, workflow(("other.safetensors", 0.3, 0.3)))
    unet = next(v for k in loom.executor.cache.keys() for v in loom.executor.cache.get(k).outputs
                if type(v).__name__ == "Model" and not v.loras).unet
    assert unet.peft_config
    loom.executor.cache.clear()
    gc.collect()
    _purge(unet)  # what the next LoRA load or call does
    assert not getattr(unet, "peft_config", None)


def test_missing_lora_is_a_clear_error(setup):
    loom, _ = setup
    validation = loom.validate(workflow(("nope.safetensors", 1.0, 1.0)), outputs=["8"])
    assert not validation.ok
    assert "nope.safetensors" in json.dumps(validation.response())


@pytest.mark.parametrize("writer", [write_diffusers_lora, write_kohya_lora])
def test_sdxl_lora_matches_the_pipeline_model_by_model(tmp_path_factory, writer, record_property):
    """SDXL: LoraLoader's UNet and both text encoders give the outputs of StableDiffusionXLPipeline's
    after load_lora_weights of the same file (whole images: tests/test_loaded_parity.py)."""
    from diffusers import StableDiffusionXLPipeline

    from nodes.loading.tiny import write_tiny_model

    models = tmp_path_factory.mktemp("xl_lora")
    xl = write_tiny_model(models / "checkpoints" / "tiny-sdxl", family="sdxl")
    (models / "loras").mkdir()
    writer(xl, models / "loras" / "xl.safetensors", seed=4)
    loom = Loom(Env.from_data_dir(tmp_path_factory.mktemp("xl_lora_data"), models_dir=models, device="cpu",
                                  dtype="float32"))
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sdxl"}},
              "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": "xl.safetensors",
                                                           "strength_model": 1.0, "strength_clip": 1.0}}}
    validation = loom.validate(prompt, outputs=["2"])
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    model, clip = result.values["2"]
    pipe = StableDiffusionXLPipeline.from_pretrained(xl)
    pipe.load_lora_weights(str(models / "loras" / "xl.safetensors"))
    ids = torch.randint(0, 999, (1, 77), generator=torch.Generator().manual_seed(0))
    diffs = {}
    with torch.no_grad():
        for slot in ("text_encoder", "text_encoder_2"):
            ours = getattr(clip, slot)(ids, output_hidden_states=True)
            theirs = getattr(pipe, slot)(ids, output_hidden_states=True)
            plain = getattr(clip, slot).base(ids, output_hidden_states=True)
            assert (ours.hidden_states[-2] - plain.hidden_states[-2]).abs().max() > 1e-3  # the LoRA acts
            diffs[slot] = float((ours.hidden_states[-2] - theirs.hidden_states[-2]).abs().max())
        g = torch.Generator().manual_seed(1)
        x, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 64, generator=g)
        added = {"text_embeds": torch.randn(2, 32, generator=g), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
        ours = model.unet(x, 500, encoder_hidden_states=text, added_cond_kwargs=added).sample
        theirs = pipe.unet(x, 500, encoder_hidden_states=text, added_cond_kwargs=added).sample
        diffs["unet"] = float((ours - theirs).abs().max())
    record_property("max_abs_diff", diffs)
    print(f"SDXL LoRA {writer.__name__}: max abs difference vs the pipeline {diffs}")
    assert max(diffs.values()) == 0.0


def test_deleting_one_adapter_leaves_the_base_and_the_other_views(setup, tiny_sd):
    """Adapters dropped while others stay: the base model computes as before any LoRA, and the views
    still alive keep their exact outputs."""
    import gc

    from diffusers import UNet2DConditionModel

    from nodes.lora import _purge, read_lora, with_lora

    _, models = setup
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet").eval()
    x, text = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 32)
    with torch.no_grad():
        plain = unet(x, 10, encoder_hidden_states=text).sample
        views = [with_lora(unet, *read_lora(models / "loras" / name, False, unet.config)[:2], 1.0, "unet")
                 for name in ("style_diffusers.safetensors", "other.safetensors")]
        kept = views[1](x, 10, encoder_hidden_states=text).sample
        del views[0]
        gc.collect()
        _purge(unet)
        assert len(unet.peft_config) == 1
        assert torch.equal(unet(x, 10, encoder_hidden_states=text).sample, plain)
        assert torch.equal(views[0](x, 10, encoder_hidden_states=text).sample, kept)


def test_a_lora_on_a_denoiser_loom_cannot_patch_is_refused_not_ignored(setup):
    """A transformer family without a LoRA loader (Chroma's, here a stand-in of that class) gets an
    error naming the file and the model class, where it used to run without the LoRA."""
    from nodes.lora import apply_lora

    loom, _ = setup
    ChromaTransformer2DModel = type("ChromaTransformer2DModel", (torch.nn.Module,), {})
    with pytest.raises(ValueError, match="style_kohya.safetensors: LoRAs on ChromaTransformer2DModel models are "
                                         "not supported yet"):
        apply_lora(loom.env, "style_kohya.safetensors", ChromaTransformer2DModel())

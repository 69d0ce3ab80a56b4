"""ComfyUI's separate loaders (UNETLoader, CLIPLoader, DualCLIPLoader, VAELoader) on ComfyUI's folder
layout: parts as folders and as single files give the same models as the whole checkpoint, and the
same pixels; the SD 2.x tiny model matches StableDiffusionPipeline (v-prediction), from its folder and
from a single file."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from graph import Env, Loom
from nodes.loading.ldm_layout import open_clip_to_ldm, unet_to_ldm, vae_to_ldm, write_single_file
from tests._tolerances import single_file_atol

ROOT = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from nodes.loading.tiny import VAE_8X, write_tiny_model

    torch.set_num_threads(1)
    models = tmp_path_factory.mktemp("loader_models")
    ck = models / "checkpoints"
    sd8 = write_tiny_model(ck / "tiny-sd8", vae=VAE_8X)
    xl = write_tiny_model(ck / "tiny-sdxl", family="sdxl")
    sd2 = write_tiny_model(ck / "tiny-sd2", family="sd2")
    write_single_file(sd2, ck / "tiny-sd2.safetensors", "sd2")
    # parts as folders (ComfyUI's legacy folder names) and as files (current names)
    shutil.copytree(sd8 / "unet", models / "unet" / "sd8-unet")
    shutil.copytree(sd8 / "text_encoder", models / "clip" / "sd8-clip-l")
    shutil.copytree(xl / "text_encoder_2", models / "clip" / "xl-clip-g")
    (models / "diffusion_models").mkdir()
    unet = UNet2DConditionModel.from_pretrained(xl, subfolder="unet")
    save_file({k: v.contiguous() for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()},
              str(models / "diffusion_models" / "xl-unet.safetensors"))
    (models / "text_encoders").mkdir()
    clip_l = CLIPTextModel.from_pretrained(xl / "text_encoder")
    save_file({"text_model." + k.removeprefix("text_model."): v.contiguous() for k, v in clip_l.state_dict().items()},
              str(models / "text_encoders" / "xl-clip-l.safetensors"))
    big_g = CLIPTextModelWithProjection.from_pretrained(xl / "text_encoder_2")
    save_file({k: v.contiguous() for k, v in open_clip_to_ldm(big_g.state_dict(), "").items()},
              str(models / "text_encoders" / "xl-clip-g-openclip.safetensors"))
    (models / "vae").mkdir()
    vae = AutoencoderKL.from_pretrained(sd8, subfolder="vae")
    save_file({k.removeprefix("first_stage_model."): v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()},
              str(models / "vae" / "sd-vae.safetensors"))
    env = Env.from_data_dir(tmp_path_factory.mktemp("loader_data"), models_dir=models, device="cpu", dtype="float32")
    return Loom(env), models


def run(loom, prompt, node):
    validation = loom.validate(prompt, outputs=[node])
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error and result.error.get("exception_message")
    return result.values[node]


def equal_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_each_kind_lists_its_folders(setup):
    from nodes.loading.model_files import list_kind, list_models

    loom, _ = setup
    models = loom.env.models_dir
    assert list_kind(models, "checkpoints") == ["tiny-sd2", "tiny-sd2.safetensors", "tiny-sd8", "tiny-sdxl"]
    assert list_kind(models, "diffusion_models") == ["xl-unet.safetensors", "sd8-unet"]
    assert list_kind(models, "text_encoders") == ["xl-clip-g-openclip.safetensors", "xl-clip-l.safetensors",
                                                  "sd8-clip-l", "xl-clip-g"]
    assert list_kind(models, "vae") == ["sd-vae.safetensors"]
    # the flat layout of LoadCheckpoint: checkpoints anywhere, never the other kinds' folders
    assert list_models(models) == ["checkpoints/tiny-sd2", "checkpoints/tiny-sd2.safetensors",
                                   "checkpoints/tiny-sd8", "checkpoints/tiny-sdxl"]


def test_sdxl_parts_load_as_the_checkpoint(setup):
    """UNETLoader (an LDM UNet file) and DualCLIPLoader (CLIP-L file + bigG folder, or bigG as an
    OpenCLIP file) give the checkpoint's own MODEL and CLIP."""
    loom, _ = setup
    whole = run(loom, {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sdxl"}}}, "1")
    model = run(loom, {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "xl-unet.safetensors",
                                                                    "weight_dtype": "default"}}}, "1")[0]
    assert model.family == whole[0].family == "sdxl" and model.scheduler == whole[0].scheduler
    assert equal_weights(model.unet, whole[0].unet)
    for clip_g in ("xl-clip-g", "xl-clip-g-openclip.safetensors"):
        clip = run(loom, {"1": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": clip_g, "clip_name2": "xl-clip-l.safetensors", "type": "sdxl"}}}, "1")[0]
        assert clip.family == "sdxl"
        assert equal_weights(clip.text_encoder, whole[1].text_encoder)
        assert equal_weights(clip.text_encoder_2, whole[1].text_encoder_2)
        text = "a cat on a horse"
        for tok in ("tokenizer", "tokenizer_2"):
            assert getattr(clip, tok)(text, padding="max_length", max_length=77).input_ids == \
                getattr(whole[1], tok)(text, padding="max_length", max_length=77).input_ids


def test_separate_loaders_give_the_checkpoints_pixels(setup):
    """txt2img with UNETLoader + CLIPLoader + VAELoader (folders and an LDM VAE file) on SD 1.x parts:
    exactly the image of CheckpointLoaderSimple."""
    loom, _ = setup
    wf = json.loads((ROOT / "fixtures" / "comfy" / "txt2img_api.json").read_text())
    wf["4"]["inputs"]["ckpt_name"] = "tiny-sd8"
    whole = run(loom, wf, "8")[0]
    wf.update({"20": {"class_type": "UNETLoader", "inputs": {"unet_name": "sd8-unet", "weight_dtype": "default"}},
               "21": {"class_type": "CLIPLoader", "inputs": {"clip_name": "sd8-clip-l", "type": "stable_diffusion"}},
               "22": {"class_type": "VAELoader", "inputs": {"vae_name": "sd-vae.safetensors"}}})
    wf["3"]["inputs"]["model"] = ["20", 0]
    wf["6"]["inputs"]["clip"] = wf["7"]["inputs"]["clip"] = ["21", 0]
    wf["8"]["inputs"]["vae"] = ["22", 0]
    parts = run(loom, wf, "8")[0]
    assert whole.shape == (1, 64, 64, 3) and torch.equal(parts, whole)


def test_other_families_types_are_refused_by_name(setup):
    loom, _ = setup
    validation = loom.validate({"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "sd8-clip-l", "type": "mochi"}}},
                               outputs=["1"])
    assert not validation.ok
    assert "type 'mochi' is a model family Loom does not load yet" in json.dumps(validation.response())


@pytest.mark.parametrize("ckpt", ["tiny-sd2", "tiny-sd2.safetensors"])
def test_sd2_v_prediction_matches_the_pipeline(setup, ckpt, record_property):
    """SD 2.x (OpenCLIP-style text encoder padding with "!", v-prediction) from its folder and from a
    single file: the pixels of StableDiffusionPipeline with the same scheduler."""
    from diffusers import StableDiffusionPipeline

    from tests._comfy_euler import ComfyEulerScheduler

    loom, models = setup
    wf = json.loads((ROOT / "fixtures" / "comfy" / "txt2img_api.json").read_text())
    wf["4"]["inputs"]["ckpt_name"] = ckpt
    ours = run(loom, wf, "8")[0].numpy()
    pipe = StableDiffusionPipeline.from_pretrained(models / "checkpoints" / "tiny-sd2", safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    pipe.scheduler = ComfyEulerScheduler(pipe.scheduler.config)  # KSampler samples as ComfyUI's euler + normal
    k = wf["3"]["inputs"]
    expected = pipe(wf["6"]["inputs"]["text"], negative_prompt=wf["7"]["inputs"]["text"], num_inference_steps=k["steps"],
                    guidance_scale=k["cfg"], height=64, width=64, output_type="np",
                    generator=torch.Generator("cpu").manual_seed(k["seed"])).images
    diff = float(np.abs(ours - expected).max())
    record_property("max_abs_diff", diff)
    print(f"SD 2.x {ckpt}: max abs difference vs StableDiffusionPipeline {diff}")
    assert diff <= single_file_atol(ckpt)  # 0 from the folder; a single file's weights lie at other addresses


def test_comfy_part_loaders_are_managed_and_routed(setup):
    """UNETLoader, CLIPLoader and DualCLIPLoader sit in ComfyUI's category advanced/loaders; their
    declared model inputs, not a category, make the executor find room for a model before each runs
    and make routing name the models they load."""
    from loomqueue.routing import model_keys
    from nodes.loading.placement import TorchPlacement

    loom, _ = setup
    managed = Loom(loom.env, placement=TorchPlacement(torch.device("cpu")), vram_bytes=1 << 40)
    loads, before = [], managed.executor.memory.before

    def spy(inputs, pinned, loads_model=False):
        loads.append(loads_model)
        return before(inputs, pinned, loads_model)

    managed.executor.memory.before = spy
    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "sd8-unet", "weight_dtype": "default"}},
              "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "sd8-clip-l", "type": "stable_diffusion"}},
              "3": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "xl-clip-l.safetensors",
                                                               "clip_name2": "xl-clip-g", "type": "sdxl"}}}
    for node in prompt:
        loads.clear()
        run(managed, {node: prompt[node]}, node)
        assert loads == [True], prompt[node]["class_type"]
    assert model_keys(prompt, loom.registry) == {
        "UNETLoader(unet_name=sd8-unet, weight_dtype=default)",
        "CLIPLoader(clip_name=sd8-clip-l, type=stable_diffusion)",
        "DualCLIPLoader(clip_name1=xl-clip-l.safetensors, clip_name2=xl-clip-g, type=sdxl)"}

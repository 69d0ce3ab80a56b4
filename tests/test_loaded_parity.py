"""ComfyUI workflows on model files, end to end: files written by the tiny writers into ComfyUI's
folders, loaded by the ComfyUI loaders, run through validation and the executor, against the diffusers
pipeline loaded from the same files (`from_pretrained`) with ComfyUI's euler + normal as its scheduler
(tests/_comfy_euler.py: KSampler samples as ComfyUI), same seed and settings. Each test prints its
max abs difference: an SDXL checkpoint (folder and single file), a ControlNet (folder and LDM file),
an inpainting checkpoint (9-channel UNet; folder and single file), a noise mask on a plain
checkpoint, a LoRA with a ControlNet, and a LoRA on SDXL."""
import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graph import Env, Loom
from nodes.loading.ldm_layout import controlnet_to_ldm, write_single_file
from tests._comfy_euler import ComfyEulerScheduler
from tests._sd import run_node
from tests._sd_families import picture
from tests._tiny_assets import controlnet, write_kohya_lora
from tests._tolerances import single_file_atol

ROOT = Path(__file__).resolve().parent
CN_SETTINGS = dict(strength=0.8, start_percent=0.1, end_percent=0.9)
CN_PIPELINE = dict(controlnet_conditioning_scale=0.8, control_guidance_start=0.1, control_guidance_end=0.9)
LORA_STRENGTH = 0.8


@pytest.fixture(scope="module")
def setup(tiny_sd, tmp_path_factory):
    """models/checkpoints: tiny-sd, tiny-sdxl, tiny-sd-inpaint (the last two also as single files);
    models/controlnet: tiny-cn (folder) and tiny-cn-ldm.safetensors; models/loras: kohya LoRAs;
    input/: a picture with a transparent block (LoadImage's MASK), and a hint."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from nodes.loading.tiny import write_tiny_model

    torch.set_num_threads(1)
    models = tmp_path_factory.mktemp("loaded_models")
    ckpts = models / "checkpoints"
    shutil.copytree(tiny_sd, ckpts / "tiny-sd")
    for name, family, unet in (("tiny-sdxl", "sdxl", None), ("tiny-sd-inpaint", "sd1", {"in_channels": 9})):
        folder = write_tiny_model(ckpts / name, seed=5, family=family, unet=unet)
        write_single_file(folder, ckpts / f"{name}.safetensors", family)
    net = controlnet(UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet"), seed=31)
    net.save_pretrained(models / "controlnet" / "tiny-cn")
    save_file(controlnet_to_ldm(net.state_dict(), net.config), str(models / "controlnet" / "tiny-cn-ldm.safetensors"))
    (models / "loras").mkdir()
    write_kohya_lora(tiny_sd, models / "loras" / "tiny-lora.safetensors", seed=2)
    write_kohya_lora(ckpts / "tiny-sdxl", models / "loras" / "tiny-xl-lora.safetensors", seed=3)
    loom = Loom(Env.from_data_dir(tmp_path_factory.mktemp("loaded_data"), models_dir=models, device="cpu",
                                  dtype="float32"))
    rgba = np.dstack([picture(), np.full((64, 64), 255, np.uint8)])
    rgba[16:48, 8:40, 3] = 0  # transparent: the area to repaint (on latent pixels of both VAEs)
    Image.fromarray(rgba, "RGBA").save(loom.env.input_dir / "masked.png")
    Image.fromarray(np.ascontiguousarray(picture()[::-1, :, ::-1])).save(loom.env.input_dir / "hint.png")
    return loom, models


def txt2img(ckpt: str) -> dict:
    """ComfyUI's default workflow (tests/fixtures/comfy/txt2img_api.json) on `ckpt`: 4 steps, euler, normal."""
    wf = json.loads((ROOT / "fixtures" / "comfy" / "txt2img_api.json").read_text())
    wf["4"]["inputs"]["ckpt_name"] = ckpt
    del wf["9"]  # the decoded image is the result compared
    return copy.deepcopy(wf)


def with_controlnet(wf: dict, name: str) -> dict:
    wf.update({"20": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}},
               "21": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
               "22": {"class_type": "ControlNetApplyAdvanced", "inputs": {
                   "positive": ["6", 0], "negative": ["7", 0], "control_net": ["20", 0], "image": ["21", 0],
                   **CN_SETTINGS}}})
    wf["3"]["inputs"].update(positive=["22", 0], negative=["22", 1])
    return wf


def with_lora(wf: dict, name: str) -> dict:
    wf["23"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": name,
                                                        "strength_model": LORA_STRENGTH, "strength_clip": LORA_STRENGTH}}
    wf["3"]["inputs"]["model"] = ["23", 0]
    wf["6"]["inputs"]["clip"] = wf["7"]["inputs"]["clip"] = ["23", 1]
    return wf


def decoded(loom, wf) -> np.ndarray:
    return run_node(loom, wf, "8").numpy()  # VAEDecode's image


def pipeline(cls_name: str, folder: Path, **components):
    import diffusers

    extra = {} if "XL" in cls_name else {"safety_checker": None, "requires_safety_checker": False}
    pipe = getattr(diffusers, cls_name).from_pretrained(folder, **extra, **components)
    pipe.scheduler = ComfyEulerScheduler(pipe.scheduler.config)  # KSampler samples as ComfyUI
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_image(pipe, wf: dict, **inputs) -> np.ndarray:
    k = wf["3"]["inputs"]
    steps = inputs.pop("num_inference_steps", k["steps"])
    return pipe(wf["6"]["inputs"]["text"], negative_prompt=wf["7"]["inputs"]["text"], num_inference_steps=steps,
                guidance_scale=k["cfg"], height=64, width=64, output_type="np",
                generator=torch.Generator("cpu").manual_seed(k["seed"]), **inputs).images


def report(what: str, ours: np.ndarray, expected: np.ndarray, record_property) -> float:
    assert ours.shape == expected.shape
    diff = float(np.abs(ours - expected).max())
    record_property("max_abs_diff", diff)
    print(f"\n{what}: max abs difference {diff}")
    return diff


def masked_inputs(loom) -> dict:
    """The pipeline's image and mask_image from the same file LoadImage reads (1 = repaint = transparent)."""
    rgba = np.asarray(Image.open(loom.env.input_dir / "masked.png"))
    return {"image": Image.fromarray(rgba[..., :3]), "mask_image": Image.fromarray(255 - rgba[..., 3])}


@pytest.mark.parametrize("ckpt", ["tiny-sdxl", "tiny-sdxl.safetensors"])
def test_sdxl_checkpoint(setup, ckpt, record_property):
    """CheckpointLoaderSimple -> CLIPTextEncode -> KSampler -> VAEDecode on an SDXL checkpoint vs
    StableDiffusionXLPipeline.from_pretrained of the same folder."""
    loom, models = setup
    wf = txt2img(ckpt)
    ours = decoded(loom, wf)
    expected = pipeline_image(pipeline("StableDiffusionXLPipeline", models / "checkpoints" / "tiny-sdxl"), wf)
    assert report(f"SDXL {ckpt} vs StableDiffusionXLPipeline", ours, expected, record_property) <= single_file_atol(ckpt)


@pytest.mark.parametrize("name", ["tiny-cn", "tiny-cn-ldm.safetensors"])
def test_controlnet_file(setup, name, record_property):
    """ControlNetLoader (models/controlnet: a diffusers folder, or lllyasviel's LDM layout in one file)
    + ControlNetApplyAdvanced (strength, start, end) vs StableDiffusionControlNetPipeline."""
    from diffusers import ControlNetModel

    loom, models = setup
    wf = with_controlnet(txt2img("tiny-sd"), name)
    ours = decoded(loom, wf)
    pipe = pipeline("StableDiffusionControlNetPipeline", models / "checkpoints" / "tiny-sd",
                    controlnet=ControlNetModel.from_pretrained(models / "controlnet" / "tiny-cn"))
    expected = pipeline_image(pipe, wf, image=Image.open(loom.env.input_dir / "hint.png"), **CN_PIPELINE)
    diff = report(f"ControlNet {name} vs StableDiffusionControlNetPipeline", ours, expected, record_property)
    assert diff <= single_file_atol(name)
    plain = decoded(loom, txt2img("tiny-sd"))
    assert np.abs(plain - ours).max() > 1e-3  # the ControlNet acts


@pytest.mark.parametrize("ckpt", ["tiny-sd-inpaint", "tiny-sd-inpaint.safetensors"])
def test_inpainting_checkpoint(setup, ckpt, record_property):
    """A 9-channel inpainting checkpoint: LoadImage (its alpha as MASK) -> InpaintModelConditioning
    -> KSampler from an empty latent vs StableDiffusionInpaintPipeline (strength 1) on the same folder.
    (InpaintModelConditioning's own latent and noise mask are ComfyUI's way, which the pipeline does
    not take for 9-channel UNets: its image latents noised at full strength, its mask pasted back.)"""
    loom, models = setup
    wf = txt2img(ckpt)
    wf.update({"20": {"class_type": "LoadImage", "inputs": {"image": "masked.png"}},
               "21": {"class_type": "InpaintModelConditioning", "inputs": {
                   "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["20", 0],
                   "mask": ["20", 1], "noise_mask": False}}})
    wf["3"]["inputs"].update(positive=["21", 0], negative=["21", 1])
    ours = decoded(loom, wf)
    pipe = pipeline("StableDiffusionInpaintPipeline", models / "checkpoints" / "tiny-sd-inpaint")
    assert pipe.unet.config.in_channels == 9
    expected = pipeline_image(pipe, wf, **masked_inputs(loom))
    diff = report(f"inpainting {ckpt} vs StableDiffusionInpaintPipeline", ours, expected, record_property)
    assert diff <= single_file_atol(ckpt)


def test_noise_mask_on_a_plain_checkpoint(setup, record_property):
    """LoadImage -> VAEEncode -> SetLatentNoiseMask -> KSampler (4 steps, denoise 0.8) on a 4-channel
    checkpoint vs ComfyUI's inpainting rule run on the pipeline's UNet loaded from the same folder: the
    last 4 sigmas of a 5-step schedule, the image's latents plus noise * sigma_0, and at every model
    call the kept area of the input is the image noised to that sigma, the prediction there the image.
    (diffusers' inpainting pipeline instead pastes the noised image back after each step.)"""
    loom, models = setup
    wf = txt2img("tiny-sd")
    wf.update({"20": {"class_type": "LoadImage", "inputs": {"image": "masked.png"}},
               "21": {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["4", 2]}},
               "22": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["21", 0], "mask": ["20", 1]}}})
    wf["3"]["inputs"].update(latent_image=["22", 0], denoise=0.8)
    ours = decoded(loom, wf)
    pipe = pipeline("StableDiffusionPipeline", models / "checkpoints" / "tiny-sd")
    image = run_node(loom, wf, "21")["samples"]
    alpha = np.asarray(Image.open(loom.env.input_dir / "masked.png"))[..., 3]
    mask = torch.from_numpy(1.0 - alpha.astype(np.float32) / 255.0)[None, None]
    mask = torch.nn.functional.interpolate(mask, size=image.shape[-2:], mode="bilinear")
    k = wf["3"]["inputs"]
    schedule = pipe.scheduler
    schedule.set_timesteps(int(k["steps"] / k["denoise"]))
    sigmas, log_table = schedule.sigmas[-(k["steps"] + 1):], schedule.table.log()
    embeds = torch.cat([pipe.encode_prompt(wf[n]["inputs"]["text"], "cpu", 1, False)[0] for n in ("7", "6")])
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(k["seed"]))
    x = noise * sigmas[0] + image
    with torch.no_grad():
        for i in range(len(sigmas) - 1):
            s = sigmas[i]
            blended = x * mask + (image + noise * s) * (1 - mask)
            x_in = blended / (s ** 2 + 1) ** 0.5
            t = (s.log() - log_table).abs().argmin().float()
            uncond, cond = pipe.unet(torch.cat([x_in, x_in]), t, encoder_hidden_states=embeds).sample.chunk(2)
            denoised = blended - (uncond + k["cfg"] * (cond - uncond)) * s
            denoised = denoised * mask + image * (1 - mask)
            x = x + (x - denoised) / s * (sigmas[i + 1] - s)
        expected = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample
    expected = (expected * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    # ComfyUI's rule written in the same operations as Loom's: the same floats
    assert report("noise mask on tiny-sd vs ComfyUI's rule on the pipeline's UNet", ours, expected,
                  record_property) == 0.0


def test_lora_with_controlnet(setup, record_property):
    """LoraLoader (a kohya file) then ControlNetApplyAdvanced vs StableDiffusionControlNetPipeline after
    load_lora_weights of the same file: the LoRA changes the UNet and text encoder, not the ControlNet."""
    from diffusers import ControlNetModel

    loom, models = setup
    wf = with_lora(with_controlnet(txt2img("tiny-sd"), "tiny-cn"), "tiny-lora.safetensors")
    ours = decoded(loom, wf)
    pipe = pipeline("StableDiffusionControlNetPipeline", models / "checkpoints" / "tiny-sd",
                    controlnet=ControlNetModel.from_pretrained(models / "controlnet" / "tiny-cn"))
    hint = Image.open(loom.env.input_dir / "hint.png")
    without = pipeline_image(pipe, wf, image=hint, **CN_PIPELINE)
    pipe.load_lora_weights(str(models / "loras" / "tiny-lora.safetensors"), adapter_name="x")
    pipe.set_adapters(["x"], adapter_weights=[LORA_STRENGTH])
    expected = pipeline_image(pipe, wf, image=hint, **CN_PIPELINE)
    assert np.abs(expected - without).max() > 0.01  # the LoRA acts
    assert report("LoRA + ControlNet vs the pipeline after load_lora_weights", ours, expected, record_property) == 0.0


def test_lora_on_sdxl(setup, record_property):
    """LoraLoader (kohya's SDXL layout: lora_unet_, lora_te1_, lora_te2_) on an SDXL checkpoint vs
    StableDiffusionXLPipeline after load_lora_weights of the same file: UNet and both text encoders."""
    loom, models = setup
    wf = with_lora(txt2img("tiny-sdxl"), "tiny-xl-lora.safetensors")
    ours = decoded(loom, wf)
    pipe = pipeline("StableDiffusionXLPipeline", models / "checkpoints" / "tiny-sdxl")
    without = pipeline_image(pipe, wf)
    pipe.load_lora_weights(str(models / "loras" / "tiny-xl-lora.safetensors"), adapter_name="x")
    pipe.set_adapters(["x"], adapter_weights=[LORA_STRENGTH])
    expected = pipeline_image(pipe, wf)
    assert np.abs(expected - without).max() > 0.01  # the LoRA acts
    assert report("SDXL LoRA vs StableDiffusionXLPipeline after load_lora_weights", ours, expected,
                  record_property) == 0.0

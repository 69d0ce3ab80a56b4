"""InstructPixToPixConditioning (nodes/comfy/instructpix2pix.py) on a tiny InstructPix2Pix-shaped model (a
UNet with 4 + 4 input channels): diffusers' StableDiffusionInstructPix2PixPipeline's pixels at
guidance 1 (one branch in both), and ComfyUI's API prompt runs."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests._sd import SEED, as_array, make_loom, pin_threads, pipeline_scheduler, run_node, workflow

NAME = "tiny-ip2p"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from nodes.loading.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("ip2p_models") / NAME, unet={"in_channels": 8})


@pytest.fixture(scope="module")
def loom(model, tmp_path_factory):
    pin_threads()
    loom = make_loom(tmp_path_factory.mktemp("data"), model.parent)
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(loom.env.input_dir / "edit.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(loom.env.input_dir / "other.png")
    Image.fromarray(rng.integers(0, 256, (67, 69, 3), dtype=np.uint8)).save(loom.env.input_dir / "odd.png")
    return loom


def edit_workflow(image="edit.png"):
    wf = workflow("txt2img", **{"1": {"model": NAME}, "8": {"guidance_scale": 1.0}})
    wf["40"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    wf["41"] = {"class_type": "InstructPixToPixConditioning",
                "inputs": {"positive": ["4", 0], "negative": ["5", 0], "vae": ["1", 3], "pixels": ["40", 0]}}
    wf["8"]["inputs"].update(positive=["41", 0], negative=["41", 1])
    return wf


def test_matches_the_instructpix2pix_pipeline(loom, model):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    wf = edit_workflow()
    image = as_array(run_node(loom, wf))
    other = as_array(run_node(loom, edit_workflow("other.png")))
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(model, safety_checker=None,
                                                                  requires_safety_checker=False)
    pipe.scheduler = pipeline_scheduler(pipe.scheduler.config, wf["6"]["inputs"]["kind"])
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(wf["2"]["inputs"]["text"], image=Image.open(loom.env.input_dir / "edit.png"),
                    num_inference_steps=wf["6"]["inputs"]["steps"], guidance_scale=1.0, image_guidance_scale=1.0,
                    generator=torch.manual_seed(SEED), output_type="np").images
    assert image.shape == expected.shape == (1, 64, 64, 3)
    assert np.abs(image - expected).max() == 0.0
    assert np.abs(image - other).max() > 1e-2  # the edited image matters


def test_comfyui_prompt_crops_to_the_vae_grid_and_runs(loom, model):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": NAME}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "make it blue", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "odd.png"}},
        "5": {"class_type": "InstructPixToPixConditioning",
              "inputs": {"positive": ["2", 0], "negative": ["3", 0], "vae": ["1", 2], "pixels": ["4", 0]}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["5", 0], "negative": ["5", 1], "latent_image": ["5", 2], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}}}
    result = loom.run(prompt)
    assert result.ok, result.error
    [path] = loom.image_paths(result)
    scale = 2 ** (len(json.loads((model / "vae" / "config.json").read_text())["block_out_channels"]) - 1)
    assert scale > 1 and Image.open(path).size == (69 // scale * scale, 67 // scale * scale)  # 69 x 67 cropped

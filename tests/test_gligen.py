"""GLIGEN (nodes/comfy/gligen.py) on the tiny SD model: a tiny GLIGEN model written in ComfyUI's file layout
loads, and boxed phrases give diffusers' StableDiffusionGLIGENPipeline's pixels; the classic
gligen_textbox_example template runs."""
import json
import shutil

import numpy as np
import pytest
import torch

from tests._sd import SEED, as_array, make_loom, pin_threads, pipeline_scheduler, run_node, workflow

GLIGEN_NAME = "tiny-gligen.safetensors"


def gated_unet(tiny_sd, seed: int = 0):
    """The tiny UNet with diffusers' GLIGEN layers (attention_type "gated"), random, gates open."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet", attention_type="gated",
                                                low_cpu_mem_usage=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the new layers are left uninitialised by from_pretrained: set them here
        for name, p in unet.named_parameters():
            if ".fuser." not in name and not name.startswith("position_net."):
                continue
            if name.endswith(("alpha_attn", "alpha_dense")):
                p.fill_(0.8)  # GLIGEN starts with closed gates (0): open them so the layers act
            elif ".norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))
    return unet.eval()


def write_comfy_gligen(unet, path) -> None:
    """The GLIGEN layers of a gated diffusers UNet as ComfyUI's GLIGEN file (LDM block names)."""
    from safetensors.torch import save_file

    from nodes.loading.ldm_layout import unet_to_ldm

    state = {k: v.contiguous() for k, v in unet.state_dict().items() if ".fuser." in k or k.startswith("position_net.")}
    fusers = unet_to_ldm({k: v for k, v in state.items() if ".fuser." in k}, unet.config)
    assert len(fusers) == sum(".fuser." in k for k in state) and all(".fuser." in k for k in fusers)
    save_file({**fusers, **{k: v for k, v in state.items() if k.startswith("position_net.")}}, str(path))


@pytest.fixture(scope="module")
def models(tiny_sd, tmp_path_factory):
    unet = gated_unet(tiny_sd)
    folder = tmp_path_factory.mktemp("gligen_models")
    (folder / "gligen").mkdir()
    write_comfy_gligen(unet, folder / "gligen" / GLIGEN_NAME)
    shutil.copytree(tiny_sd, folder / "tiny-sd")
    return folder, unet


@pytest.fixture(scope="module")
def loom(models, tmp_path_factory):
    pin_threads()
    return make_loom(tmp_path_factory.mktemp("data"), models[0])


def test_loaded_layers_are_the_files(loom, models):
    from nodes.comfy.gligen import transformer_blocks

    gligen = run_node(loom, {"1": {"class_type": "GLIGENLoader", "inputs": {"gligen_name": GLIGEN_NAME}}}, "1")
    blocks = transformer_blocks(models[1])
    assert len(gligen.fusers) == len(blocks) > 0
    for fuser, block in zip(gligen.fusers, blocks):  # in ComfyUI's transformer order
        for (name, a), (_, b) in zip(fuser.state_dict().items(), block.fuser.state_dict().items()):
            assert torch.equal(a, b), name
    assert all(torch.equal(a, b) for a, b in zip(gligen.position_net.state_dict().values(),
                                                 models[1].position_net.state_dict().values()))


def boxed_workflow(boxes):
    """txt2img at guidance 1 with GLIGEN boxes [(phrase, x, y, w, h)] on the positive prompt."""
    wf = workflow("txt2img", **{"8": {"guidance_scale": 1.0}})
    wf["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}}
    wf["21"] = {"class_type": "GLIGENLoader", "inputs": {"gligen_name": GLIGEN_NAME}}
    source = ["4", 0]
    for i, (text, x, y, w, h) in enumerate(boxes):
        wf[str(30 + i)] = {"class_type": "GLIGENTextBoxApply", "inputs": {
            "conditioning_to": source, "clip": ["20", 1], "gligen_textbox_model": ["21", 0], "text": text,
            "width": w, "height": h, "x": x, "y": y}}
        source = [str(30 + i), 0]
    wf["8"]["inputs"]["positive"] = source
    return wf


class PaddedPhrases:
    """The pipeline's tokenizer with phrases padded to 77 tokens as Loom's (and ComfyUI's) are: the
    pipeline pads them to the longest phrase, which gives the same pooled embedding (CLIP attends
    causally) but through differently shaped matmuls, so float32 rounding differs (3.6e-7 here)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, *args, **kwargs):
        if kwargs.get("padding") is True:
            kwargs.update(padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True)
        return self.tokenizer(*args, **kwargs)


def test_boxed_phrases_match_the_gligen_pipeline(loom, models, tiny_sd):
    from diffusers import StableDiffusionGLIGENPipeline, StableDiffusionPipeline

    boxes = [("a cat", 16, 8, 32, 40), ("a red ball", 0, 32, 24, 24)]
    wf = boxed_workflow(boxes)
    assert wf["8"]["class_type"] == "Sample" and wf["6"]["inputs"].get("kind", "euler")
    image = as_array(run_node(loom, wf))
    plain = as_array(run_node(loom, workflow("txt2img", **{"8": {"guidance_scale": 1.0}})))

    base = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)
    pipe = StableDiffusionGLIGENPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=PaddedPhrases(base.tokenizer),
                                         unet=models[1], scheduler=pipeline_scheduler(base.scheduler.config,
                                                                                      wf["6"]["inputs"]["kind"]),
                                         safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    scale = pipe.vae_scale_factor
    side = 64 // scale
    xyxy = [[x // scale / side, y // scale / side, (x // scale + w // scale) / side, (y // scale + h // scale) / side]
            for _, x, y, w, h in boxes]
    expected = pipe(wf["2"]["inputs"]["text"], gligen_phrases=[b[0] for b in boxes], gligen_boxes=xyxy,
                    gligen_scheduled_sampling_beta=1.0, num_inference_steps=wf["6"]["inputs"]["steps"],
                    guidance_scale=1.0, generator=torch.manual_seed(SEED), output_type="np").images
    assert image.shape == expected.shape == (1, 64, 64, 3)
    assert np.abs(image - expected).max() == 0.0
    assert np.abs(image - plain).max() > 1e-2  # the boxes change the picture


def test_gligen_template_runs(loom):
    from pathlib import Path

    from graph.formats import load

    path = Path(__file__).resolve().parent.parent / ".test-deps" / "comfyui-workflow-templates-0.1.48" / \
        "comfyui_workflow_templates" / "templates" / "gligen_textbox_example.json"
    prompt = load(json.loads(path.read_text()), loom.registry).prompt
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = "tiny-sd"
        elif node["class_type"] == "GLIGENLoader":
            inputs["gligen_name"] = GLIGEN_NAME
        elif node["class_type"] == "EmptyLatentImage":
            inputs.update(width=96, height=96)
        elif node["class_type"] == "KSampler":
            inputs["steps"] = 2
        elif node["class_type"] == "GLIGENTextBoxApply":  # the template's boxes, on a 768 -> 96 canvas
            inputs.update({k: max(8, inputs[k] // 8 // 8 * 8) if k in ("width", "height") else inputs[k] // 8 // 8 * 8
                           for k in ("width", "height", "x", "y")})
    result = loom.run(prompt)
    assert result.ok, result.error
    assert loom.image_paths(result)

"""HiDream I1 (issue 22): its family declaration, the tiny random models (diffusers folder and ComfyUI's
single files), the Llama text-encoder file, QuadrupleCLIPLoader, and ComfyUI's HiDream I1 templates on
Loom against HiDreamImagePipeline. Tiny: 32 px, 3 steps, batch 2."""
import json

import numpy as np
import pytest
import torch

import nodes.families as families
from nodes.families.hidream import FAMILY
from nodes.families.hidream.tiny import FILES, build_pipeline, comfy_files, write_comfy_files
from tests.test_zimage import ComfyFlowEuler


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline(0)


def test_the_declaration_is_the_published_model():
    assert FAMILY.latent.channels == 16 and (FAMILY.latent.scale, FAMILY.latent.shift) == (0.3611, 0.1159)
    assert (FAMILY.sampling.prediction, FAMILY.sampling.multiplier) == ("flow", 1000)
    assert families.family_of_clip_kinds(["t5xxl", "llama3_8b", "clip_g", "clip_l"]) == "hidream"
    from nodes.families.hidream import TRANSFORMER
    assert len(TRANSFORMER["llama_layers"]) == TRANSFORMER["num_layers"] + TRANSFORMER["num_single_layers"]
    assert TRANSFORMER["llama_layers"][31:] == [31] * 17


def test_comfyuis_single_files_hold_the_same_weights(pipe, tmp_path):
    """The transformer file is diffusers' layout (with or without ComfyUI's prefix); its config is read
    off the shapes; the Llama file reads back as the pipeline's Llama (its `model.` part)."""
    from pathlib import Path

    from nodes.families.hidream.files import transformer_config, transformer_from_file
    from nodes.loading.encoders import encoder_file
    from nodes.loading.encoders.llama import write_tiny_tokenizer

    files = comfy_files(pipe)
    original = files["transformer_dev"]
    assert families.family_of_unet_state_dict(original, "") == "hidream"
    assert families.family_of_unet_state_dict({"model.diffusion_model." + k: v for k, v in original.items()}) == "hidream"
    config = transformer_config(original)
    assert all(list(config[k]) == list(pipe.transformer.config[k]) if isinstance(config[k], list)
               else config[k] == pipe.transformer.config[k] for k in config)
    loaded = transformer_from_file(original).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in pipe.transformer.state_dict().items())
    found = encoder_file(files["llama"])
    assert found.kind == "llama3_8b" and encoder_file(files["t5xxl"]).kind == "t5xxl"
    write_tiny_tokenizer(tmp_path)
    tokenizer, model = found.load(files["llama"], Path(tmp_path) / "llama.safetensors")
    ids = tokenizer("a cat", return_tensors="pt").input_ids
    assert ids[0, 0] == tokenizer.bos_token_id and tokenizer.pad_token == "<|eot_id|>"
    with torch.no_grad():
        assert torch.equal(model(ids).last_hidden_state, pipe.text_encoder_4.model(ids).last_hidden_state)
    written = write_comfy_files(tmp_path / "models", pipe=pipe)
    assert {p.relative_to(tmp_path / "models").as_posix() for p in written.values()} == set(FILES.values())


@pytest.fixture(scope="module")
def loaded(pipe, tmp_path_factory):
    from graph import Env, Loom

    models = tmp_path_factory.mktemp("hidream_models")
    write_comfy_files(models, pipe=pipe)
    pipe.save_pretrained(models / "tiny-hidream", safe_serialization=True)
    loom = Loom(Env.from_data_dir(tmp_path_factory.mktemp("hidream_data"), models_dir=models, device="cpu",
                                  dtype="float32"))
    return loom, models


# the template, its node ids: (positive, negative, KSampler, latent, decode)
TEMPLATES = {"hidream_i1_dev": ("16", "40", "3", "53", "8"), "hidream_i1_fast": ("85", "90", "94", "84", "86"),
             "hidream_i1_full": ("91", "85", "93", "86", "89")}


def template_prompt(loom, name: str, **sampler) -> dict:
    """ComfyUI's template as the frontend posts it, at 32 px, batch 2, 3 steps, seed 42."""
    import comfyui_workflow_templates_json
    from pathlib import Path

    from graph.formats import load

    path = Path(comfyui_workflow_templates_json.__file__).parent / "templates" / f"{name}.json"
    prompt = load(json.loads(path.read_text()), loom.registry).prompt
    _, _, ksampler, latent, _ = TEMPLATES[name]
    prompt[latent]["inputs"].update(width=32, height=32, batch_size=2)
    prompt[ksampler]["inputs"].update(seed=42, steps=3, **sampler)
    return prompt


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_the_templates_run_as_posted(loaded, name):
    """Each I1 template (its sampler: lcm for Dev and Fast, uni_pc for Full) on the tiny files: two images."""
    from tests._sd import run_node

    loom, _ = loaded
    image = run_node(loom, template_prompt(loom, name), TEMPLATES[name][4])
    assert image.shape == (2, 32, 32, 3) and float(image[0].std()) > 0.01
    assert float((image[0] - image[1]).abs().max()) > 1e-3


@pytest.mark.parametrize("name,scheduler", [("hidream_i1_full", "simple"), ("hidream_i1_dev", "normal")])
def test_the_templates_match_the_pipeline(loaded, name, scheduler):
    """QuadrupleCLIPLoader + UNETLoader + VAELoader on the templates' file names, ModelSamplingSD3,
    CLIPTextEncode, KSampler (euler here; cfg 5 for Full, 1 for Dev), VAEDecode, against
    HiDreamImagePipeline from the same weights (its folder) given ComfyUI's noise, sigmas and euler,
    batch 2 at 32 px (the pipeline's default_sample_size set to 32 px, which it otherwise rescales to).
    The same operations in the same order (one transformer call on [negative, positive], the output
    negated, u + cfg * (c - u); CLIP prompts padded to the model's positions, T5 and Llama to 128 with
    masks): max abs difference 0."""
    from diffusers import HiDreamImagePipeline

    from nodes.comfy.ksampling.noise import prepare_noise
    from nodes.loading.single_file import own_aligned_memory
    from tests._sd import run_node

    loom, models = loaded
    positive, negative, ksampler, _, decode = TEMPLATES[name]
    prompt = template_prompt(loom, name, sampler_name="euler", scheduler=scheduler)
    ours = run_node(loom, prompt, decode).numpy()
    k = prompt[ksampler]["inputs"]
    shift = prompt[k["model"][0]]["inputs"]["shift"]
    from nodes.comfy.ksampling.denoiser import FlowSchedule
    from nodes.comfy.ksampling.schedules import ksampler_sigmas

    sigmas = ksampler_sigmas(FlowSchedule(shift, 1000), "euler", scheduler, k["steps"])
    reference = HiDreamImagePipeline.from_pretrained(models / "tiny-hidream")
    for part in reference.components.values():  # aligned memory, as Loom's loaders give (single_file.place)
        if isinstance(part, torch.nn.Module):
            own_aligned_memory(part)
    reference.scheduler = ComfyFlowEuler()
    reference.default_sample_size = 4
    reference.set_progress_bar_config(disable=True)
    theirs = reference(prompt[positive]["inputs"]["text"], negative_prompt=prompt[negative]["inputs"]["text"],
                       num_images_per_prompt=2, guidance_scale=k["cfg"], latents=prepare_noise((2, 16, 4, 4), 42),
                       height=32, width=32, num_inference_steps=k["steps"], sigmas=sigmas[:-1].tolist(),
                       output_type="np").images
    difference = float(np.abs(ours - theirs).max())
    assert ours.shape == (2, 32, 32, 3) and difference == 0.0, difference


def test_dual_cfg_combines_three_predictions_as_comfyui():
    """DualGuide's regular and nested combinations, and ComfyUI's skips (regular: no negative pass at
    cfg2 1, no middle one either at cfg1 1), on constant predictions."""
    from nodes.comfy.ksampling.dual import DualCFG, DualGuide

    values = {"p": 3.0, "m": 2.0, "n": 0.5}
    made = []

    def single(name):
        made.append(name)
        return lambda x, t, step, total: torch.full_like(x, values[name])

    x = torch.zeros(1)
    regular = DualGuide(single, "p", "n", DualCFG("m", 5.0, 2.0))(x, 0, 0, 1)
    assert float(regular) == 0.5 + 2.0 * (2.0 - 0.5) + 5.0 * (3.0 - 2.0)
    nested = DualGuide(single, "p", "n", DualCFG("m", 5.0, 2.0, nested=True))(x, 0, 0, 1)
    assert float(nested) == 0.5 + 2.0 * ((2.0 + 5.0 * (3.0 - 2.0)) - 0.5)
    made.clear()
    assert float(DualGuide(single, "p", "n", DualCFG("m", 5.0, 1.0))(x, 0, 0, 1)) == 2.0 + 5.0 * (3.0 - 2.0)
    assert made == ["p", "m"]
    made.clear()
    assert float(DualGuide(single, "p", "n", DualCFG("m", 1.0, 1.0))(x, 0, 0, 1)) == 3.0 and made == ["p"]


def test_the_e1_template_runs(loaded):
    """hidream_e1_full as posted (the tiny transformer under E1's name; the image scaled to 32 px):
    InstructPixToPixConditioning gives the image beside the noisy latents (ComfyUI's image_cond),
    DualCFGGuider (5, 2, regular) guides the three passes; two seeds, two images of the input's size."""
    import comfyui_workflow_templates_json
    from pathlib import Path

    from PIL import Image

    from graph.formats import load
    from tests._sd import run_node

    loom, _ = loaded
    path = Path(comfyui_workflow_templates_json.__file__).parent / "templates" / "hidream_e1_full.json"
    prompt = load(json.loads(path.read_text()), loom.registry).prompt
    name = prompt["13"]["inputs"]["image"]
    pixels = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    loom.env.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(loom.env.input_dir / name)
    prompt["44"]["inputs"].update(width=32, height=32)
    prompt["49"]["inputs"]["steps"] = 2
    images = []
    for seed in (1, 2):
        prompt["47"]["inputs"]["noise_seed"] = seed
        images.append(run_node(loom, prompt, "8"))
    assert images[0].shape == (1, 32, 32, 3) and float((images[0] - images[1]).abs().max()) > 1e-3

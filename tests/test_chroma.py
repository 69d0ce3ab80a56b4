"""Chroma (issue 22): its family declaration, the tiny random models (diffusers folder and ComfyUI's
single files), T5TokenizerOptions, and ComfyUI's Chroma template on Loom against ChromaPipeline.
Tiny: 32 px, 3 steps, batch 2."""
import json

import numpy as np
import pytest
import torch

import nodes.families as families
from nodes.families.chroma import FAMILY
from nodes.families.chroma.tiny import FILES, build_pipeline, comfy_files, write_comfy_files
from tests.test_zimage import ComfyFlowEuler

TEMPLATE = "image_chroma_text_to_image"
# Prompts of one token count (the pipeline pads both to one length; ComfyUI pads neither).
POSITIVE, NEGATIVE = "a photo of a cat", "a photo of a dog"


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline(0)


def test_the_declaration_is_the_published_model():
    assert FAMILY.latent.channels == 16 and (FAMILY.latent.scale, FAMILY.latent.shift) == (0.3611, 0.1159)
    assert FAMILY.latent.packed == 2 and (FAMILY.sampling.prediction, FAMILY.sampling.multiplier) == ("flow", 1.0)
    assert families.family_of_clip_kinds(["t5xxl"], "chroma") == "chroma"
    assert families.family_of_clip_kinds(["t5xxl"], "lumina2") is None


def test_comfyuis_single_files_hold_the_same_weights(pipe, tmp_path):
    """The transformer file converts back (diffusers' converter, single blocks split at the file's own
    width) to the exact diffusers weights; the registry recognises it, with or without ComfyUI's prefix."""
    from nodes.families.chroma.files import convert, transformer_config

    original = comfy_files(pipe)["transformer"]
    assert "double_blocks.0.img_attn.qkv.weight" in original and "single_blocks.0.linear1.weight" in original
    assert families.family_of_unet_state_dict(original, "") == "chroma"
    assert families.family_of_unet_state_dict({"model.diffusion_model." + k: v for k, v in original.items()}) == "chroma"
    back, expected = convert(dict(original), FAMILY.denoiser_converter), pipe.transformer.state_dict()
    assert back.keys() == expected.keys() and all(torch.equal(back[k], expected[k]) for k in expected)
    config = transformer_config(original)
    assert all(config[k] == pipe.transformer.config[k] for k in config if not isinstance(config[k], list))
    written = write_comfy_files(tmp_path, pipe=pipe)
    assert {p.relative_to(tmp_path).as_posix() for p in written.values()} == set(FILES.values())
    assert (tmp_path / "text_encoders" / "t5_tokenizer").is_dir()


def test_comfyuis_tokens_and_t5_tokenizer_options(pipe):
    """ComfyUI's Chroma tokens: the pieces and </s>, unpadded; min_padding pads appended, min_length
    pads up to a length (T5TokenizerOptions)."""
    from nodes.families.chroma.files import token_ids

    tok = pipe.tokenizer
    plain = token_ids(tok, "a cat")
    assert plain[-1] == tok.eos_token_id and tok.pad_token_id not in plain
    assert token_ids(tok, "a cat", min_padding=1) == plain + [tok.pad_token_id]
    assert token_ids(tok, "a cat", min_length=12) == plain + [tok.pad_token_id] * (12 - len(plain))
    assert len(token_ids(tok, POSITIVE)) == len(token_ids(tok, NEGATIVE))


@pytest.fixture(scope="module")
def loaded(pipe, tmp_path_factory):
    from graph import Env, Loom

    models = tmp_path_factory.mktemp("chroma_models")
    write_comfy_files(models, pipe=pipe)
    pipe.save_pretrained(models / "tiny-chroma", safe_serialization=True)
    loom = Loom(Env.from_data_dir(tmp_path_factory.mktemp("chroma_data"), models_dir=models, device="cpu",
                                  dtype="float32"))
    return loom, models


def template_prompt(loom, scheduler: str = "beta", steps: int = 3, seed: int = 42, min_padding: int = 0) -> dict:
    """ComfyUI's Chroma template as the frontend posts it, at 32 px, batch 2, a few steps."""
    import comfyui_workflow_templates_json
    from pathlib import Path

    from graph.formats import load

    path = Path(comfyui_workflow_templates_json.__file__).parent / "templates" / f"{TEMPLATE}.json"
    prompt = load(json.loads(path.read_text()), loom.registry).prompt
    prompt["737"]["inputs"].update(width=32, height=32, batch_size=2)
    prompt["734"]["inputs"].update(scheduler=scheduler, steps=steps)
    prompt["718"]["inputs"]["noise_seed"] = seed
    prompt["741"]["inputs"]["min_padding"] = min_padding
    prompt["748"]["inputs"]["text"], prompt["749"]["inputs"]["text"] = POSITIVE, NEGATIVE
    return prompt


def reference_images(models, sigmas, drop_mask: bool = False):
    """ChromaPipeline from the tiny folder with ComfyUI's euler, noise (seed 42) and sigmas, true CFG
    3.5, batch 2 at 32 px, padded to the prompts' own length (ComfyUI's tokens, its mask all ones).
    drop_mask: the transformer is given no mask where the pipeline's is all ones (as ComfyUI's)."""
    from diffusers import ChromaPipeline

    from nodes.comfy.ksampling.noise import prepare_noise
    from nodes.families.chroma.files import token_ids

    reference = ChromaPipeline.from_pretrained(models / "tiny-chroma")
    reference.scheduler = ComfyFlowEuler()
    reference.set_progress_bar_config(disable=True)
    if drop_mask:
        forward = reference.transformer.forward

        def without_mask(*args, attention_mask=None, **kwargs):
            assert bool(attention_mask.all())  # nothing masked: leaving it out changes no weight
            return forward(*args, attention_mask=None, **kwargs)

        reference.transformer.forward = without_mask
    noise = prepare_noise((2, 16, 4, 4), 42)
    return reference(POSITIVE, negative_prompt=NEGATIVE, num_images_per_prompt=2, guidance_scale=3.5,
                     latents=ChromaPipeline._pack_latents(noise, 2, 16, 4, 4), height=32, width=32,
                     num_inference_steps=len(sigmas) - 1, sigmas=sigmas[:-1].tolist(),
                     max_sequence_length=len(token_ids(reference.tokenizer, POSITIVE)), output_type="np").images


@pytest.mark.parametrize("scheduler", ["beta", "simple"])
def test_the_template_matches_the_pipeline(loaded, scheduler):
    """UNETLoader + CLIPLoader (chroma) + VAELoader on the template's file names, T5TokenizerOptions (0, 0),
    ModelSamplingAuraFlow (shift 1), CFGGuider (3.5), RandomNoise, BasicScheduler, euler,
    SamplerCustomAdvanced, VAEDecode, against ChromaPipeline (reference_images).
    Exact (0) when the pipeline's transformer is given no mask, as ComfyUI's; with the pipeline's own
    all-ones mask, tolerance 1e-5 on pixels in 0..1 (measured 2.1e-6 beta, 2.9e-6 simple): a mask makes
    torch's attention take another kernel, whose sums round differently."""
    from tests._sd import run_node

    loom, models = loaded
    prompt = template_prompt(loom, scheduler)
    ours = run_node(loom, prompt, "298").numpy()
    sigmas = run_node(loom, prompt, "734").values
    assert ours.shape == (2, 32, 32, 3) and float(np.abs(ours[0] - ours[1]).max()) > 1e-3  # two images
    assert float(np.abs(ours - reference_images(models, sigmas, drop_mask=True)).max()) == 0.0
    difference = float(np.abs(ours - reference_images(models, sigmas)).max())
    assert difference < 1e-5, difference


def test_min_padding_changes_the_conditioning(loaded):
    """T5TokenizerOptions' min_padding reaches the encoder: one pad token more, another image."""
    from tests._sd import run_node

    loom, _ = loaded
    plain = run_node(loom, template_prompt(loom, steps=2), "748")
    padded = run_node(loom, template_prompt(loom, steps=2, min_padding=1), "748")
    assert padded[0].embeds.shape[1] == plain[0].embeds.shape[1] + 1


def test_a_loaded_model_samples_with_the_declared_flow(loaded):
    """UNETLoader's MODEL alone: Chroma, flow sampling with multiplier 1 (timestep = sigma)."""
    from nodes.comfy.ksampling.denoiser import FlowSchedule
    from nodes.comfy.ksampling.ksampler import model_sampling
    from tests._sd import run_node

    model = run_node(loaded[0], {"1": {"class_type": "UNETLoader", "inputs": {
        "unet_name": "Chroma1-HD-fp8mixed.safetensors", "weight_dtype": "default"}}}, "1")
    ms = model_sampling(model)
    assert model.family == "chroma" and isinstance(ms, FlowSchedule) and ms.multiplier == 1.0

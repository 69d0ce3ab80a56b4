"""Loom's stage nodes (the tutorial's step-by-step graph: LoadCheckpoint, Tokenize, EncodeText,
MakeNoiseLatents, SetScheduler, UNetStep / Sample, VAEDecode) on the transformer families, through
each family's runtime (nodes.families.spec.Runtime.stage_*), against the family's diffusers pipeline
on the same tiny weights. Tiny: 32 px, batch 2, 3 steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graph import Env, Loom
from tests._sd import run_node

SEED, SIZE, STEPS = 5, 32, 3


@pytest.fixture(scope="module")
def zimage(tmp_path_factory):
    from nodes.families.zimage.tiny import build_pipeline

    from diffusers import ZImagePipeline

    models = tmp_path_factory.mktemp("stage_models")
    build_pipeline(0).save_pretrained(models / "tiny-zimage", safe_serialization=True)
    loom = Loom(Env.from_data_dir(tmp_path_factory.mktemp("stage_data"), models_dir=models, device="cpu",
                                  dtype="float32"))
    # the reference loaded from the same folder as Loom's model (a VAE built in memory decodes ~2e-6 apart
    # from the same weights loaded by from_pretrained)
    pipe = ZImagePipeline.from_pretrained(models / "tiny-zimage")
    pipe.set_progress_bar_config(disable=True)
    return loom, pipe


def step_by_step(model: str, guidance: float, kind: str = "euler", unet_steps: bool = False) -> dict:
    """The tutorial's graph; unet_steps: one UNetStep per step instead of Sample (the loop)."""
    wf = {
        "1": {"class_type": "LoadCheckpoint", "inputs": {"model": model}},
        "2": {"class_type": "Tokenize", "inputs": {"tokenizer": ["1", 0], "text": "a red cat"}},
        "3": {"class_type": "EncodeText", "inputs": {"text_encoder": ["1", 1], "tokens": ["2", 0]}},
        "12": {"class_type": "Tokenize", "inputs": {"tokenizer": ["1", 0], "text": "blurry"}},
        "13": {"class_type": "EncodeText", "inputs": {"text_encoder": ["1", 1], "tokens": ["12", 0]}},
        "4": {"class_type": "MakeNoiseLatents", "inputs": {"unet": ["1", 2], "width": SIZE, "height": SIZE,
                                                           "batch_size": 2, "seed": SEED}},
        "5": {"class_type": "SetScheduler", "inputs": {"scheduler": ["1", 4], "kind": kind, "steps": STEPS}},
    }
    guided = {"unet": ["1", 2], "scheduler": ["5", 0], "positive": ["3", 0], "negative": ["13", 0],
              "guidance_scale": guidance}
    if unet_steps:
        source = ["4", 0]
        for i in range(STEPS):
            wf[f"s{i}"] = {"class_type": "UNetStep", "inputs": {**guided, "latents": source, "step": i}}
            source = [f"s{i}", 0]
    else:
        wf["6"] = {"class_type": "Sample", "inputs": {**guided, "latents": ["4", 0]}}
        source = ["6", 0]
    wf["7"] = {"class_type": "VAEDecode", "inputs": {"samples": source, "vae": ["1", 3]}}
    return wf


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_zimage_step_by_step_gives_the_pipelines_pixels(zimage, guidance):
    """ZImagePipeline (its own FlowMatchEulerDiscreteScheduler and sigmas, per-image generators seed + i)
    given the text features Loom's EncodeText made: max abs difference 0, the same operations in the
    same order. Loom's guidance g is u + g (c - u), the pipeline's guidance_scale g - 1."""
    loom, pipe = zimage
    wf = step_by_step("tiny-zimage", guidance)
    ours = run_node(loom, wf, "7").numpy()
    positive, negative = run_node(loom, wf, "3")[0].embeds[0], run_node(loom, wf, "13")[0].embeds[0]
    theirs = pipe(prompt_embeds=[positive, positive], negative_prompt_embeds=[negative, negative],
                  guidance_scale=guidance - 1, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                  generator=[torch.Generator().manual_seed(SEED + i) for i in range(2)], output_type="np").images
    assert ours.shape == (2, SIZE, SIZE, 3) and float(np.abs(ours - theirs).max()) == 0.0
    assert float(np.abs(ours[0] - ours[1]).max()) > 1e-3  # two seeds, two pictures


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_zimage_unet_steps_equal_the_loop(zimage, guidance):
    """One UNetStep per step (each continuing the LATENT's scheduler) gives the Sample node's pixels exactly."""
    loom, _ = zimage
    loop = run_node(loom, step_by_step("tiny-zimage", guidance), "7")
    steps = run_node(loom, step_by_step("tiny-zimage", guidance, unet_steps=True), "7")
    assert float((loop - steps).abs().max()) == 0.0 and float(loop.std()) > 0.01


def test_zimage_text_stages_equal_the_whole_encoder_and_the_pipeline(zimage):
    """Tokenize + EncodeText give CLIPTextEncode's features (the family's Runtime.encode) exactly, and
    the pipeline's encode_prompt within 1e-5: it pads the prompt to max_sequence_length with an
    attention mask and keeps the unmasked rows, Loom (as ComfyUI) does not pad; float32 rounding."""
    from nodes.families import runtime_of
    from nodes.loading.bundles import Clip

    loom, pipe = zimage
    ours = run_node(loom, step_by_step("tiny-zimage", 1.0), "3")[0].embeds
    whole = runtime_of("zimage").encode(Clip(pipe.tokenizer, pipe.text_encoder, family="zimage"), "a red cat")[0]
    assert torch.equal(ours, whole.embeds)
    (theirs,), _ = pipe.encode_prompt("a red cat", do_classifier_free_guidance=False, max_sequence_length=64)
    assert ours.shape[1:] == theirs.shape and float((ours[0] - theirs).abs().max()) < 1e-5


def test_family_stage_nodes_refuse_what_they_do_not_run_yet(zimage):
    loom, _ = zimage
    wf = step_by_step("tiny-zimage", 1.0)
    wf["20"] = {"class_type": "SetScheduler", "inputs": {"scheduler": ["1", 4], "kind": "pndm", "steps": 2}}
    wf["6"]["inputs"]["scheduler"] = ["20", 0]
    result = loom.run(loom.validate(wf, outputs=["6"]))
    assert not result.ok and "'pndm' does not run on a flow-matching model" in str(result.error)


# --- Flux.1 (dev: the guidance embedding) ----------------------------------------------------------

@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    from diffusers import FluxPipeline

    from nodes.families.flux.tiny import write_folder

    models = tmp_path_factory.mktemp("stage_flux_models")
    write_folder(models / "tiny-flux", seed=0)
    loom = Loom(Env.from_data_dir(tmp_path_factory.mktemp("stage_flux_data"), models_dir=models, device="cpu",
                                  dtype="float32"))
    pipe = FluxPipeline.from_pretrained(models / "tiny-flux")
    pipe.set_progress_bar_config(disable=True)
    return loom, pipe


def flux_step_by_step(guidance: float, unet_steps: bool = False) -> dict:
    """The tutorial's graph with Flux's two encoders: CLIP-L (tokenizer, text_encoder) and T5
    (tokenizer_2, text_encoder_2) into EncodeTextSDXL."""
    wf = step_by_step("tiny-flux", guidance, unet_steps=unet_steps)
    for prompt, tokens, encode in (("a red cat", "2", "3"), ("blurry", "12", "13")):
        wf[tokens + "t5"] = {"class_type": "Tokenize", "inputs": {"tokenizer": ["1", 5], "text": prompt}}
        wf[encode] = {"class_type": "EncodeTextSDXL",
                      "inputs": {"text_encoder": ["1", 1], "tokens": [tokens, 0], "text_encoder_2": ["1", 6],
                                 "tokens_2": [tokens + "t5", 0]}}
    return wf


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_flux_step_by_step_gives_the_pipelines_pixels(flux, guidance):
    """FluxPipeline (its scheduler, sigmas and resolution shift; embedded guidance 3.5, its default; Loom's
    g as its true_cfg_scale with the negative prompt) given Loom's text features: max abs difference 0."""
    loom, pipe = flux
    wf = flux_step_by_step(guidance)
    ours = run_node(loom, wf, "7").numpy()
    (positive,), (negative,) = run_node(loom, wf, "3"), run_node(loom, wf, "13")
    # a batch of 2 features (given one, the pipeline feeds the transformer one row for both images,
    # which rounds its text projection differently: ~4e-7)
    two = lambda t: t.repeat(2, *(1,) * (t.ndim - 1))  # noqa: E731
    theirs = pipe(prompt_embeds=two(positive.embeds), pooled_prompt_embeds=two(positive.pooled),
                  negative_prompt_embeds=two(negative.embeds), negative_pooled_prompt_embeds=two(negative.pooled),
                  true_cfg_scale=guidance, height=SIZE, width=SIZE,
                  num_inference_steps=STEPS, generator=[torch.Generator().manual_seed(SEED + i) for i in range(2)],
                  output_type="np").images
    assert ours.shape == (2, SIZE, SIZE, 3) and float(np.abs(ours - theirs).max()) == 0.0
    assert float(np.abs(ours[0] - ours[1]).max()) > 1e-3


def test_flux_unet_steps_equal_the_loop_and_text_equals_cliptextencode(flux):
    from nodes.families import runtime_of
    from nodes.loading.bundles import Clip

    loom, pipe = flux
    loop = run_node(loom, flux_step_by_step(3.0), "7")
    steps = run_node(loom, flux_step_by_step(3.0, unet_steps=True), "7")
    assert float((loop - steps).abs().max()) == 0.0 and float(loop.std()) > 0.01
    (ours,) = run_node(loom, flux_step_by_step(1.0), "3")
    clip = Clip(pipe.tokenizer, pipe.text_encoder, pipe.tokenizer_2, pipe.text_encoder_2, family="flux")
    (whole,) = runtime_of("flux").encode(clip, "a red cat")
    assert torch.equal(ours.embeds, whole.embeds) and torch.equal(ours.pooled, whole.pooled)

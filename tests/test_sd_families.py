"""SDXL (base and refiner) and SD 2.x (v-prediction) through Loom's nodes against diffusers' own
pipelines on the same tiny random models: the same pixels. Each test prints its max abs difference."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.common import call
from tests._sd_families import as_image, context, picture, sd, sdxl

STEPS, CFG, SEED = 5, 6.0, 3
PROMPT, NEGATIVE = "a red fox in a snowy forest", "blurry, low quality"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.set_num_threads(1)  # same reductions as the pipeline; the machine's cores are shared
    return context(tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="module")
def base():
    return sdxl()


def report(name: str, ours: np.ndarray, expected: np.ndarray) -> float:
    assert ours.shape == expected.shape
    diff = float(np.abs(ours - expected).max())
    print(f"\n{name}: max abs difference {diff}")
    return diff


def xl_pipeline(m, cls_name="StableDiffusionXLPipeline", scheduler=None, **extra):
    import diffusers

    clip = m["clip"]
    pipe = getattr(diffusers, cls_name)(
        vae=m["vae"], text_encoder=clip.text_encoder, text_encoder_2=clip.text_encoder_2, tokenizer=clip.tokenizer,
        tokenizer_2=clip.tokenizer_2, unet=m["model"].unet, scheduler=scheduler or m["scheduler"],
        add_watermarker=False, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def decode(ctx, vae, latents) -> np.ndarray:
    from nodes.latent import VAEDecode

    return call(VAEDecode, ctx, vae=vae, samples=latents).numpy()


def ksampler(ctx, m, positive, negative, sampler="euler", scheduler="normal", size=64, steps=STEPS, **inputs):
    from nodes.comfy.core import EmptyLatentImage, KSampler

    latent = call(EmptyLatentImage, ctx, width=size, height=size, batch_size=1)
    out = call(KSampler, ctx, model=m["model"], seed=SEED, steps=steps, cfg=CFG, sampler_name=sampler,
               scheduler=scheduler, positive=positive, negative=negative, latent_image=latent, **inputs)
    return decode(ctx, m["vae"], out)


def staged(ctx, m, positive, negative, size=64, steps=STEPS):
    """MakeNoiseLatents + SetScheduler (euler, the checkpoint's settings) + Sample: Loom's stage nodes,
    which keep diffusers' semantics (KSampler samples as ComfyUI does, not as the pipelines)."""
    from nodes.latent import MakeNoiseLatents
    from nodes.sampling import Sample, SetScheduler

    latents = call(MakeNoiseLatents, ctx, unet=m["model"].unet, width=size, height=size, seed=SEED)
    spec = call(SetScheduler, ctx, scheduler=m["model"].scheduler, kind="euler", steps=steps)
    out = call(Sample, ctx, unet=m["model"].unet, scheduler=spec, latents=latents, positive=positive,
               negative=negative, guidance_scale=CFG)
    return decode(ctx, m["vae"], out)


def encode(ctx, clip, text):
    from nodes.comfy.core import CLIPTextEncode

    return call(CLIPTextEncode, ctx, clip=clip, text=text)


# --- SDXL ---------------------------------------------------------------------------------------

def test_sdxl_prompt_encoding_is_the_pipelines(ctx, base):
    """Penultimate layers of both encoders concatenated, pooled output from the second: exactly
    encode_prompt's; CLIPTextEncodeSDXL's text_l / text_g are the pipeline's prompt / prompt_2."""
    from nodes.comfy.core import CLIPTextEncodeSDXL

    pipe = xl_pipeline(base)
    (entry,) = encode(ctx, base["clip"], PROMPT)
    embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
    assert torch.equal(entry.embeds, embeds) and torch.equal(entry.pooled, pooled)
    assert entry.embeds.shape == (1, 77, 64) and entry.pooled.shape == (1, 32)
    (split,) = call(CLIPTextEncodeSDXL, ctx, clip=base["clip"], width=96, height=80, crop_w=8, crop_h=16,
                    target_width=64, target_height=48, text_g="a castle", text_l=PROMPT)
    embeds_2, _, pooled_2, _ = pipe.encode_prompt(PROMPT, prompt_2="a castle", device="cpu",
                                                  do_classifier_free_guidance=False)
    assert torch.equal(split.embeds, embeds_2) and torch.equal(split.pooled, pooled_2)
    assert (split.width, split.height, split.crop_w, split.crop_h, split.target_width, split.target_height) == \
        (96, 80, 8, 16, 64, 48)


def test_sdxl_txt2img_matches_pipeline(ctx, base):
    """CLIPTextEncode + the stage nodes (euler) on an SDXL model: added_cond_kwargs (pooled
    embeddings, size time ids of the image) as StableDiffusionXLPipeline passes them."""
    from diffusers import EulerDiscreteScheduler

    ours = staged(ctx, base, encode(ctx, base["clip"], PROMPT), encode(ctx, base["clip"], NEGATIVE))
    scheduler = EulerDiscreteScheduler.from_config(base["scheduler"].config)
    expected = xl_pipeline(base, scheduler=scheduler)(
        PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, height=64, width=64,
        generator=torch.Generator().manual_seed(SEED), output_type="np").images
    assert report("SDXL txt2img vs StableDiffusionXLPipeline", ours, expected) == 0.0


def test_sdxl_size_conditioning_matches_pipeline(ctx, base):
    """CLIPTextEncodeSDXL's original size, crop and target size are the pipeline's original_size,
    crops_coords_top_left and target_size (and they change the picture)."""
    from diffusers import EulerDiscreteScheduler

    from nodes.comfy.core import CLIPTextEncodeSDXL

    sizes = dict(width=128, height=96, crop_w=16, crop_h=8, target_width=64, target_height=64)
    pos = call(CLIPTextEncodeSDXL, ctx, clip=base["clip"], text_g=PROMPT, text_l=PROMPT, **sizes)
    neg = call(CLIPTextEncodeSDXL, ctx, clip=base["clip"], text_g=NEGATIVE, text_l=NEGATIVE, **sizes)
    ours = staged(ctx, base, pos, neg, steps=3)
    scheduler = EulerDiscreteScheduler.from_config(base["scheduler"].config)
    expected = xl_pipeline(base, scheduler=scheduler)(
        PROMPT, negative_prompt=NEGATIVE, num_inference_steps=3, guidance_scale=CFG, height=64, width=64,
        original_size=(96, 128), crops_coords_top_left=(8, 16), target_size=(64, 64),
        negative_original_size=(96, 128), negative_crops_coords_top_left=(8, 16), negative_target_size=(64, 64),
        generator=torch.Generator().manual_seed(SEED), output_type="np").images
    assert report("SDXL size conditioning vs pipeline", ours, expected) == 0.0
    plain = staged(ctx, base, encode(ctx, base["clip"], PROMPT), encode(ctx, base["clip"], NEGATIVE), steps=3)
    assert np.abs(plain - ours).max() > 1e-4


def test_sdxl_refiner_img2img_matches_pipeline(ctx):
    """The refiner (second encoder only, aesthetic-score time ids) refining an image:
    CLIPTextEncodeSDXLRefiner + VAEEncode + MakeNoiseLatents + Sample vs StableDiffusionXLImg2ImgPipeline."""
    from nodes.comfy.core import CLIPTextEncodeSDXLRefiner
    from nodes.latent import MakeNoiseLatents, VAEEncode
    from nodes.sampling import Sample, SetScheduler

    refiner = sdxl(refiner=True, seed=10)
    clip = refiner["clip"]
    pos = call(CLIPTextEncodeSDXLRefiner, ctx, clip=clip, text=PROMPT, ascore=7.0, width=64, height=64)
    neg = call(CLIPTextEncodeSDXLRefiner, ctx, clip=clip, text=NEGATIVE, ascore=2.0, width=64, height=64)
    image = picture()
    encoded = call(VAEEncode, ctx, vae=refiner["vae"], pixels=as_image(image))
    latents = call(MakeNoiseLatents, ctx, unet=refiner["model"].unet, image=encoded, seed=SEED, batch_size=1)
    schedule = call(SetScheduler, ctx, scheduler=refiner["model"].scheduler, kind="euler", steps=8, strength=0.6)
    out = call(Sample, ctx, unet=refiner["model"].unet, scheduler=schedule, latents=latents, positive=pos,
               negative=neg, guidance_scale=CFG)
    ours = decode(ctx, refiner["vae"], out)
    pipe = xl_pipeline(refiner, "StableDiffusionXLImg2ImgPipeline", requires_aesthetics_score=True)
    expected = pipe(PROMPT, negative_prompt=NEGATIVE, image=Image.fromarray(image), strength=0.6,
                    num_inference_steps=8, guidance_scale=CFG, aesthetic_score=7.0, negative_aesthetic_score=2.0,
                    generator=torch.Generator().manual_seed(SEED), output_type="np").images
    assert report("SDXL refiner img2img vs StableDiffusionXLImg2ImgPipeline", ours, expected) == 0.0


def test_sdxl_needs_its_pooled_embedding(ctx, base):
    """An SD 1.x conditioning on an SDXL UNet is refused by name, not with a shape error deep inside."""
    sd1 = sd()
    cond = encode(ctx, sd1["clip"], PROMPT)
    with pytest.raises(ValueError, match="pooled text embedding"):
        ksampler(ctx, base, cond, cond, steps=1)


# --- SD 2.x ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler, scheduler", [("ddim", "checkpoint"), ("euler", "normal")])
def test_sd2_v_prediction_matches_pipeline(ctx, sampler, scheduler):
    """A v-prediction model: the checkpoint's prediction_type reaches every scheduler (its own DDIM and
    Euler through SetScheduler); KSampler (ComfyUI's sampling) turns v into denoised latents too: its
    picture is the pipeline's Euler one up to the two samplers' own differences (sigmas interpolated in
    log sigma, noise * sqrt(1 + sigma^2)): < 0.03 here, where reading v as epsilon is off by > 0.1."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from nodes.latent import MakeNoiseLatents
    from nodes.sampling import Sample, SetScheduler

    m = sd("sd2", seed=20)
    assert m["model"].scheduler.config["prediction_type"] == "v_prediction"
    pos, neg = encode(ctx, m["clip"], PROMPT), encode(ctx, m["clip"], NEGATIVE)
    pipe = StableDiffusionPipeline(vae=m["vae"], text_encoder=m["clip"].text_encoder, tokenizer=m["tokenizer"],
                                   unet=m["model"].unet, scheduler=m["scheduler"], safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if scheduler == "checkpoint":
        latents = call(MakeNoiseLatents, ctx, unet=m["model"].unet, width=64, height=64, seed=SEED)
        spec = call(SetScheduler, ctx, scheduler=m["model"].scheduler, kind="ddim", steps=STEPS)
        out = call(Sample, ctx, unet=m["model"].unet, scheduler=spec, latents=latents, positive=pos, negative=neg,
                   guidance_scale=CFG)
        ours = decode(ctx, m["vae"], out)
    else:
        ours = staged(ctx, m, pos, neg)
        comfy = ksampler(ctx, m, pos, neg)
        pipe.scheduler = EulerDiscreteScheduler.from_config(m["scheduler"].config)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    expected = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, height=64,
                    width=64, generator=torch.Generator().manual_seed(SEED), output_type="np").images
    assert report(f"SD 2.x v-prediction ({sampler}) vs StableDiffusionPipeline", ours, expected) == 0.0
    if scheduler != "checkpoint":
        linspace = EulerDiscreteScheduler.from_config(m["scheduler"].config, timestep_spacing="linspace")
        pipe.scheduler = linspace
        expected = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, height=64,
                        width=64, generator=torch.Generator().manual_seed(SEED), output_type="np").images
        assert np.abs(comfy - expected).max() < 0.03
        as_epsilon = {**m, "model": replace(m["model"], scheduler=replace(
            m["model"].scheduler, config={**m["model"].scheduler.config, "prediction_type": "epsilon"}))}
        assert np.abs(ksampler(ctx, as_epsilon, pos, neg) - expected).max() > 0.1


# --- CLIPSetLastLayer -----------------------------------------------------------------------------

def test_clip_set_last_layer_per_family(ctx, base):
    """SD 1.x: -2 is clip skip 1 (the layer before the last, then the final norm). SD 2.x and SDXL:
    -1 and -2 are the default (the penultimate layer, as ComfyUI), -3 one earlier."""
    from nodes.comfy.core import CLIPSetLastLayer
    from nodes.text import EncodeText, EncodeTextSDXL, Tokenize

    def at(clip, layer):
        return encode(ctx, call(CLIPSetLastLayer, ctx, clip=clip, stop_at_clip_layer=layer), PROMPT)[0].embeds

    sd1 = sd()
    tokens = call(Tokenize, ctx, tokenizer=sd1["tokenizer"], text=PROMPT)
    skip1 = call(EncodeText, ctx, text_encoder=sd1["clip"].text_encoder, tokens=tokens, clip_skip=1)[0].embeds
    assert torch.equal(at(sd1["clip"], -2), skip1)
    assert torch.equal(at(sd1["clip"], -1), encode(ctx, sd1["clip"], PROMPT)[0].embeds)
    assert not torch.equal(at(sd1["clip"], -1), skip1)

    sd2 = sd("sd2", seed=20)
    assert torch.equal(at(sd2["clip"], -2), at(sd2["clip"], -1))
    tokens = call(Tokenize, ctx, tokenizer=sd2["tokenizer"], text=PROMPT)
    skip1 = call(EncodeText, ctx, text_encoder=sd2["clip"].text_encoder, tokens=tokens, clip_skip=1)[0].embeds
    assert torch.equal(at(sd2["clip"], -3), skip1)

    clip = base["clip"]
    assert torch.equal(at(clip, -2), encode(ctx, clip, PROMPT)[0].embeds)
    tokens = call(Tokenize, ctx, tokenizer=clip.tokenizer, text=PROMPT)
    tokens_2 = call(Tokenize, ctx, tokenizer=clip.tokenizer_2, text=PROMPT)  # OpenCLIP's: padded with "!"
    earlier = call(EncodeTextSDXL, ctx, text_encoder=clip.text_encoder, tokens=tokens,
                   text_encoder_2=clip.text_encoder_2, tokens_2=tokens_2, clip_skip=1)[0]
    embeds, _, pooled, _ = xl_pipeline(base).encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False,
                                                           clip_skip=1)
    assert torch.equal(at(clip, -3), earlier.embeds) and torch.equal(earlier.embeds, embeds)
    assert torch.equal(earlier.pooled, pooled)  # the pooled output never skips layers
    with pytest.raises(ValueError, match="clip_skip 5 must be smaller"):
        at(sd1["clip"], -6)

"""Inpainting: a 9-channel inpainting UNet and a noise mask on a plain UNet, against
StableDiffusionInpaintPipeline on the same tiny random models; ComfyUI's inpainting nodes."""
import numpy as np
import pytest
import torch
from PIL import Image

from nodes.common import call
from tests._sd_families import as_image, context, picture, sd
from tests.test_sd_families import CFG, NEGATIVE, PROMPT, SEED, decode, encode, ksampler, report

STEPS = 5


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.set_num_threads(1)
    return context(tmp_path_factory.mktemp("inpaint"))


@pytest.fixture(scope="module")
def inpainter():
    """An inpainting UNet: 9 input channels (latents, mask, masked image latents)."""
    return sd(in_channels=9, seed=60)


@pytest.fixture(scope="module")
def image():
    return picture()


@pytest.fixture(scope="module")
def mask_array():
    """1 (255) = repaint: a block whose edges fall on latent pixels (the tiny VAE halves the size),
    so nearest and bilinear resizing agree."""
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 8:40] = 255
    return mask


def as_mask(array: np.ndarray) -> torch.Tensor:
    """MASK (1, H, W) in 0..1, ComfyUI's convention."""
    return torch.from_numpy(array.astype(np.float32) / 255.0)[None]


def inpaint_pipeline(m, kind: str):
    import diffusers

    from tests._sd import pipeline_scheduler

    pipe = diffusers.StableDiffusionInpaintPipeline(
        vae=m["vae"], text_encoder=m["clip"].text_encoder, tokenizer=m["tokenizer"], unet=m["model"].unet,
        scheduler=pipeline_scheduler(m["scheduler"].config, kind), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(ctx, m, latents, positive, negative, kind, strength=1.0):
    from nodes.sampling import Sample, SetScheduler

    spec = call(SetScheduler, ctx, scheduler=m["model"].scheduler, kind=kind, steps=STEPS, strength=strength)
    out = call(Sample, ctx, unet=m["model"].unet, scheduler=spec, latents=latents, positive=positive,
               negative=negative, guidance_scale=CFG)
    return decode(ctx, m["vae"], out)


@pytest.mark.parametrize("kind", ["ddim", "euler_ancestral"])
def test_inpainting_unet_matches_pipeline(ctx, inpainter, image, mask_array, kind):
    """A 9-channel UNet: InpaintConditioning (mask + masked image latents, sampled with the image's
    seed right after the noise) + MakeNoiseLatents + Sample vs StableDiffusionInpaintPipeline."""
    from nodes.inpaint import InpaintConditioning
    from nodes.latent import MakeNoiseLatents

    m = inpainter
    positive, negative = call(InpaintConditioning, ctx, positive=encode(ctx, m["clip"], PROMPT),
                              negative=encode(ctx, m["clip"], NEGATIVE), vae=m["vae"], image=as_image(image),
                              mask=as_mask(mask_array))
    latents = call(MakeNoiseLatents, ctx, unet=m["model"].unet, width=64, height=64, seed=SEED)
    ours = sample(ctx, m, latents, positive, negative, kind)
    expected = inpaint_pipeline(m, kind)(
        PROMPT, negative_prompt=NEGATIVE, image=Image.fromarray(image), mask_image=Image.fromarray(mask_array),
        num_inference_steps=STEPS, guidance_scale=CFG, generator=torch.Generator().manual_seed(SEED),
        output_type="np").images
    assert report(f"inpainting UNet ({kind}) vs StableDiffusionInpaintPipeline", ours, expected) == 0.0


def test_noise_mask_matches_pipeline_with_a_plain_unet(ctx, image, mask_array):
    """A 4-channel UNet with SetLatentNoiseMask: outside the mask the latents are reset to the image
    noised to the next step's level after every step, as the pipeline does (strength 0.8)."""
    from nodes.inpaint import SetLatentNoiseMask
    from nodes.latent import MakeNoiseLatents, VAEEncode

    m = sd(seed=70)
    encoded = call(VAEEncode, ctx, vae=m["vae"], pixels=as_image(image))
    latents = call(MakeNoiseLatents, ctx, unet=m["model"].unet, image=encoded, seed=SEED)
    latents = call(SetLatentNoiseMask, ctx, samples=latents, mask=as_mask(mask_array))
    positive, negative = encode(ctx, m["clip"], PROMPT), encode(ctx, m["clip"], NEGATIVE)
    ours = sample(ctx, m, latents, positive, negative, "ddim", strength=0.8)
    expected = inpaint_pipeline(m, "ddim")(
        PROMPT, negative_prompt=NEGATIVE, image=Image.fromarray(image), mask_image=Image.fromarray(mask_array),
        strength=0.8, num_inference_steps=STEPS, guidance_scale=CFG, generator=torch.Generator().manual_seed(SEED),
        output_type="np").images
    assert report("noise mask, 4-channel UNet vs StableDiffusionInpaintPipeline", ours, expected) == 0.0
    # Outside the mask the picture stays the image's (what the VAE round trip gives), inside it changes.
    unmasked = sample(ctx, m, latents.replace(noise_mask=None), positive, negative, "ddim",
                      strength=0.8)
    inside = mask_array > 0
    assert np.abs(ours - unmasked)[0][inside].max() > 1e-3 and np.abs(ours - unmasked)[0][~inside].max() > 1e-3


def test_comfy_inpaint_nodes(ctx, inpainter, image, mask_array):
    """InpaintModelConditioning and VAEEncodeForInpaint + KSampler on an inpainting UNet: with a
    noise mask the latents outside it end as the image's own (ComfyUI's rule: the prediction there is
    the source; the last Euler step lands on it to float rounding), without one the sampler changes them."""
    from nodes.comfy.core import InpaintModelConditioning
    from nodes.inpaint import VAEEncodeForInpaint

    m = inpainter
    pos, neg = encode(ctx, m["clip"], PROMPT), encode(ctx, m["clip"], NEGATIVE)
    mask = as_mask(mask_array)
    outside = torch.from_numpy(mask_array[::2, ::2] == 0)  # latent pixels (the tiny VAE halves the size)
    for noise_mask in (True, False):
        p, n, latent = call(InpaintModelConditioning, ctx, positive=pos, negative=neg, vae=m["vae"],
                            pixels=as_image(image), mask=mask, noise_mask=noise_mask)
        assert ("noise_mask" in latent) == noise_mask and p[0].inpaint is not None and n[0].inpaint is p[0].inpaint
        out = _ksample(ctx, m, p, n, latent)
        source = latent["samples"]
        kept = torch.allclose(out["samples"][..., outside], source[..., outside], atol=1e-5)
        assert kept == noise_mask
        assert not torch.allclose(out["samples"][..., ~outside], source[..., ~outside], atol=1e-2)
    latent = call(VAEEncodeForInpaint, ctx, pixels=as_image(image), vae=m["vae"], mask=mask, grow_mask_by=6)
    grown = latent["noise_mask"][0, 0].numpy()
    # a 6-pixel square kernel (ComfyUI's padding): 2 pixels more above and left, 3 below and right
    assert grown.shape == (64, 64) and grown[14:51, 6:43].all() and not grown[:14].any() and not grown[:, 43:].any()
    out = _ksample(ctx, m, pos, neg, latent)  # the extra channels come from the latent's mask and image
    small = torch.nn.functional.interpolate(latent["noise_mask"], size=(32, 32), mode="bilinear")[0, 0]
    assert torch.allclose(out["samples"][..., small == 0], latent["samples"][..., small == 0], atol=1e-5)


def _ksample(ctx, m, positive, negative, latent):
    from nodes.comfy.core import KSampler

    return call(KSampler, ctx, model=m["model"], seed=SEED, steps=3, cfg=CFG, sampler_name="euler",
                scheduler="normal", positive=positive, negative=negative, latent_image=latent, denoise=1.0)


def test_inpainting_unet_without_an_image_is_refused(ctx, inpainter):
    m = inpainter
    cond = encode(ctx, m["clip"], PROMPT)
    with pytest.raises(ValueError, match="inpainting model"):
        ksampler(ctx, m, cond, cond, steps=1)

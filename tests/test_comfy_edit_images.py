"""ComfyUI's DifferentialDiffusion: its per-step mask by ComfyUI's rule, and Loom's KSampler with it on
an SD model against an Euler loop written here from ComfyUI's rules (KSamplerX0Inpaint with the
thresholded mask), on a tiny random SD 1.x model."""
import math

import pytest
import torch
import torch.nn.functional as F

from nodes.common import call
from tests._comfy_euler import ComfyEulerScheduler
from tests._sd_families import as_image, context, picture, sd

SEED, STEPS = 7, 4


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.set_num_threads(1)
    return context(tmp_path_factory.mktemp("edit_images"))


@pytest.fixture(scope="module")
def m():
    return sd(seed=81)


def gradient_mask(size: int = 64) -> torch.Tensor:
    """MASK (1, H, W): 0 at the left edge rising to 1 at the right, so each step's threshold cuts it."""
    return torch.linspace(0, 1, size).expand(size, size)[None].clone()


def test_threshold_is_comfyuis_on_discrete_and_flow_schedules():
    from nodes.comfy.differential import threshold_mask
    from nodes.comfy.ksampling.denoiser import DiscreteSchedule, FlowSchedule

    mask = torch.linspace(0, 1, 11)
    # Discrete: thresholds are the nearest training timestep over 999 (the last sigma 0: sigma_min's step 0).
    ms = DiscreteSchedule({"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"})
    euler = ComfyEulerScheduler({"beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000})
    euler.set_timesteps(5)
    for sigma, t in zip(euler.sigmas[:-1], euler.timesteps):
        got = threshold_mask(sigma.reshape(1), mask, euler.sigmas, ms)
        assert torch.equal(got, (mask >= t / 999).float())
    # Flow (shift 3, timesteps sigma * 1000), a schedule that stops at 0.25 (> sigma_min): thresholds in sigma.
    flow = FlowSchedule(3.0, 1000)
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25])
    for sigma in sigmas[:-1]:
        got = threshold_mask(sigma.reshape(1), mask, sigmas, flow, strength=0.5)
        binary = (mask >= (sigma - 0.25) / 0.75).float()
        assert torch.equal(got, 0.5 * binary + 0.5 * mask)
    # Ending at 0, the end is the model's smallest sigma: shift * s / (1 + (shift - 1) * s) at s = 1/1000.
    smallest = 3 * 0.001 / (1 + 2 * 0.001)
    got = threshold_mask(torch.tensor([0.5]), mask, torch.tensor([1.0, 0.5, 0.0]), flow)
    assert torch.equal(got, (mask >= (0.5 * 1000 - smallest * 1000) / (1000 - smallest * 1000)).float())


def test_differential_diffusion_in_ksampler_is_comfyuis(ctx, m):
    """VAEEncode + SetLatentNoiseMask (a gradient) + DifferentialDiffusion + KSampler (euler, normal,
    cfg 1) against ComfyUI's rule written out: each step the mask is 1 where it is >= t / 999, the kept
    area of the input the source noised to sigma with the starting noise, that of the output the source."""
    from nodes.comfy.core import KSampler
    from nodes.comfy.differential import DifferentialDiffusion
    from nodes.conditioning import as_conditioning
    from nodes.comfy.core import CLIPTextEncode
    from nodes.inpaint import SetLatentNoiseMask
    from nodes.latent import VAEEncode

    positive = call(CLIPTextEncode, ctx, clip=m["clip"], text="a red fox")
    latent = call(VAEEncode, ctx, vae=m["vae"], pixels=as_image(picture()))
    latent = call(SetLatentNoiseMask, ctx, samples=latent, mask=gradient_mask())
    patched = call(DifferentialDiffusion, ctx, model=m["model"], strength=1.0)
    run = lambda model: call(KSampler, ctx, model=model, seed=SEED, steps=STEPS, cfg=1.0, sampler_name="euler",
                             scheduler="normal", positive=positive, negative=positive, latent_image=latent,
                             denoise=1.0)["samples"]
    ours = run(patched)

    unet, source = m["model"].unet, latent["samples"].float()
    embeds = as_conditioning(positive)[0].embeds
    mask = F.interpolate(gradient_mask()[:, None], size=source.shape[-2:], mode="bilinear")
    euler = ComfyEulerScheduler(dict(m["scheduler"].config))
    euler.set_timesteps(STEPS)
    noise = torch.randn(source.shape, generator=torch.Generator().manual_seed(SEED))
    x = noise * math.sqrt(1 + float(euler.sigmas[0]) ** 2) + source  # ComfyUI: a Python float
    with torch.no_grad():
        for i, t in enumerate(euler.timesteps):
            s, s_next = euler.sigmas[i], euler.sigmas[i + 1]
            hard = (mask >= t / 999).float()
            x_in = x * hard + (source + noise * s) * (1 - hard)
            eps = unet(x_in / (s ** 2 + 1) ** 0.5, t, encoder_hidden_states=embeds).sample
            denoised = (x_in - eps * s) * hard + source * (1 - hard)
            x = x + (x - denoised) / s * (s_next - s)
    diff = float((ours - x).abs().max())
    print(f"\nDifferentialDiffusion KSampler vs ComfyUI's rule: max abs difference {diff}")
    assert diff == 0.0
    # Without the patch the soft mask blends at every step instead: a different result.
    plain = run(m["model"])
    assert float((plain - ours).abs().max()) > 1e-3


def test_noise_mask_and_differential_diffusion_on_a_flow_transformer():
    """A noise mask on a family with its own runtime (Z-Image, flow matching): the kept area ends as the
    source latents (to float rounding of the last Euler step: 1e-5), the masked area is repainted; with
    DifferentialDiffusion a gradient mask gives another result than without."""
    from nodes.comfy.differential import DifferentialDiffusion
    from nodes.comfy.ksampling.denoiser import FlowSchedule
    from nodes.comfy.ksampling.ksampler import SamplerChoice, sample, starting_noise
    from nodes.comfy.ksampling.schedules import ksampler_sigmas
    from nodes.conditioning import Cond
    from nodes.families.zimage.tiny import build_pipeline
    from nodes.latent_value import Latent
    from nodes.loading.bundles import Model

    pipe = build_pipeline(0)
    (caption,), _ = pipe.encode_prompt("a cat", do_classifier_free_guidance=False, max_sequence_length=64)
    model = Model(unet=pipe.transformer, scheduler=None, family="zimage", sampling=FlowSchedule(3.0, 1.0))
    source = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(5))
    block = torch.zeros(1, 32, 32)
    block[:, 8:24, 8:24] = 1
    sigmas = ksampler_sigmas(model.sampling, "euler", "simple", 3)

    def run(model, mask):
        latent = Latent(source, noise_mask=mask)
        out, _ = sample(None, model, (Cond(embeds=caption[None]),), None, 1.0, SamplerChoice("euler"), sigmas,
                        latent, starting_noise(model, latent, 42), 42)
        return out["samples"]

    out = run(model, block)
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[1:3, 1:3] = True
    assert float((out - source)[..., ~inside].abs().max()) < 1e-5
    assert float((out - source)[..., inside].abs().max()) > 1e-2
    patched = call(DifferentialDiffusion, None, model=model, strength=1.0)
    assert float((run(patched, gradient_mask(32)) - run(model, gradient_mask(32))).abs().max()) > 1e-3

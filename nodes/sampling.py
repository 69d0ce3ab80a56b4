"""Sampling stages: choosing the scheduler, one CFG step (UNetStep), the loop (Sample).

The loop is the diffusers pipelines', operation for operation (same tensors, same order), so the
pixels match them exactly: `scheduler.scale_model_input`, the guided prediction (nodes.denoiser:
one UNet call on cat([x, x]) with cat([negative, positive]) for plain conditioning, guidance
`u + g * (c - u)` for every g, only g = 1 skipping the negative pass, as ComfyUI does),
`scheduler.step(..., generator=per-image generators)`, and for a LATENT with a "noise_mask" the
inpainting pipeline's reset of the unmasked area after each step. (The pipelines skip the negative
pass for every g <= 1 and use c alone: the pixels match them for g >= 1, not for 0 <= g < 1.)

A scheduler's state (PNDM/DPM++ history, step counter) travels in the LATENT (its `sampler`) as a SamplerState that
holds a scheduler owned by that LATENT alone: a sampler deep-copies it before stepping, so cached
values are never changed and re-running from any cached LATENT gives the same result.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
from PIL import Image

from graph import Combo, Float, In, Int, Node, Out

from .denoiser import Guide
from .families import FAMILY_ATTR, family, runtime_of_part
from .latent_value import Latent
from .loading.loaders import LATENT_SCALE_ATTR
from .schedulers import KINDS, SchedulerSpec, start_at, step_kwargs

MAX_STEP = 10000

# A rough linear map from SD 1.x's four latent channels to RGB, for cheap previews only.
LATENT_TO_RGB = torch.tensor([[0.30, 0.19, 0.21],
                              [0.19, 0.29, 0.17],
                              [-0.16, 0.19, 0.26],
                              [-0.18, -0.27, -0.49]])


class SamplerState:
    """A scheduler that has taken steps 0..step-1 of the schedule identified by `key`."""

    def __init__(self, key: tuple, scheduler, step: int):
        self.key, self.scheduler, self.step = key, scheduler, step

    def cache_tensors(self) -> list:
        """The tensors it holds, for the cache's byte count."""
        found = []
        for value in vars(self.scheduler).values():
            items = value if isinstance(value, (list, tuple)) else [value]
            found.extend(v for v in items if isinstance(v, torch.Tensor))
        return found


def latent_preview(samples: torch.Tensor, max_side: int = 256) -> Image.Image:
    """The first image of a latent batch as a small RGB picture (a fixed linear projection)."""
    x = samples[0].detach().float().cpu()
    if x.shape[0] == LATENT_TO_RGB.shape[0]:
        rgb = torch.einsum("chw,cr->hwr", x, LATENT_TO_RGB)
    else:
        rgb = x[:3].permute(1, 2, 0) if x.shape[0] >= 3 else x[:1].permute(1, 2, 0).expand(-1, -1, 3)
    array = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(array)
    factor = max(1, max_side // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def _resume(spec: SchedulerSpec, latents: Latent, start: int, device, runtime=None):
    """The scheduler for step `start`: a copy of the LATENT's own when it continues this schedule,
    else a fresh one placed at `start` (a multistep scheduler then starts without history). A model
    family with its own runtime sets the steps as its pipeline does."""
    state = latents.sampler
    if state is not None and state.key == spec.key() and state.step == start:
        return copy.deepcopy(state.scheduler)
    shape = tuple(latents.samples.shape)
    scheduler = spec.make(device, None if runtime is None else
                          lambda fresh, steps, where: runtime.stage_timesteps(fresh, steps, shape, where))
    if start:
        start_at(scheduler, spec.offset(scheduler) + start)
    return scheduler


def _generators(latents: Latent) -> list[torch.Generator]:
    states = latents.generator
    if states is None:  # latents from elsewhere: a fixed stream per image
        return [torch.Generator("cpu").manual_seed(i) for i in range(latents.batch)]
    gens = []
    for state in states:
        g = torch.Generator("cpu")
        g.set_state(state)
        gens.append(g)
    return gens


def _noise_mask(latents: Latent, like: torch.Tensor) -> torch.Tensor | None:
    """The LATENT's noise_mask (1: denoise) at the latents' size (bilinear, as ComfyUI resizes it)."""
    mask = latents.noise_mask
    if mask is None:
        return None
    mask = mask.to(device=like.device, dtype=like.dtype)
    mask = mask.reshape(-1, 1, *mask.shape[-2:])
    if mask.shape[-2:] != like.shape[-2:]:
        mask = torch.nn.functional.interpolate(mask, size=like.shape[-2:], mode="bilinear", align_corners=False)
    return mask


def denoise(unet, spec: SchedulerSpec, latents: Latent, positive, negative, guidance_scale: float, start: int,
            end: int, progress=None, keep_denoised: bool = False) -> Latent:
    """Steps start..end-1 of the schedule; returns the new LATENT. `progress(k, n, preview)` per step.
    keep_denoised: the LATENT also holds "denoised", the last step's prediction of the clean latents
    (when the scheduler reports one).

    With a noise_mask in the LATENT (1: repaint), after each step the area outside it is reset to
    the source latents noised to the next step's level, as StableDiffusionInpaintPipeline does."""
    device = unet.device
    runtime = runtime_of_part(unet)  # a transformer family's own prediction and schedule (spec.Runtime)
    scheduler = _resume(spec, latents, start, device, runtime)
    offset = spec.offset(scheduler)
    total = len(scheduler.timesteps) - offset
    end = min(end, total)
    if start >= end:
        raise ValueError(f"start step {start} leaves no step to take: this schedule has {total} steps")
    # A copy (same layout): schedulers keep references to the samples they are given, and the
    # input LATENT may be a cached value that must stay as it is.
    x = latents.samples.to(device=device, dtype=unet.dtype).clone()
    batch = x.shape[0]
    gens = _generators(latents)
    if len(gens) != batch:
        raise ValueError(f"the latents carry {len(gens)} generator states for {batch} images")
    mask, source = _noise_mask(latents, x), latents.mask_source
    if mask is not None:  # as the inpainting pipeline, whose image latents are copied per image: the
        x = x.contiguous()  # UNet's convolutions round differently on the VAE's channels-last layout
    if latents.noise is not None:
        noise = latents.noise.to(device=device, dtype=x.dtype)
        source = (x, noise) if mask is not None else None
        if latents.empty:
            x = noise * getattr(scheduler, "init_noise_sigma", 1.0)  # flow schedulers start at the noise
        else:
            x = scheduler.add_noise(x, noise, scheduler.timesteps[offset + start:offset + start + 1].repeat(batch))
    elif mask is not None and source is None:  # latents from elsewhere: keep what is outside the mask as it is
        source = (x.clone(), torch.zeros_like(x))
    if runtime is not None:
        _check_family_latents(unet, latents, mask)
        guide = runtime.stage_guide(unet, positive, negative, guidance_scale)
    else:
        guide = Guide(unet, positive, negative, guidance_scale, x, getattr(unet, LATENT_SCALE_ATTR, 8), gens,
                      latents.inpaint_latents, None if mask is None else (mask, source[0]))
    kwargs = step_kwargs(scheduler, gens)
    denoised = None
    with torch.no_grad():
        for i in range(start, end):
            t = scheduler.timesteps[offset + i]
            noise_pred = guide(_model_input(scheduler, x, t), t, i, total)
            result = scheduler.step(noise_pred, t, x, **kwargs, return_dict=False)
            x = result[0]
            denoised = result[1] if len(result) > 1 and isinstance(result[1], torch.Tensor) else None
            if mask is not None:
                x = _keep_outside(scheduler, x, mask, source, offset + i + 1)
            if progress is not None:
                progress(i - start + 1, end - start, lambda x=x: latent_preview(x))
    return latents.sampled(x, generator=[g.get_state() for g in gens], seeds=latents.seeds,
                           sampler=SamplerState(spec.key(), scheduler, end), mask_source=source,
                           inpaint_latents=getattr(guide, "inpaint_latents", None),
                           denoised=denoised if keep_denoised else None)


def _model_input(scheduler, x, t):
    """The scheduler's scaling of the model's input (flow-matching schedulers have none)."""
    scale = getattr(scheduler, "scale_model_input", None)
    return x if scale is None else scale(x, t)


def _check_family_latents(unet, latents: Latent, mask) -> None:
    """What the stage nodes do not run on a transformer family yet, refused by name."""
    label = family(getattr(unet, FAMILY_ATTR)).label
    if mask is not None or latents.inpaint_latents is not None:
        raise ValueError(f"noise masks (inpainting) on {label} models are not supported by Sample/UNetStep yet")
    if latents.noise is not None and not latents.empty:
        raise ValueError(f"img2img (MakeNoiseLatents with an image) on {label} models is not supported by "
                         "Sample/UNetStep yet")


def _keep_outside(scheduler, x, mask, source, next_index: int) -> torch.Tensor:
    """(1 - mask) * source noised to the next timestep + mask * x; the clean source after the last step."""
    clean, noise = source
    proper = clean
    if next_index < len(scheduler.timesteps):
        proper = scheduler.add_noise(clean, noise, scheduler.timesteps[next_index:next_index + 1])
    return (1 - mask) * proper + mask * x


class SetScheduler(Node):
    """Chooses the sampling method and the number of steps. strength < 1 (img2img) skips the first
    steps - int(steps * strength) steps; Sample/UNetStep step numbers then count from the first kept."""

    category = "sampling"
    scheduler = In("SCHEDULER")
    kind = Combo(list(KINDS), default="euler")
    steps = Int(20, min=1, max=MAX_STEP)
    strength = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="img2img denoising strength; 1: from pure noise")
    outputs = (Out("SCHEDULER", "scheduler"),)

    @classmethod
    def check(cls, env, steps=None, strength=None, **_):
        if isinstance(steps, int) and isinstance(strength, (int, float)) and int(steps * strength) < 1:
            return {"strength": f"strength {strength} of {steps} steps leaves no step to take"}
        return {}

    def run(self, ctx):
        return replace(self.scheduler, kind=self.kind, steps=self.steps, strength=self.strength)


class _GuidedDenoiser(Node):
    """The inputs every denoising node takes (a base, not a node: its name starts with _)."""

    category = "sampling"
    unet = In("UNET")
    scheduler = In("SCHEDULER")
    latents = In("LATENT")
    positive = In("CONDITIONING")
    negative = In("CONDITIONING")
    guidance_scale = Float(7.5, min=0.0, max=100.0, step=0.1)
    outputs = (Out("LATENT", "latents"),)


class UNetStep(_GuidedDenoiser):
    """One denoising step with classifier-free guidance: step `step` of the scheduler's schedule."""

    step = Int(0, min=0, max=MAX_STEP)

    def run(self, ctx):
        return denoise(self.unet, self.scheduler, self.latents, self.positive, self.negative,
                       self.guidance_scale, self.step, self.step + 1, progress=ctx.progress)


class Sample(_GuidedDenoiser):
    """The denoising loop from start_step up to (not including) end_step; reports progress per step.
    Chained Sample nodes continue each other exactly (e.g. a prompt switched at step 10)."""

    start_step = Int(0, min=0, max=MAX_STEP)
    end_step = Int(MAX_STEP, min=1, max=MAX_STEP, tooltip="steps past the schedule's end stop at its end")

    def run(self, ctx):
        return denoise(self.unet, self.scheduler, self.latents, self.positive, self.negative,
                       self.guidance_scale, self.start_step, self.end_step, progress=ctx.progress)

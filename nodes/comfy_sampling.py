"""ComfyUI's custom-sampling nodes: a sampler, a noise schedule, the noise and a guider chosen
apart, then SamplerCustomAdvanced (or SamplerCustom) runs them. All of it maps onto Loom's own
denoising loop (nodes.sampling.denoise) and diffusers schedulers:

- SAMPLER (KSamplerSelect): a ComfyUI sampler name -> a diffusers scheduler class (nodes.comfy_samplers).
- SIGMAS (BasicScheduler, KarrasScheduler): the noise levels, descending, 0 last (ComfyUI's
  convention, in the model's noise units). BasicScheduler's also remember their scheduler name,
  steps and denoise, so the sampler builds exactly KSampler's schedule from them: the custom
  set gives the very images of KSampler with the same settings. Other sigmas are followed as given
  (nodes.schedulers.set_sigmas).
- NOISE (RandomNoise, DisableNoise): a seed, or no noise at all.
- GUIDER (CFGGuider, BasicGuider): model, conditioning and CFG scale.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from graph import Boolean, Combo, Float, In, Int, Node, Out

from .bundles import Model
from .comfy import denoise_schedule, noised, sampler_problems
from .comfy_samplers import SAMPLER_NAMES, SCHEDULER_NAMES, resolve
from .latent import MAX_SEED
from .sampling import MAX_STEP, denoise
from .schedulers import CHECKPOINT, UnsupportedSigmas


@dataclass(frozen=True)
class Sampler:
    """SAMPLER: a ComfyUI sampler name (KSamplerSelect)."""
    name: str


@dataclass(frozen=True, eq=False)
class Sigmas:
    """SIGMAS: `values` (1-D, descending); `scheduler`, `steps`, `denoise` when BasicScheduler made them."""
    values: torch.Tensor
    scheduler: str | None = None
    steps: int = 0
    denoise: float = 1.0

    def cache_tensors(self) -> list:
        return [self.values]


@dataclass(frozen=True)
class Noise:
    """NOISE: the seed of the starting noise (image i uses seed + i), or None for no noise."""
    seed: int | None


@dataclass(frozen=True, eq=False)
class Guider:
    """GUIDER: the model, its conditioning and the CFG scale (no negative: the positive alone)."""
    model: Model
    positive: tuple
    negative: tuple | None
    cfg: float


class KSamplerSelect(Node):
    """Chooses the sampling method (a diffusers scheduler class; see KSampler's sampler_name)."""
    category = "sampling/custom_sampling/samplers"  # ComfyUI's
    sampler_name = Combo(SAMPLER_NAMES, default="euler")
    outputs = (Out("SAMPLER", "SAMPLER"),)

    @classmethod
    def check(cls, env, sampler_name=None, **_):
        return sampler_problems(sampler_name, "normal")

    def run(self, ctx):
        return Sampler(self.sampler_name)


class BasicScheduler(Node):
    """The noise levels of a ComfyUI scheduler for this model; denoise < 1 keeps the last `steps`
    of int(steps / denoise), as KSampler does."""
    category = "sampling/custom_sampling/schedulers"  # ComfyUI's
    model = In("MODEL")
    scheduler = Combo(SCHEDULER_NAMES, default="normal")
    steps = Int(20, min=1, max=MAX_STEP)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Out("SIGMAS", "SIGMAS"),)

    @classmethod
    def check(cls, env, scheduler=None, denoise=None, **_):
        problems = sampler_problems("euler", scheduler)
        if isinstance(denoise, float) and denoise <= 0:
            problems["denoise"] = "denoise 0 leaves no step to take"
        return problems

    def run(self, ctx):
        # The values as Euler (the k-diffusion form) has them; the sampler rebuilds its own schedule.
        spec = denoise_schedule(self.model, "euler", self.scheduler, self.steps, self.denoise)
        scheduler = spec.make()
        values = scheduler.sigmas[spec.offset(scheduler):].detach().float().cpu()
        return Sigmas(values, self.scheduler, self.steps, self.denoise)


class KarrasScheduler(Node):
    """Karras et al.'s noise levels: steps levels from sigma_max to sigma_min spaced by rho, then 0."""
    category = "sampling/custom_sampling/schedulers"  # ComfyUI's
    steps = Int(20, min=1, max=MAX_STEP)
    sigma_max = Float(14.614642, min=0.0, max=5000.0, step=0.01)
    sigma_min = Float(0.0291675, min=0.0, max=5000.0, step=0.01)
    rho = Float(7.0, min=0.0, max=100.0, step=0.01)
    outputs = (Out("SIGMAS", "SIGMAS"),)

    def run(self, ctx):
        ramp = torch.linspace(0, 1, self.steps, dtype=torch.float64)
        high, low = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        values = (high + ramp * (low - high)) ** self.rho
        return Sigmas(torch.cat([values, values.new_zeros(1)]).float())


class RandomNoise(Node):
    """Seeded starting noise (image i of a batch uses seed + i)."""
    category = "sampling/custom_sampling/noise"  # ComfyUI's
    noise_seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)
    outputs = (Out("NOISE", "NOISE"),)

    def run(self, ctx):
        return Noise(self.noise_seed)


class DisableNoise(Node):
    """No starting noise: the latent is sampled as it is (e.g. a second pass)."""
    category = "sampling/custom_sampling/noise"  # ComfyUI's
    outputs = (Out("NOISE", "NOISE"),)

    def run(self, ctx):
        return Noise(None)


class CFGGuider(Node):
    """Classifier-free guidance: u + cfg * (c - u) (the negative pass is skipped at cfg 1)."""
    category = "sampling/custom_sampling/guiders"  # ComfyUI's
    model = In("MODEL")
    positive = In("CONDITIONING")
    negative = In("CONDITIONING")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    outputs = (Out("GUIDER", "GUIDER"),)

    def run(self, ctx):
        return Guider(self.model, self.positive, self.negative, self.cfg)


class BasicGuider(Node):
    """The conditioning alone, without a negative pass (for guidance-distilled models)."""
    category = "sampling/custom_sampling/guiders"  # ComfyUI's
    model = In("MODEL")
    conditioning = In("CONDITIONING")
    outputs = (Out("GUIDER", "GUIDER"),)

    def run(self, ctx):
        return Guider(self.model, self.conditioning, None, 1.0)


def sample_custom(ctx, noise: Noise, guider: Guider, sampler: Sampler, sigmas: Sigmas, latent: dict) -> tuple:
    """(output, denoised_output) LATENTs: the run SamplerCustom(Advanced) describe."""
    model = guider.model
    spec = _schedule(model, sampler, sigmas)
    if noise.seed is not None:
        latents = noised(model, latent, noise.seed, ctx)
        if spec.strength < 1.0 or (spec.sigmas is not None and not latent.get("empty")):
            latents["empty"] = False  # the noise belongs to the first level, added to the image
    else:  # no noise: the latents are the starting point as they are
        latents = {k: v for k, v in latent.items() if k not in ("noise", "empty", "width", "height", "sampler")}
    out = denoise(model.unet, spec, latents, guider.positive, guider.negative, guider.cfg, 0, MAX_STEP,
                  progress=ctx.progress, keep_denoised=True)
    denoised = out.pop("denoised", None)
    return out, (out if denoised is None else {**out, "samples": denoised})


def _schedule(model: Model, sampler: Sampler, sigmas: Sigmas):
    if sigmas.scheduler is not None:  # BasicScheduler's: KSampler's own schedule
        return denoise_schedule(model, sampler.name, sigmas.scheduler, sigmas.steps, sigmas.denoise)
    class_name, settings = resolve(sampler.name, "normal")
    config = {**model.scheduler.config, "_class_name": class_name, **settings}
    values = tuple(float(v) for v in sigmas.values)
    try:
        spec = replace(model.scheduler, kind=CHECKPOINT, config=config, steps=len(values) - 1, strength=1.0,
                       sigmas=values)
        spec.make()  # refuse here, by name, what the scheduler cannot follow
    except UnsupportedSigmas as exc:
        raise ValueError(f"sampler '{sampler.name}' with these sigmas: {exc}") from None
    return spec


class SamplerCustomAdvanced(Node):
    """ComfyUI's custom sampler: noise, guider, sampler and sigmas chosen by other nodes.
    `denoised_output`: the model's prediction of the clean latents at the last step."""
    category = "sampling/custom_sampling"  # ComfyUI's
    noise = In("NOISE")
    guider = In("GUIDER")
    sampler = In("SAMPLER")
    sigmas = In("SIGMAS")
    latent_image = In("LATENT")
    outputs = (Out("LATENT", "output"), Out("LATENT", "denoised_output"))

    def run(self, ctx):
        return sample_custom(ctx, self.noise, self.guider, self.sampler, self.sigmas, self.latent_image)


class SamplerCustom(Node):
    """ComfyUI's custom sampler with the noise and CFG guidance built in."""
    category = "sampling/custom_sampling"  # ComfyUI's
    model = In("MODEL")
    add_noise = Boolean(True)
    noise_seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    positive = In("CONDITIONING")
    negative = In("CONDITIONING")
    sampler = In("SAMPLER")
    sigmas = In("SIGMAS")
    latent_image = In("LATENT")
    outputs = (Out("LATENT", "output"), Out("LATENT", "denoised_output"))

    def run(self, ctx):
        noise = Noise(self.noise_seed if self.add_noise else None)
        guider = Guider(self.model, self.positive, self.negative, self.cfg)
        return sample_custom(ctx, noise, guider, self.sampler, self.sigmas, self.latent_image)

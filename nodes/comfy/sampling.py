"""ComfyUI's custom-sampling nodes: a sampler, a noise schedule, the noise and a guider chosen
apart, then SamplerCustomAdvanced (or SamplerCustom) runs them, by ComfyUI's rules (nodes.comfy.ksampling):

- SAMPLER (KSamplerSelect, SamplerER_SDE): a ComfyUI sampler and its options.
- SIGMAS (BasicScheduler, KarrasScheduler, SDTurboScheduler, BetaSamplingScheduler): the noise levels,
  descending, 0 last for a full run, in the model's noise units, as ComfyUI computes them.
- NOISE (RandomNoise, DisableNoise): ComfyUI's starting noise of a seed (the whole batch from one
  generator), or none; its seed also seeds the samplers' step noise.
- GUIDER (CFGGuider, BasicGuider): model, conditioning and CFG scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from graph import Boolean, Combo, Float, In, Int, Node, Out

from ..loading.bundles import Model
from .core import sampler_problems
from .sampler_names import SAMPLER_NAMES, SCHEDULER_NAMES
from .ksampling.ksampler import SamplerChoice, latent_image, model_sampling, starting_noise
from .ksampling.ksampler import sample as ksampling_run
from .ksampling.dual import DualCFG
from .ksampling.samplers import PowerNoiseScaler
from .ksampling.schedules import beta as beta_schedule
from .ksampling.schedules import calculate_sigmas, karras
from ..latent import MAX_SEED
from ..latent_value import Latent
from ..sampling import MAX_STEP


Sampler = SamplerChoice  # SAMPLER: a ComfyUI sampler name and its options


@dataclass(frozen=True, eq=False)
class Sigmas:
    """SIGMAS: `values` (1-D, descending); `scheduler`, `steps`, `denoise` when BasicScheduler made them
    (for reading only: the values are what a sampler follows)."""
    values: torch.Tensor
    scheduler: str | None = None
    steps: int = 0
    denoise: float = 1.0

    def cache_tensors(self) -> list:
        return [self.values]


@dataclass(frozen=True)
class Noise:
    """NOISE: the seed of the starting noise (ComfyUI's: the batch from one generator), or None for
    no noise (DisableNoise: the step noise is then seeded with 0, as ComfyUI's)."""
    seed: int | None


@dataclass(frozen=True, eq=False)
class Guider:
    """GUIDER: the model, its conditioning and the CFG scale (no negative: the positive alone)."""
    model: Model
    positive: tuple
    negative: tuple | None
    cfg: float
    dual: DualCFG | None = None  # DualCFGGuider's middle conditioning and scales (cfg unused then)


class KSamplerSelect(Node):
    """Chooses the sampling method (ComfyUI's samplers; see KSampler's sampler_name)."""
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
    of int(steps / denoise), as ComfyUI does."""
    category = "sampling/custom_sampling/schedulers"  # ComfyUI's
    model = In("MODEL")
    scheduler = Combo(SCHEDULER_NAMES, default="normal")
    steps = Int(20, min=1, max=MAX_STEP)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Out("SIGMAS", "SIGMAS"),)

    @classmethod
    def check(cls, env, scheduler=None, denoise=None, **_):
        problems = sampler_problems(None, scheduler)
        if isinstance(denoise, float) and denoise <= 0:
            problems["denoise"] = "denoise 0 leaves no step to take"
        return problems

    def run(self, ctx):
        total = self.steps if self.denoise >= 1.0 else int(self.steps / self.denoise)
        values = calculate_sigmas(model_sampling(self.model), self.scheduler, total)[-(self.steps + 1):]
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
        return Sigmas(karras(self.steps, self.sigma_min, self.sigma_max, self.rho))


class SDTurboScheduler(Node):
    """SD Turbo's noise levels: `steps` of the timesteps 999, 899, ..., 99 (starting later for
    denoise < 1), then 0."""
    category = "sampling/custom_sampling/schedulers"  # ComfyUI's
    model = In("MODEL")
    steps = Int(1, min=1, max=10)
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Out("SIGMAS", "SIGMAS"),)

    def run(self, ctx):
        start = 10 - int(10 * self.denoise)
        timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + self.steps]
        values = model_sampling(self.model).sigma(timesteps)
        return Sigmas(torch.cat([values, values.new_zeros(1)]))


class BetaSamplingScheduler(Node):
    """Noise levels at the quantiles of a beta(alpha, beta) distribution over the training timesteps."""
    category = "sampling/custom_sampling/schedulers"  # ComfyUI's
    model = In("MODEL")
    steps = Int(20, min=1, max=10000)
    alpha = Float(0.6, min=0.0, max=50.0, step=0.01, round=False)
    beta = Float(0.6, min=0.0, max=50.0, step=0.01, round=False)
    outputs = (Out("SIGMAS", "SIGMAS"),)

    def run(self, ctx):
        return Sigmas(beta_schedule(model_sampling(self.model), self.steps, self.alpha, self.beta))


class SamplerER_SDE(Node):
    """The ER-SDE solver with its settings: the ER-SDE noise scale, a reverse-time SDE of strength eta,
    or the ODE (no noise)."""
    category = "sampling/custom_sampling/samplers"  # ComfyUI's
    solver_type = Combo(["ER-SDE", "Reverse-time SDE", "ODE"], default="ER-SDE")
    max_stage = Int(3, min=1, max=3)
    eta = Float(1.0, min=0.0, max=100.0, step=0.01, round=False,
                tooltip="Stochastic strength of reverse-time SDE.\nWhen eta=0, it reduces to deterministic ODE. "
                        "This setting doesn't apply to ER-SDE solver type.")
    s_noise = Float(1.0, min=0.0, max=100.0, step=0.01, round=False)
    outputs = (Out("SAMPLER", "SAMPLER"),)

    def run(self, ctx):
        eta, s_noise = self.eta, self.s_noise
        if self.solver_type == "ODE" or (self.solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0.0, 0.0
        scaler = None if self.solver_type == "ER-SDE" else PowerNoiseScaler(eta)
        return Sampler("er_sde", (("s_noise", s_noise), ("noise_scaler", scaler), ("max_stage", self.max_stage)))


class RandomNoise(Node):
    """Seeded starting noise, as ComfyUI's: the whole batch from one generator."""
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


class DualCFGGuider(Node):
    """Two conditionings and a negative: cond1 guided against cond2 by cfg_conds, cond2 against the
    negative by cfg_cond2_negative ("regular"), or the first guidance nested in the second."""
    category = "sampling/custom_sampling/guiders"  # ComfyUI's
    model = In("MODEL")
    cond1 = In("CONDITIONING")
    cond2 = In("CONDITIONING")
    negative = In("CONDITIONING")
    cfg_conds = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    cfg_cond2_negative = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    style = Combo(["regular", "nested"], default="regular")
    outputs = (Out("GUIDER", "GUIDER"),)

    def run(self, ctx):
        dual = DualCFG(self.cond2, self.cfg_conds, self.cfg_cond2_negative, nested=self.style == "nested")
        return Guider(self.model, self.cond1, self.negative, self.cfg_conds, dual)


def sample_custom(ctx, noise: Noise, guider: Guider, sampler: Sampler, sigmas: Sigmas, latent: Latent) -> tuple:
    """(output, denoised_output) LATENTs: the run SamplerCustom(Advanced) describe."""
    model = guider.model
    if noise.seed is None:
        start, seed = torch.zeros_like(latent_image(model, latent)), 0
    else:
        start, seed = starting_noise(model, latent, noise.seed), noise.seed
    out, denoised = ksampling_run(ctx, model, guider.positive, guider.negative, guider.cfg, sampler,
                                  torch.as_tensor(sigmas.values, dtype=torch.float32), latent, start, seed,
                                  dual=guider.dual)
    return out, (out if denoised is None else out.replace(samples=denoised))


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
        model = self.model
        if self.add_noise:
            start = starting_noise(model, self.latent_image, self.noise_seed)
        else:  # no noise, but the step noise keeps the seed (ComfyUI's)
            start = torch.zeros_like(latent_image(model, self.latent_image))
        out, denoised = ksampling_run(ctx, model, self.positive, self.negative, self.cfg, self.sampler,
                                      torch.as_tensor(self.sigmas.values, dtype=torch.float32), self.latent_image,
                                      start, self.noise_seed)
        return out, (out if denoised is None else out.replace(samples=denoised))

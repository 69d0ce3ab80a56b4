"""Loom's UNet as a k-diffusion denoiser: D(x, sigma) -> the predicted clean latents.

`DiscreteSchedule` is ComfyUI's discrete model sampling for SD-family checkpoints, built from the
checkpoint's diffusers scheduler config: sigma_t = sqrt((1 - abar_t) / abar_t) for the 1000 training
timesteps (betas in float64, the table in float32), a sigma's timestep is the NEAREST table entry in
log sigma (an integer, as ComfyUI feeds the UNet), a timestep's sigma the log-linear interpolation.

`FlowSchedule` is ComfyUI's discrete flow sampling (ModelSamplingDiscreteFlow with CONST) for
flow-matching models: sigma(t) = shift * s / (1 + (shift - 1) * s) with s = t / multiplier, a table
of 1000 sigmas at s = k / 1000, a sigma's timestep sigma * multiplier (continuous); the model sees
x unscaled and predicts a velocity v with denoised = x - sigma * v; a start is sigma * noise +
(1 - sigma) * latents. `FluxSchedule` is ComfyUI's ModelSamplingFlux (Flux.1 dev), the same with
e^shift as the shift and a table of 10000.

`Denoiser` scales the input by 1 / sqrt(sigma^2 + 1) (flow models: unscaled), calls the guided UNet (nodes.denoiser.Guide:
CFG u + g * (c - u), skipped only at g == 1, ControlNets, areas, inpainting channels) and turns
its output (epsilon or v) into denoised latents, in float32 whatever the UNet's dtype. With a noise
mask it does what ComfyUI's KSamplerX0Inpaint does: the unmasked area of the input is the source
latents noised to this sigma with the starting noise, that of the output the source latents;
`mask_function` (a MODEL's denoise_mask_function) remakes that mask for each step first.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class SigmaTable:
    """A model's noise levels, `sigmas`, in ascending order (one per training timestep)."""

    sigmas: torch.Tensor

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]


class DiscreteSchedule(SigmaTable):
    """sigma <-> timestep of a discrete-time (DDPM-trained) model; `prediction` "epsilon" or "v_prediction"."""

    def __init__(self, config: dict):
        self.prediction = config.get("prediction_type", "epsilon")
        if self.prediction not in ("epsilon", "v_prediction"):
            raise ValueError(f"ComfyUI's samplers take epsilon or v_prediction models, not {self.prediction!r}")
        betas = _betas(config)
        abar = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - abar) / abar) ** 0.5
        if config.get("rescale_betas_zero_snr"):
            raise ValueError("zero-terminal-SNR checkpoints are not supported by ComfyUI's samplers in Loom")
        self.sigmas = sigmas.float()
        self.log_sigmas = self.sigmas.log()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The nearest training timestep (in log sigma) of each sigma, as a float tensor."""
        sigma = torch.as_tensor(sigma)
        dist = sigma.log().to(self.log_sigmas.device).reshape(1, -1) - self.log_sigmas[:, None]
        return dist.abs().argmin(dim=0).reshape(sigma.shape).to(sigma.device)

    def sigma(self, timestep) -> torch.Tensor:
        """The sigma of (fractional) timesteps: log-linear between the table's entries."""
        t = torch.as_tensor(timestep).float().clamp(0, len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def noise_scaling(self, sigma, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool = False):
        """The starting latents at sigma (max_denoise: the model's largest sigma, noise * sqrt(1 + sigma^2))."""
        return noise * (math.sqrt(1.0 + float(sigma) ** 2) if max_denoise else sigma) + latent

    def inverse_noise_scaling(self, sigma, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * 999.0)))


def time_snr_shift(shift: float, t):
    """Flow matching's timestep shift (SD3's): more of the schedule at high noise for shift > 1."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


class FlowSchedule(SigmaTable):
    """sigma <-> timestep of a flow-matching model (ComfyUI's ModelSamplingDiscreteFlow). `multiplier`:
    the timestep of sigma 1 (1000 for SD3, 1.0 for AuraFlow, Lumina 2 and Z-Image). `prediction`:
    "flow" (CONST: denoised = x - sigma * v) or "img_to_img_velocity" (denoised = x - v, the start is
    the latents unnoised)."""

    def __init__(self, shift: float = 1.0, multiplier: float = 1000, prediction: str = "flow"):
        if prediction not in ("flow", "img_to_img_velocity"):
            raise ValueError(f"flow sampling is 'flow' or 'img_to_img_velocity', not {prediction!r}")
        self.shift, self.multiplier, self.prediction = shift, multiplier, prediction
        self.sigmas = self.sigma((torch.arange(1, 1001, 1) / 1000) * multiplier)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(sigma) * self.multiplier

    def sigma(self, timestep) -> torch.Tensor:
        return time_snr_shift(self.shift, torch.as_tensor(timestep) / self.multiplier)

    def noise_scaling(self, sigma, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool = False):
        if self.prediction == "img_to_img_velocity":
            return latent
        return sigma * noise + (1.0 - sigma) * latent

    def inverse_noise_scaling(self, sigma, latent: torch.Tensor) -> torch.Tensor:
        return latent / (1.0 - sigma)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return time_snr_shift(self.shift, 1.0 - percent)


class FluxSchedule(FlowSchedule):
    """ComfyUI's ModelSamplingFlux (Flux.1 dev; ModelSamplingFlux node): sigma(t) = e^shift / (e^shift +
    1/t - 1) (the flow shift with e^shift), the timestep sigma itself, a table of 10000 sigmas."""

    def __init__(self, shift: float = 1.15, prediction: str = "flow"):
        super().__init__(1.0, 1.0, prediction)
        self.shift = shift
        self.sigmas = self.sigma(torch.arange(1, 10001, 1) / 10000)

    def sigma(self, timestep) -> torch.Tensor:
        return math.exp(self.shift) / (math.exp(self.shift) + (1 / torch.as_tensor(timestep) - 1) ** 1.0)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return math.exp(self.shift) / (math.exp(self.shift) + (1 / (1.0 - percent) - 1))


def _betas(config: dict) -> torch.Tensor:
    if config.get("trained_betas") is not None:
        return torch.tensor(config["trained_betas"], dtype=torch.float64)
    start, end = config.get("beta_start", 0.00085), config.get("beta_end", 0.012)
    count = config.get("num_train_timesteps", 1000)
    kind = config.get("beta_schedule", "scaled_linear")
    if kind == "scaled_linear":  # ComfyUI's "linear": sqrt-spaced, squared
        return torch.linspace(start ** 0.5, end ** 0.5, count, dtype=torch.float64) ** 2
    if kind == "linear":
        return torch.linspace(start, end, count, dtype=torch.float64)
    if kind == "squaredcos_cap_v2":
        steps = torch.arange(count + 1, dtype=torch.float64) / count
        abar = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise ValueError(f"ComfyUI's samplers do not know the beta schedule {kind!r}")


def prepare_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A noise mask (B or 1, [1,] H, W) at the latents' size (bilinear) and batch, one channel."""
    mask = mask.to(device=like.device, dtype=like.dtype).reshape(-1, 1, *mask.shape[-2:])
    if mask.shape[-2:] != like.shape[-2:]:
        mask = F.interpolate(mask, size=like.shape[-2:], mode="bilinear")
    if like.shape[0] % mask.shape[0]:
        raise ValueError(f"a noise mask batch of {mask.shape[0]} does not divide the latent batch of {like.shape[0]}")
    return mask.repeat(like.shape[0] // mask.shape[0], 1, 1, 1)


class Denoiser:
    """D(x, sigma, **_) for the samplers. `guide`: a nodes.denoiser.Guide (or any callable
    guide(model_input, timestep, step, total) -> epsilon or v). `schedule`: the run's sigmas (for the
    step number a ControlNet's range is read against). `uncond_denoised`: the last call's negative
    prediction as clean latents (for CFG++ samplers; set only when the guide computed one)."""

    def __init__(self, guide, model_sampling: DiscreteSchedule | FlowSchedule, dtype: torch.dtype, schedule: torch.Tensor,
                 mask: torch.Tensor | None = None, source: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None, mask_function=None):
        self.guide, self.ms, self.dtype = guide, model_sampling, dtype
        self.schedule = schedule.detach().float().cpu()
        self.mask, self.source, self.noise, self.mask_function = mask, source, noise, mask_function
        self.uncond_denoised = None
        self.percent_to_sigma = model_sampling.percent_to_sigma  # SA-Solver's default noise interval

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).reshape(-1)
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        mask = self.mask
        if mask is not None and self.mask_function is not None:
            mask = self.mask_function(sigma.cpu(), mask, self.schedule, self.ms)
        if mask is not None:
            noised_source = self.ms.noise_scaling(s, self.noise, self.source)
            x = x * mask + noised_source * (1 - mask)
        flow = isinstance(self.ms, FlowSchedule)
        model_input = (x if flow else x / (s ** 2 + 1) ** 0.5).to(self.dtype)
        t = self.ms.timestep(sigma[:1]).float()[0].to(x.device)
        total = max(len(self.schedule) - 1, 1)
        step = min(int((self.schedule > float(sigma[0]) * (1 + 1e-6)).sum()), total - 1)
        out = self.guide(model_input, t, step, total).float()
        denoised = self._denoised(out, x, s)
        uncond = getattr(self.guide, "last_uncond", None)
        self.uncond_denoised = None if uncond is None else self._denoised(uncond.float(), x, s)
        if mask is not None:
            denoised = denoised * mask + self.source * (1 - mask)
            if self.uncond_denoised is not None:
                self.uncond_denoised = self.uncond_denoised * mask + self.source * (1 - mask)
        return denoised

    def _denoised(self, out: torch.Tensor, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self.ms.prediction == "img_to_img_velocity":
            return x - out
        if self.ms.prediction == "v_prediction":
            return x / (s ** 2 + 1) - out * s / (s ** 2 + 1) ** 0.5
        return x - out * s

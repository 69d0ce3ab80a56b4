"""ComfyUI's schedulers: the noise levels (sigmas, descending, 0 last) of a run of `steps` steps for
a model's DiscreteSchedule, by ComfyUI's rules (comfy.samplers.calculate_sigmas and its handlers).
Values are float32, as ComfyUI makes them."""
from __future__ import annotations

import math

import numpy as np
import torch


def _with_zero(values) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float32)
    return torch.cat([values, values.new_zeros(1)])


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al.: n levels evenly spaced in sigma^(1/rho), then 0."""
    ramp = torch.linspace(0, 1, n)
    high, low = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return _with_zero((high + ramp * (low - high)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n levels evenly spaced in log sigma, then 0."""
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n levels evenly spaced in arctan(sigma), then 0 (n = 1: sigma_max, where ComfyUI divides 0 by 0)."""
    ramp = torch.arange(n, dtype=torch.float32) / max(n - 1, 1)
    return _with_zero((ramp * math.atan(sigma_min) + (1 - ramp) * math.atan(sigma_max)).tan())


def simple(ms, steps: int) -> torch.Tensor:
    """Every len(table)/steps-th training sigma from the top, then 0."""
    stride = len(ms.sigmas) / steps
    return _with_zero([float(ms.sigmas[-(1 + int(k * stride))]) for k in range(steps)])


def ddim_uniform(ms, steps: int) -> torch.Tensor:
    """Training sigmas from index 1 in strides of len(table) // steps, reversed, ending in 0."""
    values = []
    if math.isclose(float(ms.sigmas[1]), 0, abs_tol=1e-5):
        steps += 1
    else:
        values = [0.0]
    stride = max(len(ms.sigmas) // steps, 1)
    values += [float(ms.sigmas[k]) for k in range(1, len(ms.sigmas), stride)]
    return torch.tensor(values[::-1], dtype=torch.float32)


def normal(ms, steps: int, sgm: bool = False) -> torch.Tensor:
    """Timesteps evenly spaced from sigma_max's to sigma_min's, their sigmas, then 0 (sgm_uniform:
    steps + 1 timesteps with the last dropped)."""
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=1e-5):
            steps, zero = steps + 1, False
        timesteps = torch.linspace(start, end, steps)
    values = [float(ms.sigma(t)) for t in timesteps]
    return _with_zero(values) if zero else torch.tensor(values, dtype=torch.float32)


def beta(ms, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> torch.Tensor:
    """Training sigmas at the beta(alpha, beta) distribution's quantiles (arXiv 2407.12173), repeats
    dropped, then 0."""
    from scipy.stats import beta as beta_distribution

    last = len(ms.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(beta_distribution.ppf(quantiles, alpha, beta_) * last)
    values, previous = [], None
    for t in timesteps:
        if t != previous:
            values.append(float(ms.sigmas[int(t)]))
        previous = t
    return _with_zero(values)


def linear_quadratic(ms, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None) -> torch.Tensor:
    """Mochi's schedule: linear in the first half up to threshold_noise, then quadratic, times sigma_max."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        linear_steps = steps // 2 if linear_steps is None else linear_steps
        linear = [k * threshold_noise / linear_steps for k in range(linear_steps)]
        gap = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        a = gap / (linear_steps * quadratic_steps ** 2)
        b = threshold_noise / linear_steps - 2 * gap / quadratic_steps ** 2
        c = a * linear_steps ** 2
        quadratic = [a * k ** 2 + b * k + c for k in range(linear_steps, steps)]
        fractions = [1.0 - f for f in linear + quadratic + [1.0]]
    return torch.tensor(fractions, dtype=torch.float32) * ms.sigma_max.cpu()


# name -> f(ms, steps); the order is ComfyUI's (its scheduler combo lists them so).
SCHEDULERS = {
    "simple": simple,
    "sgm_uniform": lambda ms, steps: normal(ms, steps, sgm=True),
    "karras": lambda ms, steps: karras(steps, float(ms.sigma_min), float(ms.sigma_max)),
    "exponential": lambda ms, steps: exponential(steps, float(ms.sigma_min), float(ms.sigma_max)),
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": lambda ms, steps: kl_optimal(steps, float(ms.sigma_min), float(ms.sigma_max)),
}
SCHEDULER_NAMES = list(SCHEDULERS)


def calculate_sigmas(ms, scheduler: str, steps: int) -> torch.Tensor:
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; ComfyUI's are: {', '.join(SCHEDULER_NAMES)}")
    return SCHEDULERS[scheduler](ms, steps)


def ksampler_sigmas(ms, sampler: str, scheduler: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """KSampler's schedule: samplers that skip the next-to-last level get a step more with it dropped;
    denoise < 1 keeps the last steps + 1 levels of a schedule of int(steps / denoise) steps."""
    if denoise <= 0.0:
        return torch.zeros(0)
    total = steps if denoise > 0.9999 else int(steps / denoise)
    discard = sampler in DISCARD_PENULTIMATE
    sigmas = calculate_sigmas(ms, scheduler, total + 1 if discard else total)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas if denoise > 0.9999 else sigmas[-(steps + 1):]


DISCARD_PENULTIMATE = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}

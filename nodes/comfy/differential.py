"""ComfyUI's DifferentialDiffusion (comfy_extras/nodes_differential_diffusion.py): a MODEL patch that
turns a soft noise mask into a per-step hard one. At each step the mask is thresholded at how far the
step is from the schedule's end, in model timesteps: a latent pixel whose mask value is m is repainted
from the step whose remaining fraction falls to m on, so grey mask values change less than white ones
(a gradient mask blends instead of leaving a seam). `strength` < 1 mixes the hard mask with the soft.

The sampler (nodes.comfy.ksampling.denoiser.Denoiser) calls the model's `denoise_mask_function`
with (sigma, mask, the run's sigmas, the model sampling) before it blends the kept area in."""
from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch

from graph import Float, In, Node, Out


def threshold_mask(sigma: torch.Tensor, mask: torch.Tensor, sigmas: torch.Tensor, ms, strength: float = 1.0):
    """The mask for the step at `sigma` (ComfyUI's rule): 1 where mask >= (t - t_end) / (t_start - t_end),
    t_start the first sigma's timestep, t_end that of the last sigma or the model's smallest, whichever
    is larger."""
    sigma_to = ms.sigma_min
    if sigmas[-1] > sigma_to:
        sigma_to = sigmas[-1]
    ts_from, ts_to = ms.timestep(sigmas[0]), ms.timestep(sigma_to)
    threshold = (ms.timestep(sigma.reshape(-1)[0]) - ts_to) / (ts_from - ts_to)
    binary = (mask >= threshold.to(mask.device)).to(mask.dtype)
    if strength and strength < 1:
        return strength * binary + (1 - strength) * mask
    return binary


class DifferentialDiffusion(Node):
    """Soft inpainting masks: each step repaints only where the mask is at least that step's
    remaining fraction of the schedule (ComfyUI's Differential Diffusion)."""
    category = "_for_testing"  # ComfyUI's
    model = In("MODEL")
    strength = Float(1.0, min=0.0, max=1.0, step=0.0001, optional=True)
    outputs = (Out("MODEL", "MODEL"),)

    def run(self, ctx):
        strength = 1.0 if self.strength is None else self.strength
        return replace(self.model, denoise_mask_function=partial(threshold_mask, strength=strength))

"""ComfyUI's Flux.2 nodes (comfy_extras/nodes_flux.py): EmptyFlux2LatentImage and Flux2Scheduler.

Flux2Scheduler is BFL's schedule for Flux.2: steps + 1 times evenly from 1 to 0, shifted by an
empirical mu that grows with the image's token count (width x height / 16^2) and, below 4300 tokens,
with the number of steps; diffusers' Flux2Pipeline computes the same mu (compute_empirical_mu)."""
from __future__ import annotations

import math

import torch

from graph import Int, Node, Out

from ..common import MAX_RESOLUTION, device_of
from .ksampling.ksampler import empty_latent
from .sampling import Sigmas

FLUX2_CHANNELS = 128  # ComfyUI's Flux.2 LATENT: the VAE's 32 channels in 2x2 patches, at 1/16


class EmptyFlux2LatentImage(Node):
    """ComfyUI's empty Flux.2 latent: (batch, 128, height // 16, width // 16) zeros (sides that are not
    multiples of 16, as an edit template's image size gives them, are floored as ComfyUI floors them)."""
    category = "latent"  # ComfyUI's
    display_name = "Empty Flux 2 Latent"
    width = Int(1024, min=16, max=MAX_RESOLUTION, step=16)
    height = Int(1024, min=16, max=MAX_RESOLUTION, step=16)
    batch_size = Int(1, min=1, max=4096)
    outputs = (Out("LATENT", "LATENT"),)

    def run(self, ctx):
        h, w = self.height // 16, self.width // 16
        latent = empty_latent(self.batch_size, FLUX2_CHANNELS, w * 16, h * 16, device_of(ctx.env))
        return latent.replace(samples=latent.samples.new_zeros((self.batch_size, FLUX2_CHANNELS, h, w)))


def empirical_mu(tokens: int, steps: int) -> float:
    """BFL's fit of the shift: linear in the token count, and between 10 and 200 steps linear in steps."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    if tokens > 4300:
        return float(a2 * tokens + b2)
    at_200, at_10 = a2 * tokens + b2, a1 * tokens + b1
    slope = (at_200 - at_10) / 190.0
    intercept = at_200 - 200.0 * slope
    return float(slope * steps + intercept)


def flux2_sigmas(steps: int, width: int, height: int) -> torch.Tensor:
    mu = empirical_mu(round(width * height / (16 * 16)), steps)
    t = torch.linspace(1, 0, steps + 1)
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** 1.0)


class Flux2Scheduler(Node):
    """Flux.2's noise levels for an image of width x height."""
    category = "sampling/custom_sampling/schedulers"  # ComfyUI's
    steps = Int(20, min=1, max=4096)
    width = Int(1024, min=16, max=MAX_RESOLUTION, step=1)
    height = Int(1024, min=16, max=MAX_RESOLUTION, step=1)
    outputs = (Out("SIGMAS", "SIGMAS"),)

    def run(self, ctx):
        return Sigmas(flux2_sigmas(self.steps, self.width, self.height), None, self.steps, 1.0)

"""ComfyUI's nodes that make or cut a SIGMAS list (comfy_extras/nodes_custom_sampler.py), with its
signatures and results: ManualSigmas, SetFirstSigma, SplitSigmas, SplitSigmasDenoise, FlipSigmas.
The SIGMAS value is nodes.comfy.sampling.Sigmas; what these nodes make is a plain list of levels
(no scheduler name attached), as a custom sampler reads it.
"""
from __future__ import annotations

import re

import torch

from graph import Float, In, Int, Node, Out, String

from .sampling import Sigmas

CATEGORY = "sampling/custom_sampling/sigmas"  # ComfyUI's
# ComfyUI's pattern for the numbers of ManualSigmas' text: a sign, digits, dots, digits.
NUMBER = re.compile(r"[-+]?(?:\d*\.*\d+)")


def _levels(values: torch.Tensor) -> Sigmas:
    return Sigmas(values.float())


class ManualSigmas(Node):
    """Noise levels written as text: every number in it, in order ("14.6, 7, 3.5, 0" or "1 0.5")."""
    category = CATEGORY
    sigmas = String("1, 0.5", tooltip="the numbers, separated by commas or spaces; end with 0 for a full run")
    outputs = (Out("SIGMAS", "SIGMAS"),)

    def run(self, ctx):
        values = []
        for text in NUMBER.findall(self.sigmas):
            try:
                values.append(float(text))
            except ValueError:
                raise ValueError(f"ManualSigmas: input 'sigmas': {text!r} is not a number") from None
        return (_levels(torch.tensor(values, dtype=torch.float32)),)


class SetFirstSigma(Node):
    """The list with its first level replaced by `sigma`."""
    category = CATEGORY
    sigmas = In("SIGMAS")
    sigma = Float(136.0, min=0.0, max=20000.0, step=0.001)
    outputs = (Out("SIGMAS", "SIGMAS"),)

    def run(self, ctx):
        values = self.sigmas.values.clone()
        if not len(values):
            raise ValueError("SetFirstSigma: input 'sigmas' is empty; there is no first level to set")
        values[0] = self.sigma
        return (_levels(values),)


class SplitSigmas(Node):
    """Levels 0..step (high_sigmas) and step..end (low_sigmas): the level at `step` ends the first
    part and starts the second, so two samplers continue one another."""
    category = CATEGORY
    sigmas = In("SIGMAS")
    step = Int(0, min=0, max=10000)
    outputs = (Out("SIGMAS", "high_sigmas"), Out("SIGMAS", "low_sigmas"))

    def run(self, ctx):
        values = self.sigmas.values
        return _levels(values[:self.step + 1]), _levels(values[self.step:])


class SplitSigmasDenoise(Node):
    """The last round(steps * denoise) steps as low_sigmas, the levels before them as high_sigmas
    (ComfyUI's slicing: with denoise giving 0 steps, high_sigmas is empty and low_sigmas the last level)."""
    category = CATEGORY
    sigmas = In("SIGMAS")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Out("SIGMAS", "high_sigmas"), Out("SIGMAS", "low_sigmas"))

    def run(self, ctx):
        values = self.sigmas.values
        steps = round(max(len(values) - 1, 0) * self.denoise)
        return _levels(values[:-steps] if steps else values[:0]), _levels(values[-(steps + 1):])


class FlipSigmas(Node):
    """The levels in reverse order (for inversion: noise added step by step); a first level of 0
    becomes 0.0001, as in ComfyUI, since samplers divide by it."""
    category = CATEGORY
    sigmas = In("SIGMAS")
    outputs = (Out("SIGMAS", "SIGMAS"),)

    def run(self, ctx):
        values = self.sigmas.values.flip(0)
        if len(values) and values[0] == 0:
            values[0] = 0.0001
        return (_levels(values),)

"""ComfyUI's dual CFG (DualCFGGuider): three conditionings, `positive` (cond1), `middle` (cond2) and
`negative`, each predicted alone, then combined with two scales:

- regular: negative + cfg2 * (middle - negative) + cfg1 * (positive - middle); as ComfyUI, the
  negative pass is skipped when cfg2 is 1, and the middle one too when cfg1 is also 1;
- nested: the text prediction t = middle + cfg1 * (positive - middle), then negative + cfg2 * (t - negative).

Both are affine combinations (weights summing to 1), so combining the model's outputs (noise,
velocity or v) gives what ComfyUI's combination of denoised latents gives. ComfyUI batches the three
passes in one model call; here each is its own call (the same predictions up to float rounding)."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, eq=False)
class Dual:
    """The second conditioning and scale of a dual-CFG run (nodes.comfy.sampling.Guider.dual)."""
    middle: tuple
    cfg2: float
    nested: bool = False


class DualGuide:
    """guide(x, t, step, total) of three single-conditioning guides, made by `single(conditioning)`."""

    def __init__(self, single, positive, dual: Dual, negative, cfg1: float):
        self.cfg1, self.cfg2, self.nested = cfg1, dual.cfg2, dual.nested
        skip_negative = not self.nested and math.isclose(self.cfg2, 1.0)
        skip_middle = skip_negative and math.isclose(self.cfg1, 1.0)
        self.positive = single(positive)
        self.middle = None if skip_middle else single(dual.middle)
        self.negative = None if skip_negative or negative is None else single(negative)
        self.last_uncond = None

    @property
    def inpaint_latents(self):
        return getattr(self.positive, "inpaint_latents", None)

    def __call__(self, x, t, step: int, total: int):
        pos = self.positive(x, t, step, total)
        if self.middle is None:
            return pos
        mid = self.middle(x, t, step, total)
        if self.negative is None:
            return mid + self.cfg1 * (pos - mid)
        neg = self.negative(x, t, step, total)
        if self.nested:
            text = mid + self.cfg1 * (pos - mid)
            return neg + self.cfg2 * (text - neg)
        return neg + self.cfg2 * (mid - neg) + self.cfg1 * (pos - mid)

"""ComfyUI's dual CFG (comfy_extras/nodes_custom_sampler.py Guider_DualCFG): three conditionings, a
positive (cond1), a middle one (cond2: for an edit model, the image without the instruction) and a
negative, each predicted alone, combined as

    regular: n + cfg2 * (m - n) + cfg1 * (p - m)
    nested:  n + cfg2 * ((m + cfg1 * (p - m)) - n)

(cfg1 = cfg_conds, cfg2 = cfg_cond2_negative). As ComfyUI, regular skips the negative pass at cfg2 = 1
and the middle one too when cfg1 = 1. The combinations' weights sum to 1, so combining velocities or
noise predictions gives the same denoised latents as ComfyUI's combination of denoised ones."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True, eq=False)
class DualCFG:
    middle: Any  # cond2, a CONDITIONING
    cfg_conds: float
    cfg_cond2_negative: float
    nested: bool = False


class DualGuide:
    """`single(conditioning)`: the guide (x, t, step, total) -> prediction of one conditioning alone."""

    def __init__(self, single: Callable, positive, negative, dual: DualCFG):
        self.cfg1, self.cfg2, self.nested = dual.cfg_conds, dual.cfg_cond2_negative, dual.nested
        skip_negative = not self.nested and math.isclose(self.cfg2, 1.0)
        skip_middle = skip_negative and math.isclose(self.cfg1, 1.0)
        self.positive = single(positive)
        self.middle = None if skip_middle else single(dual.middle)
        self.negative = None if skip_negative else single(negative)
        self.last_uncond = None

    def __call__(self, x, t, step: int, total: int):
        p = self.positive(x, t, step, total)
        if self.middle is None:
            return p
        m = self.middle(x, t, step, total)
        if self.negative is None:
            return m + self.cfg1 * (p - m)
        n = self.negative(x, t, step, total)
        if self.nested:
            return n + self.cfg2 * ((m + self.cfg1 * (p - m)) - n)
        return n + self.cfg2 * (m - n) + self.cfg1 * (p - m)

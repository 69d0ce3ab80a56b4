"""What the transformer families' guides share: ComfyUI's classifier-free guidance over a guide's two
predictions. A guide sets `cfg`, `guided` (it has a negative side and cfg != 1, or its sampler needs the
unconditional prediction) and `keep_uncond` (then `last_uncond` holds that prediction for the sampler)."""
from __future__ import annotations


class CFGMix:
    cfg: float = 1.0
    keep_uncond: bool = False
    last_uncond = None

    def mix(self, uncond, cond):
        """u + cfg * (c - u), as ComfyUI's CFGGuider combines them."""
        if self.keep_uncond:
            self.last_uncond = uncond
        return uncond + self.cfg * (cond - uncond)

"""The guided prediction of a flow-matching transformer for nodes.comfy.ksampling (in the convention of
nodes.comfy.ksampling.denoiser.FlowSchedule: given x and the timestep (sigma: Z-Image's multiplier is 1), a velocity v
with denoised = x - sigma * v). Z-Image: diffusers' ZImageTransformer2DModel takes a list of latents
(C, 1, h, w), the time 1 - sigma and a list of caption features (L, D), and predicts minus v (what
ComfyUI's Lumina 2 model and diffusers' ZImagePipeline both negate).

CFG as ComfyUI: u + cfg * (c - u), the negative pass skipped at cfg 1. Latents of odd sides are
padded to whole patches, wrapping round, and the prediction cropped back (ComfyUI's Lumina 2 model). Plain conditioning only (one
entry per side; areas, masks, ControlNets and the like are refused with a clear error)."""
from __future__ import annotations

import torch

from ...conditioning import as_conditioning
from ..guidance import CFGMix


def _caption(conditioning, side: str) -> torch.Tensor:
    entries = as_conditioning(conditioning)
    if len(entries) != 1 or not entries[0].plain or entries[0].controls:
        raise ValueError(f"the {side} conditioning of a Z-Image model must be one plain text encoding "
                         "(areas, masks, ControlNets and combined conditionings are not supported yet)")
    return entries[0].embeds


def pad_to_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Latents whose sides are not multiples of the patch size padded at the bottom and right,
    wrapping round, as ComfyUI's Lumina 2 model pads them (its prediction is cropped back)."""
    pad_h, pad_w = (-x.shape[-2]) % patch, (-x.shape[-1]) % patch
    if not pad_h and not pad_w:
        return x
    return torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="circular")


class ZImageGuide(CFGMix):
    def __init__(self, transformer, positive, negative, cfg: float, keep_uncond: bool = False):
        self.transformer, self.cfg = transformer, cfg
        self.guided = negative is not None and (cfg != 1.0 or keep_uncond)
        self.keep_uncond, self.last_uncond = keep_uncond, None
        self.sides = [_caption(negative, "negative")] if self.guided else []
        self.sides.append(_caption(positive, "positive"))

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, caption: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if caption.shape[0] not in (1, batch):
            raise ValueError(f"a conditioning batch of {caption.shape[0]} does not match the latent batch of {batch}")
        captions = [caption[i if caption.shape[0] > 1 else 0].to(x.dtype) for i in range(batch)]
        time = (1.0 - t).to(x.dtype).expand(batch)  # ComfyUI's Lumina 2 model: 1 - its timestep, as given
        h, w = x.shape[-2:]
        x = pad_to_patches(x, self.transformer.config.all_patch_size[0])
        out = self.transformer(list(x.unsqueeze(2).unbind(0)), time, captions, return_dict=False)[0]
        return -torch.stack([o.float() for o in out]).squeeze(2)[..., :h, :w]

    def __call__(self, x: torch.Tensor, t, step: int, total: int) -> torch.Tensor:
        preds = [self._velocity(x, torch.as_tensor(t, device=x.device), c.to(x.device)) for c in self.sides]
        if not self.guided:
            return preds[0]
        uncond, cond = preds
        return self.mix(uncond, cond)


class ZImagePipelineGuide:
    """The stage nodes' prediction (Sample/UNetStep with a diffusers scheduler), as ZImagePipeline's loop:
    the scheduler's timestep t fed as (1000 - t) / 1000, one transformer call on the positive then the
    negative latents, guidance as the pipeline computes it, c + (g - 1) * (c - u) (its guidance_scale is
    Loom's g - 1: the same u + g * (c - u)), and the negated output for the scheduler's step."""

    def __init__(self, transformer, positive, negative, guidance_scale: float):
        self.transformer, self.extra = transformer, guidance_scale - 1.0
        self.dtype = transformer.dtype  # once: diffusers' `dtype` walks every submodule
        self.guided = guidance_scale != 1.0
        if self.guided and negative is None:
            raise ValueError("guidance other than 1 needs a negative conditioning")
        self.positive = _caption(positive, "positive")
        self.negative = _caption(negative, "negative") if self.guided else None

    def __call__(self, x: torch.Tensor, t, step: int, total: int) -> torch.Tensor:
        batch = x.shape[0]
        captions = self._per_image(self.positive, batch)
        time = (1000 - t.expand(batch)) / 1000
        latents = x.to(self.dtype)
        if self.guided:
            latents, captions, time = latents.repeat(2, 1, 1, 1), captions + self._per_image(self.negative, batch), \
                time.repeat(2)
        out = self.transformer(list(latents.unsqueeze(2).unbind(0)), time, captions, return_dict=False)[0]
        if self.guided:
            pred = torch.stack([out[j].float() + self.extra * (out[j].float() - out[batch + j].float())
                                for j in range(batch)])
        else:
            pred = torch.stack([o.float() for o in out])
        return (-pred.squeeze(2)).to(torch.float32)

    def _per_image(self, caption: torch.Tensor, batch: int) -> list:
        if caption.shape[0] not in (1, batch):
            raise ValueError(f"a conditioning batch of {caption.shape[0]} does not match the latent batch of {batch}")
        return [caption[i if caption.shape[0] > 1 else 0].to(self.dtype) for i in range(batch)]

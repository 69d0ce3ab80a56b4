"""The guided prediction of SD3's transformer for nodes.comfy.ksampling (nodes.comfy.ksampling.denoiser.FlowSchedule's
convention: given x and the timestep sigma * 1000, a velocity v with denoised = x - sigma * v; diffusers'
SD3Transformer2DModel predicts v itself, as ComfyUI's MMDiT).

CFG as StableDiffusion3Pipeline and ComfyUI: one transformer call on cat([negative, positive]) when both
sides have as many tokens (else one call each), u + cfg * (c - u), the negative pass skipped at cfg 1.
Skip-layer guidance (SkipLayerGuidanceDiTSimple, a `SkipLayers` in the MODEL's patches): within its
sigma range the negative pass runs with those joint blocks skipped, the positive pass apart. Plain
conditioning only (one entry per side); areas, masks and ControlNets are refused with a clear error."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...conditioning import as_conditioning


@dataclass(frozen=True)
class SkipLayers:
    """ComfyUI's SkipLayerGuidanceDiTSimple: the negative pass skips these joint blocks while
    sigma_end < sigma <= sigma_start (ComfyUI's percent_to_sigma of its start and end percents)."""
    blocks: tuple[int, ...]
    sigma_start: float
    sigma_end: float

    def active(self, sigma: float) -> bool:
        return bool(self.blocks) and self.sigma_end < sigma <= self.sigma_start


@dataclass(frozen=True)
class SkipLayersAfterCfg:
    """ComfyUI's SkipLayerGuidanceDiT / SkipLayerGuidanceSD3: after CFG, + scale * (positive - positive
    with these blocks skipped) in the same sigma range (velocities; the pipeline's skip_guidance_layers
    does the same), then optionally rescaled towards the positive prediction's spread."""
    blocks: tuple[int, ...]
    scale: float
    sigma_start: float
    sigma_end: float
    rescaling_scale: float = 0.0

    def active(self, sigma: float) -> bool:
        return bool(self.blocks) and self.scale > 0 and self.sigma_end < sigma <= self.sigma_start


def _side(conditioning, side: str, joint: int) -> tuple[torch.Tensor, torch.Tensor]:
    entries = as_conditioning(conditioning)
    if len(entries) != 1 or not entries[0].plain or entries[0].controls:
        raise ValueError(f"the {side} conditioning of an SD3 model must be one plain text encoding "
                         "(areas, masks, ControlNets and combined conditionings are not supported yet)")
    embeds, pooled = entries[0].embeds, entries[0].pooled
    if pooled is None:
        raise ValueError(f"the {side} conditioning has no pooled text embedding: encode it with an SD3 CLIP")
    if embeds.shape[-1] < joint:  # CLIP tokens alone (no T5): zero-padded to the joint width, as ComfyUI's 4096
        embeds = F.pad(embeds, (0, joint - embeds.shape[-1]))
    return embeds, pooled


class SD3Guide:
    def __init__(self, transformer, positive, negative, cfg: float, keep_uncond: bool = False,
                 skip: SkipLayers | None = None, multiplier: float = 1000, after: SkipLayersAfterCfg | None = None):
        self.transformer, self.cfg, self.skip, self.multiplier = transformer, cfg, skip, multiplier
        self.after = after
        self.guided = negative is not None and (cfg != 1.0 or keep_uncond)
        self.keep_uncond, self.last_uncond = keep_uncond, None
        joint = transformer.config.joint_attention_dim
        self.sides = [_side(negative, "negative", joint)] if self.guided else []
        self.sides.append(_side(positive, "positive", joint))

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, sides: list, skip_layers=None) -> torch.Tensor:
        batch = x.shape[0]
        embeds, pooled = [], []
        for e, p in sides:
            if e.shape[0] not in (1, batch):
                raise ValueError(f"a conditioning batch of {e.shape[0]} does not match the latent batch of {batch}")
            embeds.append(e.expand(batch, -1, -1))
            pooled.append(p.expand(batch, -1))
        n = len(sides)
        dtype = x.dtype
        out = self.transformer(hidden_states=torch.cat([x] * n) if n > 1 else x,
                               encoder_hidden_states=torch.cat(embeds).to(x.device, dtype),
                               pooled_projections=torch.cat(pooled).to(x.device, dtype),
                               timestep=t.expand(batch * n), skip_layers=skip_layers, return_dict=False)[0]
        return out

    def __call__(self, x: torch.Tensor, t, step: int, total: int) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        skipping = self.guided and self.skip is not None and self.skip.active(float(t) / self.multiplier)
        if not self.guided:
            return self._after(x, t, self._velocity(x, t, self.sides), None)
        if skipping:  # ComfyUI: the positive pass as usual, the negative one with the blocks skipped
            cond = self._velocity(x, t, self.sides[1:])
            uncond = self._velocity(x, t, self.sides[:1], list(self.skip.blocks))
        elif self.sides[0][0].shape[1] == self.sides[1][0].shape[1]:
            uncond, cond = self._velocity(x, t, self.sides).chunk(2)
        else:
            uncond, cond = (self._velocity(x, t, [s]) for s in self.sides)
        if self.keep_uncond:
            self.last_uncond = uncond
        return self._after(x, t, uncond + self.cfg * (cond - uncond), cond)

    def _after(self, x, t, guided: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """SkipLayersAfterCfg's term (ComfyUI's post-CFG function: also at cfg 1)."""
        if self.after is not None and self.after.active(float(t) / self.multiplier):
            cond = guided if cond is None else cond
            skipped = self._velocity(x, t, self.sides[-1:], list(self.after.blocks))
            guided = guided + (cond - skipped) * self.after.scale
            if self.after.rescaling_scale:
                factor = cond.std() / guided.std()
                guided = guided * (self.after.rescaling_scale * factor + (1 - self.after.rescaling_scale))
        return guided

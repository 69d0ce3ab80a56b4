"""ComfyUI's CFGNorm (comfy_extras/nodes_cfg.py): a MODEL patch that limits the guided prediction's
norm to the positive one's, per latent pixel over the channels. By default after CFG, on the denoised
latents: denoised * clamp(|cond_denoised| / (|denoised| + 1e-8), 0, 1) * strength. With `pre_cfg`
(ComfyUI's newer option, the norm-scaled CFG of models like Lens) it rescales the CFG combination of
the noise predictions to the positive one's norm, unclamped, strength blending back to plain CFG.

Loom keeps the patch in the MODEL's `patches` (a CFGNormPatch, `post_cfg` true); a family's guide
applies it (nodes.families.qwen_image.guide); KSampler refuses it on models whose guide would not."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from graph import Boolean, Float, In, Node, Out


@dataclass(frozen=True)
class CFGNormPatch:
    strength: float = 1.0
    pre_cfg: bool = False
    post_cfg = True  # applied to the guided prediction (ComfyUI's sampler post-CFG / CFG functions)

    def __call__(self, cond_denoised, uncond_denoised, denoised, cond_scale, input, sigma):
        if self.pre_cfg:
            return self.pre(cond_denoised, uncond_denoised, denoised, cond_scale, input)
        norm_cond = torch.norm(cond_denoised, dim=1, keepdim=True)
        norm_out = torch.norm(denoised, dim=1, keepdim=True)
        out = denoised * (norm_cond / (norm_out + 1e-8)).clamp(min=0.0, max=1.0) * self.strength
        if self.strength > 1.0 and not torch.isfinite(out).all():
            raise ValueError(f"CFGNorm: strength {self.strength} made the prediction non-finite (above 1 it "
                             "amplifies at every step); use a strength of at most 1")
        return out

    def pre(self, cond_denoised, uncond_denoised, denoised, cond_scale, x):
        if uncond_denoised is None:  # cfg 1: no negative pass, nothing to rescale
            return denoised
        cond, uncond = x - cond_denoised, x - uncond_denoised
        comb = uncond + cond_scale * (cond - uncond)
        cond_norm = torch.linalg.vector_norm(cond, dim=1, keepdim=True)
        comb_norm = torch.linalg.vector_norm(comb, dim=1, keepdim=True)
        rescaled = comb * torch.where(comb_norm > 0, cond_norm / comb_norm.clamp_min(1e-12), torch.ones_like(comb_norm))
        if self.strength != 1.0:
            rescaled = self.strength * rescaled + (1.0 - self.strength) * comb
        return x - rescaled


class CFGNorm(Node):
    """Limits the CFG prediction's norm to the positive prediction's (Qwen-Image edit templates)."""
    category = "advanced/guidance"  # ComfyUI's
    model = In("MODEL")
    strength = Float(1.0, min=0.0, max=100.0, step=0.01)
    pre_cfg = Boolean(False, optional=True, tooltip="rescale the CFG combination of the noise predictions "
                                                    "(unclamped) instead of the denoised result")
    outputs = (Out("MODEL", "patched_model"),)

    def run(self, ctx):
        patch = CFGNormPatch(self.strength, bool(self.pre_cfg))
        return replace(self.model, patches=(*self.model.patches, patch))

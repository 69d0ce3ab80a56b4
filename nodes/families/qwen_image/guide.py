"""The guided prediction of Qwen-Image's transformer for nodes.comfy.ksampling (nodes.families.spec.Runtime
.guide): given LATENT-shaped x (B, 16, h, w) and the timestep (= sigma: multiplier 1), the velocity v
(denoised = x - sigma v), as diffusers' Qwen-Image pipelines compute it: x packed into 2 x 2 patches,
the reference latents of the conditioning (ComfyUI's "reference_latents": TextEncodeQwenImageEdit*,
ReferenceLatent) packed and appended as more image tokens, each a frame of its own in the rotary
positions; the text features with an all-ones mask; the output's first tokens unpacked.

CFG as ComfyUI: u + cfg * (c - u), the negative pass skipped at cfg 1; then the model's post-CFG
patches (CFGNorm) on the denoised prediction. Plain conditioning only (one entry per side).
"""
from __future__ import annotations

import torch

from ...conditioning import as_conditioning

REFERENCE_METHODS = ("index", "index_timestep_zero")


def padded(x: torch.Tensor) -> torch.Tensor:
    """Odd sides padded to even ones, wrapping around (ComfyUI's pad_to_patch_size); even ones unchanged."""
    pad = (0, x.shape[3] % 2, 0, x.shape[2] % 2)
    return torch.nn.functional.pad(x, pad, mode="circular") if any(pad) else x


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C), the pipelines' _pack_latents (odd sides padded first)."""
    x = padded(x)
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, features = tokens.shape
    x = tokens.view(b, h // 2, w // 2, features // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, features // 4, h, w)


class Side:
    """One side of the guidance: text features and reference latents."""

    def __init__(self, conditioning, side: str, zero_cond_t: bool):
        entries = as_conditioning(conditioning)
        if len(entries) != 1 or not entries[0].plain or entries[0].controls:
            raise ValueError(f"the {side} conditioning of a Qwen-Image model must be one plain text encoding "
                             "(areas, masks, ControlNets and combined conditionings are not supported yet)")
        entry = entries[0]
        self.embeds = entry.embeds
        self.references = list(entry.extra.get("reference_latents") or [])
        method = entry.extra.get("reference_latents_method", "index_timestep_zero" if zero_cond_t else "index")
        method = {"uxo/uno": "uxo"}.get(method, method)
        if self.references and method not in REFERENCE_METHODS:
            raise ValueError(f"FluxKontextMultiReferenceLatentMethod '{method}' is not supported on Qwen-Image "
                             f"models (these are: {', '.join(REFERENCE_METHODS)})")
        if self.references and (method == "index_timestep_zero") != zero_cond_t:
            raise ValueError(f"the reference method '{method}' does not fit this model: 'index_timestep_zero' is "
                             "Qwen-Image-Edit-2511's (its file has __index_timestep_zero__), 'index' the others'")


class QwenImageGuide:
    applies_post_cfg = True  # nodes.comfy.ksampling refuses post-CFG patches a guide would ignore

    def __init__(self, transformer, positive, negative, cfg: float, keep_uncond: bool = False, post_cfg=()):
        self.transformer, self.cfg, self.post_cfg = transformer, cfg, tuple(post_cfg)
        zero = bool(getattr(transformer.config, "zero_cond_t", False))
        self.guided = negative is not None and (cfg != 1.0 or keep_uncond)
        self.keep_uncond, self.last_uncond = keep_uncond, None
        self.sides = [Side(negative, "negative", zero)] if self.guided else []
        self.sides.append(Side(positive, "positive", zero))

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, side: Side) -> torch.Tensor:
        batch, _, h, w = x.shape
        embeds = side.embeds.to(device=x.device, dtype=x.dtype)
        if embeds.shape[0] not in (1, batch):
            raise ValueError(f"a conditioning batch of {embeds.shape[0]} does not match the latent batch of {batch}")
        embeds = embeds.expand(batch, -1, -1) if embeds.shape[0] == 1 else embeds
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=x.device)
        tokens = [pack(x)]
        shapes = [(1, (h + 1) // 2, (w + 1) // 2)]
        for ref in side.references:
            ref = ref.to(device=x.device, dtype=x.dtype)
            ref = ref.repeat(batch // ref.shape[0], 1, 1, 1) if ref.shape[0] != batch else ref
            tokens.append(pack(ref))
            shapes.append((1, (ref.shape[2] + 1) // 2, (ref.shape[3] + 1) // 2))
        out = self.transformer(hidden_states=torch.cat(tokens, dim=1), encoder_hidden_states=embeds,
                               encoder_hidden_states_mask=mask, timestep=t.to(x.dtype).expand(batch),
                               img_shapes=[shapes] * batch, return_dict=False)[0]
        return unpack(out[:, :tokens[0].shape[1]].float(), h + h % 2, w + w % 2)[:, :, :h, :w]

    def __call__(self, x: torch.Tensor, t, step: int, total: int) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        preds = [self._velocity(x, t, side) for side in self.sides]
        uncond, cond = (None, preds[0]) if not self.guided else preds
        if self.keep_uncond:
            self.last_uncond = uncond
        out = cond if uncond is None else uncond + self.cfg * (cond - uncond)
        if self.post_cfg:  # ComfyUI's post-CFG functions work on denoised predictions (sigma = t here)
            x32, sigma = x.float(), t.float()
            denoised = x32 - sigma * out
            for patch in self.post_cfg:
                denoised = patch(cond_denoised=x32 - sigma * cond, denoised=denoised, cond_scale=self.cfg, input=x32,
                                 uncond_denoised=None if uncond is None else x32 - sigma * uncond, sigma=sigma)
            out = (x32 - denoised) / sigma
        return out

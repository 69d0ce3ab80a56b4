"""The guided prediction of Chroma's transformer for nodes.comfy.ksampling (flow: a velocity v with
denoised = x - sigma * v; Chroma's timestep multiplier is 1, so t = sigma).

The LATENT (B, 16, h, w) is packed into 2 x 2 patches (B, h/2 * w/2, 64) with image position ids
(0, row, column) and text ids zero, as ChromaPipeline does (its own static helpers are used), and
unpacked after. CFG is real: a positive and a negative call, u + cfg * (c - u) (ComfyUI's and the
pipeline's), the negative skipped at cfg 1. No attention mask: ComfyUI's Chroma attends to every text
token it is given. Plain conditioning only (one entry per side)."""
from __future__ import annotations

import torch

from ...conditioning import as_conditioning
from ..guidance import CFGMix


def text_of(conditioning, side: str, label: str = "Chroma") -> torch.Tensor:
    entries = as_conditioning(conditioning)
    if len(entries) != 1 or not entries[0].plain or entries[0].controls:
        raise ValueError(f"the {side} conditioning of a {label} model must be one plain text encoding "
                         "(areas, masks, ControlNets and combined conditionings are not supported yet)")
    return entries[0].embeds


def batched(embeds: torch.Tensor, batch: int) -> torch.Tensor:
    if embeds.shape[0] not in (1, batch):
        raise ValueError(f"a conditioning batch of {embeds.shape[0]} does not match the latent batch of {batch}")
    return embeds.expand(batch, *embeds.shape[1:]) if embeds.shape[0] == 1 else embeds


class ChromaGuide(CFGMix):
    def __init__(self, transformer, positive, negative, cfg: float, keep_uncond: bool = False):
        self.transformer, self.cfg = transformer, cfg
        self.guided = negative is not None and (cfg != 1.0 or keep_uncond)
        self.keep_uncond, self.last_uncond = keep_uncond, None
        self.positive = text_of(positive, "positive")
        self.negative = text_of(negative, "negative") if self.guided else None

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        from diffusers import ChromaPipeline

        batch, channels, h, w = x.shape
        packed = ChromaPipeline._pack_latents(x, batch, channels, h, w)
        image_ids = ChromaPipeline._prepare_latent_image_ids(batch, h // 2, w // 2, x.device, x.dtype)
        text = batched(text.to(device=x.device, dtype=x.dtype), batch)
        text_ids = torch.zeros(text.shape[1], 3, device=x.device, dtype=x.dtype)
        out = self.transformer(hidden_states=packed, timestep=t.to(x.dtype).expand(batch), encoder_hidden_states=text,
                               txt_ids=text_ids, img_ids=image_ids, attention_mask=None, return_dict=False)[0]
        return ChromaPipeline._unpack_latents(out, h * 8, w * 8, 8)

    def __call__(self, x: torch.Tensor, t, step: int, total: int) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        cond = self._velocity(x, t, self.positive)
        if not self.guided:
            return cond
        uncond = self._velocity(x, t, self.negative)
        return self.mix(uncond, cond)

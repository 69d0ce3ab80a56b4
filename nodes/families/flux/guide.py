"""Flux.1's prediction for nodes.comfy.ksampling (the convention of FlowSchedule / FluxSchedule: given
x in ComfyUI's latent layout (B, 16, H, W) and the timestep (= sigma), a velocity v with
denoised = x - sigma * v).

The 2x2 packing happens here, as ComfyUI's Flux model does it: the latents padded (circularly) to
even sides, each 2x2 patch one token of 64 channels in (channel, row, column) order, position ids
(index, row, column) per token and zeros per text token; the output unpacked and cropped. diffusers'
FluxPipeline packs the same way (_pack_latents, _prepare_latent_image_ids).

`velocity` is the one call for other users (stage nodes, Kontext): one prediction of the
transformer for latents, a sigma and one conditioning entry's values.

CFG as ComfyUI: u + cfg * (c - u), the negative pass skipped at cfg 1. One plain entry per side
(areas, masks, ControlNets and combined conditionings are refused with a clear error)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...conditioning import as_conditioning
from ..guidance import CFGMix

PATCH = 2


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) with even H, W -> (B, H/2 * W/2, C * 4)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // PATCH) * (w // PATCH), c * PATCH * PATCH)


def unpack(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H/2 * W/2, C * 4) -> (B, C, H, W) (the inverse of `pack`)."""
    b, _, d = x.shape
    c = d // (PATCH * PATCH)
    x = x.reshape(b, height // PATCH, width // PATCH, c, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, height, width)


def image_ids(height: int, width: int, index: int = 0, h_offset: int = 0, w_offset: int = 0,
              device=None, dtype=torch.float32) -> torch.Tensor:
    """(tokens, 3) position ids of a (height, width) latent: (index, row + h_offset, column + w_offset)."""
    rows, cols = height // PATCH, width // PATCH
    ids = torch.zeros(rows, cols, 3, device=device, dtype=dtype)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(rows, device=device, dtype=dtype)[:, None] + h_offset
    ids[..., 2] = torch.arange(cols, device=device, dtype=dtype)[None, :] + w_offset
    return ids.reshape(rows * cols, 3)


def pad_to_patches(x: torch.Tensor) -> torch.Tensor:
    """ComfyUI's pad_to_patch_size: odd sides padded circularly to even."""
    h, w = x.shape[-2:]
    if h % PATCH == 0 and w % PATCH == 0:
        return x
    return F.pad(x, (0, (-w) % PATCH, 0, (-h) % PATCH), mode="circular")


class _WithoutGuidance(torch.nn.Module):
    """dev's time embedding without its guidance term (ComfyUI adds none when guidance is None)."""

    def __init__(self, embed):
        super().__init__()
        self.embed = embed

    def forward(self, timestep, guidance, pooled):
        e = self.embed
        return e.timestep_embedder(e.time_proj(timestep).to(pooled.dtype)) + e.text_embedder(pooled)


def _batch(t: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if t.shape[0] not in (1, batch):
        raise ValueError(f"a conditioning {what} batch of {t.shape[0]} does not match the latent batch of {batch}")
    return t.expand(batch, *t.shape[1:])


def velocity(transformer, x: torch.Tensor, sigma, embeds: torch.Tensor, pooled: torch.Tensor,
             guidance: float | None = None, extra_tokens: tuple = (), dtype=None) -> torch.Tensor:
    """The transformer's velocity (B, C, H, W) for latents x (B, C, H, W) at `sigma` (a number or (B,)),
    with T5 embeds (1 or B, L, D), CLIP pooled (1 or B, P) and dev's guidance (ignored by schnell; None on
    dev: no guidance term). `extra_tokens`: (packed latents (B, N, C*4), ids (N, 3)) pairs appended
    after the image tokens and dropped from the output (reference images: Kontext)."""
    batch, _, height, width = x.shape
    dtype = dtype or transformer.dtype  # given by callers per step: diffusers' `dtype` walks every submodule
    padded = pad_to_patches(x)
    h, w = padded.shape[-2:]
    tokens = pack(padded).to(dtype)
    ids = image_ids(h, w, device=x.device, dtype=dtype)
    count = tokens.shape[1]
    for more, more_ids in extra_tokens:
        tokens = torch.cat([tokens, more.to(device=x.device, dtype=dtype)], dim=1)
        ids = torch.cat([ids, more_ids.to(device=x.device, dtype=dtype)], dim=0)
    embeds = _batch(embeds.to(device=x.device, dtype=dtype), batch, "text")
    pooled = _batch(pooled.to(device=x.device, dtype=dtype), batch, "pooled")
    time = torch.as_tensor(sigma, device=x.device, dtype=dtype).reshape(-1).expand(batch)
    text_ids = torch.zeros(embeds.shape[1], 3, device=x.device, dtype=dtype)
    guided = transformer.config.guidance_embeds
    g = torch.full((batch,), 0.0 if guidance is None else float(guidance), device=x.device, dtype=torch.float32)
    embed = transformer.time_text_embed
    if guided and guidance is None:
        transformer.time_text_embed = _WithoutGuidance(embed)
    try:
        out = transformer(hidden_states=tokens, encoder_hidden_states=embeds, pooled_projections=pooled,
                          timestep=time, img_ids=ids, txt_ids=text_ids, guidance=g if guided else None,
                          return_dict=False)[0]
    finally:
        transformer.time_text_embed = embed
    return unpack(out[:, :count].float(), h, w)[..., :height, :width]


def side(conditioning, name: str):
    """(embeds, pooled, guidance, entry) of one side's single plain entry."""
    from . import DEFAULT_GUIDANCE

    entries = as_conditioning(conditioning)
    if len(entries) != 1 or not entries[0].plain or entries[0].controls:
        raise ValueError(f"the {name} conditioning of a Flux model must be one plain text encoding "
                         "(areas, masks, ControlNets and combined conditionings are not supported yet)")
    entry = entries[0]
    if entry.pooled is None:
        raise ValueError(f"the {name} conditioning has no pooled CLIP-L output: encode it with a Flux CLIP "
                         "(DualCLIPLoader type 'flux')")
    return entry.embeds, entry.pooled, entry.extra.get("guidance", DEFAULT_GUIDANCE), entry


class FluxGuide(CFGMix):
    def __init__(self, transformer, positive, negative, cfg: float, keep_uncond: bool = False):
        self.transformer, self.cfg, self.dtype = transformer, cfg, transformer.dtype
        self.guided = negative is not None and (cfg != 1.0 or keep_uncond)
        self.keep_uncond, self.last_uncond = keep_uncond, None
        self.sides = [side(negative, "negative")] if self.guided else []
        self.sides.append(side(positive, "positive"))

    def __call__(self, x: torch.Tensor, t, step: int, total: int) -> torch.Tensor:
        preds = [self.predict(x, t, s) for s in self.sides]
        if not self.guided:
            return preds[0]
        uncond, cond = preds
        return self.mix(uncond, cond)

    def predict(self, x: torch.Tensor, t, values) -> torch.Tensor:
        """One side's velocity, with what its entry gives an editing model (nodes.families.flux.edit: Fill /
        Canny / Depth image channels, Kontext reference latents)."""
        from .edit import inputs

        embeds, pooled, guidance, entry = values
        x, extra = inputs(x, entry, self.transformer.config.in_channels // PATCH ** 2)
        return velocity(self.transformer, x, t, embeds, pooled, guidance, extra, dtype=self.dtype)

"""Flux.2's prediction for ComfyUI's samplers: the LATENT's (B, 128, h, w) latents packed one token per
latent pixel, position ids (time, row, column, token) as Flux2Pipeline makes them (the image at time 0,
reference image i at time 10 (i + 1), text tokens along the last axis), the reference latents of
ReferenceLatent appended after the image tokens, the embedded guidance of Dev (FluxGuidance; ComfyUI's
3.5 by default), CFG for the base models. The transformer is fed t = sigma and predicts the velocity."""
from __future__ import annotations

import torch

from . import DEFAULT_GUIDANCE
from ..guidance import CFGMix

REFERENCE_TIME = 10  # the pipeline's time coordinate step between reference images


def _entry(conditioning, side: str):
    entries = tuple(conditioning or ())
    if len(entries) != 1:
        raise ValueError(f"Flux.2 sampling takes one {side} conditioning entry from a single prompt encoding "
                         "(areas, masks, ControlNets and combined conditionings are not supported yet)")
    return entries[0]


def pack(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, c, h * w).permute(0, 2, 1)


def image_ids(h: int, w: int, time: int = 0) -> torch.Tensor:
    return torch.cartesian_prod(torch.tensor([time]), torch.arange(h), torch.arange(w), torch.arange(1))


def text_ids(length: int) -> torch.Tensor:
    return torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(length))


class Side:
    """One conditioning's inputs to the transformer: text, its ids, the guidance and the references."""

    def __init__(self, entry, with_guidance: bool):
        self.text = entry.embeds
        self.guidance = entry.extra.get("guidance", DEFAULT_GUIDANCE) if with_guidance else None
        self.references = list(entry.extra.get("reference_latents", ()))
        method = entry.extra.get("reference_latents_method", "index")
        if self.references and method != "index":  # the pipeline's placement is ComfyUI's "index"
            raise ValueError(f"Flux.2 places reference latents by index (time 10, 20, ...); the reference method "
                             f"{method!r} is not supported for Flux.2 yet")

    def reference_tokens(self, batch: int, dtype, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.references:
            return None, None
        tokens, ids = [], []
        for i, ref in enumerate(self.references):
            ref = ref.to(device=device, dtype=dtype)
            ref = ref if ref.shape[0] == batch else ref[:1].expand(batch, -1, -1, -1)
            tokens.append(pack(ref))
            ids.append(image_ids(ref.shape[2], ref.shape[3], REFERENCE_TIME * (i + 1)))
        return torch.cat(tokens, dim=1), torch.cat(ids, dim=0)


class Flux2Guide(CFGMix):
    def __init__(self, transformer, positive, negative, cfg: float, keep_uncond: bool = False):
        self.transformer, self.cfg = transformer, cfg
        self.guided = negative is not None and (cfg != 1.0 or keep_uncond)
        self.keep_uncond, self.last_uncond = keep_uncond, None
        embeds_guidance = transformer.config.guidance_embeds
        self.sides = [Side(_entry(negative, "negative"), embeds_guidance)] if self.guided else []
        self.sides.append(Side(_entry(positive, "positive"), embeds_guidance))

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, side: Side) -> torch.Tensor:
        b, c, h, w = x.shape
        text = side.text.to(device=x.device, dtype=x.dtype)
        if text.shape[0] not in (1, b):
            raise ValueError(f"a conditioning batch of {text.shape[0]} does not match the latent batch of {b}")
        text = text.expand(b, -1, -1)
        tokens, ids = pack(x), image_ids(h, w).to(x.device)
        refs, ref_ids = side.reference_tokens(b, x.dtype, x.device)
        if refs is not None:
            tokens, ids = torch.cat([tokens, refs], dim=1), torch.cat([ids, ref_ids.to(x.device)], dim=0)
        guidance = None
        if side.guidance is not None:
            guidance = torch.full([1], float(side.guidance), device=x.device, dtype=torch.float32).expand(b)
        out = self.transformer(hidden_states=tokens, encoder_hidden_states=text, timestep=t.expand(b).to(x.dtype),
                               img_ids=ids, txt_ids=text_ids(text.shape[1]).to(x.device), guidance=guidance,
                               return_dict=False)[0]
        return out[:, :h * w].float().permute(0, 2, 1).reshape(b, c, h, w)

    def __call__(self, x: torch.Tensor, t, step: int, total: int) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1)[:1]
        preds = [self._velocity(x, t, side) for side in self.sides]
        if not self.guided:
            return preds[0]
        uncond, cond = preds
        return self.mix(uncond, cond)

"""What Flux.1's editing models read besides the noisy latents, as token sequences for the transformer
(used by the family's guide):

- Kontext: the reference latents of ReferenceLatent (Cond.extra["reference_latents"]) are patchified
  like the latents and appended to the image sequence, with position ids that tell them apart
  (ComfyUI's comfy/ldm/flux/model.py; diffusers' FluxKontextPipeline for one reference: id[0] = 1).
  `reference_latents_method`: "offset" (ComfyUI's default: index 1, each further reference placed
  beside or below the ones before), "index" (index 1, 2, ... at the same place) or "uxo" (index 0,
  placed past the image's own corner). The prediction keeps the image's tokens only.
- Fill (in_channels 16 + 16 + s*s) and Canny/Depth (16 + 16): channels concatenated to the latents
  before patchifying: the image latents (InpaintModelConditioning / InstructPixToPixConditioning's
  "concat_latent_image"), then for Fill the mask ("concat_mask") with each s x s pixel block unshuffled into channels (s: the VAE's scale,
  8 for the published models; diffusers' FluxFillPipeline and ComfyUI's Flux.concat_cond).
Latents are Loom's (VAE latents shifted and scaled); patches 2 x 2, channels-first inside a token.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import FAMILY
from .guide import PATCH, image_ids, pack, pad_to_patches, unpack


def patchify(x: torch.Tensor, index: float = 0, h_offset: int = 0, w_offset: int = 0):
    """(B, C, H, W) -> tokens (B, h*w, C*4) and their position ids (h*w, 3): (index, row, column), rows
    and columns counted from the offsets (given in latent pixels, rounded to patches as ComfyUI)."""
    x = pad_to_patches(x)
    ids = image_ids(x.shape[-2], x.shape[-1], index, (h_offset + 1) // PATCH, (w_offset + 1) // PATCH, device=x.device)
    return pack(x), ids


def unpatchify(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The image tokens (B, h*w, C*4) back to (B, C, height, width) (padding cut off)."""
    return unpack(tokens, height + height % PATCH, width + width % PATCH)[..., :height, :width]


def reference_tokens(references, method: str | None, height: int, width: int, batch: int):
    """The reference latents' tokens (B, N, D) and ids (N, 3) after an image of (height, width) latent
    pixels, placed by `method` (None: "offset"); None without references."""
    if not references:
        return None
    method = method or "offset"
    rows, cols = math.ceil(height / PATCH), math.ceil(width / PATCH)
    h = w = index = 0
    tokens, ids = [], []
    for ref in references:
        if method == "index":
            index, h_offset, w_offset = index + 1, 0, 0
        elif method == "uxo":
            index, h_offset, w_offset = 0, rows * PATCH + h, cols * PATCH + w
            h, w = h + ref.shape[-2], w + ref.shape[-1]
        else:  # offset: beside the references so far, or below them, whichever keeps the canvas squarer
            index, h_offset, w_offset = 1, 0, 0
            if ref.shape[-2] + h > ref.shape[-1] + w:
                w_offset = w
            else:
                h_offset = h
            h, w = max(h, ref.shape[-2] + h_offset), max(w, ref.shape[-1] + w_offset)
        t, i = patchify(ref, index, h_offset, w_offset)
        tokens.append(_to_batch(t, batch, "reference latent"))
        ids.append(i)
    return torch.cat(tokens, dim=1), torch.cat(ids, dim=0)


def fill_mask_channels(mask: torch.Tensor, height: int, width: int, scale: int) -> torch.Tensor:
    """A pixel mask (B, [1,] H, W) as Flux Fill's mask channels (B, scale*scale, height, width): resized
    to the latents' size in pixels (bilinear, as ComfyUI), each scale x scale block unshuffled."""
    mask = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    if mask.shape[-2:] != (height * scale, width * scale):
        mask = F.interpolate(mask, size=(height * scale, width * scale), mode="bilinear")
    b = mask.shape[0]
    return mask.reshape(b, height, scale, width, scale).permute(0, 2, 4, 1, 3).reshape(b, scale * scale, height, width)


def _to_batch(x: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ValueError(f"a {what} batch of {x.shape[0]} does not divide the latent batch of {batch}")
    return x.repeat(batch // x.shape[0], *([1] * (x.ndim - 1)))


def image_channels(entry, x: torch.Tensor, extra: int, scale: float = FAMILY.latent.scale,
                   shift: float = FAMILY.latent.shift) -> torch.Tensor | None:
    """The channels a Fill or Canny/Depth model reads after the latents x (B, C, H, W), `extra` of them
    (its in_channels less C), from the conditioning entry's values under ComfyUI's names:
    "concat_latent_image" (InpaintModelConditioning's blanked image, InstructPixToPixConditioning's
    image: latents as VAEEncode makes them) and for Fill "concat_mask" (the pixel mask). None: the
    model takes none. Without an image, as ComfyUI: a zero VAE latent ((0 - shift) * scale) and a mask
    of ones."""
    if extra <= 0:
        return None
    b, c, h, w = x.shape
    image = entry.extra.get("concat_latent_image")
    if image is None:
        image = torch.full_like(x, -shift * scale)
    image = image.to(device=x.device, dtype=torch.float32)
    if image.shape[-2:] != (h, w):
        image = F.interpolate(image, size=(h, w), mode="bilinear")
    image = _to_batch(image, b, "conditioning image").to(x.dtype)
    if extra == image.shape[1]:
        return image
    squares = extra - image.shape[1]
    side = math.isqrt(squares)
    if side * side != squares:
        raise ValueError(f"this Flux model takes {extra} extra input channels: neither an image's {c} nor an image "
                         f"and a square mask's")
    mask = entry.extra.get("concat_mask")
    mask = torch.ones(b, 1, h * side, w * side) if mask is None else mask
    channels = _to_batch(fill_mask_channels(mask.to(x.device), h, w, side), b, "mask").to(x.dtype)
    return torch.cat([image, channels], dim=1)


def inputs(x: torch.Tensor, entry, in_channels: int, scale: float = FAMILY.latent.scale,
           shift: float = FAMILY.latent.shift):
    """(the latents with the Fill / Canny / Depth channels the conditioning entry gives, the Kontext
    reference tokens as `velocity`'s extra_tokens) for a Flux.1 transformer taking `in_channels` per
    latent pixel (its x_embedder's inputs over 4)."""
    extra = image_channels(entry, x, in_channels - x.shape[1], scale, shift)
    refs = reference_tokens(entry.extra.get("reference_latents"), entry.extra.get("reference_latents_method"),
                            x.shape[-2], x.shape[-1], x.shape[0])
    return (x if extra is None else torch.cat([x, extra], dim=1)), (() if refs is None else (refs,))

"""ComfyUI's tiled VAE nodes: VAEDecodeTiled and VAEEncodeTiled decode or encode a large image in
overlapping square tiles (VAEDecode / VAEEncode on each), so the VAE's memory stays that of one tile.
Tiles are blended with weights that fall off linearly across the overlap, then normalised.

As ComfyUI: `tile_size` and `overlap` are in pixels (a decode tile is tile_size / the VAE's scale
latent pixels), and the overlap is cut to a quarter of the tile when larger. Differences: ComfyUI
averages three tilings of different shapes; Loom uses the one asked for. An image that fits in one
tile is decoded or encoded whole, exactly as VAEDecode / VAEEncode. The temporal inputs are for
video VAEs, which Loom does not load; they are accepted and unused."""
from __future__ import annotations

import torch

from graph import In, Int, Node, Out

from ..common import call
from ..latent import VAEDecode, VAEEncode, crop_to_vae, vae_scale
from ..latent_value import Latent


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one side: every tile - overlap, the last one flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, max(tile - overlap, 1))) + [size - tile]
    return sorted(set(starts))


def _ramp(length: int, feather: int, device) -> torch.Tensor:
    """1-D weights: rising over `feather` at both ends, 1 inside (never 0, so every pixel counts)."""
    w = torch.ones(length, device=device)
    for i in range(min(feather, length // 2)):
        w[i] = w[length - 1 - i] = (i + 1) / (feather + 1)
    return w


def tiled(x: torch.Tensor, tile: int, overlap: int, scale: float, run) -> torch.Tensor:
    """`run` over overlapping tiles of x (B, h, w, ...) -> (B, h * scale, w * scale, C), blended."""
    h, w = x.shape[1], x.shape[2]
    out = weights = None
    for top in _starts(h, tile, overlap):
        for left in _starts(w, tile, overlap):
            part = run(x[:, top:top + tile, left:left + tile])
            th, tw = part.shape[1], part.shape[2]
            feather = round(overlap * scale)
            weight = (_ramp(th, feather, part.device)[:, None] * _ramp(tw, feather, part.device)[None, :])[None, :, :, None]
            if out is None:
                out = part.new_zeros((part.shape[0], round(h * scale), round(w * scale), part.shape[3]))
                weights = part.new_zeros((1, out.shape[1], out.shape[2], 1))
            y, x0 = round(top * scale), round(left * scale)
            out[:, y:y + th, x0:x0 + tw] += part * weight
            weights[:, y:y + th, x0:x0 + tw] += weight
    return out / weights


class VAEDecodeTiled(Node):
    """VAEDecode in overlapping tiles of `tile_size` pixels (for images too large to decode at once)."""
    category = "_for_testing"  # ComfyUI's (v0.3.64; "model/latent" in later versions)
    samples = In("LATENT")
    vae = In("VAE")
    tile_size = Int(512, min=64, max=4096, step=32)
    overlap = Int(64, min=0, max=4096, step=32)
    temporal_size = Int(64, min=8, max=4096, step=4, tooltip="Only used for video VAEs: Amount of frames to decode at a time.")
    temporal_overlap = Int(8, min=4, max=4096, step=4, tooltip="Only used for video VAEs: Amount of frames to overlap.")
    outputs = (Out("IMAGE", "IMAGE"),)

    @torch.no_grad()
    def run(self, ctx):
        scale = vae_scale(self.vae)
        overlap = self.tile_size // 4 if self.tile_size < self.overlap * 4 else self.overlap
        tile, overlap = max(self.tile_size // scale, 1), overlap // scale
        z = self.samples.samples
        if z.shape[-2] <= tile and z.shape[-1] <= tile:
            return call(VAEDecode, ctx, samples=self.samples, vae=self.vae)

        def decode(part):  # (B, h, w, C) latents -> (B, H, W, 3) pixels
            return call(VAEDecode, ctx, samples=Latent(part.permute(0, 3, 1, 2), space=self.samples.space), vae=self.vae)

        return tiled(z.permute(0, 2, 3, 1), tile, overlap, scale, decode)


class VAEEncodeTiled(Node):
    """VAEEncode in overlapping tiles of `tile_size` pixels; the LATENT holds the latents only (no
    sampled distribution), as ComfyUI's."""
    category = "_for_testing"  # ComfyUI's (v0.3.64; "model/latent" in later versions)
    pixels = In("IMAGE")
    vae = In("VAE")
    tile_size = Int(512, min=64, max=4096, step=64)
    overlap = Int(64, min=0, max=4096, step=32)
    temporal_size = Int(64, min=8, max=4096, step=4, tooltip="Only used for video VAEs: Amount of frames to encode at a time.")
    temporal_overlap = Int(8, min=4, max=4096, step=4, tooltip="Only used for video VAEs: Amount of frames to overlap.")
    outputs = (Out("LATENT", "LATENT"),)

    @torch.no_grad()
    def run(self, ctx):
        scale = vae_scale(self.vae)
        pixels = crop_to_vae(self.pixels, self.vae)
        if pixels.shape[1] <= self.tile_size and pixels.shape[2] <= self.tile_size:
            whole = call(VAEEncode, ctx, pixels=pixels, vae=self.vae)
            return Latent(whole.samples, space=whole.space)
        tile = max(self.tile_size // scale * scale, scale)  # whole latent pixels
        overlap = min(self.overlap // scale * scale, tile // 2)

        spaces = []

        def encode(part):  # (B, H, W, C) pixels -> (B, h, w, C) latents
            latent = call(VAEEncode, ctx, pixels=part, vae=self.vae)
            spaces.append(latent.space)
            return latent.samples.permute(0, 2, 3, 1)

        samples = tiled(pixels, tile, overlap, 1 / scale, encode)
        return Latent(samples.permute(0, 3, 1, 2).contiguous(), space=spaces[0])

"""Qwen-Image's VAE as Loom's VAE nodes see one: diffusers' AutoencoderKLQwenImage works on videos
(B, C, frames, H, W) and its latents are normalised per channel outside it; Loom's VAEEncode /
VAEDecode call `encode(images)` / `decode(latents)` on (B, C, H, W) and scale by
`config.scaling_factor`. `LatentImageVAE` gives it that face: one frame, latents (z - mean) / std on
the way out and z = latents / (1 / std) + mean on the way in, with the pipelines' operations in their
order (so Loom's latents and images equal theirs), scaling factor 1.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch


class _Normalised:
    """A latent distribution in the normalised space (what VAEEncode reads: mean and std)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean, self.std = mean, std

    def mode(self) -> torch.Tensor:
        return self.mean


class LatentImageVAE(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        levels = len(vae.config.dim_mult)
        # What Loom's nodes read off a VAE config: the scale (8 pixels a latent: 2^(levels - 1)), the
        # latent channels and the scaling (1: the normalisation happens here).
        self.config = SimpleNamespace(scaling_factor=1.0, shift_factor=None, latent_channels=vae.config.z_dim,
                                      block_out_channels=[vae.config.base_dim * m for m in vae.config.dim_mult][:levels],
                                      latents_mean=list(vae.config.latents_mean),
                                      latents_std=list(vae.config.latents_std))

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean).view(shape).to(like.device, like.dtype)
        std = torch.tensor(self.vae.config.latents_std).view(shape).to(like.device, like.dtype)
        return mean, std

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """(B, 3, H, W) in -1..1 -> its normalised latent distribution (as the edit pipelines' _encode_vae_image)."""
        dist = self.vae.encode(x.unsqueeze(2)).latent_dist
        mean, std = self._stats(dist.mean)
        normalised = _Normalised(((dist.mean - mean) / std).squeeze(2), (dist.std / std).squeeze(2))
        return SimpleNamespace(latent_dist=normalised) if return_dict else (normalised,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        """Normalised latents (B, 16, h, w) -> images (B, 3, H, W) in -1..1 (as the pipelines decode)."""
        z = z.unsqueeze(2)
        mean, std = self._stats(z)
        image = self.vae.decode(z / (1.0 / std) + mean, return_dict=False)[0][:, :, 0]
        return SimpleNamespace(sample=image) if return_dict else (image,)

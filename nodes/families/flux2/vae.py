"""Flux.2's VAE as Loom's VAEEncode / VAEDecode use it: diffusers' AutoencoderKLFlux2 whose latents
are the transformer's (2x2 patches of the 32 channels, normalised by the VAE's batch-norm statistics),
so a LATENT holds what ComfyUI's Flux.2 LATENT holds (128 channels at 1/16). The patching and the
normalisation are the pipeline's (Flux2Pipeline._patchify_latents, _encode_vae_image, and the
inverse before vae.decode), in the same order."""
from __future__ import annotations

from functools import cache
from types import SimpleNamespace

import torch

PIXELS = 16  # image pixels per latent pixel once patched


def patchify(z: torch.Tensor) -> torch.Tensor:
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unpatchify(z: torch.Tensor) -> torch.Tensor:
    b, c, h, w = z.shape
    return z.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)


def crop_to_patches(x: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) cut to sides that are multiples of 16, centred (as VAEEncode crops to 8)."""
    for dim in (2, 3):
        size = x.shape[dim]
        if size % PIXELS:
            x = x.narrow(dim, (size % PIXELS) // 2, size - size % PIXELS)
    return x


@cache
def flux2_vae_class():
    """Flux2VAE, made on first use: diffusers is imported by the first node that needs it, not when
    the nodes are listed."""
    from diffusers import AutoencoderKLFlux2

    class Flux2VAE(AutoencoderKLFlux2):
        """encode -> latent_dist of normalised patched latents; decode takes them."""

        def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean = self.bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
            std = torch.sqrt(self.bn.running_var.view(1, -1, 1, 1) + self.config.batch_norm_eps).to(like.device, like.dtype)
            return mean, std

        def encode(self, x: torch.Tensor, return_dict: bool = True):
            dist = super().encode(crop_to_patches(x)).latent_dist
            z = patchify(dist.mode())
            mean, std = self._stats(z)
            latent = SimpleNamespace(mean=(z - mean) / std, std=patchify(dist.std) / std)
            latent.mode = lambda: latent.mean
            return SimpleNamespace(latent_dist=latent) if return_dict else (latent,)

        def decode(self, z: torch.Tensor, return_dict: bool = True, **kwargs):
            mean, std = self._stats(z)
            return super().decode(unpatchify(z * std + mean), return_dict=return_dict, **kwargs)

    return Flux2VAE


def loom_vae(vae):
    """A loaded AutoencoderKLFlux2 as Flux2VAE (same module, Loom's encode/decode), with the
    scaling_factor 1 Loom's latent nodes read."""
    vae.__class__ = flux2_vae_class()
    vae.register_to_config(scaling_factor=1.0, shift_factor=None)
    return vae


def is_flux2_vae(sd: dict, prefix: str = "") -> bool:
    return f"{prefix}bn.running_mean" in sd and f"{prefix}encoder.down.0.block.0.conv1.weight" in sd


def vae_from_file(sd: dict, prefix: str = ""):
    """ComfyUI's flux2-vae.safetensors (LDM layout with quant convs and `bn.*`), converted by diffusers'
    convert_ldm_vae_checkpoint; the sizes read off the shapes (the decoder's may be smaller:
    full_encoder_small_decoder.safetensors)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from ...loading.encoders import without_weights
    from ...loading.model_files import key_indices
    from ...loading.single_file import load_weights

    sd = {"first_stage_model." + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    p = "first_stage_model."
    down = key_indices(sd, r"first_stage_model\.encoder\.down\.(\d+)\.")
    up = key_indices(sd, r"first_stage_model\.decoder\.up\.(\d+)\.")
    blocks = [sd[f"{p}encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in down]
    decoder = [sd[f"{p}decoder.up.{i}.block.0.conv2.weight"].shape[0] for i in up]
    config = dict(in_channels=sd[f"{p}encoder.conv_in.weight"].shape[1],
                  out_channels=sd[f"{p}decoder.conv_out.weight"].shape[0],
                  down_block_types=["DownEncoderBlock2D"] * len(down), up_block_types=["UpDecoderBlock2D"] * len(up),
                  block_out_channels=blocks, decoder_block_out_channels=decoder,
                  layers_per_block=len(key_indices(sd, r"first_stage_model\.encoder\.down\.0\.block\.(\d+)\.")),
                  latent_channels=sd[f"{p}decoder.conv_in.weight"].shape[1],
                  norm_num_groups=32, use_quant_conv=f"{p}quant_conv.weight" in sd,
                  use_post_quant_conv=f"{p}post_quant_conv.weight" in sd)
    state = convert_ldm_vae_checkpoint(sd, config)
    state.update({k.removeprefix(p): v for k, v in sd.items() if k.startswith(p + "bn.")})
    vae = without_weights(lambda: flux2_vae_class()(**config))
    vae = load_weights(vae, state, "Flux.2 VAE", ("num_batches_tracked",), assign=True).eval()
    return loom_vae(vae)

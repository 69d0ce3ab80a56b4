"""Latent stages: noise, VAE encode and decode.

LATENT is a nodes.latent_value.Latent (its fields and what sampling, resizing and batching do to
each are documented there). MakeNoiseLatents gives `samples` (zeros for txt2img, `empty`) with
`noise` that the next sampler (Sample/UNetStep) applies at its first step, each image's `seeds` and
`generator` states; VAEEncode gives the image's scaled latents, its `dist` and its VAE's `space`.

Noise per image: image i of a batch uses its own CPU generator seeded with seed + i, so it equals the
same image made alone with that seed (and a batch equals the pipeline given a list of generators).
"""
from __future__ import annotations

import torch

from graph import In, Int, Node, Out

from .common import MAX_RESOLUTION
from .families import FAMILY_ATTR, family
from .latent_value import Dist, Latent, space_of_vae
from .loading.loaders import LATENT_SCALE_ATTR

MAX_SEED = 2**64 - 1


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def seeds_for(seed: int, batch_size: int) -> list[int]:
    return [(seed + i) % (MAX_SEED + 1) for i in range(batch_size)]


def randn(shape: tuple, gens: list[torch.Generator], device, dtype) -> torch.Tensor:
    """One draw per image from its own generator (diffusers' randn_tensor, so the pipeline's numbers)."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=gens, device=device, dtype=dtype)


def _repeat(x: torch.Tensor, times: int) -> torch.Tensor:
    """Each image `times` times in a row. The VAE's output is channels-last strided and the UNet's
    convolutions round differently on another layout: no copy when not needed, and else torch.cat of
    one-image slices, as the img2img pipeline builds its batch, which keeps the layout."""
    if times == 1:
        return x
    return torch.cat([x[i:i + 1] for i in range(x.shape[0]) for _ in range(times)])


def latent_channels(unet) -> int:
    """The latent's channels: a transformer family's declared ones (Flux's transformer takes 2x2 patches
    packed into 64), else the UNet's output channels (an inpainting UNet takes 5 more in)."""
    name = getattr(unet, FAMILY_ATTR, None)
    if name is not None and family(name).runtime:
        return family(name).latent.channels
    return unet.config.out_channels


class MakeNoiseLatents(Node):
    """Starting latents: seeded noise that the sampler adds at its first step. Alone, for txt2img
    (empty latents of width x height); with `image` (VAEEncode's latents), for img2img: the image's
    latent distribution is sampled first, then the noise, with the same per-image generators."""

    category = "latent"
    unet = In("UNET", tooltip="gives the latent channels and device")
    width = Int(512, min=8, max=MAX_RESOLUTION, step=8)
    height = Int(512, min=8, max=MAX_RESOLUTION, step=8)
    batch_size = Int(1, min=1, max=4096)
    seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)
    image = In("LATENT", optional=True, tooltip="img2img: the VAE-encoded image (width and height are ignored)")
    outputs = (Out("LATENT", "latents"),)

    @torch.no_grad()
    def run(self, ctx):
        seeds = seeds_for(self.seed, self.batch_size)
        gens = generators(seeds)
        device, dtype = self.unet.device, self.unet.dtype
        if self.image is None:
            scale = getattr(self.unet, LATENT_SCALE_ATTR, 8)
            if self.width % scale or self.height % scale:
                raise ValueError(f"MakeNoiseLatents: width and height must be multiples of {scale} for this "
                                 f"model, got {self.width}x{self.height}")
            shape = (self.batch_size, latent_channels(self.unet), self.height // scale, self.width // scale)
            samples, empty = torch.zeros(shape, device=device, dtype=dtype), True
        else:
            samples, empty = self._image_latents(gens), False
        noise = randn(tuple(samples.shape), gens, device, dtype)
        space = None if self.image is None else self.image.space
        return Latent(samples, space=space, noise=noise, empty=empty, seeds=seeds,
                      generator=[g.get_state() for g in gens])

    def _image_latents(self, gens) -> torch.Tensor:
        image = self.image
        count = image.batch
        if self.batch_size % count:
            raise ValueError(f"MakeNoiseLatents: batch_size {self.batch_size} is not a multiple of the "
                             f"{count} images given")
        dist = image.dist
        if dist is None:  # latents without a distribution are used as they are
            return _repeat(image.samples, self.batch_size // count)
        mean, std = (_repeat(t, self.batch_size // count) for t in (dist.mean, dist.std))
        # As DiagonalGaussianDistribution.sample, then the pipeline's scaling.
        sample = mean + std * randn(tuple(mean.shape), gens, mean.device, mean.dtype)
        return dist.scaling_factor * sample


def vae_scale(vae) -> int:
    """Image pixels per latent pixel of a VAE (8 for SD's): one halving per block after the first."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def crop_to_vae(pixels: torch.Tensor, vae) -> torch.Tensor:
    """IMAGE (B, H, W, C) cropped to sides that are multiples of the VAE's scale (8 for SD), the
    crop centred (offset: the remainder // 2), as ComfyUI's VAE encode does; whole images unchanged."""
    scale = vae_scale(vae)
    for dim in (1, 2):
        size = pixels.shape[dim]
        if size % scale:
            pixels = pixels.narrow(dim, (size % scale) // 2, size - size % scale)
    return pixels


class VAEEncode(Node):
    """Encodes images into latents (the VAE's latent distribution; its mean scaled as "samples").
    Sides that are not multiples of 8 are cropped, centred, as ComfyUI does.
    ComfyUI's signature: VAEEncode(pixels, vae) -> LATENT."""

    category = "latent"
    pixels = In("IMAGE")
    vae = In("VAE")
    input_aliases = {"image": "pixels"}  # Loom's earlier name, for its older workflow files
    outputs = (Out("LATENT", "LATENT"),)

    @torch.no_grad()
    def run(self, ctx):
        pixels = crop_to_vae(self.pixels, self.vae)
        # As VaeImageProcessor: (B, H, W, C) -> (B, C, H, W) view, then 2x - 1.
        x = 2.0 * pixels[..., :3].permute(0, 3, 1, 2) - 1.0
        dist = self.vae.encode(x.to(device=self.vae.device, dtype=self.vae.dtype)).latent_dist
        space = space_of_vae(self.vae)
        if space.shift:  # Flux-style VAEs: a shifted latent space (the sampling of `dist` is not shifted: SD only)
            return Latent(space.scale * (dist.mean - space.shift), space=space)
        return Latent(space.scale * dist.mean, space=space, dist=Dist(dist.mean, dist.std, space.scale))


class VAEDecode(Node):
    """Decodes latents into images (dividing by the latent space's scale first: the LATENT's own when
    it has one, else the VAE config's).
    ComfyUI's signature: VAEDecode(samples, vae) -> IMAGE."""

    category = "latent"
    samples = In("LATENT")
    vae = In("VAE")
    input_aliases = {"latents": "samples"}  # Loom's earlier name, for its older workflow files
    outputs = (Out("IMAGE", "IMAGE"),)

    @torch.no_grad()
    def run(self, ctx):
        space = self.samples.space or space_of_vae(self.vae)
        z = self.samples.samples.to(device=self.vae.device, dtype=self.vae.dtype)
        z = z / space.scale
        if space.shift:  # Flux-style VAEs (Z-Image, Flux): latents = (vae latents - shift) * scale
            z = z + space.shift
        image = self.vae.decode(z, return_dict=False)[0]
        return (image * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float()

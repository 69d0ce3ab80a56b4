"""Latent stages: noise, VAE encode and decode.

LATENT is a plain dict; nodes never change one they receive, they return a new dict:

- "samples": Tensor (B, C, h, w) on the model's device and dtype, in the UNet's space (VAE latents
  times the VAE's scaling factor). The only key every LATENT has.
- "noise": Tensor like samples, optional: unit Gaussian noise not yet applied. The next sampler
  (Sample/UNetStep) applies it at its first step: `scheduler.add_noise(samples, noise, t)` (img2img),
  or `noise * scheduler.init_noise_sigma` when "empty" is true (txt2img: samples are zeros).
- "empty": bool, optional: samples hold no picture (made from nothing, not from an image).
- "generator": list of B torch.Generator states (CPU ByteTensors), optional: where each image's seed
  stream stands after the draws made so far; ancestral schedulers continue from it.
- "seeds": list of B ints, optional: the seed of each image (image i uses seed + i).
- "dist": optional (VAEEncode): {"mean", "std", "scaling_factor"} of the VAE's latent distribution,
  unscaled; MakeNoiseLatents samples it with the image's seed, as the img2img pipeline does.
- "sampler": optional nodes.sampling.SamplerState: the scheduler after the last step taken (with
  its multistep history), so a following Sample/UNetStep continues exactly.

Inpainting (nodes.inpaint, nodes.sampling.denoise):
- "noise_mask": Tensor (B or 1, 1, H, W) in 0..1, optional: 1 = repaint. After each step the area
  outside it is reset to "mask_source" noised to the next step's level (SetLatentNoiseMask,
  VAEEncodeForInpaint, InpaintModelConditioning).
- "mask_source": (clean latents, noise), set by the sampler: what the unmasked area is reset to, so a
  following sampler keeps resetting to the same image.
- "inpaint_latents": a 9-channel UNet's extra channels (mask, masked image latents), drawn once by
  the first sampler and kept for the next.

ComfyUI's nodes (nodes.comfy.core*):
- "width", "height": ints, optional (EmptyLatentImage): the pixel size asked for; "samples" then has
  ComfyUI's SD shape (1/8) and the sampler makes the noise at the model's own latent scale.
- "batch_index": list of ints, optional (LatentFromBatch, RepeatLatentBatch): ComfyUI's image
  numbers of a sliced or repeated batch.
- "denoised": Tensor like samples, optional (SamplerCustom*): the last step's prediction of the clean
  latents, their `denoised_output`.

Noise per image: image i of a batch uses its own CPU generator seeded with seed + i, so it equals the
same image made alone with that seed (and a batch equals the pipeline given a list of generators).
"""
from __future__ import annotations

import torch

from graph import In, Int, Node, Out

from .common import MAX_RESOLUTION
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
            # out_channels: the latent's; an inpainting UNet takes 5 more channels in (mask, image)
            shape = (self.batch_size, self.unet.config.out_channels, self.height // scale, self.width // scale)
            samples, empty = torch.zeros(shape, device=device, dtype=dtype), True
        else:
            samples, empty = self._image_latents(gens), False
        noise = randn(tuple(samples.shape), gens, device, dtype)
        return {"samples": samples, "noise": noise, "empty": empty, "seeds": seeds,
                "generator": [g.get_state() for g in gens]}

    def _image_latents(self, gens) -> torch.Tensor:
        image = self.image
        count = image["samples"].shape[0]
        if self.batch_size % count:
            raise ValueError(f"MakeNoiseLatents: batch_size {self.batch_size} is not a multiple of the "
                             f"{count} images given")
        dist = image.get("dist")
        if dist is None:  # latents without a distribution are used as they are
            return _repeat(image["samples"], self.batch_size // count)
        mean, std = (_repeat(dist[k], self.batch_size // count) for k in ("mean", "std"))
        # As DiagonalGaussianDistribution.sample, then the pipeline's scaling.
        sample = mean + std * randn(tuple(mean.shape), gens, mean.device, mean.dtype)
        return dist["scaling_factor"] * sample


def crop_to_vae(pixels: torch.Tensor, vae) -> torch.Tensor:
    """IMAGE (B, H, W, C) cropped to sides that are multiples of the VAE's scale (8 for SD), the
    crop centred (offset: the remainder // 2), as ComfyUI's VAE encode does; whole images unchanged."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
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
        factor = self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None)
        if shift:  # Flux-style VAEs: a shifted latent space (the sampling of `dist` is not shifted: SD only)
            return {"samples": factor * (dist.mean - shift)}
        return {"samples": factor * dist.mean, "dist": {"mean": dist.mean, "std": dist.std, "scaling_factor": factor}}


class VAEDecode(Node):
    """Decodes latents into images (dividing by the VAE's scaling factor first).
    ComfyUI's signature: VAEDecode(samples, vae) -> IMAGE."""

    category = "latent"
    samples = In("LATENT")
    vae = In("VAE")
    input_aliases = {"latents": "samples"}  # Loom's earlier name, for its older workflow files
    outputs = (Out("IMAGE", "IMAGE"),)

    @torch.no_grad()
    def run(self, ctx):
        z = self.samples["samples"].to(device=self.vae.device, dtype=self.vae.dtype)
        z = z / self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None)
        if shift:  # Flux-style VAEs (Z-Image, Flux): latents = (vae latents - shift) * scale
            z = z + shift
        image = self.vae.decode(z, return_dict=False)[0]
        return (image * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float()

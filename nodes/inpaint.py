"""Inpainting: repainting the masked part of an image.

MASK (ComfyUI's convention): a float tensor (B, H, W) in 0..1, 1 = the area to repaint; a single
(H, W) mask is read as a batch of one.

Two ways, both honoured by the sampler (nodes.sampling / nodes.denoiser):
- an inpainting UNet (9 input channels: latents, mask, masked image's latents) reads the image
  and mask from its conditioning (InpaintConditioning, as StableDiffusionInpaintPipeline prepares
  them), or from a LATENT with a noise mask (VAEEncodeForInpaint);
- any UNet with a LATENT "noise_mask" (SetLatentNoiseMask, VAEEncodeForInpaint): after each step
  the area outside the mask is reset to the source latents at that step's noise level.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from graph import In, Int, Node, Out

from .common import call
from .conditioning import InpaintImage, update, with_extra
from .latent import VAEEncode, crop_to_vae
from .latent_value import Dist, Latent


def mask_batch(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as (B, 1, H, W) float."""
    return mask.reshape(-1, 1, *mask.shape[-2:]).float()


def fit_mask(mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """A (B, 1, h, w) mask at the image's (B, H, W, C) size (bilinear), or as it is when it fits."""
    if mask.shape[-2:] != image.shape[1:3]:
        mask = F.interpolate(mask, size=image.shape[1:3], mode="bilinear", align_corners=False)
    return mask


def crop_with_mask(vae, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image (B, H, W, C) and its fitted mask (B, 1, H, W) cropped alike to the VAE's multiple,
    as ComfyUI crops both before encoding (VAEEncode alone would crop the image only)."""
    return crop_to_vae(image, vae), crop_to_vae(mask.permute(0, 2, 3, 1), vae).permute(0, 3, 1, 2)


def blank_masked(image: torch.Tensor, repaint: torch.Tensor) -> torch.Tensor:
    """IMAGE with the pixels to repaint set to grey 0.5: 0 in the VAE's -1..1 range, which is the
    inpainting pipeline's `image * (mask < 0.5)`."""
    keep = (repaint < 0.5).to(image.dtype).permute(0, 2, 3, 1)
    return image * keep + 0.5 * (1 - keep)


class InpaintConditioning(Node):
    """Gives an inpainting UNet (9 input channels) the image and mask to fill in: the mask
    (1: repaint; binarised at 0.5) and the latent distribution of the image with that area
    blanked, on every entry of both conditionings."""

    category = "conditioning"
    positive = In("CONDITIONING")
    negative = In("CONDITIONING")
    vae = In("VAE")
    image = In("IMAGE")
    mask = In("MASK")
    outputs = (Out("CONDITIONING", "positive"), Out("CONDITIONING", "negative"))

    @torch.no_grad()
    def run(self, ctx):
        image, mask = crop_with_mask(self.vae, self.image, fit_mask(mask_batch(self.mask), self.image))
        repaint = (mask >= 0.5).float()
        encoded = call(VAEEncode, ctx, vae=self.vae, pixels=blank_masked(image, repaint.to(image.device)))
        dist = encoded.dist
        if dist is None:  # an encoder without a distribution: its latents, deterministic
            factor = self.vae.config.scaling_factor
            dist = Dist(encoded.samples / factor, torch.zeros_like(encoded.samples), factor)
        source = InpaintImage(repaint, dist.mean, dist.std, dist.scaling_factor)
        # ComfyUI's names, for models that read the blanked image's latents as they are and the mask
        # unbinarised (Flux Fill: nodes.families.flux.edit)
        extra = dict(concat_latent_image=encoded.samples, concat_mask=mask)
        return tuple(with_extra(update(side, inpaint=source), **extra) for side in (self.positive, self.negative))


class SetLatentNoiseMask(Node):
    """Limits sampling to the MASK's area (1: repaint); the rest keeps the source latents.
    ComfyUI's signature: SetLatentNoiseMask(samples, mask) -> LATENT."""

    category = "latent/inpaint"
    samples = In("LATENT")
    mask = In("MASK")
    input_aliases = {"latents": "samples"}  # Loom's earlier name, for its older workflow files
    outputs = (Out("LATENT", "LATENT"),)

    def run(self, ctx):
        return self.samples.replace(noise_mask=mask_batch(self.mask))


class VAEEncodeForInpaint(Node):
    """Encodes the image with the area to repaint blanked (grey), the mask grown by grow_mask_by
    pixels as its noise mask: for inpainting models, or any model with a noise mask.
    ComfyUI's signature: VAEEncodeForInpaint(pixels, vae, mask, grow_mask_by) -> LATENT."""

    category = "latent/inpaint"
    pixels = In("IMAGE")
    vae = In("VAE")
    mask = In("MASK")
    grow_mask_by = Int(6, min=0, max=64)
    input_aliases = {"image": "pixels"}  # Loom's earlier name, for its older workflow files
    outputs = (Out("LATENT", "LATENT"),)

    @torch.no_grad()
    def run(self, ctx):
        pixels, mask = crop_with_mask(self.vae, self.pixels,
                                      fit_mask(mask_batch(self.mask).to(self.pixels.device), self.pixels))
        blanked = blank_masked(pixels, mask.round())
        encoded = call(VAEEncode, ctx, vae=self.vae, pixels=blanked)
        return Latent(encoded.samples, space=encoded.space, noise_mask=grow(mask, self.grow_mask_by).round())


def grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate a (B, 1, H, W) mask by a square of `pixels` (ComfyUI's grow_mask_by)."""
    if pixels == 0:
        return mask
    kernel = torch.ones(1, 1, pixels, pixels, device=mask.device, dtype=mask.dtype)
    grown = F.conv2d(mask.round(), kernel, padding=math.ceil((pixels - 1) / 2)).clamp(0, 1)
    return grown[..., :mask.shape[-2], :mask.shape[-1]]

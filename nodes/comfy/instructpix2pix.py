"""InstructPix2Pix conditioning (ComfyUI's InstructPixToPixConditioning): an image to edit, given to a
UNet that takes its latents beside the noisy ones (SD 1.x InstructPix2Pix: 4 + 4 input channels; Flux.1
Canny / Depth: 16 + 16, nodes.families.flux.edit).

The image is cropped to multiples of the VAE's scale (centred, as ComfyUI), encoded, and its
latent distribution's mean (unscaled, as StableDiffusionInstructPix2PixPipeline's `image_latents`)
is put on every entry of both conditionings; the sampler (nodes.denoiser) appends it to the UNet's
input. The LATENT output is zeros of the image's latent size, to sample from. As in ComfyUI, the
negative prompt also sees the image (one guidance scale, not the pipeline's separate image guidance).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from graph import In, Node, Out

from ..common import call
from ..conditioning import as_conditioning
from ..latent import VAEEncode
from ..latent_value import Latent


class InstructPixToPixConditioning(Node):
    """The image to edit, on both conditionings, and an empty latent of its size."""
    category = "conditioning/instructpix2pix"
    positive = In("CONDITIONING")
    negative = In("CONDITIONING")
    vae = In("VAE")
    pixels = In("IMAGE")
    outputs = (Out("CONDITIONING", "positive"), Out("CONDITIONING", "negative"), Out("LATENT", "latent"))

    @torch.no_grad()
    def run(self, ctx):
        latent = call(VAEEncode, ctx, pixels=self.pixels, vae=self.vae)  # cropped to the VAE's scale, centred
        if latent.dist is not None:
            image = latent.dist.mean
        else:  # a shifted (Flux-style) VAE gives the scaled mean only: back to raw latents (HiDream E1)
            image = latent.samples / latent.space.scale + latent.space.shift

        def conditioned(conditioning):  # concat_latent_image (ComfyUI's name): the latents as they are (Flux)
            return tuple(replace(c, concat=image, extra={**c.extra, "concat_latent_image": latent.samples})
                         for c in as_conditioning(conditioning))

        return conditioned(self.positive), conditioned(self.negative), Latent(torch.zeros_like(latent.samples), space=latent.space)

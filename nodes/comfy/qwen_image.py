"""ComfyUI's Qwen-Image editing encoders (comfy_extras/nodes_qwen.py), with their inputs and outputs:
TextEncodeQwenImageEdit (one image) and TextEncodeQwenImageEditPlus (up to three).

Each image goes two ways, sized as ComfyUI sizes it: to the vision tower of Qwen2.5-VL (in the
prompt as a vision placeholder) at about 1024 x 1024 (Edit) or 384 x 384 pixels (Edit Plus), and, with
a VAE, through the VAE as a reference latent ("reference_latents", read by the Qwen-Image guide) at
about 1024 x 1024 (Edit Plus: sides rounded to multiples of 8). ComfyUI resizes with "area" (box
averaging); so does Loom. The encoding itself is the family's (nodes.families.qwen_image.files.encode).
"""
from __future__ import annotations

import math

from graph import In, Node, Out, String

from ..common import call
from ..conditioning import with_extra
from ..families import family, runtime_of
from ..latent import VAEEncode
from ..scaling import resize

EDIT_AREA = 1024 * 1024  # TextEncodeQwenImageEdit: the image, for the vision tower and the VAE
VISION_AREA = 384 * 384  # TextEncodeQwenImageEditPlus: each image for the vision tower
VAE_AREA = 1024 * 1024  # TextEncodeQwenImageEditPlus: each image for the VAE


def scaled(image, area: int, multiple: int = 0):
    """IMAGE (B, H, W, C) resized ("area") to about `area` pixels at its aspect ratio: sides rounded
    (to multiples of `multiple` when given), as ComfyUI's nodes_qwen rounds them. RGB only."""
    _, h, w, _ = image.shape
    scale = math.sqrt(area / (w * h))
    if multiple:
        width, height = round(w * scale / multiple) * multiple, round(h * scale / multiple) * multiple
    else:
        width, height = round(w * scale), round(h * scale)
    return resize(image.movedim(-1, 1), width, height, "area").movedim(1, -1)[..., :3]


def _runtime(node: str, clip):
    runtime = runtime_of(clip.family)
    if clip.family != "qwen_image" or runtime is None:
        raise ValueError(f"{node}: the clip must be Qwen-Image's text encoder (CLIPLoader type qwen_image with "
                         f"qwen_2.5_vl_7b_fp8_scaled.safetensors), not {family(clip.family).label}'s")
    return runtime


def _reference(ctx, vae, image):
    return call(VAEEncode, ctx, pixels=image, vae=vae).samples


class TextEncodeQwenImageEdit(Node):
    """A prompt for Qwen-Image-Edit with the image it edits (seen by the vision tower and, with a VAE,
    given as a reference latent)."""
    category = "model/conditioning/qwen image"  # ComfyUI's (v0.38)
    clip = In("CLIP")
    prompt = String("", multiline=True)
    vae = In("VAE", optional=True)
    image = In("IMAGE", optional=True)
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        runtime = _runtime("TextEncodeQwenImageEdit", self.clip)
        images = [] if self.image is None else [scaled(self.image, EDIT_AREA)]
        cond = runtime.encode(self.clip, self.prompt, images=images)
        if images and self.vae is not None:
            cond = with_extra(cond, reference_latents=[_reference(ctx, self.vae, images[0])])
        return cond


class TextEncodeQwenImageEditPlus(Node):
    """A prompt for Qwen-Image-Edit-2509/2511 with up to three images ("Picture 1: ..." in the prompt for
    each; with a VAE each is also a reference latent)."""
    category = "model/conditioning/qwen image"  # ComfyUI's (v0.38)
    clip = In("CLIP")
    prompt = String("", multiline=True)
    vae = In("VAE", optional=True)
    image1 = In("IMAGE", optional=True)
    image2 = In("IMAGE", optional=True)
    image3 = In("IMAGE", optional=True)
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        from ..families.qwen_image import EDIT_TEMPLATE, PICTURE

        runtime = _runtime("TextEncodeQwenImageEditPlus", self.clip)
        vision, references, pictures = [], [], ""
        for i, image in enumerate((self.image1, self.image2, self.image3)):
            if image is None:
                continue
            vision.append(scaled(image, VISION_AREA))
            if self.vae is not None:
                references.append(_reference(ctx, self.vae, scaled(image, VAE_AREA, multiple=8)))
            pictures += PICTURE.format(i + 1)
        cond = runtime.encode(self.clip, pictures + self.prompt, images=vision, template=EDIT_TEMPLATE)
        if references:
            cond = with_extra(cond, reference_latents=references)
        return cond

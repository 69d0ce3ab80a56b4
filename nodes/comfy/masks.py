"""ComfyUI's mask nodes under their own names, inputs and outputs: ImageToMask, MaskToImage,
InvertMask, SolidMask, ThresholdMask, GrowMask, FeatherMask, MaskComposite, MaskPreview.

MASK (ComfyUI's convention, see nodes.inpaint): float (B, H, W) in 0..1; a single (H, W) mask is
read as a batch of one.
"""
from __future__ import annotations

import secrets

import numpy as np
import scipy.ndimage
import torch

from graph import Boolean, Combo, Float, In, Int, Node, Out

from ..common import MAX_RESOLUTION
from ..image import save_images

CHANNELS = ["red", "green", "blue", "alpha"]


def as_masks(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as (B, H, W)."""
    return mask.reshape(-1, *mask.shape[-2:])


def mask_to_image(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as a grey IMAGE (B, H, W, 3)."""
    return as_masks(mask)[..., None].expand(-1, -1, -1, 3)


class ImageToMask(Node):
    """One channel of an image as a mask."""
    category = "mask"
    image = In("IMAGE")
    channel = Combo(CHANNELS, default="red")
    outputs = (Out("MASK", "MASK"),)

    def run(self, ctx):
        index = CHANNELS.index(self.channel)
        if index >= self.image.shape[-1]:
            raise ValueError(f"ImageToMask: the image has no {self.channel} channel "
                             f"({self.image.shape[-1]} channels)")
        return self.image[..., index]


class MaskToImage(Node):
    """A mask as a grey image (three equal channels)."""
    category = "mask"
    mask = In("MASK")
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        return mask_to_image(self.mask)


class InvertMask(Node):
    """1 - mask."""
    category = "mask"
    mask = In("MASK")
    outputs = (Out("MASK", "MASK"),)

    def run(self, ctx):
        return 1.0 - self.mask


class SolidMask(Node):
    """A mask of one value, width x height."""
    category = "mask"
    value = Float(1.0, min=0.0, max=1.0, step=0.01)
    width = Int(512, min=1, max=MAX_RESOLUTION)
    height = Int(512, min=1, max=MAX_RESOLUTION)
    outputs = (Out("MASK", "MASK"),)

    def run(self, ctx):
        return torch.full((1, self.height, self.width), self.value, dtype=torch.float32)


class ThresholdMask(Node):
    """1 where the mask is above `value`, else 0."""
    category = "mask"
    mask = In("MASK")
    value = Float(0.5, min=0.0, max=1.0, step=0.01)
    outputs = (Out("MASK", "MASK"),)

    def run(self, ctx):
        return (self.mask > self.value).float()


class GrowMask(Node):
    """Grows (expand > 0) or shrinks (expand < 0) a mask by that many pixels: grey dilation or
    erosion, one pixel per pass, with a cross (tapered corners) or a 3x3 square."""
    category = "mask"
    mask = In("MASK")
    expand = Int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION)
    tapered_corners = Boolean(True)
    outputs = (Out("MASK", "MASK"),)

    def run(self, ctx):
        footprint = np.ones((3, 3), dtype=bool)
        if self.tapered_corners:
            footprint[0, 0] = footprint[0, 2] = footprint[2, 0] = footprint[2, 2] = False
        step = scipy.ndimage.grey_dilation if self.expand > 0 else scipy.ndimage.grey_erosion
        masks = as_masks(self.mask)
        out = []
        for mask in masks.float().cpu().numpy():
            for _ in range(abs(self.expand)):
                mask = step(mask, footprint=footprint)
            out.append(torch.from_numpy(mask))
        return torch.stack(out).to(masks.device)


def _ramp(size: int, length: int, from_end: bool) -> torch.Tensor:
    """Per-row (or column) factors of FeatherMask's ramp over `length` pixels from one edge. From the
    far edge, ComfyUI's ramp indexes pixel -k for k = 0..length-1, so its first factor lands on pixel
    0 and the last pixel gets 2/length: kept as is, so files give ComfyUI's masks."""
    factors = torch.ones(size)
    for k in range(min(length, size)):
        index = (-k) % size if from_end else k
        factors[index] *= (k + 1) / length
    return factors


class FeatherMask(Node):
    """Fades the mask to 0 over `left`, `top`, `right`, `bottom` pixels from each edge (linear)."""
    category = "mask"
    mask = In("MASK")
    left = Int(0, min=0, max=MAX_RESOLUTION)
    top = Int(0, min=0, max=MAX_RESOLUTION)
    right = Int(0, min=0, max=MAX_RESOLUTION)
    bottom = Int(0, min=0, max=MAX_RESOLUTION)
    outputs = (Out("MASK", "MASK"),)

    def run(self, ctx):
        out = as_masks(self.mask).clone()
        h, w = out.shape[-2:]
        columns = _ramp(w, self.left, False) * _ramp(w, self.right, True)
        rows = _ramp(h, self.top, False) * _ramp(h, self.bottom, True)
        return out * rows.to(out)[:, None] * columns.to(out)[None, :]


OPERATIONS = {
    "multiply": lambda d, s: d * s,
    "add": lambda d, s: d + s,
    "subtract": lambda d, s: d - s,
    "and": lambda d, s: (d.round().bool() & s.round().bool()).float(),
    "or": lambda d, s: (d.round().bool() | s.round().bool()).float(),
    "xor": lambda d, s: (d.round().bool() ^ s.round().bool()).float(),
}


class MaskComposite(Node):
    """Combines `source` into `destination` at (x, y) with an operation; the result is clamped to 0..1."""
    category = "mask"
    destination = In("MASK")
    source = In("MASK")
    x = Int(0, min=0, max=MAX_RESOLUTION)
    y = Int(0, min=0, max=MAX_RESOLUTION)
    operation = Combo(list(OPERATIONS), default="multiply")
    outputs = (Out("MASK", "MASK"),)

    def run(self, ctx):
        out = as_masks(self.destination).clone()
        source = as_masks(self.source).to(out)
        h = max(0, min(source.shape[-2], out.shape[-2] - self.y))
        w = max(0, min(source.shape[-1], out.shape[-1] - self.x))
        region = out[:, self.y:self.y + h, self.x:self.x + w]
        out[:, self.y:self.y + h, self.x:self.x + w] = OPERATIONS[self.operation](region, source[:, :h, :w])
        return out.clamp(0.0, 1.0)


class MaskPreview(Node):
    """Shows masks as grey images without keeping them (temp folder)."""
    category = "mask"
    output_node = True
    mask = In("MASK")

    def run(self, ctx):
        ctx.show(images=save_images(ctx, mask_to_image(self.mask), "temp", "mask_" + secrets.token_hex(4)))

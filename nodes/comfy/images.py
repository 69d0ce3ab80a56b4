"""ComfyUI's image nodes under their own names, inputs and outputs (nodes.py and comfy_extras'
nodes_images, nodes_post_processing, nodes_mask, nodes_compositing, nodes_canny, image compare):
ImageInvert, EmptyImage, ImageBlur, ImageBlend, ImageCompositeMasked, ImagePadForOutpaint,
ImageFromBatch, RepeatImageBatch, BatchImagesNode, ImageStitch, ResizeAndPadImage,
ImageScaleToMaxDimension, ResizeImageMaskNode, JoinImageWithAlpha, Canny, ImageCompare,
SaveImageAdvanced.

IMAGE is (B, H, W, C) in 0..1 (nodes.common); resizing is nodes.scaling.resize, ComfyUI's methods.
"""
from __future__ import annotations

import math
import secrets
import struct
import zlib

import torch
import torch.nn.functional as F

from graph import Autogrow, Boolean, Combo, DynamicCombo, Float, In, Input, Int, Node, Out, String
from graph.env import UnsafePath

from ..common import MAX_RESOLUTION
from .masks import as_masks
from ..image import save_images
from ..scaling import IMAGE_METHODS, resize


def resized(image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """An IMAGE (B, H, W, C) or MASK (B, H, W) at width x height."""
    if image.ndim == 3:
        return resize(image[:, None], width, height, method, crop)[:, 0]
    return resize(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


def with_alpha_like(image: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """`image` with an opaque alpha channel when `other` has one more channel (RGB beside RGBA)."""
    if image.shape[-1] + 1 == other.shape[-1]:
        return F.pad(image, (0, 1), value=1.0)
    return image


def batched(image: torch.Tensor, size: int) -> torch.Tensor:
    """The batch repeated (and cut) to `size` images."""
    if image.shape[0] == size:
        return image
    return image.repeat((math.ceil(size / image.shape[0]),) + (1,) * (image.ndim - 1))[:size]


class ImageInvert(Node):
    """1 - image."""
    category = "image"
    image = In("IMAGE")
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        return 1.0 - self.image


class EmptyImage(Node):
    """A batch of images of one colour (0xRRGGBB)."""
    category = "image"
    width = Int(512, min=1, max=MAX_RESOLUTION)
    height = Int(512, min=1, max=MAX_RESOLUTION)
    batch_size = Int(1, min=1, max=4096)
    color = Int(0, min=0, max=0xFFFFFF)
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        rgb = torch.tensor([(self.color >> shift) & 0xFF for shift in (16, 8, 0)], dtype=torch.float32) / 255.0
        return rgb.expand(self.batch_size, self.height, self.width, 3).clone()


class ImageBlur(Node):
    """Gaussian blur over (2 * blur_radius + 1) pixels; sigma is in units of the radius (ComfyUI's
    kernel spans -1..1), edges reflected."""
    category = "image/postprocessing"
    image = In("IMAGE")
    blur_radius = Int(1, min=1, max=31)
    sigma = Float(1.0, min=0.1, max=10.0, step=0.1)
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        r, channels = self.blur_radius, self.image.shape[-1]
        x = torch.linspace(-1, 1, 2 * r + 1, device=self.image.device)
        g = torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * self.sigma ** 2))
        kernel = (g / g.sum()).to(self.image.dtype).expand(channels, 1, -1, -1)
        pixels = F.pad(self.image.movedim(-1, 1), (r, r, r, r), mode="reflect")
        return F.conv2d(pixels, kernel, groups=channels).movedim(1, -1)


def _soft_light(a, b):
    g = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
    return torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))


BLEND_MODES = {
    "normal": lambda a, b: b,
    "multiply": lambda a, b: a * b,
    "screen": lambda a, b: 1 - (1 - a) * (1 - b),
    "overlay": lambda a, b: torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b)),
    "soft_light": _soft_light,
    "difference": lambda a, b: a - b,
}


class ImageBlend(Node):
    """image1 mixed with blend_mode(image1, image2) by blend_factor, clamped to 0..1; image2 is
    resized (bicubic, centre crop) to image1 when their shapes differ."""
    category = "image/postprocessing"
    image1 = In("IMAGE")
    image2 = In("IMAGE")
    blend_factor = Float(0.5, min=0.0, max=1.0, step=0.01)
    blend_mode = Combo(list(BLEND_MODES), default="normal")
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        a, b = with_alpha_like(self.image1, self.image2), with_alpha_like(self.image2, self.image1)
        b = b.to(a.device)
        if a.shape != b.shape:
            b = resized(b, a.shape[2], a.shape[1], "bicubic", "center")
        blended = BLEND_MODES[self.blend_mode](a, b)
        return (a * (1 - self.blend_factor) + blended * self.blend_factor).clamp(0, 1)


def composite(destination, source, x: int, y: int, mask=None, resize_source: bool = False):
    """(B, C, H, W) `source` pasted on `destination` at (x, y) pixels, through `mask` (resized to the
    source, bilinear); only what overlaps the destination is written."""
    source = source.to(destination)
    if resize_source:
        source = F.interpolate(source, size=destination.shape[-2:], mode="bilinear")
    source = batched(source, destination.shape[0])
    h, w = source.shape[-2:]
    x = max(-w, min(x, destination.shape[-1]))
    y = max(-h, min(y, destination.shape[-2]))
    if mask is None:
        mask = torch.ones_like(source[:, :1])
    else:
        mask = F.interpolate(as_masks(mask).to(destination)[:, None], size=(h, w), mode="bilinear")
        mask = batched(mask, source.shape[0])
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + h, destination.shape[-2]), min(x + w, destination.shape[-1])
    if bottom <= top or right <= left:
        return destination
    src = source[..., top - y:bottom - y, left - x:right - x]
    m = mask[..., top - y:bottom - y, left - x:right - x]
    out = destination.clone()
    out[..., top:bottom, left:right] = m * src + (1 - m) * destination[..., top:bottom, left:right]
    return out


class ImageCompositeMasked(Node):
    """Pastes `source` onto `destination` at (x, y), through the optional mask."""
    category = "image"
    destination = In("IMAGE")
    source = In("IMAGE")
    x = Int(0, min=0, max=MAX_RESOLUTION)
    y = Int(0, min=0, max=MAX_RESOLUTION)
    resize_source = Boolean(False)
    mask = In("MASK", optional=True)
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        dest = with_alpha_like(self.destination, self.source)
        src = with_alpha_like(self.source, self.destination)
        out = composite(dest.movedim(-1, 1), src.movedim(-1, 1), self.x, self.y, self.mask, self.resize_source)
        return out.movedim(1, -1)


class ImagePadForOutpaint(Node):
    """Pads the image with grey (0.5) for outpainting; the MASK is 1 on the padding and, within
    `feathering` pixels of a padded side, ((feathering - distance) / feathering)^2 on the image."""
    category = "image"
    image = In("IMAGE")
    left = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    top = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    right = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    bottom = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    feathering = Int(40, min=0, max=MAX_RESOLUTION)
    outputs = (Out("IMAGE", "IMAGE"), Out("MASK", "MASK"))

    def run(self, ctx):
        b, h, w, c = self.image.shape
        image = torch.full((b, h + self.top + self.bottom, w + self.left + self.right, c), 0.5,
                           dtype=torch.float32, device=self.image.device)
        image[:, self.top:self.top + h, self.left:self.left + w] = self.image
        mask = torch.ones(image.shape[1:3], dtype=torch.float32, device=self.image.device)
        inner = torch.zeros((h, w), dtype=torch.float32, device=self.image.device)
        f = self.feathering
        if f > 0 and 2 * f < h and 2 * f < w:
            i = torch.arange(h, device=inner.device, dtype=torch.float32)[:, None].expand(h, w)
            j = torch.arange(w, device=inner.device, dtype=torch.float32)[None, :].expand(h, w)
            unpadded_h, unpadded_w = torch.full_like(i, h), torch.full_like(j, w)
            distance = torch.stack([i if self.top else unpadded_h, h - i if self.bottom else unpadded_h,
                                    j if self.left else unpadded_w, w - j if self.right else unpadded_w]).amin(0)
            inner = torch.where(distance < f, ((f - distance) / f) ** 2, inner)
        mask[self.top:self.top + h, self.left:self.left + w] = inner
        return image, mask[None]


class ImageFromBatch(Node):
    """`length` images of the batch from `batch_index` (negative: from the end; clamped)."""
    category = "image/batch"
    image = In("IMAGE")
    batch_index = Int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION)
    length = Int(1, min=1, max=4096)
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        n = self.image.shape[0]
        start = self.batch_index + n if self.batch_index < 0 else self.batch_index
        start = max(0, min(n - 1, start))
        return self.image[start:start + min(n - start, self.length)].clone()


class RepeatImageBatch(Node):
    """The whole batch `amount` times."""
    category = "image/batch"
    image = In("IMAGE")
    amount = Int(1, min=1, max=4096)
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        return self.image.repeat((self.amount, 1, 1, 1))


class BatchImagesNode(Node):
    """The images as one batch: each resized (bilinear, centre crop) to the first one's size, an
    opaque alpha channel added where others have one."""
    category = "image"
    display_name = "Batch Images"
    images = Autogrow(template=In("IMAGE"), prefix="image", min=2, max=50)
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        images = self.grown("images")
        channels = max(i.shape[-1] for i in images)
        images = [F.pad(i, (0, 1), value=1.0) if i.shape[-1] < channels else i for i in images]
        _, h, w, _ = images[0].shape
        return torch.cat([i if i.shape[1:3] == (h, w) else resized(i, w, h, "bilinear", "center") for i in images])


SPACING_COLORS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
                  "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def _pad_to(image: torch.Tensor, size: int, dim: int, value: float) -> torch.Tensor:
    """Centred padding of dim 1 (height) or 2 (width) up to `size`."""
    missing = size - image.shape[dim]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    pad = (0, 0, before, after) if dim == 2 else (0, 0, 0, 0, before, after)
    return F.pad(image, pad, value=value)


class ImageStitch(Node):
    """Stitches image2 to image1 on the given side (image1 alone when image2 is not linked),
    optionally resizing image2 (lanczos) to image1's height or width, with a spacing strip."""
    category = "image/transform"
    display_name = "Stitch Images"
    image1 = In("IMAGE")
    direction = Combo(["right", "down", "left", "up"], default="right")
    match_image_size = Boolean(True)
    spacing_width = Int(0, min=0, max=1024, step=2)
    spacing_color = Combo(list(SPACING_COLORS), default="white")
    image2 = In("IMAGE", optional=True)
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        a, b = self.image1, self.image2
        if b is None:
            return a
        n = max(a.shape[0], b.shape[0])  # the shorter batch repeats its last image
        a, b = (torch.cat([x, x[-1:].expand(n - x.shape[0], -1, -1, -1)]) for x in (a, b))
        across = self.direction in ("left", "right")
        if self.match_image_size:
            h1, w1 = a.shape[1:3]
            ratio = b.shape[2] / b.shape[1]
            b = resized(b, int(h1 * ratio), h1, "lanczos") if across else resized(b, w1, int(w1 / ratio), "lanczos")
        else:
            grey = 0.0 if self.spacing_color not in ("white", "black") else SPACING_COLORS[self.spacing_color][0]
            dim = 1 if across else 2
            size = max(a.shape[dim], b.shape[dim])
            a, b = _pad_to(a, size, dim, grey), _pad_to(b, size, dim, grey)
        channels = max(a.shape[-1], b.shape[-1])
        a, b = (torch.cat([x, torch.ones(*x.shape[:-1], channels - x.shape[-1], device=x.device)], -1)
                if x.shape[-1] < channels else x for x in (a, b))
        parts = [b, a] if self.direction in ("left", "up") else [a, b]
        if self.spacing_width > 0:
            width = self.spacing_width + self.spacing_width % 2
            shape = (n, max(a.shape[1], b.shape[1]), width) if across else (n, width, max(a.shape[2], b.shape[2]))
            color = torch.tensor(SPACING_COLORS[self.spacing_color] + (1.0,), device=a.device)[:channels]
            parts.insert(1, color.expand(*shape, channels).to(a.dtype))
        return torch.cat(parts, dim=2 if across else 1)


class ResizeAndPadImage(Node):
    """Fits the image into target_width x target_height (aspect ratio kept) and pads the rest with
    white or black, centred."""
    category = "image/transform"
    image = In("IMAGE")
    target_width = Int(512, min=1, max=MAX_RESOLUTION)
    target_height = Int(512, min=1, max=MAX_RESOLUTION)
    padding_color = Combo(["white", "black"], default="white")
    interpolation = Combo(["area", "bicubic", "nearest-exact", "bilinear", "lanczos"], default="area")
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        b, h, w, c = self.image.shape
        sx, sy = self.target_width / w, self.target_height / h
        if sx == sy:
            new_w, new_h = self.target_width, self.target_height
        else:
            new_w, new_h = int(w * min(sx, sy)), int(h * min(sx, sy))
        out = torch.full((b, self.target_height, self.target_width, c), 0.0 if self.padding_color == "black" else 1.0,
                         dtype=self.image.dtype, device=self.image.device)
        y, x = (self.target_height - new_h) // 2, (self.target_width - new_w) // 2
        out[:, y:y + new_h, x:x + new_w] = resized(self.image, new_w, new_h, self.interpolation)
        return out


def longer_side_size(w: int, h: int, size: int) -> tuple[int, int]:
    if h > w:
        return round(w / h * size), size
    if w > h:
        return size, round(h / w * size)
    return size, size


class ImageScaleToMaxDimension(Node):
    """Resizes so the longer side is `largest_size` (aspect ratio kept)."""
    category = "image/upscaling"
    image = In("IMAGE")
    upscale_method = Combo(["area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"], default="area")
    largest_size = Int(512, min=0, max=MAX_RESOLUTION)
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        _, h, w, _ = self.image.shape
        return resized(self.image, *longer_side_size(w, h, self.largest_size), self.upscale_method)


# --- ResizeImageMaskNode: one node for every way of resizing, an IMAGE or a MASK --------------------

def named(**inputs: Input) -> tuple[Input, ...]:
    """The inputs of one DynamicCombo option, each named by its keyword."""
    for name, inp in inputs.items():
        inp.name = name
    return tuple(inputs.values())


def _crop_combo():
    return Combo(["disabled", "center"], default="center",
                 tooltip="disabled stretches to fit, center crops to keep the aspect ratio")


def _size():
    return Int(512, min=0, max=MAX_RESOLUTION)


RESIZE_TYPES = {
    "scale dimensions": named(width=_size(), height=_size(), crop=_crop_combo()),
    "scale by multiplier": named(multiplier=Float(1.0, min=0.01, max=8.0, step=0.01)),
    "scale longer dimension": named(longer_size=_size()),
    "scale shorter dimension": named(shorter_size=_size()),
    "scale width": named(width=_size()),
    "scale height": named(height=_size()),
    "scale total pixels": named(megapixels=Float(1.0, min=0.01, max=16.0, step=0.01)),
    "match size": named(match=In("IMAGE,MASK"), crop=_crop_combo()),
    "scale to multiple": named(multiple=Int(8, min=1, max=MAX_RESOLUTION)),
}


def _follow_side(w: int, h: int, width: int, height: int) -> tuple[int, int]:
    """A side given as 0 follows the other side's scale."""
    if width == 0:
        return max(1, round(w * height / h)), height
    if height == 0:
        return width, max(1, round(h * width / w))
    return width, height


def _to_multiple(x: torch.Tensor, multiple: int, method: str) -> torch.Tensor:
    """Scaled to cover the largest multiple-of-`multiple` size inside it, then centre-cropped to it."""
    h, w = x.shape[1:3]
    tw, th = w // multiple * multiple, h // multiple * multiple
    if multiple <= 1 or tw == 0 or th == 0 or (tw, th) == (w, h):
        return x
    if tw / w >= th / h:
        sw, sh = tw, max(th, math.ceil(h * tw / w))
    else:
        sw, sh = max(tw, math.ceil(w * th / h)), th
    x = resized(x, sw, sh, method)
    y0, x0 = (sh - th) // 2, (sw - tw) // 2
    return x[:, y0:y0 + th, x0:x0 + tw]


class ResizeImageMaskNode(Node):
    """Resizes an IMAGE or a MASK (the output is the same kind) by the chosen rule."""
    category = "transform"
    display_name = "Resize Image/Mask"
    input = In("IMAGE,MASK")
    resize_type = DynamicCombo(choices=RESIZE_TYPES, default="scale dimensions")
    scale_method = Combo(IMAGE_METHODS, default="area")
    outputs = (Out("*", "resized"),)

    def run(self, ctx):
        x, kind, method, o = self.input, self.resize_type, self.scale_method, self.chosen("resize_type")
        h, w = x.shape[1:3]
        if kind == "scale dimensions":
            if o["width"] == 0 and o["height"] == 0:
                return x
            return resized(x, *_follow_side(w, h, o["width"], o["height"]), method, o["crop"])
        if kind == "scale by multiplier":
            return resized(x, round(w * o["multiplier"]), round(h * o["multiplier"]), method)
        if kind == "scale longer dimension":
            return resized(x, *longer_side_size(w, h, o["longer_size"]), method)
        if kind == "scale shorter dimension":
            size = o["shorter_size"]
            shorter = (size, size) if w == h else (round(w / h * size), size) if h < w else (size, round(h / w * size))
            return resized(x, *shorter, method)
        if kind == "scale width":
            return x if o["width"] == 0 else resized(x, *_follow_side(w, h, o["width"], 0), method)
        if kind == "scale height":
            return x if o["height"] == 0 else resized(x, *_follow_side(w, h, 0, o["height"]), method)
        if kind == "scale total pixels":
            scale = math.sqrt(int(o["megapixels"] * 1024 * 1024) / (w * h))
            return resized(x, round(w * scale), round(h * scale), method)
        if kind == "match size":
            if o["match"] is None:
                raise ValueError("ResizeImageMaskNode: 'match size' needs an image or mask linked to resize_type.match")
            return resized(x, o["match"].shape[2], o["match"].shape[1], method, o["crop"])
        return _to_multiple(x, o["multiple"], method)


class JoinImageWithAlpha(Node):
    """An RGBA image: the image's colours with alpha = 1 - mask (the mask resized to the image)."""
    category = "mask/compositing"
    display_name = "Join Image with Alpha"
    image = In("IMAGE")
    alpha = In("MASK")
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        n = min(self.image.shape[0], as_masks(self.alpha).shape[0])
        mask = as_masks(self.alpha).to(self.image)
        if mask.shape[-2:] != self.image.shape[1:3]:
            mask = F.interpolate(mask[:, None], size=self.image.shape[1:3], mode="bilinear")[:, 0]
        return torch.cat([self.image[:n, ..., :3], (1.0 - mask[:n])[..., None]], dim=-1)


class Canny(Node):
    """Canny edges (kornia, as ComfyUI): white edges on black, three channels."""
    category = "image/preprocessors"
    image = In("IMAGE")
    low_threshold = Float(0.4, min=0.01, max=0.99, step=0.01)
    high_threshold = Float(0.8, min=0.01, max=0.99, step=0.01)
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        from kornia.filters import canny  # imported on use: its import takes a while

        _, edges = canny(self.image.movedim(-1, 1), self.low_threshold, self.high_threshold)
        return edges.repeat(1, 3, 1, 1).movedim(1, -1)


# --- output nodes ---------------------------------------------------------------------------------

class _CompareView(Input):
    """The frontend's compare slider: a widget that holds no value."""

    def __init__(self):
        super().__init__(type="IMAGECOMPARE")
        self.default = ""  # nothing to give: the widget only shows the images


class ImageCompare(Node):
    """Shows two images to compare (ComfyUI's slider widget; Loom's editor shows both): the UI
    output has `a_images` and `b_images`, as ComfyUI's."""
    category = "image"
    display_name = "Image Compare"
    output_node = True
    image_a = In("IMAGE", optional=True)
    image_b = In("IMAGE", optional=True)
    compare_view = _CompareView()

    def run(self, ctx):
        shown = {"a_images": [], "b_images": []}
        for key, image in (("a_images", self.image_a), ("b_images", self.image_b)):
            if image is not None and len(image) > 0:
                shown[key] = save_images(ctx, image, "temp", f"compare_{key[0]}_" + secrets.token_hex(4))
        ctx.show(**shown)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16(image: torch.Tensor, texts: dict[str, str]) -> bytes:
    """A 16-bit PNG (grey, RGB or RGBA by channels) of one (H, W, C) image in 0..1, with tEXt chunks
    (PIL writes 16 bits for greyscale only)."""
    h, w, c = image.shape
    array = (image.float().clamp(0, 1) * 65535).to(torch.int32).cpu().numpy().astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in array.reshape(h, w * c))
    color = {1: 0, 3: 2, 4: 6}[c]
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0))]
    chunks += [_png_chunk(b"tEXt", k.encode("latin-1") + b"\0" + v.encode("latin-1", "replace")) for k, v in texts.items()]
    chunks += [_png_chunk(b"IDAT", zlib.compress(raw, 4)), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


FORMATS = {
    "png": named(bit_depth=Combo(["8-bit", "16-bit"], default="8-bit"), input_color_space=Combo(["sRGB"], default="sRGB")),
    "exr": named(bit_depth=Combo(["32-bit float"], default="32-bit float"),
                 input_color_space=Combo(["sRGB", "HDR", "linear"], default="sRGB")),
    "avif": named(bit_depth=Combo(["auto", "8-bit YUV420", "10-bit YUV420"], default="auto"),
                  input_color_space=Combo(["sRGB", "HDR", "HDR PQ"], default="sRGB"), crf=Int(18, min=1, max=63),
                  save_mode=DynamicCombo(choices={"still images": (), "animated": named(
                      fps=Float(6.0, min=0.01, max=1000.0, step=0.01), loop_count=Int(0, min=0, max=1000))},
                      default="still images")),
}


class SaveImageAdvanced(Node):
    """Saves images in the output folder as 8- or 16-bit PNG with the workflow embedded, and passes
    them on. ComfyUI's EXR and AVIF formats are declared but refused at validation (not in Loom yet)."""
    category = "image"
    display_name = "Save Image (Advanced)"
    output_node = True
    images = In("IMAGE", tooltip="The images to save.")
    filename_prefix = String("ComfyUI", tooltip="file name start; may contain subfolders, e.g. cats/tabby")
    format = DynamicCombo(choices=FORMATS, default="png", tooltip="The file format in which to save the image.")
    outputs = (Out("IMAGE", "images"),)

    @classmethod
    def check(cls, env, format=None, **_):
        if format not in (None, "png"):
            return {"format": f"{format!r} files are not written by Loom yet; choose 'png' (8-bit or 16-bit)"}
        return {}

    def run(self, ctx):
        bits = self.chosen("format")["bit_depth"] or "8-bit"
        try:
            if bits == "8-bit":
                shown = save_images(ctx, self.images, "output", self.filename_prefix)
            else:
                shown = self._save16(ctx)
        except UnsafePath as exc:
            raise ValueError(f"SaveImageAdvanced: filename_prefix {self.filename_prefix!r} is not allowed: {exc}") from None
        ctx.show(images=shown)
        return self.images

    def _save16(self, ctx) -> list[dict]:
        from graph.filenames import name_counter

        prefix = self.filename_prefix.replace("\\", "/").strip() or "loom"
        subfolder, _, stem = prefix.rpartition("/")
        if not stem:
            raise ValueError(f"filename_prefix {prefix!r} names a folder, expected a file name prefix")
        folder = ctx.env.safe_path("output", "", subfolder) if subfolder else ctx.env.folder("output")
        texts = _texts(ctx)
        shown = []
        for image in self.images:
            path, f = name_counter(ctx.env.data_dir).create(folder, stem + "_", "_.png")
            with f:
                f.write(png16(image, texts))
            shown.append({"filename": path.name, "subfolder": subfolder, "type": "output"})
        return shown


def _texts(ctx) -> dict[str, str]:
    """The tEXt chunks a saved PNG carries: the prompt and each extra_pnginfo entry, as JSON."""
    import json

    texts = {"prompt": json.dumps(ctx.prompt)} if ctx.prompt is not None else {}
    for key, value in ((ctx.extra_data or {}).get("extra_pnginfo") or {}).items():
        texts[str(key)] = json.dumps(value)
    return texts

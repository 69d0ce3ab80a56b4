"""Image files: LoadImage (input folder, with its mask), SaveImage (output folder), PreviewImage (temp folder).

Images are IMAGE tensors (see nodes.common). Saved PNGs carry the workflow as tEXt chunks, as
ComfyUI's do: `prompt` (the API-format prompt) and one chunk per key of extra_data["extra_pnginfo"]
(e.g. `workflow`, the editor's graph), so dropping the PNG on the editor restores the graph.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, PngImagePlugin, UnidentifiedImageError

from graph import Combo, In, Node, Out, String
from graph.env import UnsafePath
from graph.filenames import name_counter

from .common import device_of, image_to_pil, pil_to_image

DEFAULT_PREFIX = "ComfyUI"  # ComfyUI's default file name start
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def list_input_images(env) -> list[str]:
    if env is None:
        return []
    root = Path(env.input_dir)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append((Path(folder) / name).relative_to(root).as_posix())
    return found


def image_and_mask(pil: Image.Image, device) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame as IMAGE (1, H, W, 3) and ComfyUI's MASK (1, H, W): 1 - alpha, or a 64x64 zero
    mask when the frame has no transparency (what ComfyUI's LoadImage gives)."""
    pil = ImageOps.exif_transpose(pil)
    if pil.mode == "I":  # 16-bit greyscale
        pil = pil.point(lambda v: v * (1 / 255))
    if "A" in pil.getbands() or (pil.mode == "P" and "transparency" in pil.info):
        alpha = np.asarray(pil.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
        mask = 1.0 - torch.from_numpy(alpha)
    else:
        mask = torch.zeros((64, 64), dtype=torch.float32)
    return pil_to_image(pil, device), mask[None].to(device)


class LoadImage(Node):
    """Loads an image from the input folder (EXIF rotation applied, converted to RGB) and its mask
    (1 - alpha). Frames of an animated file that have the first frame's size make a batch.
    ComfyUI's signature: LoadImage(image) -> (IMAGE, MASK)."""

    category = "image"
    image = Combo(list_input_images, image_upload=True)
    outputs = (Out("IMAGE", "IMAGE"), Out("MASK", "MASK"))

    @classmethod
    def fingerprint(cls, env, image=None, **_):
        try:
            st = env.safe_path("input", image).stat()
            return [st.st_mtime_ns, st.st_size]
        except (OSError, UnsafePath, TypeError):
            return None

    def run(self, ctx):
        path = ctx.env.safe_path("input", self.image)
        device = device_of(ctx.env)
        try:
            with Image.open(path) as pil:
                frames = [image_and_mask(frame, device) for frame in self._frames(pil)]
        except FileNotFoundError:
            raise FileNotFoundError(f"LoadImage: image {self.image!r} is not in the input folder") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"LoadImage: {self.image!r} is not an image PIL can read ({exc})") from None
        images, masks = zip(*frames)
        return torch.cat(images), torch.cat(masks)

    @staticmethod
    def _frames(pil: Image.Image):
        size = None
        for frame in ImageSequence.Iterator(pil):
            size = size or frame.size
            if frame.size == size:
                yield frame
            if pil.format == "MPO":  # the other pictures of an MPO are views, not frames
                break


def png_info(ctx) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    if ctx.prompt is not None:
        info.add_text("prompt", json.dumps(ctx.prompt))
    for key, value in ((ctx.extra_data or {}).get("extra_pnginfo") or {}).items():
        info.add_text(str(key), json.dumps(value))
    return info


def save_images(ctx, images, kind: str, prefix: str, truncate: bool = False) -> list[dict]:
    """PNG files of IMAGE values rounded to 8 bits as diffusers rounds (nodes.common.image_to_pil);
    `truncate`: as ComfyUI's SaveImage writes them (255 * x, fraction cut off), for ComfyUI's
    SaveImage and PreviewImage, so the same pixels give ComfyUI's bytes."""
    prefix = prefix.replace("\\", "/").strip() or DEFAULT_PREFIX
    subfolder, _, stem = prefix.rpartition("/")
    if not stem:
        raise ValueError(f"filename_prefix {prefix!r} names a folder, expected a file name prefix")
    folder = ctx.env.safe_path(kind, "", subfolder) if subfolder else ctx.env.folder(kind)
    folder.mkdir(parents=True, exist_ok=True)
    info = png_info(ctx) if kind == "output" else None
    counter = name_counter(ctx.env.data_dir)  # stem_00001_.png, ... from an index: no folder listing
    shown = []
    for pil in image_to_pil(images, truncate=truncate):
        path, f = counter.create(folder, stem + "_", "_.png")
        with f:
            pil.save(f, format="PNG", pnginfo=info, compress_level=4)
        shown.append({"filename": path.name, "subfolder": subfolder, "type": kind})
    return shown


class SaveImage(Node):
    """Saves images as PNG files in the output folder, with the workflow embedded; 8-bit values as
    ComfyUI's SaveImage makes them (truncated), file names ComfyUI_00001_.png unless prefixed otherwise."""

    category = "image"
    output_node = True
    images = In("IMAGE")
    filename_prefix = String(DEFAULT_PREFIX, tooltip="file name start; may contain subfolders, e.g. cats/tabby")

    def run(self, ctx):
        try:
            ctx.show(images=save_images(ctx, self.images, "output", self.filename_prefix, truncate=True))
        except UnsafePath as exc:
            raise ValueError(f"SaveImage: filename_prefix {self.filename_prefix!r} is not allowed: {exc}") from None


class PreviewImage(Node):
    """Shows images without keeping them (written to the temp folder)."""

    category = "image"
    output_node = True
    images = In("IMAGE")

    def run(self, ctx):
        ctx.show(images=save_images(ctx, self.images, "temp", "preview_" + secrets.token_hex(4), truncate=True))

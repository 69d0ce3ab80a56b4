"""Scaling stages: resizing images and latents, and upscale models (ESRGAN and kin) through spandrel.

`resize(x, width, height, method, crop)` works on (B, C, H, W) tensors with ComfyUI's methods:
nearest-exact, bilinear, area, bicubic (torch's interpolate, no antialiasing), lanczos (Pillow, on
8-bit images, as ComfyUI does) and bislerp (for latents: spherical interpolation of each pixel's
channel vector between its two nearest neighbours, first along the width, then the height; the
length is interpolated linearly). crop "center" first cuts the input to the target's aspect ratio.

Upscale models are loaded by spandrel (it detects the architecture from the weights). spandrel
imports every architecture it knows, and two of them (LaMa, RestoreFormer) import torchvision, whose
PyPI wheels do not load beside a CPU build of torch. When torchvision cannot be imported, spandrel is
imported with a stand-in for the three torchvision functions those two call, which raise a clear
error if used; every other architecture (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, SPAN, ...) works.
"""
from __future__ import annotations

import math
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from graph import Combo, In, Int, Node, Out

from .common import MAX_RESOLUTION, device_of
from .loading.model_files import kind_choices, kind_fingerprint, kind_path, read_state_dict

IMAGE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
LATENT_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
CROPS = ["disabled", "center"]


def center_crop(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The middle of x with the aspect ratio width:height."""
    h, w = x.shape[-2:]
    old, new = w / h, width / height
    if old > new:
        cut = round((w - w * new / old) / 2)
        return x[..., :, cut:w - cut]
    if old < new:
        cut = round((h - h * old / new) / 2)
        return x[..., cut:h - cut, :]
    return x


def _slerp_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Resample dim (2: height, 3: width) to `size` by slerp of channel vectors between neighbours."""
    n = x.shape[dim]
    pos = ((torch.arange(size, dtype=torch.float64) + 0.5) * n / size - 0.5).clamp(0, n - 1)
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=n - 1)
    t = (pos - i0).to(x.dtype)
    a, b = x.index_select(dim, i0), x.index_select(dim, i1)
    t = t.view([-1 if d == dim else 1 for d in range(4)])
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    omega = (ua * ub).sum(1, keepdim=True).clamp(-1, 1).acos()
    so = omega.sin()
    near = so.abs() < 1e-6  # parallel vectors: plain linear interpolation of the directions
    wa = torch.where(near, 1 - t, ((1 - t) * omega).sin() / so.where(~near, torch.ones_like(so)))
    wb = torch.where(near, t, (t * omega).sin() / so.where(~near, torch.ones_like(so)))
    return (wa * ua + wb * ub) * ((1 - t) * na + t * nb)


def bislerp(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    dtype = x.dtype
    x = _slerp_axis(x.float(), width, 3)
    return _slerp_axis(x, height, 2).to(dtype)


def lanczos(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    out = []
    for image in x:
        array = np.clip(255.0 * image.movedim(0, -1).float().cpu().numpy(), 0, 255).astype(np.uint8)
        pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).resize((width, height), Image.LANCZOS)
        result = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0)
        out.append(result[..., None] if result.ndim == 2 else result)
    return torch.stack(out).movedim(-1, 1).to(device=x.device, dtype=x.dtype)


def resize(x: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, height, width)."""
    if crop == "center":
        x = center_crop(x, width, height)
    if method == "bislerp":
        return bislerp(x, width, height)
    if method == "lanczos":
        return lanczos(x, width, height)
    return F.interpolate(x, size=(height, width), mode=method)


def keep_aspect(w: int, h: int, width: int, height: int, minimum: int = 1) -> tuple[int, int]:
    """ComfyUI's rule for a side given as 0: it follows the other one's scale (both 0: unchanged)."""
    if width == 0 and height == 0:
        return w, h
    if width == 0:
        height = max(minimum, height)
        return max(minimum, round(w * height / h)), height
    if height == 0:
        width = max(minimum, width)
        return width, max(minimum, round(h * width / w))
    return max(minimum, width), max(minimum, height)


def resized_latent(latent, width: int, height: int, method: str, crop: str = "disabled"):
    """A new LATENT of the resized samples (nodes.latent_value.Latent.resized: noise not yet added, the
    VAE distribution and the sampler state belong to the old size and are dropped; the next sampler
    starts from these samples; a noise mask is kept, resized when sampled, as ComfyUI does)."""
    return latent.resized(resize(latent.samples, width, height, method, crop))


class ResizeImage(Node):
    """Resizes images to width x height (0: follow the other side's scale), optionally cropping the
    middle to that aspect ratio first."""
    category = "image"
    image = In("IMAGE")
    method = Combo(IMAGE_METHODS, default="bilinear")
    width = Int(512, min=0, max=MAX_RESOLUTION)
    height = Int(512, min=0, max=MAX_RESOLUTION)
    crop = Combo(CROPS, default="disabled")
    outputs = (Out("IMAGE", "image"),)

    def run(self, ctx):
        _, h, w, _ = self.image.shape
        width, height = keep_aspect(w, h, self.width, self.height)
        if (width, height) == (w, h) and self.crop == "disabled":
            return self.image
        return resize(self.image.movedim(-1, 1), width, height, self.method, self.crop).movedim(1, -1)


class ResizeLatent(Node):
    """Resizes latents to width x height latent pixels (0: follow the other side's scale)."""
    category = "latent"
    latents = In("LATENT")
    method = Combo(LATENT_METHODS, default="nearest-exact")
    width = Int(64, min=0, max=MAX_RESOLUTION // 8)
    height = Int(64, min=0, max=MAX_RESOLUTION // 8)
    crop = Combo(CROPS, default="disabled")
    outputs = (Out("LATENT", "latents"),)

    def run(self, ctx):
        h, w = self.latents.samples.shape[-2:]
        width, height = keep_aspect(w, h, self.width, self.height)
        return resized_latent(self.latents, width, height, self.method, self.crop)


# --- upscale models -------------------------------------------------------------------------------

class _TorchvisionStandIn(types.ModuleType):
    """What spandrel's LaMa and RestoreFormer import from torchvision, failing clearly when called."""

    class InterpolationMode:
        NEAREST = BILINEAR = BICUBIC = "needs torchvision"

    @staticmethod
    def _missing(*_, **__):
        raise RuntimeError("this upscale model's architecture needs torchvision, which is not installed")

    rotate = normalize = _missing


def import_spandrel():
    try:
        import spandrel

        return spandrel
    except ModuleNotFoundError as exc:
        if exc.name == "spandrel":
            raise ModuleNotFoundError("upscale models need spandrel: pip install --no-deps spandrel==0.4.2 "
                                      "(its torchvision requirement is not needed)", name="spandrel") from None
        if exc.name is None or not exc.name.startswith("torchvision"):
            raise
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    saved = {n: sys.modules.get(n) for n in names}
    stand_in = _TorchvisionStandIn("torchvision.transforms.functional")
    for name in names:
        sys.modules[name] = stand_in
    try:
        for name in [m for m in sys.modules if m == "spandrel" or m.startswith("spandrel.")]:
            del sys.modules[name]  # a half-imported spandrel from the failed try
        import spandrel

        return spandrel
    finally:  # the stand-in is seen only by spandrel's import; other libraries still find no torchvision
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_upscale_model(path, device):
    """A spandrel ImageModelDescriptor (architecture, scale, the model) on `device`, in eval mode."""
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(read_state_dict(path))
    except spandrel.UnsupportedModelError:
        raise ValueError(f"{path.name}: not an upscale model architecture spandrel knows") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ValueError(f"{path.name}: a {descriptor.architecture.name} model needs a mask; not an image upscaler")
    return descriptor.to(device).eval()


def upscale_images(model, image: torch.Tensor, progress=None) -> torch.Tensor:
    """IMAGE (B, H, W, C) -> IMAGE upscaled by the model's scale, one image at a time."""
    out = []
    with torch.no_grad():
        for i, single in enumerate(image):
            x = single.movedim(-1, 0)[None].to(device=model.device, dtype=model.dtype)
            out.append(model(x)[0].movedim(0, -1).float())
            if progress is not None:
                progress(i + 1, image.shape[0])
    return torch.stack(out).to(image.device).clamp(0, 1)


class LoadUpscaleModel(Node):
    """Loads an upscale model (ESRGAN, Real-ESRGAN, SwinIR, ...: any image architecture spandrel
    detects) from models/upscale_models."""
    category = "loaders"
    model_name = Combo(kind_choices("upscale_models"), model=True, model_kind="upscale_models")
    outputs = (Out("UPSCALE_MODEL", "upscale_model"),)

    @classmethod
    def fingerprint(cls, env, model_name=None, **_):
        return kind_fingerprint(env, "upscale_models", model_name)

    def run(self, ctx):
        path = kind_path(ctx.env, "upscale_models", self.model_name, type(self).__name__)
        return load_upscale_model(path, device_of(ctx.env))


class UpscaleWithModel(Node):
    """Upscales images with an upscale model (by the model's own factor)."""
    category = "image"
    upscale_model = In("UPSCALE_MODEL")
    image = In("IMAGE")
    outputs = (Out("IMAGE", "image"),)

    def run(self, ctx):
        return upscale_images(self.upscale_model, self.image, ctx.progress)


def total_pixels_size(w: int, h: int, megapixels: float, steps: int = 1) -> tuple[int, int]:
    """ImageScaleToTotalPixels' size: the aspect ratio kept, megapixels * 1024^2 pixels, each side a
    multiple of `steps`."""
    scale = math.sqrt(megapixels * 1024 * 1024 / (w * h))
    return max(steps, round(w * scale / steps) * steps), max(steps, round(h * scale / steps) * steps)

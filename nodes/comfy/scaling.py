"""ComfyUI's scaling, upscale-model and latent-batch nodes under their own names and inputs, composed
from Loom's scaling stages (nodes.scaling): LatentUpscale, LatentUpscaleBy, ImageScale, ImageScaleBy,
ImageScaleToTotalPixels, UpscaleModelLoader, ImageUpscaleWithModel, RepeatLatentBatch,
LatentFromBatch.

LatentUpscale takes pixel sizes and divides them by 8, as ComfyUI does (every published SD VAE
downsamples by 8). A batch sliced by LatentFromBatch carries ComfyUI's `batch_index`.
"""
from __future__ import annotations

from graph import Combo, Float, In, Int, Node, Out

from ..common import MAX_RESOLUTION, call
from .ksampling.ksampler import COMFY_LATENT_SCALE
from ..loading.model_files import kind_choices, kind_fingerprint
from ..scaling import (CROPS, IMAGE_METHODS, LATENT_METHODS, LoadUpscaleModel, ResizeImage, UpscaleWithModel,
                      keep_aspect, resized_latent, total_pixels_size)


class LatentUpscale(Node):
    """ComfyUI's latent resize to width x height pixels (0: keep the aspect ratio): ResizeLatent."""
    category = "latent"  # ComfyUI's
    samples = In("LATENT")
    upscale_method = Combo(LATENT_METHODS, default="nearest-exact")
    width = Int(512, min=0, max=MAX_RESOLUTION, step=8)
    height = Int(512, min=0, max=MAX_RESOLUTION, step=8)
    crop = Combo(CROPS, default="disabled")
    outputs = (Out("LATENT", "LATENT"),)

    def run(self, ctx):
        h, w = self.samples.samples.shape[-2:]
        if self.width == 0 and self.height == 0:
            return self.samples
        width, height = keep_aspect(w, h, self.width, self.height, minimum=64)  # pixels (the ratio is w:h)
        return resized_latent(self.samples, width // COMFY_LATENT_SCALE, height // COMFY_LATENT_SCALE,
                              self.upscale_method, self.crop)


class LatentUpscaleBy(Node):
    """ComfyUI's latent resize by a factor."""
    category = "latent"  # ComfyUI's
    samples = In("LATENT")
    upscale_method = Combo(LATENT_METHODS, default="nearest-exact")
    scale_by = Float(1.5, min=0.01, max=8.0, step=0.01)
    outputs = (Out("LATENT", "LATENT"),)

    def run(self, ctx):
        h, w = self.samples.samples.shape[-2:]
        return resized_latent(self.samples, round(w * self.scale_by), round(h * self.scale_by), self.upscale_method)


class ImageScale(Node):
    """ComfyUI's image resize to width x height (0: keep the aspect ratio): ResizeImage."""
    category = "image/upscaling"  # ComfyUI's
    image = In("IMAGE")
    upscale_method = Combo(IMAGE_METHODS, default="nearest-exact")
    width = Int(512, min=0, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=0, max=MAX_RESOLUTION, step=1)
    crop = Combo(CROPS, default="disabled")
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        return call(ResizeImage, ctx, image=self.image, method=self.upscale_method, width=self.width,
                    height=self.height, crop=self.crop)


class ImageScaleBy(Node):
    """ComfyUI's image resize by a factor."""
    category = "image/upscaling"  # ComfyUI's
    image = In("IMAGE")
    upscale_method = Combo(IMAGE_METHODS, default="nearest-exact")
    scale_by = Float(1.0, min=0.01, max=8.0, step=0.01)
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        _, h, w, _ = self.image.shape
        return call(ResizeImage, ctx, image=self.image, method=self.upscale_method,
                    width=round(w * self.scale_by), height=round(h * self.scale_by))


class ImageScaleToTotalPixels(Node):
    """ComfyUI's image resize to a number of megapixels (aspect ratio kept; sides multiples of
    resolution_steps)."""
    category = "image/upscaling"  # ComfyUI's
    image = In("IMAGE")
    upscale_method = Combo(IMAGE_METHODS, default="nearest-exact")
    megapixels = Float(1.0, min=0.01, max=16.0, step=0.01)
    resolution_steps = Int(1, min=1, max=256)
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        _, h, w, _ = self.image.shape
        width, height = total_pixels_size(w, h, self.megapixels, self.resolution_steps)
        return call(ResizeImage, ctx, image=self.image, method=self.upscale_method, width=width, height=height)


class UpscaleModelLoader(Node):
    """ComfyUI's upscale-model loader: LoadUpscaleModel (spandrel)."""
    category = "loaders"  # ComfyUI's
    model_name = Combo(kind_choices("upscale_models"), model=True, model_kind="upscale_models")
    outputs = (Out("UPSCALE_MODEL", "UPSCALE_MODEL"),)

    @classmethod
    def fingerprint(cls, env, model_name=None, **_):
        return kind_fingerprint(env, "upscale_models", model_name)

    def run(self, ctx):
        return call(LoadUpscaleModel, ctx, model_name=self.model_name)


class ImageUpscaleWithModel(Node):
    """ComfyUI's upscale by model: UpscaleWithModel."""
    category = "image/upscaling"  # ComfyUI's
    upscale_model = In("UPSCALE_MODEL")
    image = In("IMAGE")
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        return call(UpscaleWithModel, ctx, upscale_model=self.upscale_model, image=self.image)


# --- latent batches -------------------------------------------------------------------------------

# Batch ops derive the LATENT by its fields' rules (nodes.latent_value.Latent.rows).


class RepeatLatentBatch(Node):
    """ComfyUI's batch repeat: the whole batch `amount` times."""
    category = "latent/batch"  # ComfyUI's
    samples = In("LATENT")
    amount = Int(1, min=1, max=64)
    outputs = (Out("LATENT", "LATENT"),)

    def run(self, ctx):
        index = self.samples.batch_index
        if index is not None:
            offset = max(index) - min(index) + 1
            index = list(index) + [i + k * offset for k in range(1, self.amount) for i in index]
        return self.samples.rows(lambda t: t.repeat((self.amount,) + (1,) * (t.ndim - 1)),
                                 lambda items: items * self.amount, batch_index=index)


class LatentFromBatch(Node):
    """ComfyUI's batch slice: `length` images from `batch_index` (clamped to the batch)."""
    category = "latent/batch"  # ComfyUI's
    samples = In("LATENT")
    batch_index = Int(0, min=0, max=63)
    length = Int(1, min=1, max=64)
    outputs = (Out("LATENT", "LATENT"),)

    def run(self, ctx):
        n = self.samples.batch
        start = min(n - 1, self.batch_index)
        stop = start + min(n - start, self.length)
        index = self.samples.batch_index or list(range(n))
        return self.samples.rows(lambda t: t[start:stop].clone(), lambda items: items[start:stop],
                                 batch_index=list(index)[start:stop])


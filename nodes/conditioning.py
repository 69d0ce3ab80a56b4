"""The CONDITIONING value and the nodes that combine and reshape it.

CONDITIONING: a tuple of entries (`Cond`), what ComfyUI's list of [embeddings, options] pairs
carries, as named fields:

- `embeds` (1, tokens, width): the UNet's cross-attention input, on the text encoder's device and
  dtype (nodes.text makes it: SD 1.x/2.x's last or clip-skipped layer; SDXL's two penultimate layers).
- `pooled` (1, width): SDXL's pooled text embedding (the second encoder's projection), or None.
- `width`, `height`, `crop_w`, `crop_h`, `target_width`, `target_height`: SDXL's size
  conditioning in pixels (None: the size of the image being sampled, as the pipeline and ComfyUI
  default); `aesthetic_score`: the refiner's (None: 6.0 for positive, 2.5 for negative entries).
- `area` (x, y, width, height) in pixels and `strength`; `mask` (B or 1, H, W) in 0..1 with
  `mask_strength` and `set_area_to_bounds`: where the entry applies (ConditioningSetArea/SetMask).
- `controls`: ControlNets (`Control`: model, hint image, strength, start/end) whose residuals are
  summed into the UNet call; `control_to_uncond`: the negative pass gets them too (ControlNetApply).
- `inpaint`: for inpainting UNets, the mask and the masked image's latent distribution.

Several entries (ConditioningCombine) are evaluated one by one and averaged, weighted by strength,
area and mask, as ComfyUI does; a single plain entry per side runs as the diffusers pipelines do
(one UNet call on cat([negative, positive])), so those images match them exactly. Values are never
changed in place: nodes return new tuples (`dataclasses.replace`).

The nodes here carry ComfyUI's names and inputs (ConditioningCombine, ConditioningSetArea,
ConditioningSetMask, ConditioningZeroOut, ConditioningAverage); SetSizeConditioning and
SetAestheticScore are Loom's stage nodes for SDXL's extra conditioning.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from graph import Combo, Float, In, Int, Node, Out

from .common import MAX_RESOLUTION


@dataclass(frozen=True, eq=False)
class Control:
    """A ControlNet on a conditioning entry. `hint`: (B, C, H, W) in 0..1 (ComfyUI's IMAGE moved to
    channels-first); `start`/`end`: the fraction of the steps it acts on, as diffusers'
    control_guidance_start/end (step i of n is on unless i/n < start or (i+1)/n > end)."""
    model: Any
    hint: torch.Tensor
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def active(self, step: int, total: int) -> bool:
        return not (step / total < self.start or (step + 1) / total > self.end)


@dataclass(frozen=True, eq=False)
class InpaintImage:
    """What an inpainting UNet (9 input channels) reads besides the latents: `mask` (B, 1, H, W),
    binary, 1 = repaint; the latent distribution of the image with that area blanked (`mean`,
    `std`, unscaled). The sampler samples it once with each image's seed stream, right after the
    noise, as StableDiffusionInpaintPipeline does."""
    mask: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    scaling_factor: float


@dataclass(frozen=True, eq=False)
class Cond:
    """One entry of a CONDITIONING (see the module docstring for the whole convention)."""
    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    # SDXL size conditioning in pixels; None: the size of the image being sampled.
    width: int | None = None
    height: int | None = None
    crop_w: int = 0
    crop_h: int = 0
    target_width: int | None = None
    target_height: int | None = None
    aesthetic_score: float | None = None  # SDXL refiner; None: 6.0 for positive, 2.5 for negative
    area: tuple[int, int, int, int] | None = None  # (x, y, width, height) in pixels
    strength: float = 1.0
    mask: torch.Tensor | None = None  # (B or 1, H, W) in 0..1: where this entry applies
    mask_strength: float = 1.0
    set_area_to_bounds: bool = False
    controls: tuple[Control, ...] = ()
    control_to_uncond: bool = False  # ComfyUI's ControlNetApply: the negative pass gets these controls too
    inpaint: InpaintImage | None = None
    gligen: tuple | None = None  # (GLIGEN model, boxes): nodes.comfy.gligen
    concat: torch.Tensor | None = None  # InstructPix2Pix: latents (unscaled) given beside the noisy ones
    # What a family's own conditioning carries besides embeds and pooled, by the names of ComfyUI's
    # conditioning dict: "guidance" (FluxGuidance), "reference_latents" (ReferenceLatent), ... Set with
    # `with_extra`; read by the family's runtime guide (nodes.families.spec.Runtime).
    extra: dict = field(default_factory=dict)

    @property
    def plain(self) -> bool:
        """Applies to the whole image with full weight: the pipelines' only case."""
        return self.area is None and self.mask is None


def as_conditioning(value) -> tuple[Cond, ...]:
    """A CONDITIONING as a tuple of entries (a bare embeddings tensor, from older nodes, is one entry)."""
    if isinstance(value, torch.Tensor):
        return (Cond(value),)
    if isinstance(value, Cond):
        return (value,)
    entries = tuple(value)
    if not entries or not all(isinstance(c, Cond) for c in entries):
        raise TypeError(f"expected a CONDITIONING (entries of nodes.conditioning.Cond), got {type(value).__name__}")
    return entries


def update(conditioning, **changes) -> tuple[Cond, ...]:
    """Every entry with `changes` applied (a new value; the input is left as it is)."""
    return tuple(replace(c, **changes) for c in as_conditioning(conditioning))


def with_extra(conditioning, **values) -> tuple[Cond, ...]:
    """Every entry with these family-specific values set in its `extra` (a new value)."""
    return tuple(replace(c, extra={**c.extra, **values}) for c in as_conditioning(conditioning))


class ConditioningCombine(Node):
    """Both conditionings, entry by entry: the sampler averages their predictions (by area and mask)."""

    category = "conditioning"
    conditioning_1 = In("CONDITIONING")
    conditioning_2 = In("CONDITIONING")
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        return as_conditioning(self.conditioning_1) + as_conditioning(self.conditioning_2)


class ConditioningSetArea(Node):
    """Limits each entry to a rectangle of the image (pixels), with a weight among overlapping entries."""

    category = "conditioning"
    conditioning = In("CONDITIONING")
    width = Int(64, min=64, max=MAX_RESOLUTION, step=8)
    height = Int(64, min=64, max=MAX_RESOLUTION, step=8)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        return update(self.conditioning, area=(self.x, self.y, self.width, self.height), strength=self.strength,
                      set_area_to_bounds=False)


class ConditioningSetMask(Node):
    """Limits each entry to a MASK (1: applies); 'mask bounds' runs the model on the mask's bounding box only."""

    category = "conditioning"
    conditioning = In("CONDITIONING")
    mask = In("MASK")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    set_cond_area = Combo(["default", "mask bounds"], default="default")
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        mask = self.mask if self.mask.ndim == 3 else self.mask.reshape(-1, *self.mask.shape[-2:])
        return update(self.conditioning, mask=mask, mask_strength=self.strength,
                      set_area_to_bounds=self.set_cond_area != "default")


class ConditioningZeroOut(Node):
    """The same entries with zero embeddings (and zero pooled output): 'no prompt at all'."""

    category = "advanced/conditioning"
    conditioning = In("CONDITIONING")
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        return tuple(replace(c, embeds=torch.zeros_like(c.embeds),
                             pooled=None if c.pooled is None else torch.zeros_like(c.pooled))
                     for c in as_conditioning(self.conditioning))


class ConditioningAverage(Node):
    """Blends each entry of `conditioning_to` with the first entry of `conditioning_from`:
    to * strength + from * (1 - strength), embeddings and pooled outputs alike."""

    category = "conditioning"
    conditioning_to = In("CONDITIONING")
    conditioning_from = In("CONDITIONING")
    conditioning_to_strength = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        source = as_conditioning(self.conditioning_from)[0]  # ComfyUI also uses only the first
        w = self.conditioning_to_strength
        out = []
        for c in as_conditioning(self.conditioning_to):
            other = _fit_tokens(source.embeds.to(c.embeds), c.embeds.shape[1])
            pooled = c.pooled
            if source.pooled is not None:
                pooled = source.pooled if pooled is None else pooled * w + source.pooled.to(pooled) * (1.0 - w)
            out.append(replace(c, embeds=c.embeds * w + other * (1.0 - w), pooled=pooled))
        return tuple(out)


def _fit_tokens(embeds: torch.Tensor, length: int) -> torch.Tensor:
    """Cut or zero-pad the token axis to `length` (ComfyUI's rule for averaging unequal prompts)."""
    if embeds.shape[1] >= length:
        return embeds[:, :length]
    pad = embeds.new_zeros(embeds.shape[0], length - embeds.shape[1], embeds.shape[2])
    return torch.cat([embeds, pad], dim=1)


class SetSizeConditioning(Node):
    """SDXL's size conditioning: the original image size, the crop's top-left corner and the target
    size the model is told about (pixels). 0 for a size means the size of the image being sampled."""

    category = "conditioning"
    conditioning = In("CONDITIONING")
    width = Int(0, min=0, max=MAX_RESOLUTION, tooltip="original width; 0: the sampled image's")
    height = Int(0, min=0, max=MAX_RESOLUTION, tooltip="original height; 0: the sampled image's")
    crop_w = Int(0, min=0, max=MAX_RESOLUTION)
    crop_h = Int(0, min=0, max=MAX_RESOLUTION)
    target_width = Int(0, min=0, max=MAX_RESOLUTION, tooltip="0: the sampled image's")
    target_height = Int(0, min=0, max=MAX_RESOLUTION, tooltip="0: the sampled image's")
    outputs = (Out("CONDITIONING", "conditioning"),)

    def run(self, ctx):
        return update(self.conditioning, width=self.width or None, height=self.height or None, crop_w=self.crop_w,
                      crop_h=self.crop_h, target_width=self.target_width or None,
                      target_height=self.target_height or None)


class SetAestheticScore(Node):
    """The SDXL refiner's aesthetic-score conditioning (its pipeline uses 6 for the prompt, 2.5 for the negative)."""

    category = "conditioning"
    conditioning = In("CONDITIONING")
    score = Float(6.0, min=0.0, max=1000.0, step=0.01)
    outputs = (Out("CONDITIONING", "conditioning"),)

    def run(self, ctx):
        return update(self.conditioning, aesthetic_score=self.score)

"""One guided noise prediction from CONDITIONING: what the sampler asks for at every step.

`Guide(...)(x, t, step, total)` returns the prediction that `scheduler.step` takes. It handles
classifier-free guidance (`u + g * (c - u)`, the negative pass skipped only at g == 1), SDXL's
added conditioning (pooled embedding + size/crop/aesthetic time ids), ControlNet residuals,
the extra input channels of inpainting UNets, and several conditioning entries with areas and
masks (each entry's prediction weighted by strength, feathered area edges and mask, then averaged,
as ComfyUI does).

One plain entry per side (no area, no mask) takes the pipelines' path: ONE UNet call on
cat([x, x]) with cat([negative, positive]) conditioning, so images equal diffusers' pipelines.

Every UNet call goes through `unet_call`, every ControlNet call through `controlnet_call`: one place
to change each. (LoRA needs neither: its views are the models themselves, see nodes.lora.)
"""
from __future__ import annotations

import math

from dataclasses import replace

import torch
import torch.nn.functional as F

from .conditioning import Cond, Control, as_conditioning
from .latent import randn

FEATHER = 8  # latent pixels of fade at an area's inner edges (ComfyUI's)
EPSILON_WEIGHT = 1e-37  # ComfyUI's starting count: an uncovered pixel averages to 0


def unet_call(unet, sample, t, embeds, added=None, residuals=None, attention=None):
    """The one call of a UNet (noise or v prediction); `attention`: diffusers' cross_attention_kwargs."""
    down, mid = residuals if residuals is not None else (None, None)
    return unet(sample, t, encoder_hidden_states=embeds, timestep_cond=None, cross_attention_kwargs=attention,
                added_cond_kwargs=added, down_block_additional_residuals=down, mid_block_additional_residual=mid,
                return_dict=False)[0]


def controlnet_call(controlnet, sample, t, embeds, hint, scale: float, added=None):
    """The one call of a ControlNet: (down residuals, mid residual), already scaled."""
    return controlnet(sample, t, encoder_hidden_states=embeds, controlnet_cond=hint, conditioning_scale=scale,
                      guess_mode=False, added_cond_kwargs=added, return_dict=False)


def same_length(embeds: list[torch.Tensor]) -> list[torch.Tensor]:
    """Text embeddings of different lengths (prompts of 77, 154, ... tokens) repeated along the
    sequence to their least common multiple, as ComfyUI batches them: attention over a sequence
    repeated whole gives the same result."""
    length = math.lcm(*(e.shape[1] for e in embeds))
    return [e if e.shape[1] == length else e.repeat(1, length // e.shape[1], 1) for e in embeds]


def repeat_to(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat a batch of 1 (or a divisor of `batch`) up to `batch`; no copy when it already fits."""
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ValueError(f"a conditioning batch of {x.shape[0]} does not divide the latent batch of {batch}")
    return x.repeat(batch // x.shape[0], *([1] * (x.ndim - 1)))


def fit_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, H, W) resized to height x width: centre-cropped to that aspect ratio, then nearest-exact
    (ComfyUI's treatment of ControlNet hints); unchanged when it already fits."""
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image
    if h * width != w * height:  # crop to the target aspect ratio first
        if w * height > h * width:
            keep = round(h * width / height)
            image = image[..., :, (w - keep) // 2:(w - keep) // 2 + keep]
        else:
            keep = round(w * height / width)
            image = image[..., (h - keep) // 2:(h - keep) // 2 + keep, :]
    return F.interpolate(image, size=(height, width), mode="nearest-exact")


def hint_scale(controlnet) -> int:
    """Pixels of the hint image per latent pixel (the ControlNet's conditioning embedding downsamples)."""
    return 2 ** (len(controlnet.config.conditioning_embedding_out_channels) - 1)


class Guide:
    """The guided prediction for a sampling run over latents like `x` (B, C, h, w).

    `inpaint_latents`: the sampled extra channels of an inpainting UNet, when a previous sampler
    drew them (else they are drawn here from `generators`, once). `masked_source`: (mask, latents)
    of a LATENT with a noise mask, the extra channels when the conditioning carries none (ComfyUI's
    VAEEncodeForInpaint + inpainting model). `keep_uncond`: the negative pass runs even at g == 1 and
    each call leaves its prediction in `last_uncond` (ComfyUI's CFG++ samplers read it)."""

    def __init__(self, unet, positive, negative, guidance_scale: float, x: torch.Tensor, latent_scale: int,
                 generators=None, inpaint_latents: torch.Tensor | None = None, masked_source=None,
                 keep_uncond: bool = False):
        self.unet, self.scale, self.latent_scale = unet, guidance_scale, latent_scale
        self.batch, self.channels, self.height, self.width = x.shape
        self.device, self.dtype = x.device, x.dtype
        # u + g * (c - u) for every g: the negative pass is skipped only at exactly g == 1 (as ComfyUI)
        self.guided = negative is not None and (guidance_scale != 1.0 or keep_uncond)
        self.keep_uncond, self.last_uncond = keep_uncond, None
        positive = as_conditioning(positive)
        negative = as_conditioning(negative) if self.guided else ()
        if self.guided:
            negative = _share_controls(positive, negative)
            negative = negative + _same_area_negatives(positive, negative)
        self.sides = [negative, positive] if self.guided else [positive]
        self.extra_channels = unet.config.in_channels - self.channels
        self.inpaint_latents = inpaint_latents
        self._generators, self._masked_source = generators, masked_source
        self.sdxl = getattr(unet.config, "addition_embed_type", None) == "text_time"
        self.batched = all(len(side) == 1 and side[0].plain and side[0].gligen is None for side in self.sides) and \
            _same_controls(self.sides[0][0].controls, self.sides[-1][0].controls)  # GLIGEN: its entries alone

    def __call__(self, x: torch.Tensor, t, step: int, total: int) -> torch.Tensor:
        """x: the scheduler-scaled model input (B, C, h, w); step of total: for ControlNet ranges."""
        if self.batched:
            preds = self._batched(x, t, step, total)
        else:
            preds = [self._averaged(side, x, t, step, total, negative=i == 0 and self.guided)
                     for i, side in enumerate(self.sides)]
        if not self.guided:
            return preds[0]
        uncond, cond = preds
        if self.keep_uncond:
            self.last_uncond = uncond
        return uncond + self.scale * (cond - uncond)

    # --- the pipelines' path: one call on cat([negative, positive]) --------------------------------
    def _batched(self, x, t, step, total) -> list[torch.Tensor]:
        entries = [side[0] for side in self.sides]
        negatives = [self.guided and i == 0 for i in range(len(entries))]
        sample = torch.cat([x] * len(entries)) if len(entries) > 1 else x
        embeds = torch.cat(same_length([self._embeds(e) for e in entries]))
        added = self._added(entries, negatives)
        residuals = self._residuals(entries[0].controls, sample, t, embeds, added, step, total)
        sample = self._with_extra_channels(sample, entries, None)
        pred = unet_call(self.unet, sample, t, embeds, added, residuals)
        return list(pred.chunk(len(entries))) if len(entries) > 1 else [pred]

    # --- ComfyUI's path: each entry on its area, averaged by weight --------------------------------
    def _averaged(self, side, x, t, step, total, negative: bool) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.unet.config.out_channels, *x.shape[2:], device=x.device, dtype=x.dtype)
        count = torch.full_like(out, EPSILON_WEIGHT)
        for entry in side:
            (x0, y0, w, h), weight = self._region_and_weight(entry)
            if not weight.any():
                continue
            crop = x[..., y0:y0 + h, x0:x0 + w]
            embeds = self._embeds(entry)
            added = self._added([entry], [negative])
            residuals = self._residuals(entry.controls, crop, t, embeds, added, step, total)
            sample = self._with_extra_channels(crop, [entry], (x0, y0, w, h))
            pred = self._grounded_call(entry, sample, t, embeds, added, residuals) if entry.gligen else \
                unet_call(self.unet, sample, t, embeds, added, residuals)
            out[..., y0:y0 + h, x0:x0 + w] += pred * weight
            count[..., y0:y0 + h, x0:x0 + w] += weight
        return out / count

    def _grounded_call(self, entry: Cond, sample, t, embeds, added, residuals) -> torch.Tensor:
        """The UNet call of an entry with GLIGEN boxes (nodes.comfy.gligen): its layers attached for the call."""
        from .comfy.gligen import gligen_kwargs, grounded

        model, boxes = entry.gligen
        kwargs = gligen_kwargs(boxes, model.key_dim, sample.shape[0], sample.shape[2], sample.shape[3],
                               self.latent_scale, sample.device, sample.dtype)
        with grounded(self.unet, model) as unet:
            return unet_call(unet, sample, t, embeds, added, residuals, attention={"gligen": kwargs})

    def _region_and_weight(self, entry: Cond) -> tuple[tuple[int, int, int, int], torch.Tensor]:
        """The entry's rectangle in latent pixels and its weight there (B or 1, 1, h, w)."""
        H, W, s = self.height, self.width, self.latent_scale
        mask = None
        if entry.mask is not None:
            mask = entry.mask.to(device=self.device, dtype=self.dtype)
            mask = mask.reshape(-1, 1, *mask.shape[-2:])
            if mask.shape[-2:] != (H, W):
                mask = F.interpolate(mask, size=(H, W), mode="bilinear", align_corners=False)
        if entry.area is not None:
            x0, y0, w, h = (v // s for v in entry.area)
        elif mask is not None and entry.set_area_to_bounds:
            x0, y0, w, h = _bounds(mask)
        else:
            x0, y0, w, h = 0, 0, W, H
        x0, y0 = min(x0, W - 1), min(y0, H - 1)
        w, h = max(1, min(w, W - x0)), max(1, min(h, H - y0))
        if mask is not None:
            weight = mask[..., y0:y0 + h, x0:x0 + w] * (entry.mask_strength * entry.strength)
        else:
            weight = torch.full((1, 1, h, w), entry.strength, device=self.device, dtype=self.dtype)
            if entry.area is not None:
                weight = _feather(weight, (x0, y0, w, h), (W, H))
        return (x0, y0, w, h), weight

    # --- what each call carries -------------------------------------------------------------------
    def _embeds(self, entry: Cond) -> torch.Tensor:
        return repeat_to(entry.embeds.to(device=self.device, dtype=self.dtype), self.batch)

    def _added(self, entries: list[Cond], negatives: list[bool]) -> dict | None:
        """SDXL's added_cond_kwargs: pooled text embeddings and size (or aesthetic) time ids."""
        if not self.sdxl:
            return None
        pooled, ids = [], []
        for entry, negative in zip(entries, negatives):
            if entry.pooled is None:
                raise ValueError("this UNet (SDXL) needs a pooled text embedding in its conditioning: encode the "
                                 "prompt with the checkpoint's own CLIP (both text encoders)")
            pooled.append(repeat_to(entry.pooled.to(device=self.device, dtype=self.dtype), self.batch))
            ids.append(self._time_ids_of(entry, negative).repeat(self.batch, 1))
        return {"text_embeds": torch.cat(pooled), "time_ids": torch.cat(ids)}

    def _time_ids_of(self, entry: Cond, negative: bool) -> torch.Tensor:
        height, width = self.height * self.latent_scale, self.width * self.latent_scale
        original = (entry.height or height, entry.width or width)
        crop = (entry.crop_h, entry.crop_w)
        if _time_id_count(self.unet, entry.pooled.shape[-1]) == 5:  # the refiner: size, crop, aesthetic score
            score = entry.aesthetic_score if entry.aesthetic_score is not None else (2.5 if negative else 6.0)
            values = [*original, *crop, score]
        else:
            values = [*original, *crop, entry.target_height or height, entry.target_width or width]
        return torch.tensor([values], dtype=self.dtype, device=self.device)

    def _residuals(self, controls: tuple[Control, ...], sample, t, embeds, added, step, total):
        """The summed residuals of the active ControlNets (None when none acts at this step)."""
        total_down, total_mid = None, None
        copies = sample.shape[0] // self.batch
        for control in controls:
            if not control.active(step, total):
                continue
            model = control.model
            size = (sample.shape[-2] * hint_scale(model), sample.shape[-1] * hint_scale(model))
            hint = fit_image(repeat_to(control.hint.to(device=self.device, dtype=model.dtype), self.batch), *size)
            hint = torch.cat([hint] * copies) if copies > 1 else hint
            down, mid = controlnet_call(model, sample.to(model.dtype), t, embeds.to(model.dtype), hint,
                                        control.strength, added)
            if total_down is None:
                total_down, total_mid = list(down), mid
            else:
                total_down = [a + b for a, b in zip(total_down, down)]
                total_mid = total_mid + mid
        return None if total_down is None else (total_down, total_mid)

    def _with_extra_channels(self, sample, entries: list[Cond], region) -> torch.Tensor:
        """An inpainting UNet's input: the latents, then the mask and the masked image's latents."""
        if self.extra_channels <= 0:
            return sample
        parts = []
        for entry in entries:
            extra = self._concat_channels(entry) if entry.concat is not None else self._inpaint_channels(entry)
            if region is not None:
                x0, y0, w, h = region
                extra = extra[..., y0:y0 + h, x0:x0 + w]
            parts.append(extra)
        return torch.cat([sample, torch.cat(parts) if len(parts) > 1 else parts[0]], dim=1)

    def _concat_channels(self, entry: Cond) -> torch.Tensor:
        """InstructPix2Pix's image latents, at the latents' size (nearest, as ComfyUI's concat)."""
        latents = entry.concat.to(device=self.device, dtype=self.dtype)
        if latents.shape[1] != self.extra_channels:
            raise ValueError(f"this UNet takes {self.extra_channels} extra input channels; the InstructPix2Pix "
                             f"conditioning gives {latents.shape[1]}")
        if latents.shape[-2:] != (self.height, self.width):
            latents = F.interpolate(latents, size=(self.height, self.width), mode="nearest")
        return repeat_to(latents, self.batch)

    def _inpaint_channels(self, entry: Cond) -> torch.Tensor:
        if self.inpaint_latents is None:
            self.inpaint_latents = self._draw_inpaint_latents(entry)
        return self.inpaint_latents

    def _draw_inpaint_latents(self, entry: Cond) -> torch.Tensor:
        source = entry.inpaint
        if source is None and self._masked_source is not None:
            mask, latents = self._masked_source
            return torch.cat([repeat_to(mask, self.batch), latents], dim=1)
        if source is None:
            raise ValueError(f"this UNet takes {self.extra_channels} extra input channels (an inpainting model): "
                             "give its conditioning an image and mask (InpaintModelConditioning)")
        mean = repeat_to(source.mean.to(device=self.device, dtype=self.dtype), self.batch)
        std = repeat_to(source.std.to(device=self.device, dtype=self.dtype), self.batch)
        gens = self._generators or [torch.Generator("cpu").manual_seed(i) for i in range(self.batch)]
        latents = source.scaling_factor * (mean + std * randn(tuple(mean.shape), gens, self.device, self.dtype))
        # As the inpainting pipeline: the pixel mask resized to the latents, nearest.
        mask = F.interpolate(source.mask.to(device=self.device, dtype=self.dtype), size=(self.height, self.width))
        channels = torch.cat([repeat_to(mask, self.batch), latents], dim=1)
        if channels.shape[1] != self.extra_channels:
            raise ValueError(f"this UNet takes {self.extra_channels} extra input channels; the inpainting "
                             f"conditioning gives {channels.shape[1]}")
        return channels


def _time_id_count(unet, pooled_width: int) -> int:
    """How many SDXL time ids the UNet's added embedding takes besides the pooled text embedding:
    6 (base: original size, crop, target size) or 5 (refiner: original size, crop, aesthetic score)."""
    in_features = unet.add_embedding.linear_1.in_features
    count, rest = divmod(in_features - pooled_width, unet.config.addition_time_embed_dim)
    if rest or count not in (5, 6):
        raise ValueError(f"the UNet's added embedding takes {in_features} values, which does not fit a pooled text "
                         f"embedding of {pooled_width} plus SDXL's 5 or 6 time ids: another model's conditioning?")
    return count


def _same_controls(a: tuple[Control, ...], b: tuple[Control, ...]) -> bool:
    """The same ControlNets with equal hints and settings: one batched call serves both sides."""
    return len(a) == len(b) and all(
        x is y or (x.model is y.model and (x.strength, x.start, x.end) == (y.strength, y.start, y.end)
                   and x.hint.shape == y.hint.shape and torch.equal(x.hint, y.hint)) for x, y in zip(a, b))


def _share_controls(positive, negative) -> tuple[Cond, ...]:
    """ControlNetApply's rule: a negative entry without controls takes those of a positive entry
    that asked for it (control_to_uncond) and covers the same area."""
    donors = [p for p in positive if p.controls and p.control_to_uncond]
    out = []
    for n in negative:
        donor = next((p for p in donors if p.area == n.area), None) if not n.controls else None
        out.append(replace(n, controls=donor.controls) if donor is not None else n)
    return tuple(out)


def _same_area_negatives(positive, negative) -> tuple[Cond, ...]:
    """ComfyUI's rule: for a positive entry limited to an area that no negative entry has, the
    negative also runs on that area, with the conditioning of the smallest negative entry covering it."""
    added = []
    for p in positive:
        if p.area is None:
            continue
        smallest = None
        for n in negative:
            if n.area is None:
                smallest = smallest or n
            elif _inside(p.area, n.area) and (smallest is None or smallest.area is None
                                              or n.area[2] * n.area[3] < smallest.area[2] * smallest.area[3]):
                smallest = n
        if smallest is None or smallest.area == p.area:
            continue
        added.append(replace(p, embeds=smallest.embeds, pooled=smallest.pooled, width=smallest.width,
                             height=smallest.height, crop_w=smallest.crop_w, crop_h=smallest.crop_h,
                             target_width=smallest.target_width, target_height=smallest.target_height,
                             aesthetic_score=smallest.aesthetic_score, inpaint=smallest.inpaint,
                             controls=smallest.controls, control_to_uncond=False))
    return tuple(added)


def _inside(a, b) -> bool:
    """Area a (x, y, w, h) lies within area b."""
    return a[0] >= b[0] and a[1] >= b[1] and a[0] + a[2] <= b[0] + b[2] and a[1] + a[3] <= b[1] + b[3]


def _bounds(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """The bounding box (x, y, w, h) of a mask's non-zero pixels over the batch (at least 8 x 8)."""
    any_image = mask.abs().amax(dim=(0, 1))
    ys, xs = torch.nonzero(any_image, as_tuple=True)
    if ys.numel() == 0:
        return 0, 0, FEATHER, FEATHER
    x0, y0 = int(xs.min()), int(ys.min())
    return x0, y0, max(FEATHER, int(xs.max()) - x0 + 1), max(FEATHER, int(ys.max()) - y0 + 1)


def _feather(weight: torch.Tensor, region, size) -> torch.Tensor:
    """Fade the weight over up to 8 latent pixels at the edges inside the image (ComfyUI's)."""
    (x0, y0, w, h), (W, H) = region, size
    weight = weight.clone()
    for axis, start, length, full in ((-2, y0, h, H), (-1, x0, w, W)):
        steps = min(FEATHER, length // 4)
        for i in range(steps):
            factor = (i + 1) / steps
            if start != 0:
                weight.narrow(axis, i, 1).mul_(factor)
            if start + length < full:
                weight.narrow(axis, length - 1 - i, 1).mul_(factor)
    return weight

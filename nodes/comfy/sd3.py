"""ComfyUI's SD3 nodes (comfy_extras/nodes_sd3.py, nodes_slg.py) on Loom's SD 3.5 family
(nodes.families.sd3): the per-encoder prompt node and skip-layer guidance. TripleCLIPLoader is with
the other loaders (nodes.comfy.loaders), EmptySD3LatentImage with the flow nodes (nodes.comfy.flow).

Skip-layer guidance patches the MODEL (`Model.patches`, read by the SD3 guide):
- SkipLayerGuidanceDiTSimple: the negative pass skips the listed joint blocks inside the percent range.
- SkipLayerGuidanceDiT / SkipLayerGuidanceSD3: after CFG, + scale * (positive - positive without the
  blocks) inside the range. ComfyUI applies this term to denoised latents, Loom to velocities (the
  same result up to float rounding: the term is linear; `rescaling_scale` compares spreads of
  velocities rather than latents).
Single blocks (`single_layers`) exist only in Flux-style DiTs: SD3 has joint (double) blocks alone, so
they are accepted and change nothing on SD3, as in ComfyUI.
"""
from __future__ import annotations

import re
from dataclasses import replace

from graph import Combo, Float, In, Node, Out, String

from ..families import family
from ..families.sd3.guide import SkipLayers, SkipLayersAfterCfg
from .ksampling.ksampler import model_sampling


def _sd3(node: str, what: str, value):
    if getattr(value, "family", None) != "sd3":
        label = family(value.family).label if getattr(value, "family", None) else "another model"
        raise ValueError(f"{node}: `{what}` must be an SD3 {what.upper()}, got a {label} one")
    return value


class CLIPTextEncodeSD3(Node):
    """ComfyUI's SD3 prompt node: one text per encoder; with empty_padding "none" an empty text leaves
    that encoder out (zeros in its place, as ComfyUI), with "empty_prompt" it encodes the empty prompt."""
    category = "advanced/conditioning"  # ComfyUI's
    clip = In("CLIP")
    clip_l = String("", multiline=True)
    clip_g = String("", multiline=True)
    t5xxl = String("", multiline=True)
    empty_padding = Combo(["none", "empty_prompt"], default="none")
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        from ..families.sd3.runtime import encode

        clip = _sd3("CLIPTextEncodeSD3", "clip", self.clip)
        keep = self.empty_padding != "none"
        texts = {k: (v if v or keep else None) for k, v in
                 (("clip_l", self.clip_l), ("clip_g", self.clip_g), ("t5xxl", self.t5xxl))}
        return encode(clip, "", **texts)


def _blocks(text: str) -> tuple[int, ...]:
    return tuple(int(i) for i in re.findall(r"\d+", text or ""))


def _range(model, start_percent: float, end_percent: float) -> tuple[float, float]:
    ms = model_sampling(model)
    return float(ms.percent_to_sigma(start_percent)), float(ms.percent_to_sigma(end_percent))


def _patched(model, patch):
    return replace(model, patches=tuple(model.patches) + (patch,))


class SkipLayerGuidanceDiTSimple(Node):
    """Skip-layer guidance on the negative pass only (ComfyUI's simple version)."""
    category = "advanced/guidance"  # ComfyUI's
    model = In("MODEL")
    double_layers = String("7, 8, 9")
    single_layers = String("7, 8, 9")
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    outputs = (Out("MODEL", "MODEL"),)

    def run(self, ctx):
        blocks = _blocks(self.double_layers)
        if not blocks and not _blocks(self.single_layers):
            return self.model
        model = _sd3("SkipLayerGuidanceDiTSimple", "model", self.model)
        return _patched(model, SkipLayers(blocks, *_range(model, self.start_percent, self.end_percent)))


def _after_cfg(node: str, model, blocks, scale, start_percent, end_percent, rescaling_scale=0.0):
    if not blocks:
        return model
    model = _sd3(node, "model", model)
    return _patched(model, SkipLayersAfterCfg(blocks, scale, *_range(model, start_percent, end_percent),
                                              rescaling_scale))


class SkipLayerGuidanceDiT(Node):
    """Skip-layer guidance after CFG (ComfyUI's generic DiT version)."""
    category = "advanced/guidance"  # ComfyUI's
    model = In("MODEL")
    double_layers = String("7, 8, 9")
    single_layers = String("7, 8, 9")
    scale = Float(3.0, min=0.0, max=10.0, step=0.1)
    start_percent = Float(0.01, min=0.0, max=1.0, step=0.001)
    end_percent = Float(0.15, min=0.0, max=1.0, step=0.001)
    rescaling_scale = Float(0.0, min=0.0, max=10.0, step=0.01)
    outputs = (Out("MODEL", "MODEL"),)

    def run(self, ctx):
        return _after_cfg("SkipLayerGuidanceDiT", self.model, _blocks(self.double_layers), self.scale,
                          self.start_percent, self.end_percent, self.rescaling_scale)


class SkipLayerGuidanceSD3(Node):
    """Skip-layer guidance after CFG on SD3's joint blocks (ComfyUI's SD3 version of SkipLayerGuidanceDiT)."""
    category = "advanced/guidance"  # ComfyUI's
    model = In("MODEL")
    layers = String("7, 8, 9")
    scale = Float(3.0, min=0.0, max=10.0, step=0.1)
    start_percent = Float(0.01, min=0.0, max=1.0, step=0.001)
    end_percent = Float(0.15, min=0.0, max=1.0, step=0.001)
    outputs = (Out("MODEL", "MODEL"),)

    def run(self, ctx):
        return _after_cfg("SkipLayerGuidanceSD3", self.model, _blocks(self.layers), self.scale, self.start_percent,
                          self.end_percent)

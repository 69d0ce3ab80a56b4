"""ControlNet: loading (CONTROL_NET, a diffusers ControlNetModel) and applying it to a conditioning.

ControlNets live in the models folder's `controlnet/` (ComfyUI's layout), as diffusers folders
(config.json + weights) or single files (see nodes.loading.controlnet_files). Applying one adds a
`Control` to every entry of a CONDITIONING; the sampler sums the residuals of an entry's controls
into its UNet call, as StableDiffusionControlNetPipeline (and its multi-ControlNet form) does.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from graph import Combo, Float, In, Node, Out

from .common import device_of, dtype_of
from .conditioning import Control, as_conditioning
from .loading.model_files import kind_choices, kind_fingerprint, kind_path

def load_controlnet(path: Path, device, dtype):
    from diffusers import ControlNetModel

    if path.is_dir():
        model = ControlNetModel.from_pretrained(path, dtype=dtype)
    else:
        from .loading.controlnet_files import load_single_file

        model = load_single_file(path, dtype)
    return model.to(device).eval()


class LoadControlNet(Node):
    """Loads a ControlNet from the models folder's controlnet/ (diffusers folder or single file)."""

    category = "loaders"
    name = Combo(kind_choices("controlnet"), model=True, model_kind="controlnet",
                 tooltip="a ControlNet in models/controlnet")
    outputs = (Out("CONTROL_NET", "control_net"),)

    @classmethod
    def fingerprint(cls, env, name=None, **_):
        return kind_fingerprint(env, "controlnet", name)

    def run(self, ctx):
        path = kind_path(ctx.env, "controlnet", self.name, "LoadControlNet")
        device = device_of(ctx.env)
        return load_controlnet(path, device, dtype_of(ctx.env, device))


class ApplyControlNet(Node):
    """Adds a ControlNet with its hint image to every entry of a conditioning (after any it already
    has; their residuals add up). start/end: the fraction of the steps it acts on."""

    category = "conditioning"
    conditioning = In("CONDITIONING")
    control_net = In("CONTROL_NET")
    image = In("IMAGE", tooltip="the hint (edges, depth, pose...), resized to the image being sampled")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    outputs = (Out("CONDITIONING", "conditioning"),)

    @classmethod
    def check(cls, env, start_percent=None, end_percent=None, **_):
        if isinstance(start_percent, float) and isinstance(end_percent, float) and start_percent > end_percent:
            return {"end_percent": f"end_percent {end_percent} is before start_percent {start_percent}"}
        return {}

    def run(self, ctx):
        if self.strength == 0:
            return as_conditioning(self.conditioning)
        # IMAGE (B, H, W, C) -> (B, C, H, W), still 0..1; contiguous: convolutions round differently
        # on a channels-last layout, and the pipelines hand the ControlNet a contiguous hint
        hint = self.image.movedim(-1, 1).contiguous()
        expected = self.control_net.config.conditioning_channels
        if hint.shape[1] != expected:
            raise ValueError(f"ApplyControlNet: the hint image has {hint.shape[1]} channels; this ControlNet "
                             f"takes {expected}")
        control = Control(self.control_net, hint, self.strength, self.start_percent, self.end_percent)
        return tuple(replace(c, controls=c.controls + (control,)) for c in as_conditioning(self.conditioning))

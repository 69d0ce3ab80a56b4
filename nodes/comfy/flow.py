"""ComfyUI's nodes for flow-matching models (SD3, AuraFlow, Lumina 2, Z-Image, Flux.1): the 16-channel empty
latent and the model-sampling patches that set a flow model's shift (nodes.comfy.ksampling.denoiser.FlowSchedule).
Their inputs are ComfyUI's (comfy_extras/nodes_sd3.py, nodes_model_advanced.py)."""
from __future__ import annotations

from dataclasses import replace

from graph import Combo, Float, In, Int, Node, Out

from ..common import MAX_RESOLUTION, device_of
from .ksampling.denoiser import FlowSchedule, FluxSchedule
from .ksampling.ksampler import empty_latent

FLOW_KINDS = ["flow", "img_to_img_velocity"]


class EmptySD3LatentImage(Node):
    """ComfyUI's empty 16-channel latent (SD3, Flux, Z-Image). The sampler makes it at the model's own
    channels and scale, as ComfyUI does for an empty latent."""
    category = "model/latent/stable diffusion"  # ComfyUI's
    width = Int(1024, min=16, max=MAX_RESOLUTION, step=16)
    height = Int(1024, min=16, max=MAX_RESOLUTION, step=16)
    batch_size = Int(1, min=1, max=4096)
    outputs = (Out("LATENT", "LATENT"),)

    def run(self, ctx):
        return empty_latent(self.batch_size, 16, self.width, self.height, device_of(ctx.env))


def with_flow_sampling(model, shift: float, multiplier: float, kind: str = "flow"):
    return replace(model, sampling=FlowSchedule(shift, multiplier, kind))


class ModelSamplingSD3(Node):
    """Samples the model as a flow-matching model with this shift (timesteps sigma * 1000, SD3's)."""
    category = "model/patch/stable diffusion"  # ComfyUI's
    model = In("MODEL")
    shift = Float(3.0, min=0.0, max=100.0, step=0.01)
    outputs = (Out("MODEL", "MODEL"),)

    def run(self, ctx):
        return with_flow_sampling(self.model, self.shift, 1000)


class ModelSamplingAuraFlow(Node):
    """Samples the model as a flow-matching model with this shift (timesteps = sigma: AuraFlow's,
    Lumina 2's, Z-Image's). `sampling` img_to_img_velocity: the model's output is x - denoised."""
    category = "model/patch"  # ComfyUI's
    model = In("MODEL")
    shift = Float(1.73, min=0.0, max=100.0, step=0.01)
    sampling = Combo(FLOW_KINDS, default="flow", optional=True)
    outputs = (Out("MODEL", "MODEL"),)

    def run(self, ctx):
        return with_flow_sampling(self.model, self.shift, 1.0, self.sampling or "flow")


def flux_shift(max_shift: float, base_shift: float, width: int, height: int) -> float:
    """ComfyUI's ModelSamplingFlux shift: linear in the image's token count (2x2 patches of 8x latents),
    base_shift at 256 tokens and max_shift at 4096 (diffusers' calculate_shift, the same line)."""
    slope = (max_shift - base_shift) / (4096 - 256)
    return (width * height / (8 * 8 * 2 * 2)) * slope + (base_shift - slope * 256)


class ModelSamplingFlux(Node):
    """Samples the model with Flux's time shift (FluxSchedule), the shift set by the image size."""
    category = "model/patch/flux"  # ComfyUI's
    model = In("MODEL")
    max_shift = Float(1.15, min=0.0, max=100.0, step=0.01)
    base_shift = Float(0.5, min=0.0, max=100.0, step=0.01)
    width = Int(1024, min=16, max=MAX_RESOLUTION, step=8)
    height = Int(1024, min=16, max=MAX_RESOLUTION, step=8)
    outputs = (Out("MODEL", "MODEL"),)

    def run(self, ctx):
        return replace(self.model, sampling=FluxSchedule(flux_shift(self.max_shift, self.base_shift, self.width,
                                                                    self.height)))

"""ComfyUI's nodes for flow-matching models (SD3, AuraFlow, Lumina 2, Z-Image): the 16-channel empty
latent and the model-sampling patches that set a flow model's shift (nodes.comfy.ksampling.denoiser.FlowSchedule).
Their inputs are ComfyUI's (comfy_extras/nodes_sd3.py, nodes_model_advanced.py)."""
from __future__ import annotations

from dataclasses import replace

from graph import Combo, Float, In, Int, Node, Out

from ..common import MAX_RESOLUTION, device_of
from .ksampling.denoiser import FlowSchedule
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

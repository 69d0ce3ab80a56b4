"""ComfyUI's Flux.1 text encoder node (comfy_extras/nodes_flux.py): CLIPTextEncodeFlux, a prompt for
each of Flux's two encoders and the guidance dev embeds (nodes.families.flux). FluxGuidance and
FluxDisableGuidance are in nodes.comfy.edit."""
from __future__ import annotations

from graph import Float, In, Node, Out, String

from ..conditioning import Cond


class CLIPTextEncodeFlux(Node):
    """Encodes `clip_l` with CLIP-L (its pooled output) and `t5xxl` with T5-XXL (the conditioning
    tokens), with this guidance set (FluxGuidance's value)."""
    category = "advanced/conditioning/flux"  # ComfyUI's
    clip = In("CLIP")
    clip_l = String("", multiline=True)
    t5xxl = String("", multiline=True)
    guidance = Float(3.5, min=0.0, max=100.0, step=0.1)
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        from ..families import family
        from ..families.flux.files import encode

        if self.clip.family != "flux":
            raise ValueError(f"CLIPTextEncodeFlux needs a Flux CLIP (DualCLIPLoader type 'flux'), got a "
                             f"{family(self.clip.family).label} one")
        embeds, pooled = encode(self.clip, self.clip_l, self.t5xxl)
        return (Cond(embeds=embeds, pooled=pooled, extra={"guidance": self.guidance}),)

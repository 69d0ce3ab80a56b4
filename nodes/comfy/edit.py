"""ComfyUI's conditioning nodes of flow transformers and edit models (comfy_extras/nodes_flux.py,
nodes_edit_model.py), with their inputs and outputs: FluxGuidance, FluxDisableGuidance,
ReferenceLatent, FluxKontextMultiReferenceLatentMethod and FluxKontextImageScale.

They set values in each conditioning entry's `extra` (nodes.conditioning.Cond), under the names of
ComfyUI's conditioning dict; the family that samples reads them (nodes.families.spec.Runtime.guide):
"guidance" (a guidance-distilled model's embedded guidance, None: disabled), "reference_latents"
(a list of LATENT samples, appended to by each ReferenceLatent), "reference_latents_method"."""
from __future__ import annotations

from graph import Combo, Float, In, Node, Out

from ..conditioning import as_conditioning, with_extra
from ..scaling import resize

# Flux Kontext's training resolutions (width, height): ComfyUI's table.
KONTEXT_RESOLUTIONS = [(672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184),
                       (944, 1104), (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752),
                       (1456, 720), (1504, 688), (1568, 672)]
REFERENCE_METHODS = ["offset", "index", "uxo/uno", "index_timestep_zero"]


class FluxGuidance(Node):
    """Sets the guidance a guidance-distilled model (Flux.1 dev, Flux.2) embeds, in place of CFG."""
    category = "advanced/conditioning/flux"  # ComfyUI's
    conditioning = In("CONDITIONING")
    guidance = Float(3.5, min=0.0, max=100.0, step=0.1)
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        return with_extra(self.conditioning, guidance=self.guidance)


class FluxDisableGuidance(Node):
    """Turns the embedded guidance off (for models that take none)."""
    category = "advanced/conditioning/flux"  # ComfyUI's
    conditioning = In("CONDITIONING")
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        return with_extra(self.conditioning, guidance=None)


class ReferenceLatent(Node):
    """Adds a reference image's latents for an edit model (Flux Kontext, Qwen-Image Edit, Flux.2);
    chained, several references add up. No latent: the conditioning unchanged."""
    category = "advanced/conditioning/edit_models"  # ComfyUI's
    conditioning = In("CONDITIONING")
    latent = In("LATENT", optional=True)
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        if self.latent is None:
            return as_conditioning(self.conditioning)
        samples = self.latent.samples
        return tuple(c for entry in as_conditioning(self.conditioning)
                     for c in with_extra((entry,), reference_latents=[*entry.extra.get("reference_latents", ()),
                                                                      samples]))


class FluxKontextMultiReferenceLatentMethod(Node):
    """How several reference latents are placed for the model: offset, index, or uxo/uno (USO)."""
    category = "advanced/conditioning/flux"  # ComfyUI's
    conditioning = In("CONDITIONING")
    reference_latents_method = Combo(REFERENCE_METHODS)
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        method = "uxo" if "uxo" in self.reference_latents_method else self.reference_latents_method
        return with_extra(self.conditioning, reference_latents_method=method)


def kontext_size(width: int, height: int) -> tuple[int, int]:
    """The Kontext resolution nearest in aspect ratio (ties: the smaller width, as ComfyUI's min)."""
    aspect = width / height
    _, w, h = min((abs(aspect - w / h), w, h) for w, h in KONTEXT_RESOLUTIONS)
    return w, h


class FluxKontextImageScale(Node):
    """Resizes the image (Lanczos, the middle cut to the aspect ratio) to the Kontext resolution nearest
    its aspect ratio."""
    category = "advanced/conditioning/flux"  # ComfyUI's
    image = In("IMAGE")
    outputs = (Out("IMAGE", "IMAGE"),)

    def run(self, ctx):
        _, h, w, _ = self.image.shape
        width, height = kontext_size(w, h)
        return resize(self.image.movedim(-1, 1), width, height, "lanczos", "center").movedim(1, -1)

"""ComfyUI's bundle types, as Loom values: MODEL (a denoiser with its scheduler settings) and CLIP
(tokenizers with their text encoders). Loom's stage nodes pass the parts (UNET, TOKENIZER,
TEXT_ENCODER, SCHEDULER); the ComfyUI-named nodes pass these bundles, made from the same parts.

`family` names the model family the parts belong to (nodes read it to choose how to encode text and
call the UNet): "sd1", "sd2", "sdxl" (base: two text encoders, pooled embeddings, size conditioning)
or "sdxl_refiner" (the refiner: the second encoder only, aesthetic-score conditioning).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schedulers import SchedulerSpec


@dataclass(frozen=True, eq=False)
class Model:
    """ComfyUI's MODEL: the UNet and the scheduler settings of its checkpoint.
    `loras`: the LoRAs applied to the UNet, as (name, strength) pairs, outermost last.
    `sampling`: ComfyUI's model sampling a ModelSampling* node set (a nodes.comfy.ksampling FlowSchedule),
    None: the one its scheduler config implies.
    `patches`: guidance patches a family's guide reads (nodes.families.sd3.guide.SkipLayers: ComfyUI's
    SkipLayerGuidanceDiTSimple), in the order the nodes added them.
    `denoise_mask_function`: ComfyUI's per-step noise-mask patch (DifferentialDiffusion),
    f(sigma, mask, sigmas, model_sampling) -> the mask for this step; None: the mask as it is."""
    unet: Any
    scheduler: SchedulerSpec
    family: str = "sd1"
    loras: tuple = ()
    sampling: Any = None
    patches: tuple = ()
    denoise_mask_function: Any = None


@dataclass(frozen=True, eq=False)
class Clip:
    """ComfyUI's CLIP: the tokenizer and text encoder, and for SDXL the second pair; a family with more
    encoders (SD3: three, HiDream: four) keeps the others in `more`, by their diffusers pipeline slot
    ("text_encoder_3": (tokenizer, model)). `layer` is CLIPSetLastLayer's stop_at_clip_layer (-1: the
    last layer). `loras` as for Model. `tokenizer_options`: ComfyUI's tokenizer options by their names
    (T5TokenizerOptions: "t5xxl_min_padding", "t5xxl_min_length"), read by the family's encode."""
    tokenizer: Any
    text_encoder: Any
    tokenizer_2: Any = None
    text_encoder_2: Any = None
    family: str = "sd1"
    layer: int = -1
    loras: tuple = ()
    more: dict = field(default_factory=dict)
    tokenizer_options: dict = field(default_factory=dict)

    def pair(self, slot: str) -> tuple[Any, Any]:
        """(tokenizer, text encoder) of a pipeline slot: "text_encoder", "text_encoder_2", ... ((None, None): empty)."""
        if slot == "text_encoder":
            return self.tokenizer, self.text_encoder
        if slot == "text_encoder_2":
            return self.tokenizer_2, self.text_encoder_2
        return self.more.get(slot, (None, None))

    @classmethod
    def of_slots(cls, slots: dict, family: str) -> "Clip":
        """A CLIP from {slot: (tokenizer, text encoder)}."""
        first, second = slots.get("text_encoder", (None, None)), slots.get("text_encoder_2", (None, None))
        more = {k: v for k, v in slots.items() if k not in ("text_encoder", "text_encoder_2")}
        return cls(*first, *second, family=family, more=more)

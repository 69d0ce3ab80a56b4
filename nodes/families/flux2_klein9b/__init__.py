"""Flux.2 Klein 9B's text encoder set: Qwen3-8B (qwen_3_8b_fp8mixed.safetensors, kind "qwen3_8b"),
for CLIPLoader type "flux2". Its transformer is Klein's (nodes.families.flux2_klein recognises the
file, whatever its size), and so is everything else: this declaration only names the encoder kind."""
from __future__ import annotations

from dataclasses import replace

from ..flux2_klein import FAMILY as KLEIN
from ..flux2 import never

FAMILY = replace(KLEIN, name="flux2_klein9b", label="Flux.2 Klein 9B", published="black-forest-labs/FLUX.2-klein-9B",
                 text_encoders=(replace(KLEIN.text_encoders[0], kind="qwen3_8b",
                                        prefix="text_encoders.qwen3_8b.transformer."),),
                 is_folder=never, is_denoiser=never, is_denoiser_config=never, tiny=replace(KLEIN.tiny, folder="tiny-flux2-klein9b"))

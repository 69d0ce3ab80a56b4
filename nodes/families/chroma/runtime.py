"""Chroma's torch side (nodes.families.spec.Runtime): its transformer file, prompt encoding, guided
prediction and tiny models."""
from __future__ import annotations

from .files import transformer_from_file as denoiser_from_file  # noqa: F401  (the Runtime's name)
from .tiny import write_comfy_files as write_tiny_files  # noqa: F401
from .tiny import write_folder as write_tiny  # noqa: F401


def encode(clip, text: str) -> tuple:
    from ...conditioning import Cond
    from .files import encode as embeds

    options = clip.tokenizer_options
    return (Cond(embeds=embeds(clip.tokenizer, clip.text_encoder, text, options.get("t5xxl_min_padding", 0),
                               options.get("t5xxl_min_length", 0))),)


def guide(model, positive, negative, cfg: float, keep_uncond: bool):
    from .guide import ChromaGuide

    return ChromaGuide(model.unet, positive, negative, cfg, keep_uncond=keep_uncond)

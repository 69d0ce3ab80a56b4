"""Flux.2's torch side (nodes.families.spec.Runtime), Dev's; nodes.families.flux2_klein.runtime is
Klein's (its own tiny models, the rest shared: the family of the CLIP decides the prompt encoding)."""
from __future__ import annotations

from .files import transformer_from_file as denoiser_from_file  # noqa: F401  (the Runtime's name)


def encode(clip, text: str) -> tuple:
    from ...conditioning import Cond
    from .files import encode_dev, encode_klein

    embed = encode_klein if clip.family.startswith("flux2_klein") else encode_dev
    return (Cond(embeds=embed(clip.tokenizer, clip.text_encoder, text)),)


def guide(model, positive, negative, cfg: float, keep_uncond: bool):
    from .guide import Flux2Guide

    return Flux2Guide(model.unet, positive, negative, cfg, keep_uncond=keep_uncond)


def write_tiny(folder, seed: int = 0):
    from .tiny import write_folder

    return write_folder(folder, seed, "dev")


def write_tiny_files(models_dir, seed: int = 0) -> dict:
    from .tiny import write_comfy_files

    return write_comfy_files(models_dir, seed, variant="dev")

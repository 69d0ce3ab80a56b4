"""Flux.1's torch side (nodes.families.spec.Runtime): its transformer file, prompt encoding, guided
prediction, default model sampling and tiny models."""
from __future__ import annotations

from .files import transformer_from_file as denoiser_from_file  # noqa: F401  (the Runtime's name)
from .tiny import write_folder as write_tiny  # noqa: F401


def encode(clip, text: str) -> tuple:
    from ...conditioning import Cond
    from .files import encode as embeds

    t5_embeds, pooled = embeds(clip, text, text)
    return (Cond(embeds=t5_embeds, pooled=pooled),)


def guide(model, positive, negative, cfg: float, keep_uncond: bool):
    from .guide import FluxGuide

    return FluxGuide(model.unet, positive, negative, cfg, keep_uncond=keep_uncond)


def model_sampling(unet):
    """ComfyUI's default for the file: dev (guidance embedding) ModelSamplingFlux with shift 1.15,
    schnell discrete flow with shift 1 and multiplier 1."""
    from ...comfy.ksampling.denoiser import FlowSchedule, FluxSchedule

    from . import FAMILY

    if unet.config.guidance_embeds:
        return FluxSchedule(FAMILY.sampling.shift)
    return FlowSchedule(1.0, 1.0)


def write_tiny_files(models_dir, seed: int = 0) -> dict:
    """The family's tiny files and its editing models' (Kontext, Fill, Canny/Depth: tiny_edit)."""
    from .tiny import write_comfy_files
    from .tiny_edit import write_edit_files

    return {**write_comfy_files(models_dir, seed), **write_edit_files(models_dir, seed)}


# Loom's stage nodes (nodes.families.flux.stages)
from .stages import stage_encode, stage_guide, stage_timesteps, stage_tokenize  # noqa: E402,F401

"""Z-Image's torch side (nodes.families.spec.Runtime): its transformer file, prompt encoding, guided
prediction (KSampler's and the stage nodes'), schedule and tiny models."""
from __future__ import annotations

from .files import tokenize as stage_tokenize  # noqa: F401  (the Runtime's names)
from .files import transformer_from_file as denoiser_from_file  # noqa: F401
from .tiny import write_comfy_files as write_tiny_files  # noqa: F401
from .tiny import write_folder as write_tiny  # noqa: F401


def encode(clip, text: str) -> tuple:
    from ...conditioning import Cond
    from .files import encode as embeds

    return (Cond(embeds=embeds(clip.tokenizer, clip.text_encoder, text)),)


def stage_encode(pairs: list, clip_skip: int) -> tuple:
    from ...conditioning import Cond
    from .files import encode_ids

    if len(pairs) != 1:
        raise ValueError("Z-Image has one text encoder (Qwen3): encode its tokens with EncodeText")
    (text_encoder, tokens), = pairs
    layers = text_encoder.config.num_hidden_layers
    if clip_skip + 2 > layers:
        raise ValueError(f"EncodeText: clip_skip {clip_skip} must be smaller than the encoder's {layers - 1} usable layers")
    return (Cond(embeds=encode_ids(text_encoder, tokens, clip_skip)),)


def guide(model, positive, negative, cfg: float, keep_uncond: bool):
    from .guide import ZImageGuide

    return ZImageGuide(model.unet, positive, negative, cfg, keep_uncond=keep_uncond)


def stage_timesteps(scheduler, steps: int, shape: tuple, device) -> None:
    """ZImagePipeline's schedule: sigmas linspace(1, 1/steps), shifted by the scheduler (its mu: the
    resolution-dependent shift, used only where the config turns dynamic shifting on)."""
    from diffusers.pipelines.z_image.pipeline_z_image import (calculate_shift, get_default_z_image_sigmas,
                                                             retrieve_timesteps)

    config = scheduler.config
    mu = calculate_shift((shape[-2] // 2) * (shape[-1] // 2), config.get("base_image_seq_len", 256),
                         config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                         config.get("max_shift", 1.15))
    retrieve_timesteps(scheduler, steps, device, sigmas=get_default_z_image_sigmas(steps), mu=mu)


def stage_guide(unet, positive, negative, guidance_scale: float):
    from .guide import ZImagePipelineGuide

    return ZImagePipelineGuide(unet, positive, negative, guidance_scale)

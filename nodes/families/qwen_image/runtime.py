"""Qwen-Image's torch side (nodes.families.spec.Runtime): its transformer and VAE files, prompt
encoding (with images for editing), guided prediction and tiny models."""
from __future__ import annotations

from .files import transformer_from_file as denoiser_from_file  # noqa: F401  (the Runtime's names)
from .files import is_vae, vae_from_file  # noqa: F401
from .tiny import write_comfy_files as write_tiny_files  # noqa: F401
from .tiny import write_folder as write_tiny  # noqa: F401


def wrap_vae(vae):
    """A diffusers folder's AutoencoderKLQwenImage as Loom's VAE nodes use it."""
    from .vae import LatentImageVAE

    return vae if isinstance(vae, LatentImageVAE) else LatentImageVAE(vae)


def encode(clip, text: str, images=(), template: str | None = None) -> tuple:
    from ...conditioning import Cond
    from .files import encode as features

    return (Cond(embeds=features(clip.tokenizer, clip.text_encoder, text, images, template)),)


def guide(model, positive, negative, cfg: float, keep_uncond: bool):
    from .guide import QwenImageGuide

    return QwenImageGuide(model.unet, positive, negative, cfg, keep_uncond=keep_uncond,
                          post_cfg=[p for p in model.patches if getattr(p, "post_cfg", False)])

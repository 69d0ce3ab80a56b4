"""Flux.2's torch side (nodes.families.spec.Runtime), Dev's; nodes.families.flux2_klein.runtime is
Klein's (its own tiny models, the rest shared: the family of the CLIP decides the prompt encoding)."""
from __future__ import annotations

from .files import transformer_from_file as denoiser_from_file  # noqa: F401  (the Runtime's name)

VAE_PREFIX = "first_stage_model."


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


def is_vae(sd: dict) -> bool:
    """Flux.2's VAE file (flux2-vae.safetensors: LDM layout with batch-norm statistics), alone or in a checkpoint."""
    from .vae import is_flux2_vae

    return is_flux2_vae(sd) or is_flux2_vae(sd, VAE_PREFIX)


def vae_from_file(sd: dict):
    from .vae import is_flux2_vae
    from .vae import vae_from_file as read

    return read(sd, "" if is_flux2_vae(sd) else VAE_PREFIX)


def wrap_vae(vae):
    """A diffusers folder's AutoencoderKLFlux2 with Loom's VAE face (its latents are the transformer's:
    patched and normalised)."""
    from .vae import loom_vae

    return loom_vae(vae) if type(vae).__name__ == "AutoencoderKLFlux2" else vae

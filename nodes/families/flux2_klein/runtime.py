"""Flux.2 Klein's torch side: Flux.2's (nodes.families.flux2.runtime) with Klein's tiny models."""
from __future__ import annotations

from ..flux2.runtime import denoiser_from_file, encode, guide, is_vae, vae_from_file, wrap_vae  # noqa: F401


def write_tiny(folder, seed: int = 0):
    from ..flux2.tiny import write_folder

    return write_folder(folder, seed, "klein")


def write_tiny_files(models_dir, seed: int = 0) -> dict:
    from ..flux2.tiny import write_comfy_files

    return write_comfy_files(models_dir, seed, variant="klein")

"""Tiny models of the SD families for the sampling tests, in memory: the very models the tiny writers
save (nodes.loading.tiny.build_pipeline: real diffusers/transformers classes, the family's shape, seeded
random weights), put into Loom's MODEL/CLIP bundles by the loaders' own code (nodes.loading.loaders.bundles).
The loaders themselves are tested on the written files (test_loaders, test_loaded_parity).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from graph import Env
from nodes.loading.checkpoints import Parts
from nodes.families import SD1, SDXL, SDXL_REFINER, scheduler_for
from nodes.loading.loaders import LATENT_SCALE_ATTR, bundles, latent_scale
from nodes.loading.tiny import build_pipeline


def context(tmp: Path):
    """What a node's run() reads from the executor: env (CPU, float32) and progress."""
    env = Env.from_data_dir(tmp, models_dir=tmp / "models", device="cpu", dtype="float32")
    return SimpleNamespace(env=env, progress=lambda *args, **kwargs: None, show=lambda **ui: None)


def sd(family: str = SD1, seed: int = 0, **unet) -> dict:
    """The family's tiny model as a loader hands it on: MODEL and CLIP bundles, the VAE, the diffusers
    scheduler of the checkpoint and the tokenizer (the first, or the refiner's only one). `unet`
    overrides the UNet config (in_channels=9: an inpainting UNet). "sd2": OpenCLIP-style GELU
    encoder, linear projections, v-prediction."""
    pipe = build_pipeline(seed, unet=unet or None, family=family)
    parts = Parts(family, pipe.unet.eval(), pipe.vae.eval(), scheduler_for(family), getattr(pipe, "tokenizer", None),
                  pipe.text_encoder, getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None))
    setattr(parts.unet, LATENT_SCALE_ATTR, latent_scale(parts.vae.config.block_out_channels, family))
    model, clip = bundles(parts)
    return dict(model=model, clip=clip, vae=parts.vae, scheduler=pipe.scheduler,
                tokenizer=parts.tokenizer or parts.tokenizer_2)


def sdxl(refiner: bool = False, seed: int = 0) -> dict:
    """An SDXL base (two text encoders) or refiner (the second only, aesthetic-score time ids)."""
    return sd(SDXL_REFINER if refiner else SDXL, seed)


def picture(size: int = 64) -> np.ndarray:
    """An RGB uint8 picture with structure (gradients and a checkerboard)."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([x * 255 // size, y * 255 // size, ((x // 8 + y // 8) % 2) * 200 + 30], -1).astype(np.uint8)


def as_image(array: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> IMAGE (1, H, W, 3) in 0..1, as LoadImage makes it."""
    return torch.from_numpy(array.astype(np.float32) / 255.0)[None]

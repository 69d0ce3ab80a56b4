"""The text-to-image model: a small Stable Diffusion 1.x in diffusers' and transformers' own classes.

AutoencoderKL (64x64x3 <-> 16x16x4, 4x downsampling), CLIPTextModel + CLIPTokenizer (a byte-level BPE
vocabulary learned locally, in which every caption word is one token), UNet2DConditionModel with
cross-attention, and SD 1.x's own noise schedule and PNDM scheduler. Saved as a diffusers folder that
`StableDiffusionPipeline.from_pretrained(folder)` loads unchanged; the configs keep to what a
single-file (LDM layout) checkpoint can express, so `nodes.textcond.ldm` can write one that loads back.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch

from nodes.loading.clip_bpe import SHAPES_MERGES as MERGES
from nodes.loading.clip_bpe import shapes_merges as merges
from nodes.common import asset_dir
from nodes.families import SD1_SCHEDULER as SCHEDULER

from .data import SIZE

NAME = "shapes64"  # the shipped model's folder name in a models folder
ASSETS = asset_dir("textcond")
VAE = dict(in_channels=3, out_channels=3, block_out_channels=[32, 64, 64], layers_per_block=1,
           down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
           latent_channels=4, sample_size=SIZE, scaling_factor=0.18215)
CLIP = dict(hidden_size=128, intermediate_size=256, num_attention_heads=2, num_hidden_layers=2,
            max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5)
# Cross-attention at 8x8 and 4x4 (and in the middle block), not at 16x16 where it would cost most;
# 8 heads as in SD 1.x (single-file loaders assume it).
UNET = dict(sample_size=SIZE // 4, in_channels=4, out_channels=4, block_out_channels=(32, 64, 128),
            layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=CLIP["hidden_size"], attention_head_dim=8)


def tokenizer():
    from nodes.loading.clip_bpe import make_tokenizer

    return make_tokenizer(merges(), CLIP["max_position_embeddings"])


def new_vae(**overrides):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**{**VAE, **overrides})


def new_text_encoder(tok, **overrides):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**{**CLIP, **overrides}, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return CLIPTextModel(config)


def new_unet(**overrides):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**{**UNET, **overrides})


def new_scheduler():
    """The training noise schedule (SD 1.x's scaled-linear betas) as the pipeline's PNDM scheduler."""
    from diffusers import PNDMScheduler

    return PNDMScheduler.from_config(SCHEDULER)


def copy_model(model):
    """A detached copy (same class, config and weights)."""
    return copy.deepcopy(model).requires_grad_(False)


def save_pipeline(folder: str | Path, vae, text_encoder, unet, dtype: torch.dtype | None = None) -> Path:
    """Write a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/);
    `dtype` (float16) shrinks the shipped weights, loading upcasts to the caller's dtype."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    models = [copy_model(m).eval() for m in (vae, text_encoder, unet)]
    if dtype is not None:
        for m in models:
            for tensor in (*m.parameters(), *m.buffers()):  # ModelMixin.to(dtype) would warn
                if tensor.is_floating_point():
                    tensor.data = tensor.data.to(dtype)
    vae, text_encoder, unet = models
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer(), unet=unet,
                                   scheduler=new_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    for config in folder.glob("*/config.json"):  # where the weights were read from: meaningless elsewhere
        data = json.loads(config.read_text())
        if data.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return folder


def shipped_folder() -> Path:
    """The trained model shipped with Loom (float16 diffusers folder)."""
    return ASSETS / NAME


def install_shipped(models_dir: str | Path) -> Path | None:
    """Copy the shipped model into `models_dir` (as NAME) unless a folder of that name is there;
    returns its path if copied."""
    import shutil

    target = Path(models_dir) / NAME
    if target.exists():
        return None
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    shutil.copytree(shipped_folder(), target)
    return target


def weights_digest(folder: str | Path) -> str:
    """sha256 over the folder's weight files (names and bytes), in name order."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*.safetensors")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()

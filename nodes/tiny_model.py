"""Tiny Stable Diffusion models written locally, one per family, for demos and tests (no download).

Real diffusers/transformers classes (UNet2DConditionModel, AutoencoderKL, CLIPTextModel,
CLIPTextModelWithProjection, CLIPTokenizer, the family's scheduler) with small configs of the
family's shape and random weights from a fixed seed, saved as diffusers folders that the family's
pipeline loads (`StableDiffusionPipeline` for sd1 and sd2, `StableDiffusionXLPipeline` for sdxl,
`StableDiffusionXLImg2ImgPipeline` for sdxl_refiner). Their images are noise-like (nothing is
trained), but every stage runs exactly as with a real model.

    python -m nodes.tiny_model [MODELS_DIR] [FAMILY]   writes MODELS_DIR/tiny-sd (or tiny-FAMILY)

Shapes: sd1 is the demo model (two UNet levels, a 2x VAE). The others keep what tells their family
apart: sd2 a GELU text encoder padding with "!", linear attention projections, v-prediction; sdxl
two text encoders (the second projected, for the pooled embedding) and the text_time embedding of
six size ids; sdxl_refiner the second encoder alone and five ids (aesthetic score). Their VAEs have
four levels (8x), as the real ones, so ComfyUI's /8 latent sizes hold.

The tokenizer's BPE merges are learned from a built-in word list (nodes.clip_bpe.tiny_merges), so the
vocabulary is small (TINY_VOCAB_SIZE entries) and reproducible.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .clip_bpe import OPEN_CLIP_PAD, make_tokenizer, tiny_merges, vocab_from_merges
from .families import SD1, SD2, SDXL, SDXL_REFINER, VAE_SCALING, scheduler_for
from .model_files import list_models

TINY_NAME = "tiny-sd"

# Small configs in the spirit of diffusers' own test models (SD 1.x layout).
UNET = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8)
VAE = dict(block_out_channels=[32, 64], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
           up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=1, sample_size=64,
           scaling_factor=0.18215)
CLIP = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
            max_position_embeddings=77, layer_norm_eps=1e-5)
# The other families: the same widths, their own structure (see the module docstring).
VAE_8X = dict(VAE, block_out_channels=[32, 32, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4,
              up_block_types=["UpDecoderBlock2D"] * 4)
LINEAR_UNET = dict(UNET, use_linear_projection=True, attention_head_dim=(1, 1))
SD2_UNET = dict(LINEAR_UNET, cross_attention_dim=32)
TIME_IDS_DIM = 8
SDXL_UNET = dict(LINEAR_UNET, cross_attention_dim=64, transformer_layers_per_block=(1, 2),
                 addition_embed_type="text_time", addition_time_embed_dim=TIME_IDS_DIM,
                 projection_class_embeddings_input_dim=32 + 6 * TIME_IDS_DIM)
REFINER_UNET = dict(SDXL_UNET, cross_attention_dim=32, projection_class_embeddings_input_dim=32 + 5 * TIME_IDS_DIM)
OPEN_CLIP = dict(CLIP, hidden_act="gelu")
FAMILY_NAMES = {SD1: TINY_NAME, SD2: "tiny-sd2", SDXL: "tiny-sdxl", SDXL_REFINER: "tiny-sdxl-refiner"}


def tiny_tokenizer(pad_token: str | None = None):
    return make_tokenizer(tiny_merges(), CLIP["max_position_embeddings"], pad_token)


def _text_encoder(config: dict, tokenizer, seed: int, projection: bool = False):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(**config, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                            **({"projection_dim": config["hidden_size"]} if projection else {}))
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _seeded(cls, config: dict, seed: int):
    import torch

    torch.manual_seed(seed)
    return cls(**config)


def build_pipeline(seed: int = 0, unet: dict | None = None, vae: dict | None = None, clip: dict | None = None,
                   family: str = SD1):
    """The family's diffusers pipeline of random weights (seeded); `unet`/`vae`/`clip` override the configs."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet_base, vae_base, clip_base = {SD1: (UNET, VAE, CLIP), SD2: (SD2_UNET, VAE_8X, OPEN_CLIP),
                                      SDXL: (SDXL_UNET, VAE_8X, CLIP),
                                      SDXL_REFINER: (REFINER_UNET, VAE_8X, OPEN_CLIP)}[family]
    unet_model = _seeded(UNet2DConditionModel, {**unet_base, **(unet or {})}, seed)
    vae_model = _seeded(AutoencoderKL, {**vae_base, **(vae or {}), "scaling_factor": VAE_SCALING[family]}, seed + 1)
    config = scheduler_for(family)
    scheduler = getattr(diffusers, config.pop("_class_name")).from_config(config)
    clip_config = {**clip_base, **(clip or {})}
    if family in (SD1, SD2):
        tokenizer = tiny_tokenizer(OPEN_CLIP_PAD if family == SD2 else None)
        return diffusers.StableDiffusionPipeline(
            vae=vae_model, text_encoder=_text_encoder(clip_config, tokenizer, seed + 2), tokenizer=tokenizer,
            unet=unet_model, scheduler=scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    tokenizer_2 = tiny_tokenizer(OPEN_CLIP_PAD)
    text_encoder_2 = _text_encoder({**OPEN_CLIP, **(clip or {})}, tokenizer_2, seed + 3, projection=True)
    if family == SDXL:
        tokenizer = tiny_tokenizer()
        return diffusers.StableDiffusionXLPipeline(
            vae=vae_model, text_encoder=_text_encoder(clip_config, tokenizer, seed + 2), text_encoder_2=text_encoder_2,
            tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet_model, scheduler=scheduler)
    return diffusers.StableDiffusionXLImg2ImgPipeline(
        vae=vae_model, text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None, tokenizer_2=tokenizer_2,
        unet=unet_model, scheduler=scheduler, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)


def write_tiny_model(folder: str | Path, seed: int = 0, family: str = SD1, **overrides) -> Path:
    """Write the family's diffusers folder (model_index.json, unet/, vae/, text_encoder*/, tokenizer*/,
    scheduler/)."""
    folder = Path(folder)
    pipe = build_pipeline(seed, family=family, **overrides)
    pipe.save_pretrained(folder, safe_serialization=True)
    # The BPE source files, as in any CLIP tokenizer folder.
    merges = tiny_merges()
    for tok in (folder / "tokenizer", folder / "tokenizer_2"):
        if tok.is_dir():
            (tok / "vocab.json").write_text(json.dumps(vocab_from_merges(merges), ensure_ascii=False),
                                            encoding="utf-8")
            (tok / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                            encoding="utf-8")
    return folder


def has_models(models_dir: str | Path) -> bool:
    return bool(list_models(models_dir))


def ensure_tiny_model(models_dir: str | Path) -> Path | None:
    """Write `tiny-sd` into `models_dir` when it holds no model at all; returns its path if written."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    if has_models(models_dir):
        return None
    return write_tiny_model(models_dir / TINY_NAME)


def main(argv: list[str]) -> int:
    models_dir = Path(argv[0] if argv else "data/models")
    family = argv[1] if len(argv) > 1 else SD1
    path = write_tiny_model(models_dir / FAMILY_NAMES[family], family=family)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

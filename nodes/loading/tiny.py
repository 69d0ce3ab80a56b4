"""Tiny Stable Diffusion models written locally, one per family, for demos and tests (no download).

Real diffusers/transformers classes (the ones each family declares in nodes.families, with its
`tiny` configs, tokenizers and scheduler), small configs of the family's shape and random weights
from a fixed seed, saved as diffusers folders that the family's pipeline loads
(`StableDiffusionPipeline` for sd1 and sd2, `StableDiffusionXLPipeline` for sdxl,
`StableDiffusionXLImg2ImgPipeline` for sdxl_refiner). Their images are noise-like (nothing is
trained), but every stage runs exactly as with a real model.

    python -m nodes.loading.tiny [MODELS_DIR] [FAMILY]   writes MODELS_DIR/tiny-sd (or tiny-FAMILY)

Shapes: sd1 is the demo model (two UNet levels, a 2x VAE). The others keep what tells their family
apart: sd2 a GELU text encoder padding with "!", linear attention projections, v-prediction; sdxl
two text encoders (the second projected, for the pooled embedding) and the text_time embedding of
six size ids; sdxl_refiner the second encoder alone and five ids (aesthetic score). Their VAEs have
four levels (8x), as the real ones, so ComfyUI's /8 latent sizes hold.

The tokenizer's BPE merges are learned from a built-in word list (nodes.loading.clip_bpe.tiny_merges), so the
vocabulary is small (TINY_VOCAB_SIZE entries) and reproducible.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .clip_bpe import make_tokenizer, tiny_merges, vocab_from_merges
from ..families import SD1, all_families, runtime_of, scheduler_for
from ..families import family as family_of
from ..families.sd_common import TINY_CLIP as CLIP
from ..families.sd_common import TINY_UNET as UNET
from ..families.sd_common import TINY_VAE as VAE
from ..families.sd_common import TINY_VAE_8X as VAE_8X
from .model_files import list_models

TINY_NAME = "tiny-sd"
FAMILY_NAMES = {f.name: f.tiny.folder for f in all_families()}


def tiny_tokenizer(pad_token: str | None = None):
    return make_tokenizer(tiny_merges(), CLIP["max_position_embeddings"], pad_token)


def _text_encoder(config: dict, tokenizer, seed: int, cls_name: str, projection: bool = False):
    import torch
    import transformers
    from transformers import CLIPTextConfig

    config = CLIPTextConfig(**config, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                            **({"projection_dim": config["hidden_size"]} if projection else {}))
    torch.manual_seed(seed)
    return getattr(transformers, cls_name)(config).eval()


def _seeded(cls, config: dict, seed: int):
    import torch

    torch.manual_seed(seed)
    return cls(**config)


def build_pipeline(seed: int = 0, unet: dict | None = None, vae: dict | None = None, clip: dict | None = None,
                   family: str = SD1):
    """The family's diffusers pipeline of random weights (seeded) from its declared tiny configs;
    `unet`/`vae`/`clip` override the configs (`clip`: of every text encoder)."""
    import diffusers

    declared = family_of(family)
    tiny = declared.tiny
    unet_model = _seeded(getattr(diffusers, declared.denoiser_class), {**tiny.denoiser, **(unet or {})}, seed)
    vae_model = _seeded(getattr(diffusers, declared.vae_class),
                        {**tiny.vae, **(vae or {}), "scaling_factor": declared.latent.scale}, seed + 1)
    config = scheduler_for(family)
    scheduler = getattr(diffusers, config.pop("_class_name")).from_config(config)
    parts = {"text_encoder": None, "tokenizer": None}
    for enc in declared.text_encoders:
        tokenizer = tiny_tokenizer(enc.pad_token)
        number = enc.slot.rpartition("_")[2]  # text_encoder: seed + 2, text_encoder_2: seed + 3, ...
        parts[enc.slot] = _text_encoder({**tiny.text_encoders[enc.slot], **(clip or {})}, tokenizer,
                                        seed + 1 + (int(number) if number.isdigit() else 1), enc.model_class,
                                        enc.projection)
        parts["tokenizer" + enc.slot.removeprefix("text_encoder")] = tokenizer
    return getattr(diffusers, declared.pipeline)(vae=vae_model, unet=unet_model, scheduler=scheduler, **parts,
                                                 **tiny.pipeline_options)


def randomise_zeros(model, seed: int):
    """diffusers zero-initialises some projections (adaLN modulations, outputs): a tiny random model
    would predict zeros. Small random values (std 0.02, drawn in parameter order from `seed`) make every
    part of the network matter in tests. Returns the generator, for draws that follow."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    return generator


def write_tiny_model(folder: str | Path, seed: int = 0, family: str = SD1, **overrides) -> Path:
    """Write the family's diffusers folder (model_index.json, unet/, vae/, text_encoder*/, tokenizer*/,
    scheduler/)."""
    folder = Path(folder)
    runtime = runtime_of(family)
    if runtime is not None:  # a transformer family writes its own (nodes.families.spec.Runtime)
        if overrides:
            raise ValueError(f"the tiny {family} writer takes no overrides ({', '.join(overrides)})")
        return runtime.write_tiny(folder, seed)
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

"""A tiny Stable Diffusion 1.x model written locally, for demos and tests (no download).

Real diffusers/transformers classes (UNet2DConditionModel, AutoencoderKL, CLIPTextModel,
CLIPTokenizer, PNDMScheduler) with small configs and random weights from a fixed seed, saved as a
diffusers folder that `StableDiffusionPipeline.from_pretrained(folder)` loads. Its images are
noise-like (nothing is trained), but every stage runs exactly as with a real model.

    python -m nodes.tiny_model [MODELS_DIR]      writes MODELS_DIR/tiny-sd (default: data/models)

The tokenizer's BPE merges are learned from a built-in word list (see nodes.clip_bpe), so the
vocabulary is small (TINY_VOCAB_SIZE entries) and reproducible.
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

TINY_NAME = "tiny-sd"

WORDS = """
a an the of and with in on at by from for to into over under near behind beside above below
photo photograph painting drawing sketch render illustration portrait landscape closeup detailed
highly intricate beautiful stunning sharp focus blurry low quality bad ugly deformed extra watermark
text signature cropped worst best masterpiece trending artstation concept art digital oil canvas
watercolor pencil charcoal ink style cinematic lighting light dark shadow sunset sunrise night day
morning evening golden hour soft hard volumetric fog mist rain snow storm cloud clouds sky blue red
green yellow orange purple pink white black gray grey brown silver gold colorful vibrant muted pastel
cat cats dog dogs horse bird birds fish dragon tiger lion wolf fox owl rabbit bear deer elephant
astronaut robot knight wizard witch princess king queen warrior soldier man woman girl boy child
old young face eyes hair smiling standing sitting running flying riding walking reading holding
castle tower house city street road bridge forest tree trees flower flowers garden field mountain
mountains river lake ocean sea beach island desert valley cave waterfall village temple ruins
space planet moon stars galaxy nebula spaceship station future futuristic cyberpunk steampunk
fantasy medieval ancient modern vintage retro minimal abstract surreal realistic photorealistic
hyperrealistic unreal engine octane studio ghibli anime cartoon comic pixel isometric wide angle
lens bokeh depth field resolution quality high ultra hd 4k 8k award winning professional
""".split()

# Small configs in the spirit of diffusers' own test models (SD 1.x layout).
UNET = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8)
VAE = dict(block_out_channels=[32, 64], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
           up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=1, sample_size=64,
           scaling_factor=0.18215)
CLIP = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
            max_position_embeddings=77, layer_norm_eps=1e-5)
# Stable Diffusion 1.x's own scheduler settings.
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False, clip_sample=False)
TINY_MERGES = 486  # 512 byte symbols + 486 merges + 2 specials = 1000 entries


@functools.lru_cache(maxsize=1)
def tiny_merges() -> tuple[tuple[str, str], ...]:
    from .clip_bpe import train_merges

    return tuple(train_merges(WORDS, TINY_MERGES))


def tiny_tokenizer():
    from .clip_bpe import make_tokenizer

    return make_tokenizer(tiny_merges(), CLIP["max_position_embeddings"])


def tiny_vocab_size() -> int:
    return 2 * 256 + len(tiny_merges()) + 2


def build_pipeline(seed: int = 0, unet: dict | None = None, vae: dict | None = None, clip: dict | None = None):
    """A StableDiffusionPipeline of random weights (seeded); `unet`/`vae`/`clip` override the configs."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    clip_config = CLIPTextConfig(**{**CLIP, **(clip or {})}, vocab_size=len(tokenizer),
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    unet_model = UNet2DConditionModel(**{**UNET, **(unet or {})})
    torch.manual_seed(seed + 1)
    vae_model = AutoencoderKL(**{**VAE, **(vae or {})})
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(clip_config)
    return StableDiffusionPipeline(vae=vae_model, text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                                   unet=unet_model, scheduler=PNDMScheduler.from_config(SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def write_tiny_model(folder: str | Path, seed: int = 0, **overrides) -> Path:
    """Write a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    from .clip_bpe import vocab_from_merges

    folder = Path(folder)
    pipe = build_pipeline(seed, **overrides)
    pipe.save_pretrained(folder, safe_serialization=True)
    # The BPE source files, as in any CLIP tokenizer folder.
    merges = tiny_merges()
    tok = folder / "tokenizer"
    (tok / "vocab.json").write_text(json.dumps(vocab_from_merges(merges), ensure_ascii=False), encoding="utf-8")
    (tok / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return folder


def has_models(models_dir: str | Path) -> bool:
    from .loaders import list_models

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
    path = write_tiny_model(models_dir / TINY_NAME)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

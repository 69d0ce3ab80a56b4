"""An SD 1.5-shaped checkpoint for the benchmarks, made locally (random weights, nothing downloaded).

SD 1.5's layout at reduced depth: a UNet with full-width 320- and 640-channel blocks (one ResNet per
block, cross-attention with 8 heads on a 768-wide context at the first level), SD's four-level VAE
at reduced width and a 768-wide, 6-layer CLIP text encoder: 143M parameters, a 572 MB float32 file in
the original LDM key layout (what people download), plus the same model as a diffusers folder (what
`from_single_file(config=...)` reads its configs and tokenizer from, offline). Both are written once
into bench/out/cache/ (not committed).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "out" / "cache"
NAME = "sd15-shaped"
SHAPE = dict(
    unet=dict(block_out_channels=(320, 640), layers_per_block=1, sample_size=64,
              down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=768, attention_head_dim=8),
    vae=dict(block_out_channels=[128, 256, 256, 256], down_block_types=["DownEncoderBlock2D"] * 4,
             up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, sample_size=512),
    clip=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=6),
)


def ensure_checkpoint(cache: Path = CACHE) -> tuple[Path, Path]:
    """(the single file, the diffusers folder of the same weights), written on first use."""
    folder, single = cache / NAME, cache / "models" / f"{NAME}.safetensors"
    if single.is_file() and (folder / "model_index.json").is_file():
        return single, folder
    sys.path.insert(0, str(ROOT))
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    from nodes.loading.tiny import write_tiny_model
    from nodes.loading.ldm_layout import pipeline_to_ldm

    write_tiny_model(folder, seed=15, **SHAPE)
    single.parent.mkdir(parents=True, exist_ok=True)
    state = pipeline_to_ldm(StableDiffusionPipeline.from_pretrained(folder, safety_checker=None))
    save_file(state, str(single.with_suffix(".partial")))
    single.with_suffix(".partial").rename(single)
    return single, folder


if __name__ == "__main__":
    for path in ensure_checkpoint():
        print(path)

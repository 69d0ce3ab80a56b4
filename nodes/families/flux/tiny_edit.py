"""Tiny random Flux.1 editing models under the file names of ComfyUI's Flux editing templates, beside
the family's own tiny files (nodes.families.flux.tiny):

    diffusion_models/flux1-dev-kontext_fp8_scaled.safetensors              Kontext dev (dev's architecture), scaled fp8
    diffusion_models/flux1-fill-dev.safetensors                            Fill: in_channels 16 + 16 + 64 per latent pixel
    diffusion_models/flux.1-fill-dev-OneReward-transformer_fp8.safetensors Fill again, scaled fp8
    diffusion_models/flux1-canny-dev.safetensors                           Canny: in_channels 16 + 16
    diffusion_models/flux1-depth-dev.safetensors                           Depth: the same shape as Canny
    text_encoders/t5xxl_fp8_e4m3fn_scaled.safetensors                      the tiny T5, scaled fp8
    loras/removal_timestep_alpha-2-1740.safetensors                        a LoRA of the tiny transformers (OneReward's)

Fill's 64 mask channels are the 8 x 8 pixels of one latent pixel (the tiny VAE scales by 8 as the
published one). Seeded like the family's tiny models; the transformers differ in their input layer.
"""
from __future__ import annotations

from pathlib import Path

from . import FAMILY

# file -> latent channels per pixel the transformer reads (16: Kontext's, like dev's)
TRANSFORMERS = {"flux1-dev-kontext_fp8_scaled.safetensors": 16, "flux1-fill-dev.safetensors": 16 + 16 + 64,
                "flux.1-fill-dev-OneReward-transformer_fp8.safetensors": 16 + 16 + 64,
                "flux1-canny-dev.safetensors": 16 + 16, "flux1-depth-dev.safetensors": 16 + 16}
T5_FP8 = "t5xxl_fp8_e4m3fn_scaled.safetensors"
LORA = "removal_timestep_alpha-2-1740.safetensors"
LORA_MODULES = ("transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_v", "transformer_blocks.0.ff.net.2",
                "single_transformer_blocks.0.attn.to_k", "single_transformer_blocks.1.proj_out")


def lora_state(seed: int = 0, rank: int = 2) -> dict:
    """A LoRA of the tiny Flux transformers (any of them: it leaves the input layer alone) in diffusers'
    layout: `transformer.<module>.lora_A/B.weight`, random."""
    import torch

    model = edit_transformer(16, seed)
    generator = torch.Generator().manual_seed(seed + 7)
    state = {}
    for name in LORA_MODULES:
        layer = model.get_submodule(name)
        state[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=generator) * 0.3
        state[f"transformer.{name}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=generator) * 0.3
    return state


def edit_transformer(channels: int, seed: int = 0):
    """A tiny dev-like Flux transformer reading `channels` latent channels per pixel, predicting 16."""
    import diffusers
    import torch

    from ...loading.tiny import randomise_zeros

    torch.manual_seed(seed)
    model = diffusers.FluxTransformer2DModel(**{**FAMILY.tiny.denoiser, "in_channels": channels * 4,
                                                "out_channels": FAMILY.latent.channels * 4})
    randomise_zeros(model, seed + 3)
    return model.eval()


def write_edit_files(models_dir: str | Path, seed: int = 0, t5_state: dict | None = None) -> dict[str, Path]:
    """The files above under models_dir ({file name: path}); `t5_state`: the tiny T5's weights (else
    the family's tiny pipeline's, same seed)."""
    from safetensors.torch import save_file

    from ...loading.encoders import t5
    from .tiny import build_pipeline, scaled_fp8, transformer_to_original

    models_dir = Path(models_dir)
    written = {}
    for name, channels in TRANSFORMERS.items():
        state = transformer_to_original(edit_transformer(channels, seed).state_dict())
        written[name] = _save(save_file, scaled_fp8(state) if "fp8" in name else state,
                              models_dir / "diffusion_models" / name)
    if t5_state is None:
        t5_state = {k: v for k, v in build_pipeline(seed).text_encoder_2.state_dict().items()
                    if k != "encoder.embed_tokens.weight"}
    written[T5_FP8] = _save(save_file, scaled_fp8(t5_state), models_dir / "text_encoders" / T5_FP8)
    written[LORA] = _save(save_file, lora_state(seed), models_dir / "loras" / LORA)
    t5.write_tiny_tokenizer(written[T5_FP8].parent)
    return written


def _save(save_file, state: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path

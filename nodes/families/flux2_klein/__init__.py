"""Flux.2 Klein (black-forest-labs/FLUX.2-klein-4B, -9B and their base models): Flux.2's transformer
without the guidance embedding, Qwen3 as text encoder (4B: qwen_3_4b.safetensors; 9B: Qwen3-8B),
hidden states 9, 18 and 27 stacked per token. The distilled models sample at cfg 1 in 4 steps, the base
models with CFG. Everything else, and the torch side, is Flux.2's (nodes.families.flux2)."""
from __future__ import annotations

from ..flux2 import (DENOISER_PREFIX, SCHEDULER, TINY_TEXT_WIDTH, TINY_TRANSFORMER, TINY_VAE, TRANSFORMER, is_flux2,
                     never, sampling)
from ..spec import Conditioning, Family, LatentFormat, TextEncoder, Tiny

TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"  # ComfyUI's and the pipeline's
PAD_TOKEN = "<|endoftext|>"
LAYERS = (9, 18, 27)

# The published Klein 4B transformer: 5 double, 20 single blocks of 24 heads; Qwen3-4B's 2560 x 3 text.
KLEIN_4B = dict(TRANSFORMER, num_layers=5, num_single_layers=20, num_attention_heads=24, joint_attention_dim=7680,
                guidance_embeds=False)
TINY_KLEIN = dict(TINY_TRANSFORMER, guidance_embeds=False)
TINY_QWEN3 = dict(hidden_size=TINY_TEXT_WIDTH, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
                  head_dim=8, num_hidden_layers=27, max_position_embeddings=1024, rms_norm_eps=1e-6,
                  rope_theta=1000000.0)


def is_folder(index: dict, denoiser: dict, text_encoder: dict) -> bool:
    return index.get("_class_name") == "Flux2KleinPipeline"


def is_denoiser(state: dict, prefix: str) -> bool:
    return is_flux2(state, prefix) and prefix + "guidance_in.in_layer.weight" not in state


def is_denoiser_config(config: dict) -> bool:
    return config.get("_class_name") == "Flux2Transformer2DModel" and not config.get("guidance_embeds", True)


FAMILY = Family(
    name="flux2_klein", label="Flux.2 Klein", published="black-forest-labs/FLUX.2-klein-4B",
    pipeline="Flux2KleinPipeline", denoiser_class="Flux2Transformer2DModel", vae_class="AutoencoderKLFlux2",
    text_encoders=(TextEncoder("text_encoder", "qwen3_4b", "text_encoders.qwen3_4b.transformer.", "hf",
                               "AutoModel", pad_token=PAD_TOKEN, tokenizer_class="Qwen2Tokenizer"),),
    conditioning=Conditioning("CLIPTextEncode"),
    latent=LatentFormat(channels=128, scale=1.0, shift=0.0, downscale=16),
    sampling=sampling(), scheduler=SCHEDULER, default_size=1024,
    tiny=Tiny(denoiser=TINY_KLEIN, vae=TINY_VAE, text_encoders={"text_encoder": TINY_QWEN3},
              folder="tiny-flux2-klein"),
    is_folder=is_folder, is_checkpoint=never, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    denoiser_folder="transformer", denoiser_prefix=DENOISER_PREFIX, vae_prefix="vae.",
    denoiser_converter="convert_flux2_transformer_checkpoint_to_diffusers",
    clip_types=("flux2",), runtime="nodes.families.flux2_klein.runtime",
)

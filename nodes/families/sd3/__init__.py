"""Stable Diffusion 3.5 (medium and large; SD 3.0 medium loads too): an MMDiT (diffusers'
SD3Transformer2DModel) on 16-channel latents of an LDM-layout VAE (latents = (vae latents - 0.0609) *
1.5305), three text encoders, flow matching with shift 3 and timesteps sigma * 1000.

The variants differ only in config, read off the file's shapes: large has no dual attention layers,
medium has `attn2` (dual attention) in its first 13 blocks; both have RMS q/k norms (`ln_q`, `ln_k`).

The text path (ComfyUI's sd3 text encoder; diffusers' StableDiffusion3Pipeline agrees on every point):
- CLIP-L and OpenCLIP bigG, 77 tokens each (CLIP-L pads with its end token, bigG with "!"), their
  penultimate hidden states without the final layer norm, concatenated on the width (768 + 1280) and
  zero-padded to T5's width (4096); pooled: CLIP-L's pooled output (its projection is the identity
  in the published files) and bigG's projected one, concatenated (2048).
- T5-XXL: no start token, the end token, padded with 0 to at least 77 tokens; its last hidden state is
  put after the CLIP tokens. Each encoder is optional (ComfyUI's loaders accept any of them): without
  T5 the CLIP tokens alone, without CLIP zeros of their widths in the pooled output.

Single files (ComfyUI's): whole checkpoints `model.diffusion_model.*`, `first_stage_model.*`,
`text_encoders.clip_l.transformer.*`, `text_encoders.clip_g.transformer.*` (both transformers' layout),
`text_encoders.t5xxl.transformer.*` (optional); the transformer alone in the same original layout,
converted by diffusers' convert_sd3_transformer_checkpoint_to_diffusers.
"""
from __future__ import annotations

from ...loading.clip_bpe import OPEN_CLIP_PAD
from ...loading.model_files import has_prefix
from .. import sd_common as sd
from ..spec import Conditioning, Family, LatentFormat, Sampling, TextEncoder, Tiny

DENOISER_PREFIX = "model.diffusion_model."
MARK = "joint_blocks.0.context_block.attn.qkv.weight"  # an MMDiT's first joint block: SD3's mark
ENCODER_PREFIX = "text_encoders.{}.transformer."  # in a whole ComfyUI checkpoint
CLIP_TOKENS = 77
T5_MIN_TOKENS = 77  # ComfyUI pads T5 to at least this many tokens (the pipeline: max_sequence_length)

# The published transformers (stabilityai/stable-diffusion-3.5-{large,medium} transformer/config.json).
LARGE = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
             num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
             pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192, dual_attention_layers=(),
             qk_norm="rms_norm")
MEDIUM = dict(LARGE, num_layers=24, num_attention_heads=24, caption_projection_dim=1536, pos_embed_max_size=384,
              dual_attention_layers=tuple(range(13)))

# Tiny ones (diffusers' own SD3 tests' widths): 32-wide CLIPs (pooled 64), a 64-wide T5 (the joint
# width: the CLIPs' 64 fit it), two blocks of 4 heads of 8; medium's first block has dual attention.
TINY_T5 = dict(d_model=64, d_ff=64, d_kv=16, num_heads=4, num_layers=2, relative_attention_num_buckets=8,
               dropout_rate=0.0, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
TINY_LARGE = dict(LARGE, sample_size=32, num_layers=2, attention_head_dim=8, num_attention_heads=4,
                  joint_attention_dim=TINY_T5["d_model"], caption_projection_dim=32, pooled_projection_dim=64,
                  pos_embed_max_size=16)
TINY_MEDIUM = dict(TINY_LARGE, dual_attention_layers=(0,))
TINY_VAE = dict(sd.TINY_VAE_8X, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                scaling_factor=1.5305, shift_factor=0.0609)


def is_folder(index: dict, denoiser: dict, text_encoder: dict) -> bool:
    return index.get("_class_name") == "StableDiffusion3Pipeline"


def is_checkpoint(state: dict) -> bool:
    return DENOISER_PREFIX + MARK in state


def is_denoiser(state: dict, prefix: str) -> bool:
    return prefix + MARK in state and prefix + "context_embedder.weight" in state


def is_denoiser_config(config: dict) -> bool:
    return config.get("_class_name") == "SD3Transformer2DModel"


FAMILY = Family(
    name="sd3", label="Stable Diffusion 3.5", published="stabilityai/stable-diffusion-3.5-large",
    pipeline="StableDiffusion3Pipeline", denoiser_class="SD3Transformer2DModel", vae_class="AutoencoderKL",
    text_encoders=(
        TextEncoder("text_encoder", "clip_l", ENCODER_PREFIX.format("clip_l"), "hf", "CLIPTextModelWithProjection",
                    projection=True, optional=True),  # the identity projection (diffusers' folders hold it)
        TextEncoder("text_encoder_2", "clip_g", ENCODER_PREFIX.format("clip_g"), "hf", "CLIPTextModelWithProjection",
                    projection=True, pad_token=OPEN_CLIP_PAD, optional=True),
        TextEncoder("text_encoder_3", "t5xxl", ENCODER_PREFIX.format("t5xxl"), "file", "T5EncoderModel",
                    tokenizer_class="T5TokenizerFast", optional=True),
    ),
    conditioning=Conditioning("CLIPTextEncode", hidden_layer=-2, pooled=True),
    latent=LatentFormat(channels=16, scale=1.5305, shift=0.0609, downscale=8),
    sampling=Sampling("flow", shift=3.0, multiplier=1000),
    scheduler=dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=3.0,
                   use_dynamic_shifting=False),
    default_size=1024,
    tiny=Tiny(denoiser=TINY_LARGE, vae=TINY_VAE,
              text_encoders={"text_encoder": sd.TINY_CLIP, "text_encoder_2": sd.TINY_OPEN_CLIP,
                             "text_encoder_3": TINY_T5},
              folder="tiny-sd3"),
    is_folder=is_folder, is_checkpoint=is_checkpoint, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    denoiser_folder="transformer", denoiser_prefix=DENOISER_PREFIX,
    denoiser_converter="convert_sd3_transformer_checkpoint_to_diffusers",
    clip_types=("sd3",), runtime="nodes.families.sd3.runtime",
)

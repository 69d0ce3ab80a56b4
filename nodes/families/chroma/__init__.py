"""Chroma (lodestones' Chroma1-HD): Flux.1's double- and single-stream transformer with its modulation
vectors produced by a small "distilled guidance" approximator network instead of per-block adaLN
(diffusers' ChromaTransformer2DModel), on Flux's 16-channel VAE latents (latents = (vae latents -
0.1159) * 0.3611, packed in 2 x 2 patches before the transformer), one T5-XXL text encoder, real CFG
(two transformer calls), flow matching.

The text path (ComfyUI's CLIPLoader type "chroma" with a T5-XXL file): T5's pieces and `</s>`, no
padding (ComfyUI's PixArt/Chroma tokenizer, min_length 1), T5TokenizerOptions' min_padding pads
appended and min_length; the last hidden state without an attention mask; the transformer attends to
every token. diffusers' ChromaPipeline pads to 512 with a mask and lets the transformer see the prompt
and one pad token: with min_padding 1 ComfyUI's tokens are those, but T5 sees the pad unmasked.

Sampling: ComfyUI's Chroma templates patch the model with ModelSamplingAuraFlow (shift 1; timestep =
sigma); diffusers' transformer takes the timestep in 0..1 and predicts the flow velocity.

Single files (ComfyUI's): the transformer in the original (Flux) layout without a prefix
(`double_blocks.N.img_attn.qkv`, `single_blocks.N.linear1`, `distilled_guidance_layer.*`), converted
by diffusers' convert_chroma_transformer_checkpoint_to_diffusers; T5-XXL by
nodes.loading.encoders.t5; the VAE `ae.safetensors` (LDM layout, no prefix, Flux's scale).
"""
from __future__ import annotations

from ...loading.model_files import has_prefix
from ..spec import Conditioning, Family, LatentFormat, Sampling, TextEncoder, Tiny

DENOISER_PREFIX = "model.diffusion_model."
TEXT_ENCODER_PREFIX = "text_encoders.t5xxl.transformer."  # in a whole ComfyUI checkpoint
APPROXIMATOR_KEY = "distilled_guidance_layer.in_proj.bias"  # Chroma's mark (diffusers' own detection key)

# The published transformer (lodestones/Chroma1-HD transformer/config.json).
TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                   num_attention_heads=24, joint_attention_dim=4096, axes_dims_rope=[16, 56, 56],
                   approximator_num_channels=64, approximator_hidden_dim=5120, approximator_layers=5)
# Tiny ones: 32 wide (2 heads of 16), one block of each kind, a 32-wide T5.
TINY_TRANSFORMER = dict(TRANSFORMER, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                        joint_attention_dim=32, axes_dims_rope=[4, 6, 6], approximator_num_channels=16,
                        approximator_hidden_dim=32, approximator_layers=1)
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 64, 64], layers_per_block=1,
                latent_channels=16, norm_num_groups=32, sample_size=64, use_quant_conv=False,
                use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159)
TINY_T5 = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=32,
               relative_attention_max_distance=128, feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6)


def is_folder(index: dict, denoiser: dict, text_encoder: dict) -> bool:
    return index.get("_class_name") == "ChromaPipeline"


def is_checkpoint(state: dict) -> bool:
    return has_prefix(state, TEXT_ENCODER_PREFIX) and DENOISER_PREFIX + APPROXIMATOR_KEY in state


def is_denoiser(state: dict, prefix: str) -> bool:
    return prefix + APPROXIMATOR_KEY in state and has_prefix(state, prefix + "double_blocks.")


def is_denoiser_config(config: dict) -> bool:
    return config.get("_class_name") == "ChromaTransformer2DModel"


FAMILY = Family(
    name="chroma", label="Chroma", published="lodestones/Chroma1-HD",
    pipeline="ChromaPipeline", denoiser_class="ChromaTransformer2DModel", vae_class="AutoencoderKL",
    text_encoders=(TextEncoder("text_encoder", "t5xxl", TEXT_ENCODER_PREFIX, "hf", "T5EncoderModel",
                               tokenizer_class="T5TokenizerFast"),),
    conditioning=Conditioning("EncodeTextChroma"),
    latent=LatentFormat(channels=16, scale=0.3611, shift=0.1159, downscale=8, packed=2),
    sampling=Sampling("flow", shift=1.0, multiplier=1.0),
    # the published scheduler (Flux's): resolution-dependent shift; ComfyUI's templates set shift 1
    scheduler=dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=1.0,
                   use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                   max_image_seq_len=4096),
    default_size=1024,
    tiny=Tiny(denoiser=TINY_TRANSFORMER, vae=TINY_VAE, text_encoders={"text_encoder": TINY_T5}, folder="tiny-chroma"),
    is_folder=is_folder, is_checkpoint=is_checkpoint, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    denoiser_folder="transformer", denoiser_prefix=DENOISER_PREFIX, vae_prefix="vae.",
    denoiser_converter="convert_chroma_transformer_checkpoint_to_diffusers",
    clip_types=("chroma",), runtime="nodes.families.chroma.runtime",
)

"""Z-Image (Tongyi-MAI's Z-Image-Turbo): a single-stream DiT (diffusers' ZImageTransformer2DModel) on
16-channel latents of a Flux-style VAE (AutoencoderKL, latents = (vae latents - 0.1159) * 0.3611), one
Qwen3-4B text encoder whose penultimate hidden layer conditions it, flow matching with shift 3.

The text path (ComfyUI's CLIPLoader type "lumina2" with `qwen_3_4b.safetensors`): the prompt in the
chat template `<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n`, Qwen2's byte-level BPE,
no padding, hidden_states[-2] (diffusers' ZImagePipeline adds an empty `<think>` block to the template
and pads to 512 with a mask, keeping only the unmasked rows). Sampling: ComfyUI's discrete flow with
multiplier 1 (timestep = sigma); the transformer is called with t = 1 - sigma and predicts the negated
velocity (the pipeline negates it), so ComfyUI's v is minus its output.

Single files (ComfyUI's): the transformer in the original layout (fused `attention.qkv`, `x_embedder`,
`final_layer`, q/k norms `q_norm`/`k_norm`), converted by diffusers'
convert_z_image_transformer_checkpoint_to_diffusers; the text encoder a transformers Qwen3 state dict
under `model.`; the VAE `ae.safetensors` in the LDM layout without a prefix (Flux's, no quant convs).
"""
from __future__ import annotations

from ...loading.model_files import has_prefix
from ..spec import Conditioning, Family, LatentFormat, Sampling, TextEncoder, Tiny

TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"  # ComfyUI's (no thinking block)
PAD_TOKEN = "<|endoftext|>"  # Qwen's pad (id 151643 in the published vocabulary)
DENOISER_PREFIX = "model.diffusion_model."
TEXT_ENCODER_PREFIX = "text_encoders.qwen3_4b.transformer."  # in a whole ComfyUI checkpoint
CAPTION_KEY = "cap_embedder.1.weight"  # (dim, text width): the caption projection, Z-Image's mark

# The published transformer (Tongyi-MAI/Z-Image-Turbo transformer/config.json) and text encoder.
TRANSFORMER = dict(all_patch_size=[2], all_f_patch_size=[1], in_channels=16, dim=3840, n_layers=30,
                   n_refiner_layers=2, n_heads=30, n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560,
                   rope_theta=256.0, t_scale=1000.0, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512])
QWEN3_4B = dict(hidden_size=2560, intermediate_size=9728, num_attention_heads=32, num_hidden_layers=36,
                num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0, vocab_size=151936)

# Tiny ones (diffusers' own Z-Image tests' sizes): a 16-wide caption projection = the tiny Qwen3's width.
TINY_TRANSFORMER = dict(TRANSFORMER, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2,
                        cap_feat_dim=16, axes_dims=[8, 4, 4])  # axes_lens as published: long prompts fit
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 64, 64], layers_per_block=1,
                latent_channels=16, norm_num_groups=32, sample_size=64, use_quant_conv=False,
                use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159)
TINY_QWEN3 = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                  num_hidden_layers=3, max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1000000.0)


def is_folder(index: dict, denoiser: dict, text_encoder: dict) -> bool:
    return index.get("_class_name") == "ZImagePipeline"


def is_checkpoint(state: dict) -> bool:
    return has_prefix(state, TEXT_ENCODER_PREFIX) and DENOISER_PREFIX + CAPTION_KEY in state


def is_denoiser(state: dict, prefix: str) -> bool:
    return prefix + CAPTION_KEY in state and has_prefix(state, prefix + "noise_refiner.")


def is_denoiser_config(config: dict) -> bool:
    return config.get("_class_name") == "ZImageTransformer2DModel"


FAMILY = Family(
    name="zimage", label="Z-Image", published="Tongyi-MAI/Z-Image-Turbo",
    pipeline="ZImagePipeline", denoiser_class="ZImageTransformer2DModel", vae_class="AutoencoderKL",
    text_encoders=(TextEncoder("text_encoder", "qwen3_4b", TEXT_ENCODER_PREFIX, "hf", "Qwen3Model",
                               pad_token=PAD_TOKEN, tokenizer_class="Qwen2Tokenizer"),),
    conditioning=Conditioning("EncodeText", hidden_layer=-2),
    latent=LatentFormat(channels=16, scale=0.3611, shift=0.1159, downscale=8),
    sampling=Sampling("flow", shift=3.0, multiplier=1.0),
    scheduler=dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=3.0,
                   use_dynamic_shifting=False),
    default_size=1024,
    tiny=Tiny(denoiser=TINY_TRANSFORMER, vae=TINY_VAE, text_encoders={"text_encoder": TINY_QWEN3},
              folder="tiny-zimage"),
    is_folder=is_folder, is_checkpoint=is_checkpoint, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    denoiser_folder="transformer", denoiser_prefix=DENOISER_PREFIX, vae_prefix="vae.",
    denoiser_converter="convert_z_image_transformer_checkpoint_to_diffusers",
    clip_types=("lumina2",), runtime="nodes.families.zimage.runtime",
)

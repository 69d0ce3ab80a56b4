"""Flux.1 (Black Forest Labs' FLUX.1 dev and schnell; FLUX.1 Krea dev has dev's architecture): a
double- then single-stream DiT (diffusers' FluxTransformer2DModel) on 16-channel latents of its own VAE
(AutoencoderKL, latents = (vae latents - 0.1159) * 0.3611) packed into 2x2 patches (64 channels per
token) with (0, row, column) position ids; CLIP-L's pooled output and T5-XXL's last hidden states
condition it.

The text path (ComfyUI's DualCLIPLoader type "flux" with clip_l.safetensors and t5xxl_*.safetensors):
CLIP-L's pooled output of the prompt padded to 77 tokens, T5-XXL's last hidden state of the prompt +
`</s>` padded with `<pad>` to at least 256 tokens, no attention mask (diffusers' FluxPipeline pads T5 to
its max_sequence_length: the same with max_sequence_length=256).

Sampling as ComfyUI: the transformer's output is the velocity v (denoised = x - sigma * v), its time
is sigma. dev (a guidance embedding in the weights) samples with ModelSamplingFlux (sigma(t) =
e^shift / (e^shift + 1/t - 1), shift 1.15, 10000 table entries) and reads the guidance of the
conditioning (FluxGuidance; 3.5 when none was set, none after FluxDisableGuidance); schnell (no
guidance embedding) samples as discrete flow with shift 1 and multiplier 1.

Single files (ComfyUI's): the transformer in BFL's layout (`double_blocks`, `single_blocks`, `img_in`,
`txt_in`, `vector_in`, `guidance_in` for dev), converted by diffusers'
convert_flux_transformer_checkpoint_to_diffusers; CLIP-L in transformers' layout; T5-XXL read by
nodes.loading.encoders.t5; the VAE `ae.safetensors` in the LDM layout without a prefix (no quant
convs). Whole checkpoints (flux1-dev-fp8.safetensors): `model.diffusion_model.`, `vae.`,
`text_encoders.clip_l.transformer.`, `text_encoders.t5xxl.transformer.`.
"""
from __future__ import annotations

from ...loading.model_files import has_prefix
from ..spec import Conditioning, Family, LatentFormat, Sampling, TextEncoder, Tiny

DENOISER_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "text_encoders.clip_l.transformer."  # in a whole ComfyUI checkpoint
T5_PREFIX = "text_encoders.t5xxl.transformer."
MARKS = ("vector_in.in_layer.weight", "double_blocks.0.img_attn.qkv.weight")  # pooled input + double blocks
GUIDANCE_KEY = "guidance_in.in_layer.weight"  # dev's guidance embedding (schnell has none)
DEFAULT_GUIDANCE = 3.5  # ComfyUI's Flux model when the conditioning holds no "guidance"
T5_MIN_LENGTH = 256  # ComfyUI's Flux T5 tokenizer pads to this

# The published transformer (black-forest-labs/FLUX.1-dev transformer/config.json).
TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                   num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                   axes_dims_rope=[16, 56, 56])
PUBLISHED_AXES = [16, 56, 56]

# Tiny ones (diffusers' own Flux tests' sizes): 32 wide, one double and two single blocks, a 32-wide
# T5 and CLIP-L.
TINY_T5 = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
               feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6)
TINY_CLIP = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
                 max_position_embeddings=77, layer_norm_eps=1e-5)
TINY_TRANSFORMER = dict(TRANSFORMER, num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                        joint_attention_dim=TINY_T5["d_model"], pooled_projection_dim=TINY_CLIP["hidden_size"],
                        axes_dims_rope=[4, 6, 6])
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 64, 64], layers_per_block=1,
                latent_channels=16, norm_num_groups=32, sample_size=64, use_quant_conv=False,
                use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159)


def is_folder(index: dict, denoiser: dict, text_encoder: dict) -> bool:
    return index.get("_class_name") == "FluxPipeline"


def is_denoiser(state: dict, prefix: str) -> bool:
    return all(prefix + mark in state for mark in MARKS)


def is_checkpoint(state: dict) -> bool:
    return is_denoiser(state, DENOISER_PREFIX) and has_prefix(state, T5_PREFIX)


def is_denoiser_config(config: dict) -> bool:
    return config.get("_class_name") == "FluxTransformer2DModel"


FAMILY = Family(
    name="flux", label="Flux.1", published="black-forest-labs/FLUX.1-dev",
    pipeline="FluxPipeline", denoiser_class="FluxTransformer2DModel", vae_class="AutoencoderKL",
    text_encoders=(TextEncoder("text_encoder", "clip_l", CLIP_PREFIX, "hf", "CLIPTextModel"),
                   TextEncoder("text_encoder_2", "t5xxl", T5_PREFIX, "hf", "T5EncoderModel",
                               pad_token="<pad>", tokenizer_class="T5TokenizerFast")),
    conditioning=Conditioning("EncodeTextFlux", pooled=True),
    latent=LatentFormat(channels=16, scale=0.3611, shift=0.1159, downscale=8, packed=2),
    sampling=Sampling("flow", shift=1.15, multiplier=1.0),
    scheduler=dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=3.0,
                   use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                   max_image_seq_len=4096),
    default_size=1024,
    tiny=Tiny(denoiser=TINY_TRANSFORMER, vae=TINY_VAE,
              text_encoders={"text_encoder": TINY_CLIP, "text_encoder_2": TINY_T5}, folder="tiny-flux"),
    is_folder=is_folder, is_checkpoint=is_checkpoint, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    denoiser_folder="transformer", denoiser_prefix=DENOISER_PREFIX, vae_prefix="vae.",
    denoiser_converter="convert_flux_transformer_checkpoint_to_diffusers",
    clip_types=("flux",), runtime="nodes.families.flux.runtime",
)

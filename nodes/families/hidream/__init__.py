"""HiDream I1 (HiDream-ai's Full, Dev and Fast): a sparse-DiT (mixture-of-experts feed-forwards, double-
and single-stream blocks; diffusers' HiDreamImageTransformer2DModel) on Flux's 16-channel VAE latents
(latents = (vae latents - 0.1159) * 0.3611, patched 2 x 2 inside the transformer), four text encoders:
CLIP-L and CLIP-G (their projected pooled outputs, concatenated: 768 + 1280), T5-XXL (128 tokens) and
Llama 3.1 8B Instruct (128 tokens; every layer's hidden state, one per transformer block), flow matching
(timestep = 1000 sigma), real CFG for Full (Dev and Fast are guidance-distilled: cfg 1).

The text path (ComfyUI's QuadrupleCLIPLoader, or CLIPLoader / DualCLIPLoader type "hidream"):
CLIP-L and CLIP-G pooled from 77-token prompts; T5's pieces and `</s>`, padded to 128 with a mask;
Llama's `<|begin_of_text|>` and pieces, padded to 128 with `<|eot_id|>` and a mask, hidden states 1..32.
The transformer predicts minus the velocity (diffusers' pipeline negates it; so does Loom's guide).

Single files (ComfyUI's): the transformer in diffusers' own layout (diffusers' converter only strips a
`model.diffusion_model.` prefix); clip_l_hidream / clip_g_hidream (transformers' CLIP keys with
`text_projection`); T5-XXL (nodes.loading.encoders.t5); Llama (nodes.loading.encoders.llama); the VAE
`ae.safetensors` (Flux's).
"""
from __future__ import annotations

from ...loading.model_files import has_prefix
from ..spec import Conditioning, Family, LatentFormat, Sampling, TextEncoder, Tiny

DENOISER_PREFIX = "model.diffusion_model."
MARK = "double_stream_blocks.0.block.adaLN_modulation.1.bias"  # diffusers' own detection key
PREFIXES = {"clip_l": "text_encoders.clip_l.transformer.", "clip_g": "text_encoders.clip_g.transformer.",
            "t5xxl": "text_encoders.t5xxl.transformer.", "llama3_8b": "text_encoders.llama.transformer."}
T5_TOKENS = LLAMA_TOKENS = 128  # ComfyUI's (min and max) and the pipeline's max_sequence_length
CLIP_TOKENS = 77

# The published transformer (HiDream-ai/HiDream-I1-Full transformer/config.json; ComfyUI's detection).
LLAMA_LAYERS = [min(i, 31) for i in range(48)]  # one hidden state per block: 0..31, then the last again
TRANSFORMER = dict(patch_size=2, in_channels=16, out_channels=16, num_layers=16, num_single_layers=32,
                   attention_head_dim=128, num_attention_heads=20, caption_channels=[4096, 4096], text_emb_dim=2048,
                   num_routed_experts=4, num_activated_experts=2, axes_dims_rope=[64, 32, 32],
                   max_resolution=[128, 128], llama_layers=LLAMA_LAYERS)
# Tiny ones: 32 wide, one block of each kind; CLIP-L keeps its published width (768: what tells a CLIP-L
# file with a projection from a bigG one) with one layer; the others 32 wide.
TINY_TRANSFORMER = dict(TRANSFORMER, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                        caption_channels=[32, 32], text_emb_dim=64, axes_dims_rope=[8, 4, 4], llama_layers=[0, 1])
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 64, 64], layers_per_block=1,
                latent_channels=16, norm_num_groups=32, sample_size=64, use_quant_conv=False,
                use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159)
TINY_CLIP_L = dict(hidden_size=768, intermediate_size=64, num_hidden_layers=1, num_attention_heads=12,
                   max_position_embeddings=128, hidden_act="quick_gelu", projection_dim=32)
TINY_CLIP_G = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                   max_position_embeddings=128, hidden_act="gelu", projection_dim=32)
TINY_T5 = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=32,
               relative_attention_max_distance=128, feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6)
TINY_LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
                  num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-5, rope_theta=500000.0,
                  max_position_embeddings=131072)


def is_folder(index: dict, denoiser: dict, text_encoder: dict) -> bool:
    return index.get("_class_name") == "HiDreamImagePipeline"


def is_checkpoint(state: dict) -> bool:
    return has_prefix(state, PREFIXES["llama3_8b"]) and DENOISER_PREFIX + MARK in state


def is_denoiser(state: dict, prefix: str) -> bool:
    return prefix + MARK in state and prefix + "caption_projection.0.linear.weight" in state


def is_denoiser_config(config: dict) -> bool:
    return config.get("_class_name") == "HiDreamImageTransformer2DModel"


FAMILY = Family(
    name="hidream", label="HiDream I1", published="HiDream-ai/HiDream-I1-Full",
    pipeline="HiDreamImagePipeline", denoiser_class="HiDreamImageTransformer2DModel", vae_class="AutoencoderKL",
    text_encoders=(
        TextEncoder("text_encoder", "clip_l", PREFIXES["clip_l"], "hf", "CLIPTextModelWithProjection", projection=True),
        TextEncoder("text_encoder_2", "clip_g", PREFIXES["clip_g"], "hf", "CLIPTextModelWithProjection",
                    projection=True, pad_token="!"),
        TextEncoder("text_encoder_3", "t5xxl", PREFIXES["t5xxl"], "hf", "T5EncoderModel", tokenizer_class="T5TokenizerFast"),
        TextEncoder("text_encoder_4", "llama3_8b", PREFIXES["llama3_8b"], "hf", "LlamaForCausalLM",
                    tokenizer_class="PreTrainedTokenizerFast"),
    ),
    conditioning=Conditioning("EncodeTextHiDream", pooled=True),
    latent=LatentFormat(channels=16, scale=0.3611, shift=0.1159, downscale=8),
    # ComfyUI's default sampling of a HiDream file (shift 1: the E1 templates set none; the I1 ones set
    # ModelSamplingSD3); the published folders bring their own scheduler (Full: shift 3)
    sampling=Sampling("flow", shift=1.0, multiplier=1000),
    scheduler=dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=1.0,
                   use_dynamic_shifting=False),
    default_size=1024,
    tiny=Tiny(denoiser=TINY_TRANSFORMER, vae=TINY_VAE, folder="tiny-hidream",
              text_encoders={"text_encoder": TINY_CLIP_L, "text_encoder_2": TINY_CLIP_G, "text_encoder_3": TINY_T5,
                             "text_encoder_4": TINY_LLAMA}),
    is_folder=is_folder, is_checkpoint=is_checkpoint, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    denoiser_folder="transformer", denoiser_prefix=DENOISER_PREFIX, vae_prefix="vae.",
    denoiser_converter="convert_hidream_transformer_to_diffusers",
    clip_types=("hidream",), runtime="nodes.families.hidream.runtime",
)

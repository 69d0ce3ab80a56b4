"""Qwen-Image (Qwen/Qwen-Image, -2512, and the editing models -Edit, -Edit-2509, -Edit-2511): a
dual-stream MMDiT (diffusers' QwenImageTransformer2DModel, 60 blocks of 24 x 128) on 16-channel
latents of a Wan-2.1-style causal 3D VAE (AutoencoderKLQwenImage, one frame, per-channel mean and
std), Qwen2.5-VL 7B's last hidden state as the text features, flow matching.

The text path (ComfyUI's CLIPLoader type "qwen_image" with qwen_2.5_vl_7b_fp8_scaled.safetensors;
diffusers' pipelines alike): the prompt in a chat template with a system prompt (TEMPLATE; editing:
EDIT_TEMPLATE, the images as `<|vision_start|><|image_pad|><|vision_end|>` placeholders, "Picture N: "
before each for Edit Plus), the system turn and "<|im_start|>user\\n" dropped from the features (the
pipelines drop a fixed 34 / 64 tokens, ComfyUI finds the second <|im_start|>; the same for the
published tokenizer). Images reach the language model through the vision tower.

Sampling: ComfyUI's discrete flow with multiplier 1 (timestep = sigma; the pipelines feed
1000 sigma / 1000) and shift 1.15 unless ModelSamplingAuraFlow sets one (the templates: 3.1); the
transformer predicts the velocity (denoised = x - sigma v). The latent image is packed into 2 x 2
patches (64 features a token); reference latents (editing) follow as more tokens, each image its own
frame index of the rotary positions (ComfyUI's "index" reference method; "index_timestep_zero" for
-Edit-2511, whose reference tokens get time 0: diffusers' zero_cond_t).

Latents: Loom's LATENT holds (z - mean) / std per channel (diffusers' pipelines' and ComfyUI's Wan21
latent format: scale 1, no shift); the VAE as Loom sees it (nodes.families.qwen_image.vae) does it.

Single files (ComfyUI's): the transformer with diffusers' own key names (ComfyUI's module names are
diffusers'; `model.diffusion_model.` in a whole checkpoint; -Edit-2511 carries a
`__index_timestep_zero__` marker), plain fp8 or bf16; the VAE in the original Wan layout
(vae/qwen_image_vae.safetensors; diffusers' convert_wan_vae_to_diffusers); the text encoder:
nodes.loading.encoders.qwen25vl.
"""
from __future__ import annotations

from ...loading.model_files import has_prefix
from ..spec import Conditioning, Family, LatentFormat, Sampling, TextEncoder, Tiny

TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
            "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
            "<|im_start|>assistant\n")
EDIT_SYSTEM = ("<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, "
               "objects, background), then explain how the user's text instruction should alter or modify the "
               "image. Generate a new image that meets the user's requirements while maintaining consistency with "
               "the original input where appropriate.<|im_end|>\n<|im_start|>user\n")
EDIT_TEMPLATE = EDIT_SYSTEM + "{}<|im_end|>\n<|im_start|>assistant\n"  # Edit Plus: "Picture N: " blocks before {}
VISION_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"
IMAGE_TEMPLATE = EDIT_SYSTEM + VISION_BLOCK + "{}<|im_end|>\n<|im_start|>assistant\n"  # Edit: one image
PICTURE = "Picture {}: " + VISION_BLOCK
PAD_TOKEN = "<|endoftext|>"
DENOISER_PREFIX = "model.diffusion_model."
TEXT_ENCODER_PREFIX = "text_encoders.qwen25_7b.transformer."  # in a whole ComfyUI checkpoint
MARK = "transformer_blocks.0.img_mod.1.weight"  # with txt_norm: Qwen-Image's (Flux has img_mod.lin)
TXT_NORM = "txt_norm.weight"
ZERO_COND_MARK = "__index_timestep_zero__"  # ComfyUI's mark of -Edit-2511 (diffusers' zero_cond_t)

# The published transformer (Qwen/Qwen-Image transformer/config.json) and scheduler.
TRANSFORMER = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                   num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False,
                   axes_dims_rope=(16, 56, 56))
PUBLISHED_SCHEDULER = dict(_class_name="FlowMatchEulerDiscreteScheduler", base_image_seq_len=256, base_shift=0.5,
                           max_image_seq_len=8192, max_shift=0.9, num_train_timesteps=1000, shift=1.0,
                           shift_terminal=0.02, time_shift_type="exponential", use_dynamic_shifting=True)
# Wan 2.1's latent statistics (diffusers' AutoencoderKLQwenImage defaults, ComfyUI's Wan21 format).
VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
           temperal_downsample=[False, True, True], dropout=0.0)

# Tiny ones: 2 blocks of 2 x 16, a 16-wide text model (its rotary sections [2, 3, 3] fill a 16-wide
# head: qwen25vl's rule), a 2-block vision tower of 80-wide heads, a VAE of base width 8 (its
# converter expects 2 resnets a level).
TINY_TRANSFORMER = dict(TRANSFORMER, num_layers=2, attention_head_dim=16, num_attention_heads=2,
                        joint_attention_dim=16, axes_dims_rope=(4, 6, 6))
TINY_VAE = dict(VAE, base_dim=8)
TINY_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=1,
                 num_key_value_heads=1, rms_norm_eps=1e-6, max_position_embeddings=128000,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]})
TINY_VISION = dict(depth=2, hidden_size=160, intermediate_size=64, num_heads=2, out_hidden_size=16, patch_size=14,
                   temporal_patch_size=2, spatial_merge_size=2, window_size=112, fullatt_block_indexes=[])


def is_folder(index: dict, denoiser: dict, text_encoder: dict) -> bool:
    return index.get("_class_name") in ("QwenImagePipeline", "QwenImageEditPipeline", "QwenImageEditPlusPipeline")


def is_checkpoint(state: dict) -> bool:
    return has_prefix(state, TEXT_ENCODER_PREFIX) and DENOISER_PREFIX + MARK in state


def is_denoiser(state: dict, prefix: str) -> bool:
    return prefix + MARK in state and prefix + TXT_NORM in state


def is_denoiser_config(config: dict) -> bool:
    return config.get("_class_name") == "QwenImageTransformer2DModel"


FAMILY = Family(
    name="qwen_image", label="Qwen-Image", published="Qwen/Qwen-Image",
    pipeline="QwenImagePipeline", denoiser_class="QwenImageTransformer2DModel", vae_class="AutoencoderKLQwenImage",
    text_encoders=(TextEncoder("text_encoder", "qwen25_7b", TEXT_ENCODER_PREFIX, "hf",
                               "Qwen2_5_VLForConditionalGeneration", pad_token=PAD_TOKEN,
                               tokenizer_class="Qwen2Tokenizer"),),
    conditioning=Conditioning("CLIPTextEncode", hidden_layer=-1),
    latent=LatentFormat(channels=16, scale=1.0, shift=0.0, downscale=8, packed=2),
    sampling=Sampling("flow", shift=1.15, multiplier=1.0),
    # What ComfyUI samples a Qwen-Image file with (its model sampling: shift 1.15, static); a diffusers
    # folder keeps its own (PUBLISHED_SCHEDULER: resolution-dependent shift).
    scheduler=dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=1.15,
                   use_dynamic_shifting=False),
    default_size=1328,
    tiny=Tiny(denoiser=TINY_TRANSFORMER, vae=TINY_VAE,
              text_encoders={"text_encoder": dict(TINY_TEXT, vision_config=TINY_VISION)}, folder="tiny-qwen-image"),
    is_folder=is_folder, is_checkpoint=is_checkpoint, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    denoiser_folder="transformer", denoiser_prefix=DENOISER_PREFIX, vae_prefix="vae.",
    denoiser_converter="",  # ComfyUI's file holds diffusers' key names: none needed
    clip_types=("qwen_image",), runtime="nodes.families.qwen_image.runtime",
)

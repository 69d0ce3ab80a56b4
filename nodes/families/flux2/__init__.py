"""Flux.2 Dev (black-forest-labs/FLUX.2-dev): a Flux-style DiT (diffusers' Flux2Transformer2DModel,
double- and single-stream blocks, 4-axis rotary positions, embedded guidance) on 32-channel latents of
its own VAE (AutoencoderKLFlux2), Mistral Small 3.x as text encoder (hidden states 10, 20 and 30
stacked per token), flow matching. Flux.2 Klein (nodes.families.flux2_klein) is the same transformer
without the guidance embedding, with Qwen3 as text encoder; both share this package's torch side.

Latents (ComfyUI's and Loom's LATENT alike): the VAE's 32 channels at 1/8, cut into 2x2 patches
(128 channels at 1/16) and normalised by the VAE's batch-norm statistics, (z - running_mean) /
sqrt(running_var + eps); nodes.families.flux2.vae does both inside VAEEncode / VAEDecode, so a
LATENT is what the transformer reads (ComfyUI's latent format Flux2: identity) and
EmptyFlux2LatentImage's (B, 128, H/16, W/16) zeros fit. Each latent pixel is one token.

Text (ComfyUI's CLIPLoader type "flux2"): Dev writes the prompt in Mistral's format with the pipeline's
system prompt, `<s>[SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]{prompt}[/INST]`, unpadded; ComfyUI's model
then pads the conditioning with zeros in front to 512 tokens. Klein: Qwen's chat template with an
empty thinking block, padded to 512 tokens with the pad token and an attention mask (ComfyUI and the
pipeline alike), hidden states 9, 18 and 27.

Sampling: ComfyUI's Flux2 model sampling (ModelSamplingFlux, shift 2.02: sigma = e^2.02 t / (1 + (e^2.02
- 1) t), timestep = sigma); its templates give their own sigmas (Flux2Scheduler). The transformer is
fed t = sigma and predicts the velocity; Dev embeds the guidance (FluxGuidance; 3.5 when none is set,
ComfyUI's default), Klein base takes CFG.

Single files (ComfyUI's): the transformer in BFL's layout (`double_blocks.N.img_attn.qkv`,
`single_blocks.N.linear1`, `img_in`, `txt_in`, `time_in`, `guidance_in`, `*_modulation.lin`), converted by
diffusers' convert_flux2_transformer_checkpoint_to_diffusers; the VAE (flux2-vae.safetensors) in the LDM
layout with `bn.running_mean` / `bn.running_var`; text encoders by nodes.loading.encoders.
"""
from __future__ import annotations

import math

from ...loading.model_files import has_prefix
from ..spec import Conditioning, Family, LatentFormat, Sampling, TextEncoder, Tiny

DENOISER_PREFIX = "model.diffusion_model."
MARK = "single_stream_modulation.lin.weight"  # Flux.2's shared modulation (diffusers' marker too)
GUIDANCE_KEY = "guidance_in.in_layer.weight"  # Dev embeds guidance, Klein does not
SHIFT = 2.02  # ComfyUI's Flux2 sampling_settings (ModelSamplingFlux: an exponent)
DEFAULT_GUIDANCE = 3.5  # ComfyUI's Flux models' guidance when no FluxGuidance set one
TEXT_TOKENS = 512  # ComfyUI pads Flux.2's conditioning to 512 tokens
SYSTEM_MESSAGE = ("You are an AI that reasons about image descriptions. You give structured responses focusing on "
                  "object relationships, object\nattribution and actions without speculation.")
DEV_TEMPLATE = "[SYSTEM_PROMPT]" + SYSTEM_MESSAGE + "[/SYSTEM_PROMPT][INST]{}[/INST]"  # after <s>
DEV_LAYERS = (10, 20, 30)

# The published transformer (black-forest-labs/FLUX.2-dev transformer/config.json).
TRANSFORMER = dict(patch_size=1, in_channels=128, num_layers=8, num_single_layers=48, attention_head_dim=128,
                   num_attention_heads=48, joint_attention_dim=15360, timestep_guidance_channels=256, mlp_ratio=3.0,
                   axes_dims_rope=[32, 32, 32, 32], rope_theta=2000, eps=1e-6, guidance_embeds=True)
VAE = dict(latent_channels=32, block_out_channels=[128, 256, 512, 512], layers_per_block=2, batch_norm_eps=1e-4)

# Tiny ones: 2 heads of 16, one block of each kind; the text widths those of the tiny encoders, stacked 3x.
TINY_TEXT_WIDTH = 16
TINY_TRANSFORMER = dict(TRANSFORMER, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                        joint_attention_dim=3 * TINY_TEXT_WIDTH, axes_dims_rope=[4, 4, 4, 4])
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 32, 32], layers_per_block=1,
                latent_channels=32, norm_num_groups=32, sample_size=64, batch_norm_eps=1e-4)
TINY_MISTRAL = dict(hidden_size=TINY_TEXT_WIDTH, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
                    head_dim=8, num_hidden_layers=30, max_position_embeddings=1024, rms_norm_eps=1e-5,
                    rope_theta=1000000000.0, vocab_size=131072)


def sampling() -> Sampling:
    """ModelSamplingFlux(shift) is the flow shift of exp(shift), timestep = sigma."""
    return Sampling("flow", shift=math.exp(SHIFT), multiplier=1.0)


# ComfyUI's sampling as a scheduler config (what a MODEL without a ModelSampling node samples with); the
# published one shifts by the image size instead (its pipelines' mu; Flux2Scheduler's sigmas do as they do).
SCHEDULER = dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=math.exp(SHIFT),
                 use_dynamic_shifting=False)


def is_flux2(state: dict, prefix: str) -> bool:
    return prefix + MARK in state and prefix + "img_in.weight" in state


def is_folder(index: dict, denoiser: dict, text_encoder: dict) -> bool:
    return index.get("_class_name") == "Flux2Pipeline"


def is_denoiser(state: dict, prefix: str) -> bool:
    return is_flux2(state, prefix) and prefix + GUIDANCE_KEY in state


def is_denoiser_config(config: dict) -> bool:
    return config.get("_class_name") == "Flux2Transformer2DModel" and config.get("guidance_embeds", True)


def never(*_) -> bool:
    return False


FAMILY = Family(
    name="flux2", label="Flux.2 Dev", published="black-forest-labs/FLUX.2-dev",
    pipeline="Flux2Pipeline", denoiser_class="Flux2Transformer2DModel", vae_class="AutoencoderKLFlux2",
    text_encoders=(TextEncoder("text_encoder", "mistral3_24b", "text_encoders.mistral3_24b.transformer.", "hf",
                               "AutoModel", tokenizer_class="AutoTokenizer"),),
    conditioning=Conditioning("CLIPTextEncode"),
    latent=LatentFormat(channels=128, scale=1.0, shift=0.0, downscale=16),
    sampling=sampling(), scheduler=SCHEDULER, default_size=1024,
    tiny=Tiny(denoiser=TINY_TRANSFORMER, vae=TINY_VAE, text_encoders={"text_encoder": TINY_MISTRAL},
              folder="tiny-flux2"),
    is_folder=is_folder, is_checkpoint=never, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    denoiser_folder="transformer", denoiser_prefix=DENOISER_PREFIX, vae_prefix="vae.",
    denoiser_converter="convert_flux2_transformer_checkpoint_to_diffusers",
    clip_types=("flux2",), runtime="nodes.families.flux2.runtime",
)

"""Stable Diffusion XL base: CLIP ViT-L and OpenCLIP bigG (pooled, projected), both at their
penultimate layer and concatenated; a UNet with the text_time added embedding (pooled text + 6 size
ids); the 0.13025 latent scale; epsilon prediction with Euler."""
from __future__ import annotations

from ..loading.clip_bpe import OPEN_CLIP_PAD
from ..loading.model_files import has_prefix
from . import sd_common as sd
from .spec import Conditioning, Family, LatentFormat, Sampling, TextEncoder, Tiny

SCHEDULER = dict(_class_name="EulerDiscreteScheduler", **sd.BETAS, steps_offset=1, timestep_spacing="leading",
                 interpolation_type="linear", use_karras_sigmas=False, prediction_type="epsilon")
BIG_G = TextEncoder("text_encoder_2", "clip_g", "conditioner.embedders.1.model.", "open_clip",
                    "CLIPTextModelWithProjection", projection=True, pad_token=OPEN_CLIP_PAD)
TINY_UNET = dict(sd.TINY_LINEAR_UNET, cross_attention_dim=64, transformer_layers_per_block=(1, 2),
                 addition_embed_type="text_time", addition_time_embed_dim=sd.TINY_TIME_IDS_DIM,
                 projection_class_embeddings_input_dim=32 + 6 * sd.TINY_TIME_IDS_DIM)


def is_folder(index: dict, unet: dict, text_encoder: dict) -> bool:
    return sd.xl_folder_kind(index, unet) == "base"


def is_checkpoint(state: dict) -> bool:
    return has_prefix(state, BIG_G.prefix)


def is_denoiser(state: dict, prefix: str) -> bool:
    return sd.xl_unet_kind(state, prefix) == "base"


def is_denoiser_config(config: dict) -> bool:
    return sd.xl_config_kind(config) == "base"


FAMILY = Family(
    name="sdxl", label="Stable Diffusion XL", published="stabilityai/stable-diffusion-xl-base-1.0",
    pipeline="StableDiffusionXLPipeline", denoiser_class="UNet2DConditionModel", vae_class="AutoencoderKL",
    text_encoders=(TextEncoder("text_encoder", "clip_l", "conditioner.embedders.0.transformer.", "hf",
                               "CLIPTextModel"), BIG_G),
    conditioning=Conditioning("EncodeTextSDXL", hidden_layer=-2, pooled=True, size_ids=6),
    latent=LatentFormat(channels=4, scale=0.13025),
    sampling=Sampling("epsilon"),
    scheduler=SCHEDULER,
    default_size=1024,
    tiny=Tiny(denoiser=TINY_UNET, vae=sd.TINY_VAE_8X,
              text_encoders={"text_encoder": sd.TINY_CLIP, "text_encoder_2": sd.TINY_OPEN_CLIP}, folder="tiny-sdxl"),
    is_folder=is_folder, is_checkpoint=is_checkpoint, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    clip_types=("sdxl",),
)

"""Stable Diffusion 1.x: one CLIP ViT-L text encoder (quick-GELU), a UNet with convolutional
attention projections (8 heads), the 0.18215 latent scale, epsilon prediction with PNDM."""
from __future__ import annotations

from ..loading.model_files import has_prefix
from . import sd_common as sd
from .spec import Conditioning, Family, LatentFormat, Sampling, TextEncoder, Tiny


def is_folder(index: dict, unet: dict, text_encoder: dict) -> bool:
    return (sd.is_unet_config(unet) and sd.xl_folder_kind(index, unet) is None and not sd.opens_with_gelu(text_encoder)
            and not unet.get("use_linear_projection"))


def is_checkpoint(state: dict) -> bool:
    return has_prefix(state, "cond_stage_model.transformer.")


def is_denoiser(state: dict, prefix: str) -> bool:
    return sd.is_unet(state, prefix) and sd.xl_unet_kind(state, prefix) is None and not sd.linear_projections(state, prefix)


def is_denoiser_config(config: dict) -> bool:
    return sd.is_unet_config(config) and sd.xl_config_kind(config) is None and not config.get("use_linear_projection")


FAMILY = Family(
    name="sd1", label="Stable Diffusion 1.x", published="stable-diffusion-v1-5/stable-diffusion-v1-5",
    pipeline="StableDiffusionPipeline", denoiser_class="UNet2DConditionModel", vae_class="AutoencoderKL",
    text_encoders=(TextEncoder("text_encoder", "clip_l", "cond_stage_model.transformer.", "hf", "CLIPTextModel"),),
    conditioning=Conditioning("EncodeText", hidden_layer=-1),
    latent=LatentFormat(channels=4, scale=0.18215),
    sampling=Sampling("epsilon"),
    scheduler=dict(_class_name="PNDMScheduler", **sd.BETAS, skip_prk_steps=True, steps_offset=1,
                   set_alpha_to_one=False, clip_sample=False),
    default_size=512,
    tiny=Tiny(denoiser=sd.TINY_UNET, vae=sd.TINY_VAE, text_encoders={"text_encoder": sd.TINY_CLIP}, folder="tiny-sd",
              pipeline_options=sd.NO_SAFETY_CHECKER),
    is_folder=is_folder, is_checkpoint=is_checkpoint, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    denoiser_overrides={"attention_head_dim": 8},  # 8 heads per transformer: shapes cannot tell
    clip_types=("stable_diffusion",),
)

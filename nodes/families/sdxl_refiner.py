"""Stable Diffusion XL refiner: OpenCLIP bigG alone (pooled, projected, penultimate layer); the
text_time embedding takes an aesthetic score instead of the target size (5 ids); SDXL's latents and
scheduler. Its pipeline is the img2img one (it refines the base's latents)."""
from __future__ import annotations

from dataclasses import replace

from ..loading.model_files import has_prefix
from . import sd_common as sd
from .sdxl import BIG_G, SCHEDULER
from .sdxl import TINY_UNET as BASE_TINY_UNET
from .spec import Conditioning, Family, LatentFormat, Sampling, Tiny


def is_folder(index: dict, unet: dict, text_encoder: dict) -> bool:
    return sd.xl_folder_kind(index, unet) == "refiner"


def is_checkpoint(state: dict) -> bool:
    return has_prefix(state, sd.SGM_SD2_PREFIX) and sd.is_sgm_xl(state)


def is_denoiser(state: dict, prefix: str) -> bool:
    return sd.xl_unet_kind(state, prefix) == "refiner"


def is_denoiser_config(config: dict) -> bool:
    return sd.xl_config_kind(config) == "refiner"


FAMILY = Family(
    name="sdxl_refiner", label="Stable Diffusion XL refiner", published="stabilityai/stable-diffusion-xl-refiner-1.0",
    pipeline="StableDiffusionXLImg2ImgPipeline", denoiser_class="UNet2DConditionModel", vae_class="AutoencoderKL",
    text_encoders=(replace(BIG_G, prefix="conditioner.embedders.0.model."),),
    conditioning=Conditioning("EncodeTextSDXL", hidden_layer=-2, pooled=True, size_ids=5),
    latent=LatentFormat(channels=4, scale=0.13025),
    sampling=Sampling("epsilon"),
    scheduler=SCHEDULER,
    default_size=1024,
    tiny=Tiny(denoiser=dict(BASE_TINY_UNET, cross_attention_dim=32,
                            projection_class_embeddings_input_dim=32 + 5 * sd.TINY_TIME_IDS_DIM),
              vae=sd.TINY_VAE_8X, text_encoders={"text_encoder_2": sd.TINY_OPEN_CLIP}, folder="tiny-sdxl-refiner",
              pipeline_options=dict(requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)),
    is_folder=is_folder, is_checkpoint=is_checkpoint, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    clip_types=("stable_diffusion",),
)

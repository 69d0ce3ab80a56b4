"""Stable Diffusion 2.x: one OpenCLIP ViT-H text encoder (GELU, its penultimate layer), a UNet with
linear attention projections (64-channel heads), the 0.18215 latent scale, v-prediction with DDIM
(the 768-v models; 512-base and inpainting are epsilon).

A diffusers folder says its prediction type in its scheduler config. A single file cannot; ComfyUI's
rule is used: a `v_pred` key means v-prediction, an inpainting UNet (9 input channels) is epsilon,
else the spread of one LayerNorm bias tells (standard deviation of
`output_blocks.11.1.transformer_blocks.0.norm1.bias` above 0.09: v-prediction, as in 2.x-768 models).
"""
from __future__ import annotations

from ..loading.clip_bpe import OPEN_CLIP_PAD
from ..loading.model_files import has_prefix
from . import sd_common as sd
from .spec import Conditioning, Family, LatentFormat, Sampling, TextEncoder, Tiny

V_PRED_NORM_STD = 0.09  # ComfyUI's threshold (see the module docstring)


def is_folder(index: dict, unet: dict, text_encoder: dict) -> bool:
    return sd.xl_folder_kind(index, unet) is None and (sd.opens_with_gelu(text_encoder)
                                                        or bool(unet.get("use_linear_projection")))


def is_checkpoint(state: dict) -> bool:
    if has_prefix(state, "conditioner.embedders.1.model."):  # SDXL base
        return False
    return has_prefix(state, "cond_stage_model.model.") or (has_prefix(state, sd.SGM_SD2_PREFIX)
                                                           and not sd.is_sgm_xl(state))


def is_denoiser(state: dict, prefix: str) -> bool:
    return sd.xl_unet_kind(state, prefix) is None and sd.linear_projections(state, prefix)


def is_denoiser_config(config: dict) -> bool:
    return sd.xl_config_kind(config) is None and bool(config.get("use_linear_projection"))


def prediction_of_file(state: dict, prefix: str) -> str:
    conv_in = state.get(prefix + "input_blocks.0.0.weight")
    if conv_in is not None and conv_in.shape[1] == 9:
        return "epsilon"
    norm = state.get(prefix + "output_blocks.11.1.transformer_blocks.0.norm1.bias")
    if norm is None:  # not the published layout (a small model): SD 2.x's usual 768-v setting
        return "v_prediction"
    return "v_prediction" if float(norm.float().std(unbiased=False)) > V_PRED_NORM_STD else "epsilon"


FAMILY = Family(
    name="sd2", label="Stable Diffusion 2.x", published="stabilityai/stable-diffusion-2-1",
    pipeline="StableDiffusionPipeline", denoiser_class="UNet2DConditionModel", vae_class="AutoencoderKL",
    text_encoders=(TextEncoder("text_encoder", "clip_h", "cond_stage_model.model.", "open_clip", "CLIPTextModel",
                               other_prefixes=(sd.SGM_SD2_PREFIX,), pad_token=OPEN_CLIP_PAD),),
    conditioning=Conditioning("EncodeText", hidden_layer=-2),
    latent=LatentFormat(channels=4, scale=0.18215),
    sampling=Sampling("v_prediction"),
    scheduler=dict(_class_name="DDIMScheduler", **sd.BETAS, clip_sample=False, set_alpha_to_one=False,
                   steps_offset=1, prediction_type="v_prediction"),
    default_size=768,
    tiny=Tiny(denoiser=dict(sd.TINY_LINEAR_UNET, cross_attention_dim=32), vae=sd.TINY_VAE_8X,
              text_encoders={"text_encoder": sd.TINY_OPEN_CLIP}, folder="tiny-sd2",
              pipeline_options=sd.NO_SAFETY_CHECKER),
    is_folder=is_folder, is_checkpoint=is_checkpoint, is_denoiser=is_denoiser, is_denoiser_config=is_denoiser_config,
    prediction_of_file=prediction_of_file,
    denoiser_overrides={"upcast_attention": True},  # as 2.1's config; only matters in half precision
    clip_types=("stable_diffusion",),
)

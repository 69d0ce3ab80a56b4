"""Model families and how to tell them apart, from a diffusers folder or from a checkpoint's keys and
tensor shapes (no download, no config file needed).

| family | text encoders | UNet | VAE scale | scheduler (the published repo's) |
|---|---|---|---|---|
| sd1 | CLIP ViT-L (quick-GELU) | conv attention projections | 0.18215 | PNDM, epsilon |
| sd2 | OpenCLIP ViT-H (GELU, penultimate layer) | linear projections, 64-channel heads | 0.18215 | DDIM, v-prediction (768-v) |
| sdxl | CLIP ViT-L + OpenCLIP bigG (pooled, projected) | text_time added embedding (6 size ids) | 0.13025 | Euler, epsilon |
| sdxl_refiner | OpenCLIP bigG only | text_time with an aesthetic score (5 ids) | 0.13025 | Euler, epsilon |

Single files keep the LDM/SGM key prefixes: `cond_stage_model.transformer.` (CLIP-L, SD 1.x),
`cond_stage_model.model.` (OpenCLIP, SD 2.x), `conditioner.embedders.0.transformer.` +
`conditioner.embedders.1.model.` (SDXL base), `conditioner.embedders.0.model.` (SDXL refiner, or SD 2.x
in the SGM layout when its UNet's context is 1024 wide). These are structural facts, so they hold for
any size of model, the tiny test ones included; diffusers' own `infer_diffusers_model_type` agrees on
the real layouts (tests/test_model_families.py) but only knows the published sizes.

SD 2.x v-prediction: a diffusers folder says it in its scheduler config. A single file cannot;
ComfyUI's rule is used: a `v_pred` key means v-prediction, an inpainting UNet (9 input channels) is
epsilon, else the spread of one LayerNorm bias tells (standard deviation of
`output_blocks.11.1.transformer_blocks.0.norm1.bias` above 0.09: v-prediction, as in 2.x-768 models).
"""
from __future__ import annotations

import json
from pathlib import Path

from .model_files import has_prefix

SD1, SD2, SDXL, SDXL_REFINER = "sd1", "sd2", "sdxl", "sdxl_refiner"
FAMILIES = (SD1, SD2, SDXL, SDXL_REFINER)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# where each family's text encoders sit in a single file: (prefix, layout) per encoder slot
TEXT_ENCODER_PREFIXES = {
    SD1: {"text_encoder": ("cond_stage_model.transformer.", "hf")},
    SD2: {"text_encoder": ("cond_stage_model.model.", "open_clip")},
    SDXL: {"text_encoder": ("conditioner.embedders.0.transformer.", "hf"),
           "text_encoder_2": ("conditioner.embedders.1.model.", "open_clip")},
    SDXL_REFINER: {"text_encoder_2": ("conditioner.embedders.0.model.", "open_clip")},
}
SGM_SD2_PREFIX = "conditioner.embedders.0.model."  # SD 2.x saved in the SGM layout

VAE_SCALING = {SD1: 0.18215, SD2: 0.18215, SDXL: 0.13025, SDXL_REFINER: 0.13025}
DEFAULT_SIZE = {SD1: 512, SD2: 768, SDXL: 1024, SDXL_REFINER: 1024}

_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
SD1_SCHEDULER = dict(_class_name="PNDMScheduler", **_BETAS, skip_prk_steps=True, steps_offset=1,
                     set_alpha_to_one=False, clip_sample=False)
SD2_SCHEDULER = dict(_class_name="DDIMScheduler", **_BETAS, clip_sample=False, set_alpha_to_one=False,
                     steps_offset=1, prediction_type="v_prediction")
SDXL_SCHEDULER = dict(_class_name="EulerDiscreteScheduler", **_BETAS, steps_offset=1, timestep_spacing="leading",
                      interpolation_type="linear", use_karras_sigmas=False, prediction_type="epsilon")
SCHEDULERS = {SD1: SD1_SCHEDULER, SD2: SD2_SCHEDULER, SDXL: SDXL_SCHEDULER, SDXL_REFINER: SDXL_SCHEDULER}
V_PRED_NORM_STD = 0.09  # ComfyUI's threshold (see the module docstring)


class UnknownModel(ValueError):
    pass


def scheduler_for(family: str, prediction_type: str | None = None) -> dict:
    """The family's published scheduler config, optionally with another prediction type, with every
    value explicit as a saved diffusers folder has it (so a single file and its folder agree)."""
    import diffusers

    config = dict(SCHEDULERS[family])
    if prediction_type:
        config["prediction_type"] = prediction_type
    explicit = getattr(diffusers, config["_class_name"]).from_config(config).config
    return {"_class_name": config["_class_name"], **{k: v for k, v in explicit.items() if not k.startswith("_")}}


# --- single files -------------------------------------------------------------------------------

def family_of_state_dict(sd: dict) -> str:
    """The family of a full checkpoint (UNet + VAE + text encoders) in the LDM/SGM layout."""
    if not has_prefix(sd, UNET_PREFIX):
        raise UnknownModel("holds no UNet (no 'model.diffusion_model.*' keys): not a Stable Diffusion checkpoint")
    if has_prefix(sd, "conditioner.embedders.1.model."):
        return SDXL
    if has_prefix(sd, SGM_SD2_PREFIX):  # the refiner's bigG, or SD 2.x in the SGM layout
        return SDXL_REFINER if UNET_PREFIX + "label_emb.0.0.weight" in sd else SD2
    if has_prefix(sd, "cond_stage_model.model."):
        return SD2
    if has_prefix(sd, "cond_stage_model.transformer."):
        return SD1
    raise UnknownModel("holds no text encoder of SD 1.x, 2.x or XL (no 'cond_stage_model.*' or "
                       "'conditioner.embedders.*' keys)")


def family_of_unet_state_dict(sd: dict, prefix: str = UNET_PREFIX) -> str:
    """The family of an LDM-layout UNet alone: SDXL's added text_time embedding (base or refiner by
    its context width against the embedding's input), else linear projections for SD 2.x."""
    label = sd.get(prefix + "label_emb.0.0.weight")
    context = _context_dim(sd, prefix)
    if label is not None:
        # refiner: pooled (= context, bigG alone) + 5 time ids; base: pooled (< context) + 6 ids
        extra = label.shape[1] - context
        return SDXL_REFINER if extra > 0 and extra % 5 == 0 and _power_of_two(extra // 5) else SDXL
    proj_in = next((v for k, v in sd.items() if k.startswith(prefix) and k.endswith(".proj_in.weight")), None)
    if proj_in is not None and proj_in.ndim == 2:
        return SD2
    return SD1


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _context_dim(sd: dict, prefix: str) -> int:
    for key, value in sd.items():
        if key.startswith(prefix) and key.endswith("attn2.to_k.weight"):
            return value.shape[1]
    raise UnknownModel("the UNet has no cross-attention; not a text-to-image SD model")


def sd2_prediction_type(sd: dict, prefix: str = UNET_PREFIX) -> str:
    if "v_pred" in sd:
        return "v_prediction"
    conv_in = sd.get(prefix + "input_blocks.0.0.weight")
    if conv_in is not None and conv_in.shape[1] == 9:
        return "epsilon"
    norm = sd.get(prefix + "output_blocks.11.1.transformer_blocks.0.norm1.bias")
    if norm is None:  # not the published layout (a small model): SD 2.x's usual 768-v setting
        return "v_prediction"
    return "v_prediction" if float(norm.float().std(unbiased=False)) > V_PRED_NORM_STD else "epsilon"


def prediction_type_of(sd: dict, family: str, prefix: str = UNET_PREFIX) -> str:
    if family == SD2:
        return sd2_prediction_type(sd, prefix)
    return "v_prediction" if "v_pred" in sd else "epsilon"


# --- diffusers folders --------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def family_of_unet_config(config: dict) -> str:
    if config.get("addition_embed_type") == "text_time":
        pooled_plus = config.get("projection_class_embeddings_input_dim") or 0
        time_dim = config.get("addition_time_embed_dim") or 256
        return SDXL_REFINER if pooled_plus - 5 * time_dim == config.get("cross_attention_dim") else SDXL
    return SD2 if config.get("use_linear_projection") else SD1


def family_of_folder(path: Path) -> str:
    """The family of a diffusers pipeline folder, from its model_index.json and UNet config."""
    index = _read_json(path / "model_index.json")
    unet = _read_json(path / "unet" / "config.json")
    if "XL" in index.get("_class_name", "") or unet.get("addition_embed_type") == "text_time":
        return SDXL_REFINER if not (index.get("text_encoder") or [None])[0] else SDXL
    encoder = path / "text_encoder" / "config.json"
    if encoder.is_file() and _read_json(encoder).get("hidden_act") == "gelu":  # OpenCLIP; CLIP-L is quick-GELU
        return SD2
    return family_of_unet_config(unet)

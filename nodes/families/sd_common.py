"""What the Stable Diffusion UNet families (sd1, sd2, sdxl, sdxl_refiner) share: the LDM/SGM key
layout of their single files, their noise schedule, the shape facts that tell them apart, and the
tiny test configs they start from. Not a family itself (it declares no FAMILY).

Single files keep the LDM/SGM key prefixes: `cond_stage_model.transformer.` (CLIP-L, SD 1.x),
`cond_stage_model.model.` (OpenCLIP, SD 2.x), `conditioner.embedders.0.transformer.` +
`conditioner.embedders.1.model.` (SDXL base), `conditioner.embedders.0.model.` (SDXL refiner, or SD 2.x
in the SGM layout when its UNet's context is 1024 wide). These are structural facts, so they hold for
any size of model, the tiny test ones included; diffusers' own `infer_diffusers_model_type` agrees on
the real layouts (tests/test_model_families.py) but only knows the published sizes.
"""
from __future__ import annotations

from .spec import UnknownModel
from ..loading.model_files import has_prefix

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SGM_SD2_PREFIX = "conditioner.embedders.0.model."  # SD 2.x saved in the SGM layout; the refiner's bigG
LABEL_EMB = "label_emb.0.0.weight"  # SDXL's added (text_time) embedding's input layer

BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)

# --- telling the UNets apart ----------------------------------------------------------------------

def is_sgm_xl(sd: dict) -> bool:
    """A whole file with SDXL's added embedding (base or refiner)."""
    return UNET_PREFIX + LABEL_EMB in sd


def context_dim(sd: dict, prefix: str) -> int:
    for key, value in sd.items():
        if key.startswith(prefix) and key.endswith("attn2.to_k.weight"):
            return value.shape[1]
    raise UnknownModel("the UNet has no cross-attention; not a text-to-image SD model")


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def xl_unet_kind(sd: dict, prefix: str) -> str | None:
    """"refiner" or "base" for a UNet with SDXL's added embedding, else None: the refiner's embedding
    takes the pooled bigG output (as wide as the context) and 5 time ids, the base's a pooled output
    narrower than its context and 6 ids."""
    label = sd.get(prefix + LABEL_EMB)
    if label is None:
        return None
    extra = label.shape[1] - context_dim(sd, prefix)
    return "refiner" if extra > 0 and extra % 5 == 0 and _power_of_two(extra // 5) else "base"


def is_unet(sd: dict, prefix: str) -> bool:
    """An LDM UNet (not a transformer) under the prefix."""
    return has_prefix(sd, prefix + "input_blocks.")


def is_unet_config(config: dict) -> bool:
    """A diffusers UNet config (a transformer's config names another class)."""
    return "UNet" in config.get("_class_name", "UNet2DConditionModel")


def linear_projections(sd: dict, prefix: str) -> bool:
    """SD 2.x and XL project attention in and out with linear layers, SD 1.x with 1x1 convolutions."""
    proj_in = next((v for k, v in sd.items() if k.startswith(prefix) and k.endswith(".proj_in.weight")), None)
    return proj_in is not None and proj_in.ndim == 2


def xl_config_kind(config: dict) -> str | None:
    """The same for a diffusers UNet config."""
    if config.get("addition_embed_type") != "text_time":
        return None
    pooled_plus = config.get("projection_class_embeddings_input_dim") or 0
    time_dim = config.get("addition_time_embed_dim") or 256
    return "refiner" if pooled_plus - 5 * time_dim == config.get("cross_attention_dim") else "base"


def xl_folder_kind(index: dict, unet: dict) -> str | None:
    """A diffusers folder of SDXL: the base has a first text encoder, the refiner none."""
    if "XL" not in index.get("_class_name", "") and unet.get("addition_embed_type") != "text_time":
        return None
    return "base" if (index.get("text_encoder") or [None])[0] else "refiner"


def opens_with_gelu(text_encoder: dict) -> bool:
    """OpenCLIP encoders use GELU, OpenAI's CLIP-L quick-GELU."""
    return text_encoder.get("hidden_act") == "gelu"


# --- tiny test configs (in the spirit of diffusers' own test models) -------------------------------

TINY_UNET = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8)
TINY_VAE = dict(block_out_channels=[32, 64], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=1, sample_size=64,
                scaling_factor=0.18215)
TINY_CLIP = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
                 max_position_embeddings=77, layer_norm_eps=1e-5)
# The other families: the same widths, their own structure: four VAE levels (8x) as the real ones,
# linear projections, GELU for OpenCLIP.
TINY_VAE_8X = dict(TINY_VAE, block_out_channels=[32, 32, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4,
                   up_block_types=["UpDecoderBlock2D"] * 4)
TINY_LINEAR_UNET = dict(TINY_UNET, use_linear_projection=True, attention_head_dim=(1, 1))
TINY_OPEN_CLIP = dict(TINY_CLIP, hidden_act="gelu")
TINY_TIME_IDS_DIM = 8
NO_SAFETY_CHECKER = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)

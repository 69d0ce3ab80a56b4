"""Tiny models of the SD families for the sampling tests: real diffusers/transformers classes with
small configs and seeded random weights, built in memory, put into Loom's Model/Clip bundles the
way a loader would (the loaders themselves are tested elsewhere).

The tokenizer is the tiny SD model's (the `tiny_sd` fixture's folder): a locally made CLIP BPE.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from graph import Env
from nodes.bundles import Clip, Model
from nodes.loaders import LATENT_SCALE_ATTR, scheduler_config
from nodes.schedulers import CHECKPOINT, SchedulerSpec

SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    steps_offset=1, clip_sample=False, set_alpha_to_one=False)
VAE = dict(block_out_channels=[32, 64], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
           up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=1, sample_size=64)
CLIP = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
            max_position_embeddings=77, layer_norm_eps=1e-5)


def context(tmp: Path):
    """What a node's run() reads from the executor: env (CPU, float32) and progress."""
    env = Env.from_data_dir(tmp, models_dir=tmp / "models", device="cpu", dtype="float32")
    return SimpleNamespace(env=env, progress=lambda *args, **kwargs: None, show=lambda **ui: None)


def tokenizer(tiny_sd: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")


def clip_config(tok, **changes):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**{**CLIP, **changes}, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def vae(seed: int, **changes):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**{**VAE, **changes}).eval()


def spec(config: dict) -> SchedulerSpec:
    """The SCHEDULER a loader makes from a checkpoint's scheduler config (50 steps)."""
    return SchedulerSpec(CHECKPOINT, scheduler_config(config), 50, 1.0)


def bundle_unet(unet, vae_model):
    setattr(unet, LATENT_SCALE_ATTR, 2 ** (len(vae_model.config.block_out_channels) - 1))
    return unet.eval()


def sdxl(tiny_sd: Path, refiner: bool = False, seed: int = 0) -> dict:
    """An SDXL base (two text encoders) or refiner (the second only, aesthetic-score time ids)."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tok = tokenizer(tiny_sd)
    torch.manual_seed(seed)
    encoder = None if refiner else CLIPTextModel(clip_config(tok, hidden_act="gelu")).eval()
    torch.manual_seed(seed + 1)
    encoder_2 = CLIPTextModelWithProjection(clip_config(tok, hidden_act="gelu", projection_dim=32)).eval()
    time_ids = 5 if refiner else 6
    torch.manual_seed(seed + 2)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=time_ids * 8 + 32, cross_attention_dim=32 if refiner else 64)
    vae_model = vae(seed + 3, scaling_factor=0.13025)
    config = {**SD_SCHEDULER, "_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading",
              "interpolation_type": "linear"}
    config.pop("clip_sample"), config.pop("set_alpha_to_one")
    family = "sdxl_refiner" if refiner else "sdxl"
    return dict(
        model=Model(bundle_unet(unet, vae_model), spec(config), family=family),
        clip=Clip(None if refiner else tok, encoder, tok, encoder_2, family=family), vae=vae_model,
        scheduler=EulerDiscreteScheduler.from_config(config), tokenizer=tok)


def sd(tiny_sd: Path, family: str = "sd1", in_channels: int = 4, seed: int = 0, scheduler: dict | None = None) -> dict:
    """SD 1.x (the tiny model's UNet shape) or 2.x (linear projections, GELU CLIP, v-prediction);
    in_channels 9: an inpainting UNet."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    tok = tokenizer(tiny_sd)
    sd2 = family == "sd2"
    torch.manual_seed(seed)
    encoder = CLIPTextModel(clip_config(tok, hidden_act="gelu" if sd2 else "quick_gelu")).eval()
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4) if sd2 else 8, use_linear_projection=sd2)
    vae_model = vae(seed + 2, scaling_factor=0.18215)
    config = scheduler or {**SD_SCHEDULER, "_class_name": "DDIMScheduler",
                           "prediction_type": "v_prediction" if sd2 else "epsilon"}
    return dict(model=Model(bundle_unet(unet, vae_model), spec(config), family=family),
                clip=Clip(tok, encoder, family=family), vae=vae_model,
                scheduler=DDIMScheduler.from_config(config), tokenizer=tok)


def controlnet(seed: int = 0, cross_attention_dim: int = 32):
    """A ControlNet for the tiny SD 1.x UNet, its zero convolutions made non-zero (else it does nothing)."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    model = ControlNetModel(block_out_channels=(32, 64), layers_per_block=2, in_channels=4,
                            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                            cross_attention_dim=cross_attention_dim, attention_head_dim=8,
                            conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():
        for module in (model.controlnet_down_blocks, model.controlnet_mid_block):
            for p in module.parameters():
                p.normal_(0, 0.3)
    return model.eval()


def picture(size: int = 64) -> np.ndarray:
    """An RGB uint8 picture with structure (gradients and a checkerboard)."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([x * 255 // size, y * 255 // size, ((x // 8 + y // 8) % 2) * 200 + 30], -1).astype(np.uint8)


def as_image(array: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> IMAGE (1, H, W, 3) in 0..1, as LoadImage makes it."""
    return torch.from_numpy(array.astype(np.float32) / 255.0)[None]

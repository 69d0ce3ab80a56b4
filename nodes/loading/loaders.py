"""Loader nodes: whole checkpoints and their parts, from the models folder (nodes.loading.model_files).

Outputs are the live objects, on the device and dtype of nodes.common: TOKENIZER a transformers
CLIPTokenizer, TEXT_ENCODER a CLIPTextModel (CLIPTextModelWithProjection for SDXL's second
encoder), UNET a UNet2DConditionModel, VAE an AutoencoderKL, SCHEDULER a nodes.schedulers.SchedulerSpec
of kind "checkpoint" and 50 steps (the pipeline default). The loading itself is nodes.loading.checkpoints.
"""
from __future__ import annotations

from pathlib import Path

from graph import Combo, Node, Out

from .bundles import Clip, Model
from .checkpoints import Parts, load_checkpoint, load_text_encoder, load_unet, load_vae, scheduler_config
from ..common import device_of, dtype_of
from ..families import family, family_of_clip_kinds, tag_family
from .model_files import (checkpoint_choices, kind_choices, kind_fingerprint, kind_path, model_path,
                          stat_fingerprint)
from ..schedulers import CHECKPOINT, SchedulerSpec
from .speed import prepare_unet

DEFAULT_STEPS = 50
LATENT_SCALE_ATTR = "loom_latent_scale"  # set on the UNet: image pixels per latent pixel (from the VAE)


PUBLISHED_VAE_SCALE = 8  # every family's published VAE: 8 image pixels per VAE latent pixel


def latent_scale(block_out_channels, name: str | None) -> int:
    """Image pixels per LATENT pixel for a VAE with these blocks: the VAE's own scale, times the patching
    of a family whose LATENT is coarser than its VAE's latents (Flux.2: 2x2 patches, 1/16 published)."""
    patch = family(name).latent.downscale // PUBLISHED_VAE_SCALE if name else 1
    return 2 ** (len(block_out_channels) - 1) * max(1, patch)


def scheduler_spec(config: dict) -> SchedulerSpec:
    return SchedulerSpec(CHECKPOINT, scheduler_config(config), DEFAULT_STEPS, 1.0)


def load_parts(env, path: Path, what: str) -> Parts:
    if not path.exists():
        raise FileNotFoundError(f"{what} is not in the models folder")
    device = device_of(env)
    parts = load_checkpoint(path, device, dtype_of(env, device))
    prepare_unet(parts.unet, env)
    setattr(parts.unet, LATENT_SCALE_ATTR, latent_scale(parts.vae.config.block_out_channels, parts.family))
    for part in (parts.unet, parts.tokenizer, parts.text_encoder, parts.tokenizer_2, parts.text_encoder_2):
        tag_family(part, parts.family)  # the stage nodes ask the family's runtime (nodes.families.runtime_of_part)
    return parts


def bundles(parts: Parts) -> tuple[Model, Clip]:
    """ComfyUI's MODEL and CLIP of a checkpoint's parts."""
    return (Model(parts.unet, scheduler_spec(parts.scheduler_config), parts.family),
            Clip(parts.tokenizer, parts.text_encoder, parts.tokenizer_2, parts.text_encoder_2, parts.family,
                 more=parts.more))


class LoadCheckpoint(Node):
    """Loads a Stable Diffusion model (SD 1.x, 2.x, XL base or refiner) from the models folder: a
    diffusers folder, or a single .safetensors/.ckpt file in the original layout (its family is read
    from its keys, its configs from the tensor shapes). SDXL's second tokenizer and text encoder are
    the last two outputs (the refiner has only those)."""

    category = "loaders"
    model = Combo(checkpoint_choices, model=True, model_kind="checkpoints",
                  tooltip="a diffusers folder or a single-file checkpoint in the models folder")
    outputs = (Out("TOKENIZER", "tokenizer"), Out("TEXT_ENCODER", "text_encoder"), Out("UNET", "unet"),
               Out("VAE", "vae"), Out("SCHEDULER", "scheduler"), Out("TOKENIZER", "tokenizer_2"),
               Out("TEXT_ENCODER", "text_encoder_2"))

    @classmethod
    def fingerprint(cls, env, model=None, **_):
        try:
            return stat_fingerprint(model_path(env, model))
        except (OSError, ValueError, TypeError):
            return None

    def run(self, ctx):
        parts = load_parts(ctx.env, model_path(ctx.env, self.model), f"LoadCheckpoint: model {self.model!r}")
        return (parts.tokenizer, parts.text_encoder, parts.unet, parts.vae, scheduler_spec(parts.scheduler_config),
                parts.tokenizer_2, parts.text_encoder_2)


class LoadUNet(Node):
    """Loads a UNet alone from models/diffusion_models (or models/unet): a diffusers UNet folder, an
    LDM-layout UNet file, or a whole checkpoint's UNet. Its family's scheduler comes with it."""

    category = "loaders"
    unet_name = Combo(kind_choices("diffusion_models"), model=True, model_kind="diffusion_models")
    outputs = (Out("UNET", "unet"), Out("SCHEDULER", "scheduler"))

    @classmethod
    def fingerprint(cls, env, unet_name=None, **_):
        return kind_fingerprint(env, "diffusion_models", unet_name)

    def run(self, ctx):
        path = kind_path(ctx.env, "diffusion_models", self.unet_name, type(self).__name__)
        device = device_of(ctx.env)
        unet, name, config = load_unet(path, device, dtype_of(ctx.env, device))
        prepare_unet(unet, ctx.env)
        vae_config = path.parent / "vae" / "config.json"  # a pipeline folder's UNet: its VAE gives the scale
        scale = family(name).latent.downscale  # else its family's published VAE's
        if path.is_dir() and vae_config.is_file():
            import json

            scale = latent_scale(json.loads(vae_config.read_text(encoding="utf-8"))["block_out_channels"], name)
        setattr(unet, LATENT_SCALE_ATTR, scale)
        tag_family(unet, name)
        return unet, scheduler_spec(config)


class LoadTextEncoder(Node):
    """Loads a text encoder and its tokenizer from models/text_encoders (or models/clip): a
    transformers folder, a CLIP-L / bigG file (Hugging Face layout) or an OpenCLIP ViT-H / bigG file."""

    category = "loaders"
    clip_name = Combo(kind_choices("text_encoders"), model=True, model_kind="text_encoders")
    open_clip = Combo(["clip_h", "clip_g"], default="clip_h",
                      tooltip="an OpenCLIP file of a width no published model has: ViT-H (SD 2.x) or bigG (SDXL)")
    outputs = (Out("TOKENIZER", "tokenizer"), Out("TEXT_ENCODER", "text_encoder"))

    @classmethod
    def fingerprint(cls, env, clip_name=None, **_):
        return kind_fingerprint(env, "text_encoders", clip_name)

    def run(self, ctx):
        path = kind_path(ctx.env, "text_encoders", self.clip_name, type(self).__name__)
        device = device_of(ctx.env)
        kind, tokenizer, encoder = load_text_encoder(path, device, dtype_of(ctx.env, device), self.open_clip)
        encoder.loom_clip_kind = kind
        name = family_of_clip_kinds([kind])  # an encoder that is a whole family's text side
        return tag_family(tokenizer, name), tag_family(encoder, name)


class LoadVAE(Node):
    """Loads a VAE from models/vae: a diffusers folder or a file (LDM or diffusers layout). A file
    alone does not say its latent space: a name with "xl" gets SDXL's scale (0.13025), else SD's."""

    category = "loaders"
    vae_name = Combo(kind_choices("vae"), model=True, model_kind="vae")
    outputs = (Out("VAE", "vae"),)

    @classmethod
    def fingerprint(cls, env, vae_name=None, **_):
        return kind_fingerprint(env, "vae", vae_name)

    def run(self, ctx):
        path = kind_path(ctx.env, "vae", self.vae_name, type(self).__name__)
        device = device_of(ctx.env)
        return load_vae(path, device, dtype_of(ctx.env, device))

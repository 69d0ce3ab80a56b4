"""Loading Stable Diffusion 1.x checkpoints from the models folder.

The models folder may hold diffusers folders (with model_index.json) and single files
(`*.safetensors`, or `*.ckpt` read with `weights_only=True`) in the original LDM key layout; both
may sit one folder deep (e.g. `checkpoints/model.safetensors`).

Outputs are the live objects: TOKENIZER a transformers CLIPTokenizer, TEXT_ENCODER a CLIPTextModel,
UNET a UNet2DConditionModel, VAE an AutoencoderKL (all on the device and dtype of nodes.common),
SCHEDULER a nodes.schedulers.SchedulerSpec of kind "checkpoint" and 50 steps (the pipeline default).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from graph import Combo, Node, Out
from graph.env import safe_join

from .common import device_of, dtype_of
from .schedulers import CHECKPOINT, SchedulerSpec
from .speed import prepare_unet

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
DEFAULT_STEPS = 50
LATENT_SCALE_ATTR = "loom_latent_scale"  # set on the UNet: image pixels per latent pixel (from the VAE)


def list_models(models_dir: str | Path, depth: int = 2) -> list[str]:
    """Diffusers folders and single-file checkpoints under `models_dir`, as relative posix paths."""
    root = Path(models_dir)
    found: list[str] = []

    def walk(folder: Path, level: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for path in entries:
            if path.name.startswith("."):
                continue
            if path.is_dir():
                if (path / "model_index.json").is_file():
                    found.append(path.relative_to(root).as_posix())
                elif level < depth:
                    walk(path, level + 1)
            elif path.suffix.lower() in SINGLE_FILE_SUFFIXES:
                found.append(path.relative_to(root).as_posix())

    walk(root, 1)
    return found


def model_path(env, name: str) -> Path:
    return safe_join(env.models_dir, name)


def stat_fingerprint(path: Path) -> list:
    """mtime and size of a file, or of every file in a folder: a replaced model changes it."""
    if path.is_file():
        st = path.stat()
        return [st.st_mtime_ns, st.st_size]
    parts = []
    for folder, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            st = (Path(folder) / name).stat()
            parts.append([os.path.relpath(Path(folder) / name, path), st.st_mtime_ns, st.st_size])
    return parts


def load_diffusers_folder(path: Path, device, dtype) -> tuple:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", dtype=dtype).to(device).eval()
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", dtype=dtype).to(device).eval()
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", dtype=dtype).to(device).eval()
    config = json.loads((path / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    return tokenizer, text_encoder, unet, vae, config


def scheduler_config(raw: dict) -> dict:
    """The config as diffusers reads it (defaults filled in), with its `_class_name`."""
    import diffusers
    from diffusers import SchedulerMixin

    name = raw.get("_class_name", "")
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"unknown scheduler class {name!r}")
    config = {k: v for k, v in cls.from_config(raw).config.items() if k != "_diffusers_version"}
    return {**config, "_class_name": name}


class LoadCheckpoint(Node):
    """Loads a Stable Diffusion 1.x model from the models folder: a diffusers folder, or a single
    .safetensors/.ckpt file in the original LDM layout (its configs are read from the tensor shapes)."""

    category = "loaders"
    model = Combo(lambda env: list_models(env.models_dir) if env is not None else [], model=True,
                  tooltip="a diffusers folder or a single-file checkpoint in the models folder")
    outputs = (Out("TOKENIZER", "tokenizer"), Out("TEXT_ENCODER", "text_encoder"), Out("UNET", "unet"),
               Out("VAE", "vae"), Out("SCHEDULER", "scheduler"))

    @classmethod
    def fingerprint(cls, env, model=None, **_):
        try:
            return stat_fingerprint(model_path(env, model))
        except (OSError, ValueError, TypeError):
            return None

    def run(self, ctx):
        path = model_path(ctx.env, self.model)
        if not path.exists():
            raise FileNotFoundError(f"LoadCheckpoint: model {self.model!r} is not in the models folder")
        device = device_of(ctx.env)
        dtype = dtype_of(ctx.env, device)
        if path.is_dir():
            tokenizer, text_encoder, unet, vae, config = load_diffusers_folder(path, device, dtype)
        else:
            from .single_file import load_single_file

            tokenizer, text_encoder, unet, vae, config = load_single_file(path, device, dtype)
        prepare_unet(unet, ctx.env)
        setattr(unet, LATENT_SCALE_ATTR, 2 ** (len(vae.config.block_out_channels) - 1))
        return tokenizer, text_encoder, unet, vae, SchedulerSpec(CHECKPOINT, scheduler_config(config), DEFAULT_STEPS, 1.0)

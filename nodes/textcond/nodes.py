"""Nodes of the text-to-image model: load the built-in one, train one of your own.

Both give what LoadCheckpoint gives (tokenizer, text encoder, UNet, VAE, scheduler), so the rest of a
txt2img graph stays the same.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from graph.node import Combo, Float, Int, Node, Out, String
from nodes.classcond.nodes import trained_model_folder
from nodes.common import device_of
from nodes.loading.loaders import load_parts, scheduler_spec
from nodes.loading.model_files import stat_fingerprint

from . import model as tm
from .data import COLOUR_NAMES, SHAPES

SHIPPED = f"{tm.NAME} (built-in)"
TRAINED_DIR = "textcond"  # where TrainTextConditional writes by default, under the models folder
EXAMPLE = f"{TRAINED_DIR}/my-shapes"
SD_OUTPUTS = (Out("TOKENIZER", "tokenizer"), Out("TEXT_ENCODER", "text_encoder"), Out("UNET", "unet"),
              Out("VAE", "vae"), Out("SCHEDULER", "scheduler"))


def model_folders(env) -> dict[str, Path]:
    """Choice name -> folder: the built-in model, then diffusers folders under models/textcond/."""
    found = {SHIPPED: tm.shipped_folder()}
    root = Path(getattr(env, "models_dir", "") or "") / TRAINED_DIR
    if root.is_dir():
        for path in sorted(root.iterdir()):
            if (path / "model_index.json").is_file() and not path.name.startswith("."):
                found[f"{TRAINED_DIR}/{path.name}"] = path
    return found


def load_sd_outputs(path: Path, env):
    """LoadCheckpoint's first five outputs from a diffusers folder."""
    parts = load_parts(env, path, f"text-to-image model {path.name!r}")
    return parts.tokenizer, parts.text_encoder, parts.unet, parts.vae, scheduler_spec(parts.scheduler_config)


class LoadTextConditionalModel(Node):
    """Loads Loom's trained text-to-image model (64x64 pictures of one coloured shape: 'a red circle',
    'blue checkerboard', ...), or one trained with TrainTextConditional. Outputs as LoadCheckpoint."""

    category = "loaders/text-conditional"
    model_name = Combo(lambda env: list(model_folders(env)), default=SHIPPED, model_kind="textcond")
    outputs = SD_OUTPUTS

    @classmethod
    def fingerprint(cls, env, model_name=None, **_):
        path = model_folders(env).get(model_name)
        return stat_fingerprint(path) if path is not None and path.is_dir() else None

    def run(self, ctx):
        path = model_folders(ctx.env).get(self.model_name)
        if path is None or not path.is_dir():
            raise ValueError(f"LoadTextConditionalModel: input 'model_name': {self.model_name!r} is not available")
        return load_sd_outputs(path, ctx.env)


class ShapeImage(Node):
    """One picture of the training data set: a coloured shape on a dark background (64x64), drawn
    from `seed` (position, size, shade). What the built-in model has learned to make."""

    category = "image"
    colour = Combo(list(COLOUR_NAMES), default="red")
    shape = Combo(list(SHAPES), default="circle")
    seed = Int(0, min=0, max=2**63 - 1)
    outputs = (Out("IMAGE", "image"),)

    def run(self, ctx):
        import torch

        from .data import render

        index = torch.tensor([COLOUR_NAMES.index(self.colour)]), torch.tensor([SHAPES.index(self.shape)])
        image = render(*index, torch.Generator().manual_seed(self.seed))
        return image.permute(0, 2, 3, 1).to(device_of(ctx.env))


class TrainTextConditional(Node):
    """Trains a text-to-image model on the procedural captioned shapes in two stages (the VAE, then
    the UNet with the text encoder) and saves it as a diffusers folder in the models folder, where
    LoadCheckpoint and LoadTextConditionalModel find it. Reports progress every step."""

    category = "training/text-conditional"
    output_node = True
    name = String(EXAMPLE, tooltip="folder under the models folder")
    vae_steps = Int(1000, min=1, max=1_000_000)
    unet_steps = Int(3000, min=1, max=1_000_000)
    vae_batch_size = Int(8, min=1, max=1024)
    unet_batch_size = Int(32, min=1, max=4096)
    learning_rate = Float(5e-4, min=1e-6, max=1.0, step=1e-4, tooltip="peak rate of the UNet stage")
    seed = Int(0, min=0, max=2**63 - 1)
    outputs = SD_OUTPUTS

    @classmethod
    def check(cls, env, name=None, **_):
        try:
            trained_model_folder(env, name, EXAMPLE) if name is not None else None
        except ValueError as exc:
            return {"name": str(exc)}
        return {}

    def run(self, ctx):
        from .train import StageConfig, UNetConfig, train_unet, train_vae

        out = trained_model_folder(ctx.env, self.name, EXAMPLE)
        run_dir = out.parent / f".{out.name}.training"  # hidden: not listed as a model meanwhile
        device = device_of(ctx.env)
        total = self.vae_steps + self.unet_steps

        def report(offset):
            return lambda step, _total, _loss: ctx.progress(offset + step, total)

        try:
            vae = train_vae(StageConfig(steps=self.vae_steps, batch=self.vae_batch_size, lr=5e-4, seed=self.seed,
                                        save_every=0), run_dir, device, on_step=report(0))
            cfg = UNetConfig(steps=self.unet_steps, batch=self.unet_batch_size, lr=self.learning_rate,
                             seed=self.seed, save_every=0, preview_every=0)
            train_unet(cfg, run_dir, device, on_step=report(self.vae_steps), vae=vae)
            shutil.rmtree(out, ignore_errors=True)
            shutil.move(run_dir / "pipeline", out)  # the model folder keeps only the model
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        return load_sd_outputs(out, ctx.env)

"""Nodes of the class-conditional example: load a model, sample a class, train a model."""
from __future__ import annotations

from pathlib import Path

import torch

from graph.node import Boolean, Combo, Float, In, Int, Node, Out, String
from nodes.common import asset_dir, device_of, dtype_of

from . import model as cm
from .data import CLASS_NAMES
from .sample import SAMPLERS, sample

SHIPPED = "shapes32 (built-in)"
SHIPPED_DIR = asset_dir("classcond")
ALL_CLASSES = "all classes"


def model_folders(env) -> dict[str, Path]:
    """Choice name -> folder: the shipped model, then class-conditional UNet2DModel folders found up to
    two levels deep in the models folder (e.g. models/fashion-unet, models/classcond/fashion)."""
    found = {SHIPPED: SHIPPED_DIR}
    root = Path(getattr(env, "models_dir", "") or "")
    if root.is_dir():
        for depth in ("*", "*/*"):
            for path in sorted(root.glob(depth)):
                if path.is_dir() and not path.name.startswith(".") and cm.is_model_folder(path):
                    found.setdefault(path.relative_to(root).as_posix(), path)
    return found


def class_choices(env) -> list[str]:
    """Every class name of every available model (a COMBO's choices are per node type, not per model;
    the sampler checks the chosen name against the connected model when it runs)."""
    names = [ALL_CLASSES, *CLASS_NAMES]
    for path in list(model_folders(env).values())[1:]:
        names += [n for n in cm.class_names_of(path) if n not in names]
    return names


class LoadClassConditionalModel(Node):
    """Loads a class-conditional UNet2DModel: the built-in shapes model (10 procedural classes), or a
    diffusers UNet2DModel folder with `num_class_embeds` from the models folder (its class names come
    from an optional class_names.json)."""

    category = "loaders/class-conditional"
    model_name = Combo(lambda env: list(model_folders(env)), default=SHIPPED, model_kind="classcond")
    outputs = (Out("CLASS_MODEL", "model"),)

    @classmethod
    def fingerprint(cls, env, model_name=None, **_):
        path = model_folders(env).get(model_name)
        if path is None:
            return None
        return sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size)
                      for f in path.rglob("*") if f.is_file() and f.suffix in (".json", ".safetensors", ".bin"))

    def run(self, ctx):
        path = model_folders(ctx.env).get(self.model_name)
        if path is None:
            raise ValueError(f"LoadClassConditionalModel: input 'model_name': {self.model_name!r} is no longer "
                             f"in the models folder")
        device = device_of(ctx.env)
        try:
            model = cm.load(path, device, dtype_of(ctx.env, device))
        except (OSError, ValueError) as exc:
            raise ValueError(f"LoadClassConditionalModel: input 'model_name': cannot load {self.model_name!r}: {exc}") from exc
        model.name = self.model_name
        return model


class ClassConditionalSampler(Node):
    """Generates `count` images of one class (or `count` of each class, in class order, with
    "all classes") from a class-conditional model. The same seed gives the same images."""

    category = "sampling/class-conditional"
    model = In("CLASS_MODEL")
    class_label = Combo(class_choices, default=CLASS_NAMES[0],
                        tooltip="a class of the connected model; 'all classes' makes count images per class")
    count = Int(4, min=1, max=256)
    seed = Int(0, min=0, max=2**63 - 1, control_after_generate=True)
    sampler = Combo(list(SAMPLERS), default="ddpm")
    steps = Int(50, min=1, max=1000)
    guidance = Float(8.0, min=1.0, max=20.0, step=0.1,
                     tooltip="classifier-free guidance scale; 1 turns it off. Models without an "
                             "unconditional class embedding only accept 1")
    outputs = (Out("IMAGE", "images"),)

    def labels(self, model: cm.ClassModel) -> torch.Tensor:
        if self.class_label == ALL_CLASSES:
            return torch.arange(model.num_classes).repeat_interleave(self.count)
        try:
            index = model.class_index(self.class_label)
        except ValueError as exc:
            raise ValueError(f"ClassConditionalSampler: input 'class_label': {exc} (model {model.name!r})") from None
        return torch.full((self.count,), index)

    def run(self, ctx):
        model = self.model
        labels = self.labels(model)
        if self.guidance != 1.0 and model.null_class is None:
            raise ValueError(f"ClassConditionalSampler: input 'guidance': model {model.name!r} has no "
                             f"unconditional class embedding, so guidance must be 1.0 (got {self.guidance})")
        steps = self.steps
        if self.sampler == "ddpm" and steps > model.scheduler_config.get("num_train_timesteps", 1000):
            raise ValueError(f"ClassConditionalSampler: input 'steps': at most "
                             f"{model.scheduler_config.get('num_train_timesteps')} for ddpm")

        def on_step(k, n, x):
            ctx.progress(k, n, preview=lambda: _preview(x))

        images = sample(model, labels, self.seed, self.sampler, steps, self.guidance, on_step)
        images = images.permute(0, 2, 3, 1).float()
        # IMAGE is RGB for every consumer (as in ComfyUI): grayscale models repeat their channel.
        return images.repeat(1, 1, 1, 3) if images.shape[-1] == 1 else images


def _preview(x: torch.Tensor):
    from nodes.common import image_to_pil

    return image_to_pil((x[:1] / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))[0]


class TrainClassConditional(Node):
    """Trains a class-conditional UNet2DModel on the procedural shapes data set and saves it in the
    models folder, where LoadClassConditionalModel finds it. Reports progress every step."""

    category = "training/class-conditional"
    output_node = True
    name = String("classcond/my-shapes", tooltip="folder under the models folder")
    steps = Int(2000, min=1, max=1_000_000)
    batch_size = Int(32, min=1, max=4096)
    learning_rate = Float(1e-3, min=1e-6, max=1.0, step=1e-4)
    channels = String("32,64,128", tooltip="UNet block widths, comma separated")
    guidance_training = Boolean(True, tooltip="also train an unconditional embedding (classifier-free guidance)")
    seed = Int(0, min=0, max=2**63 - 1)
    outputs = (Out("CLASS_MODEL", "model"),)

    @classmethod
    def check(cls, env, channels=None, name=None, **_):
        problems = {}
        for key, value, parse in (("channels", channels, _widths), ("name", name, lambda n: trained_model_folder(env, n))):
            if value is not None:
                try:
                    parse(value)
                except ValueError as exc:
                    problems[key] = str(exc)
        return problems

    def run(self, ctx):
        from .train import TrainConfig, train

        out = trained_model_folder(ctx.env, self.name)
        cfg = TrainConfig(steps=self.steps, batch=self.batch_size, lr=self.learning_rate, seed=self.seed,
                          channels=_widths(self.channels), uncond_prob=0.1 if self.guidance_training else 0.0,
                          save_every=0)
        device = device_of(ctx.env)
        unet = train(cfg, out, device, on_step=lambda step, total, loss: ctx.progress(step, total))
        (out / "training_state.pt").unlink(missing_ok=True)  # the model folder keeps only the model
        model = cm.load(out, device, dtype_of(ctx.env, device))
        model.name = self.name
        return model


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in str(text).split(","))
    except ValueError:
        widths = ()
    if not 1 <= len(widths) <= 5 or any(w < 1 or w > 1024 for w in widths):
        raise ValueError(f"expected 1 to 5 comma-separated block widths such as 32,64,128, got {text!r}")
    return widths


def trained_model_folder(env, name: str, example: str = "classcond/my-shapes") -> Path:
    """Where a training node writes the model `name`: a folder inside the models folder."""
    from graph.env import UnsafePath, safe_join

    if not name.strip():
        raise ValueError(f"expected a folder name such as {example}")
    try:
        return safe_join(env.models_dir, name.strip())
    except UnsafePath as exc:
        raise ValueError(f"{exc}: expected a folder inside the models folder") from None

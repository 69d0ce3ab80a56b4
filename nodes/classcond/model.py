"""The class-conditional model: a diffusers `UNet2DModel` with `num_class_embeds`, its noise schedule and
its class names, stored together in one folder.

Folder layout (diffusers' own, plus a class-names file):
    config.json, diffusion_pytorch_model.safetensors   the UNet (`UNet2DModel.save_pretrained`)
    scheduler_config.json                              the training noise schedule (optional)
    class_names.json                                   ["circle", ...] (optional: "class 0", ... if absent)
When the UNet has one class embedding more than there are names, the last one is the unconditional
("no class") embedding, trained by label dropout, that classifier-free guidance contrasts with.
A diffusers pipeline folder (`unet/` and `scheduler/` subfolders) is accepted as well.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # imported where used: importing diffusers costs seconds, and a server starts without it
    from diffusers import DDPMScheduler, UNet2DModel

from .data import CLASS_NAMES, SIZE

CLASS_NAMES_FILE = "class_names.json"
SCHEDULER_FILE = "scheduler_config.json"


def new_unet(channels=(32, 64, 64), layers_per_block: int = 2, attention: bool = True,
             num_classes: int = len(CLASS_NAMES), in_channels: int = 1) -> UNet2DModel:
    """A small UNet for 32x32 images; attention (if any) only at the two lower resolutions."""
    from diffusers import UNet2DModel

    n = len(channels)
    down = ["DownBlock2D"] + ["AttnDownBlock2D" if attention else "DownBlock2D"] * (n - 1)
    up = ["AttnUpBlock2D" if attention else "UpBlock2D"] * (n - 1) + ["UpBlock2D"]
    return UNet2DModel(
        sample_size=SIZE, in_channels=in_channels, out_channels=in_channels,
        block_out_channels=tuple(channels), layers_per_block=layers_per_block,
        down_block_types=tuple(down), up_block_types=tuple(up),
        norm_num_groups=next(g for g in (32, 16, 8, 4, 2, 1) if all(c % g == 0 for c in channels)),
        num_class_embeds=num_classes,
    )


def new_scheduler() -> DDPMScheduler:
    """The training noise schedule: 1000 steps, cosine betas (kinder to small images than linear)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


@dataclass
class ClassModel:
    """What a CLASS_MODEL socket carries."""

    unet: UNet2DModel
    scheduler_config: dict
    class_names: tuple[str, ...]
    name: str = ""
    null_class: int | None = None  # index of the unconditional embedding, if the model has one

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_index(self, label: str | int) -> int:
        """A class given by name, or by its index as an int or a digit string; ValueError otherwise."""
        if isinstance(label, str) and label in self.class_names:
            return self.class_names.index(label)
        text = str(label).strip()
        if text.lstrip("-").isdigit():
            index = int(text)
            if 0 <= index < self.num_classes:
                return index
            raise ValueError(f"class index {index} is out of range: this model has classes 0..{self.num_classes - 1}")
        shown = ", ".join(repr(c) for c in self.class_names[:12]) + (" ..." if self.num_classes > 12 else "")
        raise ValueError(f"unknown class {label!r}: this model's classes are {shown} (or an index 0..{self.num_classes - 1})")


def is_model_folder(path: Path) -> bool:
    """A UNet2DModel folder with `num_class_embeds`, directly or as a pipeline's `unet/`."""
    config = _unet_dir(path) / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return data.get("_class_name") == "UNet2DModel" and bool(data.get("num_class_embeds"))


def _unet_dir(path: Path) -> Path:
    return path / "unet" if (path / "unet" / "config.json").is_file() else path


def load(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ClassModel:
    from diffusers import UNet2DModel

    path = Path(path)
    unet_dir = _unet_dir(path)
    if not is_model_folder(path):
        raise ValueError(f"{path.name}: not a UNet2DModel folder with num_class_embeds")
    unet = UNet2DModel.from_pretrained(unet_dir, torch_dtype=dtype, low_cpu_mem_usage=False).to(device).eval()
    unet.requires_grad_(False)
    sched_file = next((f for f in (path / SCHEDULER_FILE, path / "scheduler" / SCHEDULER_FILE) if f.is_file()), None)
    sched = json.loads(sched_file.read_text()) if sched_file else dict(new_scheduler().config)
    count = int(unet.config.num_class_embeds)
    names_file = path / CLASS_NAMES_FILE
    names = tuple(json.loads(names_file.read_text())) if names_file.is_file() else ()
    if not names:
        names = tuple(f"class {i}" for i in range(count))
    if len(names) not in (count, count - 1) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path.name}: {CLASS_NAMES_FILE} lists {len(names)} names for {count} class embeddings")
    null = count - 1 if len(names) == count - 1 else None
    return ClassModel(unet=unet, scheduler_config=sched, class_names=names, name=path.name, null_class=null)


def class_names_of(path: Path) -> list[str]:
    """The class names a model folder declares, without loading its weights."""
    names_file = path / CLASS_NAMES_FILE
    try:
        names = json.loads(names_file.read_text()) if names_file.is_file() else None
    except (OSError, ValueError):
        names = None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    try:
        count = int(json.loads((_unet_dir(path) / "config.json").read_text()).get("num_class_embeds") or 0)
    except (OSError, ValueError, TypeError):
        return []
    return [f"class {i}" for i in range(count)]


def save(path: str | Path, unet: UNet2DModel, class_names=CLASS_NAMES, scheduler: DDPMScheduler | None = None,
         dtype: torch.dtype | None = None) -> None:
    """Write the folder; `dtype` (e.g. float16) shrinks the shipped weights."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        unet = new_like(unet)
        for tensor in (*unet.parameters(), *unet.buffers()):  # ModelMixin.to(dtype) would warn
            tensor.data = tensor.data.to(dtype)
    unet.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    config.pop("_name_or_path", None)  # where the weights were read from: meaningless elsewhere
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (scheduler or new_scheduler()).save_pretrained(path)
    (path / CLASS_NAMES_FILE).write_text(json.dumps(list(class_names), indent=1) + "\n")


def new_like(unet: UNet2DModel) -> UNet2DModel:
    """A detached copy (same config and weights)."""
    from diffusers import UNet2DModel

    copy = UNet2DModel.from_config(unet.config)
    copy.load_state_dict(unet.state_dict())
    return copy


def export(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16) -> None:
    """Copy a trained folder (e.g. a training run's) as a shippable one: weights in `dtype`, no
    training state. Loading upcasts to the run's dtype."""
    from diffusers import DDPMScheduler

    model = load(src)
    save(dst, model.unet, model.class_names, DDPMScheduler.from_config(model.scheduler_config), dtype=dtype)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m nodes.classcond.model",
                                description="Export a trained class-conditional model folder with float16 weights.")
    p.add_argument("src")
    p.add_argument("dst")
    args = p.parse_args()
    export(args.src, args.dst)

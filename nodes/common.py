"""What nodes share: device and dtype choice, and the IMAGE tensor convention.

IMAGE: a float32 tensor (batch, height, width, channels) with values in 0..1, as in ComfyUI.
Tensors stay on the device they were made on; only saving and previews move them to the CPU.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .library_output import quiet_libraries

MAX_RESOLUTION = 16384  # the largest image side a size widget takes (ComfyUI's)

quiet_libraries()  # once, when the nodes load


def asset_dir(name: str) -> Path:
    """A folder of the shipped models: `assets/NAME` in a checkout, `nodes/assets/NAME` in the wheel
    (setup.py maps one onto the other)."""
    installed = Path(__file__).resolve().parent / "assets"
    return (installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "assets") / name


def call(node, ctx, **inputs):
    """Run another node's code with these inputs (declared defaults for the rest), as the executor would."""
    unknown = set(inputs) - set(node.inputs)
    if unknown:  # a renamed input would otherwise be silently left at its default
        raise TypeError(f"{node.__name__} has no input {', '.join(sorted(unknown))}")
    instance = node()
    for name, inp in node.inputs.items():
        setattr(instance, name, inputs.get(name, getattr(inp, "default", None)))
    return instance.run(ctx)


@contextmanager
def torch_threads(threads: int):
    """torch's CPU threads set to `threads` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def device_of(env) -> torch.device:
    """`env.device`: 'auto' is CUDA when present, else CPU."""
    name = getattr(env, "device", "auto") or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def dtype_of(env, device: torch.device | None = None) -> torch.dtype:
    """`env.dtype`: 'auto' is float16 on CUDA and float32 elsewhere."""
    name = getattr(env, "dtype", "auto") or "auto"
    if name == "auto":
        return torch.float16 if (device or device_of(env)).type == "cuda" else torch.float32
    try:
        dtype = getattr(torch, name)
    except AttributeError:
        dtype = None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}: expected auto, float32, float16 or bfloat16")
    return dtype


def image_to_pil(image: torch.Tensor, truncate: bool = False) -> list[Image.Image]:
    """IMAGE (B, H, W, C) in 0..1 -> PIL images, rounding like diffusers' numpy_to_pil; `truncate`:
    cut the fraction off instead, as ComfyUI's SaveImage does (255 * x clipped, then uint8)."""
    array = image.detach().float().cpu().numpy() * 255
    array = (array if truncate else array.round()).clip(0, 255).astype(np.uint8)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]


def pil_to_image(pil: Image.Image, device: torch.device | str = "cpu") -> torch.Tensor:
    """PIL image -> IMAGE (1, H, W, 3) in 0..1."""
    array = np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None].to(device)

"""Speed options for a UNet, applied once by `prepare_unet` where a loader makes one (nodes.loading.loaders).

- SDPA attention: diffusers' default processor (AttnProcessor2_0) calls torch's
  scaled_dot_product_attention, which picks flash or memory-efficient kernels on CUDA. Loom keeps
  it; `attention_processors(model)` names what runs (tests and bench/gpu.py check it).
- channels_last: the convolutions' NHWC memory layout (tensor cores on CUDA).
- cudnn benchmark: cuDNN times its convolution algorithms once per shape and keeps the fastest.
- compile: torch.compile of the UNet's forward, in place (`Module.compile`): the module stays the
  same object, so the cache, the device memory manager and the nodes see no difference.
- dtype: `--dtype auto` is float16 on CUDA, float32 on the CPU (nodes.common.dtype_of).
Already in the sampler (nodes.sampling): uncond and cond in one UNet batch, and guidance <= 1 skips
the uncond pass.

Which options are on comes from `env.speed` (graph.env.Speed). Left at None, channels_last and cudnn
benchmark are on for CUDA in half precision only, so CPU and float32 runs keep diffusers' pixels
exactly; compile is on only when asked for (`--compile`: minutes of compiling on the first run).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from graph.env import Speed

log = logging.getLogger(__name__)
PREPARED_ATTR = "loom_speed"  # on a prepared UNet: the Applied options
SDPA = "AttnProcessor2_0"
COMPILE_OPTIONS: dict = {}  # extra torch.compile arguments (the fast tests use backend="eager")


@dataclass(frozen=True)
class Applied:
    channels_last: bool
    cudnn_benchmark: bool
    compile: bool


def resolve(speed: Speed, device: torch.device, dtype: torch.dtype) -> Applied:
    """The options `speed` turns on for a model on `device` in `dtype`."""
    fast = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)

    def pick(value: bool | None) -> bool:
        return fast if value is None else bool(value)

    return Applied(pick(speed.channels_last), pick(speed.cudnn_benchmark), bool(speed.compile))


def attention_processors(model) -> set[str]:
    """Class names of the attention processors a diffusers model runs (empty if it has none)."""
    return {type(p).__name__ for p in getattr(model, "attn_processors", {}).values()}


def prepare_unet(unet, env) -> Applied:
    """Apply `env.speed` to a freshly loaded UNet. Once: a UNet already prepared is left as it is."""
    applied = resolve(getattr(env, "speed", None) or Speed(), unet.device, unet.dtype)
    if getattr(unet, PREPARED_ATTR, None) == applied:
        return applied
    torch.backends.cudnn.benchmark = applied.cudnn_benchmark  # global: the last UNet prepared sets it
    if applied.channels_last:
        unet.to(memory_format=torch.channels_last)
    if applied.compile:
        unet.compile(**COMPILE_OPTIONS)
    others = attention_processors(unet) - {SDPA}
    if others:
        log.info("this UNet's attention runs %s, not SDPA (%s)", ", ".join(sorted(others)), SDPA)
    setattr(unet, PREPARED_ATTR, applied)
    return applied

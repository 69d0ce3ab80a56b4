"""The torch side of device memory management (graph.memory): moving a model between the GPU and
the host, recognising out-of-memory errors, and the default budget.

    Loom(env, placement=placement_for(env), vram_bytes=None)   # None: free memory minus a margin
"""
from __future__ import annotations

import torch

from ..common import device_of

MIN_MARGIN = 1 << 30  # left free for activations (a UNet step, a VAE decode) ...
MARGIN_FRACTION = 0.10  # ... or this share of the device's memory, whichever is larger


class TorchPlacement:
    host = "cpu"

    def __init__(self, device: torch.device):
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.torch_device = device
        self.device = str(device)  # as tensors name it: "cuda:0"

    def move(self, model, device: str) -> None:
        model.to(device)  # modules move in place: every value holding the model sees it moved

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError)

    def default_budget(self) -> int:
        free, total = torch.cuda.mem_get_info(self.torch_device)
        return max(0, free - margin(total))


def margin(total: int) -> int:
    return max(MIN_MARGIN, int(total * MARGIN_FRACTION))


def placement_for(env) -> TorchPlacement | None:
    """Device memory is managed on CUDA devices; on the CPU the cache's own budget covers all."""
    device = device_of(env)
    return TorchPlacement(device) if device.type == "cuda" else None

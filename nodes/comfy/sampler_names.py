"""ComfyUI's `sampler_name` and `scheduler` names: every one ComfyUI offers is in the choices and runs
(nodes.comfy.ksampling). A sampler listed in nodes.comfy.ksampling.samplers.UNAVAILABLE (none today: the place
for names ComfyUI adds later) or an unknown name is refused at validation, by name."""
from __future__ import annotations

from .ksampling.samplers import COMFY_SAMPLER_NAMES, SAMPLERS
from .ksampling.ksampler import unavailable_message
from .ksampling.schedules import SCHEDULER_NAMES

SAMPLER_NAMES = list(COMFY_SAMPLER_NAMES)
__all__ = ["SAMPLER_NAMES", "SCHEDULER_NAMES", "Unmapped", "check_names"]


class Unmapped(ValueError):
    """A ComfyUI sampler or scheduler name Loom cannot honour; `input` names the widget."""

    def __init__(self, input: str, message: str):
        super().__init__(message)
        self.input = input


def check_names(sampler_name: str | None, scheduler: str | None) -> None:
    """Raise Unmapped for a sampler Loom does not run or a scheduler ComfyUI does not have."""
    if sampler_name is not None and sampler_name not in SAMPLERS:
        raise Unmapped("sampler_name", unavailable_message(sampler_name))
    if scheduler is not None and scheduler not in SCHEDULER_NAMES:
        raise Unmapped("scheduler", f"unknown scheduler '{scheduler}'; ComfyUI's are: {', '.join(SCHEDULER_NAMES)}")

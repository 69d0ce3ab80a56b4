"""HiDream's torch side (nodes.families.spec.Runtime): its transformer file, prompt encoding, guided
prediction and tiny models."""
from __future__ import annotations

from .files import transformer_from_file as denoiser_from_file  # noqa: F401  (the Runtime's name)
from .tiny import write_comfy_files as write_tiny_files  # noqa: F401
from .tiny import write_folder as write_tiny  # noqa: F401


def encode(clip, text: str) -> tuple:
    from ...conditioning import Cond
    from .files import encode as embeds

    t5, pooled, llama = embeds(clip, text)
    return (Cond(embeds=t5, pooled=pooled, extra={"conditioning_llama3": llama}),)


def guide(model, positive, negative, cfg: float, keep_uncond: bool):
    from .guide import HiDreamGuide

    return HiDreamGuide(model.unet, positive, negative, cfg, keep_uncond=keep_uncond)

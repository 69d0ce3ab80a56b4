"""Text-encoder files alone (ComfyUI's models/text_encoders), by kind: each module of this package
declares `ENCODERS`, a tuple of EncoderFile, and nodes.loading.checkpoints.load_text_encoder asks
each in turn before the CLIP layouts it reads itself. An encoder shared by several families (T5-XXL:
Flux, SD3, Chroma, HiDream; Qwen3: Z-Image, Flux.2 Klein) is declared once here, by its kind; a
family names the kinds it takes (nodes.families.spec.TextEncoder.kind).

    found = encoder_file(state_dict)        # the EncoderFile whose `matches` says yes, or None
    tokenizer, model = found.load(state_dict, path)
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class EncoderFile:
    kind: str  # what the family declarations call it: "qwen3_4b", "t5xxl", ...
    matches: Callable[[dict], bool]  # the file's keys and shapes say it is this kind
    load: Callable[[dict, Path], tuple[Any, Any]]  # (state dict, file path) -> (tokenizer, model), eval mode


def _discover() -> tuple[EncoderFile, ...]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        found.extend(getattr(importlib.import_module(f"{__name__}.{info.name}"), "ENCODERS", ()))
    return tuple(found)


def encoder_files() -> tuple[EncoderFile, ...]:
    global _FOUND
    if _FOUND is None:
        _FOUND = _discover()
    return _FOUND


_FOUND: tuple[EncoderFile, ...] | None = None


def encoder_file(sd: dict) -> EncoderFile | None:
    matching = [e for e in encoder_files() if e.matches(sd)]
    if len(matching) > 1:  # two declarations overlap: a defect here, not in the file
        raise RuntimeError(f"a text-encoder file matches several kinds: {', '.join(e.kind for e in matching)}")
    return matching[0] if matching else None


def encoder_of_kind(kind: str) -> EncoderFile | None:
    """The reader of a kind's files (a whole checkpoint's encoder under a family's prefix), or None."""
    return next((e for e in encoder_files() if e.kind == kind), None)


def without_weights(make):
    """A model whose parameters are placeholders (every weight comes from the file, assign=True) and
    whose buffers (rotary tables) are computed as usual."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return make()

"""Workflows inside PNG images: the `prompt` (API format) and `workflow` (editor format) text chunks
that Loom's SaveImage and ComfyUI write, as tEXt, zTXt or iTXt (compressed or not)."""
from __future__ import annotations

import io
import json
from typing import Any

from .workflow import WorkflowError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYS = ("prompt", "workflow")


def is_png(data: bytes) -> bool:
    return data[:8] == PNG_SIGNATURE


def png_text(data: bytes, name: str = "the image") -> dict[str, str]:
    """Every text chunk of a PNG, keyword -> text."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            text = {k: v for k, v in image.info.items() if isinstance(v, str)}  # chunks before the pixels
            if not any(k in text for k in KEYS):
                text = dict(image.text)  # decodes the pixels to reach chunks written after them
    except Exception as exc:  # Pillow raises many types for broken files; all mean the same here
        raise WorkflowError(f"{name} is not a readable PNG: {exc or type(exc).__name__}") from None
    return {str(k): str(v) for k, v in text.items()}


def read_png(data: bytes, name: str = "the image") -> tuple[Any, Any]:
    """(prompt, workflow) from a PNG's text chunks; either may be None."""
    text = png_text(data, name)
    found = []
    for key in KEYS:
        if key not in text:
            found.append(None)
            continue
        try:
            found.append(json.loads(text[key]))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise WorkflowError(f"the '{key}' text chunk of {name} is not valid JSON: {exc}") from None
    if found == [None, None]:
        others = ", ".join(sorted(text)) or "none"
        raise WorkflowError(f"{name} carries no workflow: it has no 'prompt' or 'workflow' text chunk "
                            f"(text chunks: {others})")
    return found[0], found[1]


def workflow_from_png(data: bytes, name: str = "the image") -> Any:
    """What runs from a PNG: the API prompt with the editor workflow as it would be posted to
    /prompt ({prompt, extra_data: {extra_pnginfo: {workflow}}}), or the editor workflow alone.
    The prompt is preferred for running: it holds the values exactly as they ran."""
    prompt, workflow = read_png(data, name)
    if prompt is None:
        return workflow
    return {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": workflow}} if workflow is not None else {}}

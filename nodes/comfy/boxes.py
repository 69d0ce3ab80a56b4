"""ComfyUI's bounding-box nodes under their own names, inputs and outputs: CreateBoundingBoxes
(comfy_extras' bounding-box canvas) and DrawBBoxes (beside the detectors, RT-DETR/RF-DETR).

A BOUNDING_BOX value is what ComfyUI passes: a dict {x, y, width, height} in pixels (a box may carry
`metadata`, `label`, `score`), a list of such dicts (one image), or a list of such lists (one list
per image of a batch). BOUNDING_BOXES is the canvas widget's value: a list of boxes with `metadata`
(type "obj" or "text", text, desc, palette of "#RRGGBB" colours). The editor stores it as JSON; an
API prompt may give it as a list or as a JSON string. Values are parsed with `json`, never evaluated.
"""
from __future__ import annotations

import json
import re
from numbers import Real
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from graph import In, Input, Int, Node, Out
from graph.node import InputError

HEX = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
EDGES = ("x", "y", "width", "height")
GREY = (140, 140, 140)


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_box(box: Any, where: str) -> dict:
    """A box dict with numeric x, y, width and height; ValueError naming `where` otherwise."""
    if not isinstance(box, dict):
        raise ValueError(f"{where} is {type(box).__name__}, expected a box {{x, y, width, height}}")
    missing = [k for k in EDGES if not _number(box.get(k))]
    if missing:
        raise ValueError(f"{where} lacks a number for {', '.join(missing)}")
    meta = box.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"{where}'s metadata is {type(meta).__name__}, expected an object")
    return box


def parse_json(value: Any) -> Any:
    """A JSON string as its value (text, not code); other values unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc.msg} at character {exc.pos})") from None


class BoxesWidget(Input):
    """The frontend's bounding-box canvas (BOUNDING_BOXES): a list of boxes with metadata."""

    def __init__(self, optional: bool = False, tooltip: str | None = None):
        super().__init__(type="BOUNDING_BOXES", optional=optional, tooltip=tooltip)
        self.default = []

    def options(self, env=None):
        return {"default": [], **super().options(env)}

    def coerce(self, value, env=None):
        try:
            boxes = parse_json(value)
            if not isinstance(boxes, list):
                raise ValueError(f"is {type(boxes).__name__}, expected a list of boxes")
            return [_check_box(box, f"box {i}") for i, box in enumerate(boxes)]
        except ValueError as exc:
            raise InputError("invalid_input_type", str(exc)) from None


# --- the canvas's boxes, as fractions of the canvas ("regions") and as ComfyUI's outputs -----------

def frames(value: Any) -> list[list[dict]]:
    """A BOUNDING_BOX value (dict, list of dicts, list of lists) as one list of boxes per image."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [[_check_box(value, "the box")]]
    if not isinstance(value, list):
        raise ValueError(f"is {type(value).__name__}, expected boxes")
    if value and all(isinstance(v, dict) for v in value):
        value = [value]
    out = []
    for i, frame in enumerate(value):
        if not isinstance(frame, list):
            raise ValueError(f"item {i} is {type(frame).__name__}, expected a list of boxes")
        out.append([_check_box(box, f"box {j} of image {i}") for j, box in enumerate(frame)])
    return out


def elements_to_boxes(elements: list, width: int, height: int) -> list[dict]:
    """Ideogram-style elements ({type, bbox: [ymin, xmin, ymax, xmax] on a 0..1000 grid, text, desc,
    color_palette}) as pixel boxes with metadata."""
    boxes = []
    for i, element in enumerate(elements):
        grid = element.get("bbox") if isinstance(element, dict) else None
        if not (isinstance(grid, list) and len(grid) == 4 and all(_number(v) for v in grid)):
            raise ValueError(f"element {i} lacks a 'bbox' of four numbers [ymin, xmin, ymax, xmax]")
        ymin, xmin, ymax, xmax = (v / 1000 for v in grid)
        kind = "text" if element.get("type") == "text" else "obj"
        boxes.append({"x": round(min(xmin, xmax) * width), "y": round(min(ymin, ymax) * height),
                      "width": round(abs(xmax - xmin) * width), "height": round(abs(ymax - ymin) * height),
                      "metadata": {"type": kind, "text": element.get("text", "") if kind == "text" else "",
                                   "desc": element.get("desc", ""),
                                   "palette": element.get("color_palette") or []}})
    return boxes


def incoming_boxes(value: Any, width: int, height: int) -> list[dict]:
    """The `bboxes` input (BOUNDING_BOX, an ARRAY of elements, or JSON text of either) as the
    canvas's boxes; the first image's boxes when it holds several."""
    value = parse_json(value)
    if isinstance(value, dict) and "bbox" in value:
        value = [value]
    if isinstance(value, list) and value and isinstance(value[0], dict) and "bbox" in value[0]:
        return elements_to_boxes(value, width, height)
    found = frames(value)
    return [{**{k: b[k] for k in EDGES}, **({"metadata": b["metadata"]} if "metadata" in b else {})}
            for b in (found[0] if found else [])]


def region(box: dict, width: int, height: int) -> dict:
    """A box as fractions of the canvas, with its metadata; a negative size flips the corner."""
    meta = box.get("metadata") or {}
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    if w < 0:
        x, w = x + w, -w
    if h < 0:
        y, h = y + h, -h
    return {"x": x / width, "y": y / height, "w": w / width, "h": h / height,
            "type": "text" if meta.get("type") == "text" else "obj", "text": str(meta.get("text", "") or ""),
            "desc": str(meta.get("desc", "") or ""), "palette": palette(meta.get("palette"))}


def palette(colours: Any) -> list[str]:
    """The valid "#RRGGBB" colours of a palette, upper case ("#abc" widened); others dropped."""
    out = []
    for colour in colours if isinstance(colours, list) else []:
        match = HEX.fullmatch(colour.strip()) if isinstance(colour, str) else None
        if match:
            digits = match.group(1)
            out.append("#" + (digits if len(digits) == 6 else "".join(c * 2 for c in digits)).upper())
    return out


def pixel_box(r: dict, width: int, height: int) -> dict:
    return {"x": round(r["x"] * width), "y": round(r["y"] * height),
            "width": round(r["w"] * width), "height": round(r["h"] * height)}


def element(r: dict) -> dict:
    """ComfyUI's prompt element: bbox [ymin, xmin, ymax, xmax] on a 0..1000 grid, clamped."""
    def grid(v: float) -> int:
        return max(0, min(1000, round(v * 1000)))
    out = {"type": r["type"], "bbox": [grid(r["y"]), grid(r["x"]), grid(r["y"] + r["h"]), grid(r["x"] + r["w"])]}
    if r["type"] == "text":
        out["text"] = r["text"]
    out["desc"] = r["desc"]
    if r["palette"]:
        out["color_palette"] = r["palette"][:5]
    return out


def rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def to_pil(image: torch.Tensor) -> Image.Image:
    """One IMAGE (H, W, C) as an 8-bit RGB picture (the alpha channel, if any, dropped)."""
    pixels = (image[..., :3].detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return Image.fromarray(pixels, "RGB")


def to_image(picture: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0)


PREVIEW_LONG_EDGE = 1024
PREVIEW_DIM = 0.25


def preview(regions: list[dict], width: int, height: int, background: torch.Tensor | None) -> torch.Tensor:
    """ComfyUI's canvas preview, without its text: the background (or grey) dimmed to a quarter,
    at most 1024 pixels on the long edge, each box outlined 2 pixels wide in its first palette
    colour (grey without one), a strip of its palette along its top edge."""
    if background is not None:
        base = to_pil(background[0])
    else:
        base = Image.new("RGB", (width, height), (128, 128, 128))
    scale = min(1.0, PREVIEW_LONG_EDGE / max(base.size))
    size = (max(1, round(base.width * scale)), max(1, round(base.height * scale)))
    picture = base.resize(size, Image.LANCZOS).point(lambda v: round(v * PREVIEW_DIM))
    draw = ImageDraw.Draw(picture)
    w, h = size
    for r in regions:
        x1, x2 = (max(0, min(w, round(v * w))) for v in (r["x"], r["x"] + r["w"]))
        y1, y2 = (max(0, min(h, round(v * h))) for v in (r["y"], r["y"] + r["h"]))
        draw.rectangle([x1, y1, x2, y2], outline=rgb(r["palette"][0]) if r["palette"] else GREY, width=2)
        swatches = r["palette"][:5]
        if swatches and x2 - x1 > 2:
            step = (x2 - x1) / len(swatches)
            for i, colour in enumerate(swatches):
                draw.rectangle([x1 + round(i * step), y1, x1 + round((i + 1) * step), y1 + 5], fill=rgb(colour))
    return to_image(picture)[None]


class CreateBoundingBoxes(Node):
    """Boxes drawn on the frontend's canvas (or given by `bboxes`) as pixel boxes, Ideogram-style
    prompt elements and a preview. A new `bboxes` value (not the one in `last_incoming`, which the
    canvas keeps) replaces the canvas's boxes; otherwise the canvas (`editor_state`) wins."""
    category = "utilities"
    display_name = "Create Bounding Boxes"
    output_node = True
    background = In("IMAGE", optional=True, tooltip="Optional image shown under the boxes.")
    bboxes = In("BOUNDING_BOX,ARRAY,STRING", optional=True,
                tooltip="Bounding boxes, elements, or a JSON string to initialize the canvas.")
    width = Int(1024, min=64, max=16384, step=16)
    height = Int(1024, min=64, max=16384, step=16)
    editor_state = BoxesWidget(tooltip="The boxes drawn on the canvas, background first.")
    last_incoming = BoxesWidget(optional=True, tooltip="Canvas state: the bboxes value that last initialized it.")
    outputs = (Out("IMAGE", "preview"), Out("BOUNDING_BOX", "bboxes"), Out("ARRAY", "elements"))

    def run(self, ctx):
        try:
            incoming = incoming_boxes(self.bboxes, self.width, self.height)
        except ValueError as exc:
            raise ValueError(f"CreateBoundingBoxes: input 'bboxes' {exc}") from None
        applied = self.last_incoming if isinstance(self.last_incoming, list) else []
        source = incoming if incoming and incoming != applied else (self.editor_state or [])
        regions = [region(box, self.width, self.height) for box in source]
        ui = {"dims": [self.width, self.height]}
        if incoming:
            ui["input_bboxes"] = incoming
        ctx.show(**ui)
        frame = [pixel_box(r, self.width, self.height) for r in regions]
        return (preview(regions, self.width, self.height, self.background),
                [frame] if frame else [], [element(r) for r in regions])


COLOURS = ((255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 165, 0), (128, 0, 128), (0, 255, 255),
           (255, 20, 147), (100, 149, 237))


def score(box: dict) -> float:
    return box["score"] if _number(box.get("score")) else 1.0


class DrawBBoxes(Node):
    """Each image with its boxes outlined 3 pixels wide (ComfyUI's first colour, red, for boxes
    without a COCO label; Loom draws no label text). One list of boxes for the batch applies to
    every image; without an image, black images just large enough for the boxes (640 without boxes)."""
    category = "detection/"
    display_name = "Draw BBoxes"
    image = In("IMAGE", optional=True)
    bboxes = In("BOUNDING_BOX")
    outputs = (Out("IMAGE", "out_image"),)

    def run(self, ctx):
        try:
            per_image = frames(self.bboxes) or [[]]
        except ValueError as exc:
            raise ValueError(f"DrawBBoxes: input 'bboxes' {exc}") from None
        if self.image is None:
            boxes = [b for frame in per_image for b in frame]
            w = max((int(b["x"] + b["width"]) for b in boxes), default=640)
            h = max((int(b["y"] + b["height"]) for b in boxes), default=640)
            image = torch.zeros(len(per_image), max(h, 1), max(w, 1), 3)
        else:
            image = self.image
            if len(per_image) == 1:
                per_image = per_image * len(image)
            per_image = (per_image + [[]] * len(image))[:len(image)]
        out = []
        for picture, boxes in zip(image, per_image):
            drawn = to_pil(picture)  # 8 bits per channel, as ComfyUI's PIL round trip
            draw = ImageDraw.Draw(drawn)
            for b in sorted(boxes, key=score):  # the most certain last, on top
                xs, ys = sorted((b["x"], b["x"] + b["width"])), sorted((b["y"], b["y"] + b["height"]))
                draw.rectangle([xs[0], ys[0], xs[1], ys[1]], outline=COLOURS[0], width=3)
            out.append(to_image(drawn))
        return torch.stack(out)

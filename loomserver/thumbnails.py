"""Thumbnails of Loom's own workflows for the official frontend's template browser, which asks for
`/api/workflow_templates/loom/NAME.jpg` beside every listed workflow.

A picture saved beside the workflow file (NAME.jpg, .png or .webp) is served as it is; otherwise the
thumbnail is a drawing of the graph itself: its nodes where the editor places them, titled, and the
links between them. Either way the browser shows something true instead of a broken image.
"""
from __future__ import annotations

import io
from pathlib import Path

PICTURES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
SIZE = (512, 384)
BACKGROUND, NODE, TITLE, TEXT, LINK = "#202020", "#353535", "#4a4a4a", "#dddddd", "#8a8ad0"


def picture_beside(workflow: Path) -> Path | None:
    return next((p for ext in PICTURES if (p := workflow.with_suffix(ext)).is_file()), None)


def draw_graph(workflow: dict, size: tuple[int, int] = SIZE) -> bytes:
    """A JPEG of an editor workflow's graph: node boxes at their positions, scaled to fit, and links."""
    from PIL import Image, ImageDraw, ImageFont

    nodes = {n["id"]: n for n in workflow.get("nodes", []) if "pos" in n}
    image = Image.new("RGB", size, BACKGROUND)
    if nodes:
        boxes = {i: _box(n) for i, n in nodes.items()}
        left, top = min(b[0] for b in boxes.values()), min(b[1] for b in boxes.values())
        right, bottom = max(b[2] for b in boxes.values()), max(b[3] for b in boxes.values())
        margin = 16
        scale = min((size[0] - 2 * margin) / max(right - left, 1), (size[1] - 2 * margin) / max(bottom - top, 1))
        offset = ((size[0] - (right - left) * scale) / 2, (size[1] - (bottom - top) * scale) / 2)

        def place(box):
            return tuple(offset[k % 2] + (v - (left, top)[k % 2]) * scale for k, v in enumerate(box))

        boxes = {i: place(b) for i, b in boxes.items()}
        draw = ImageDraw.Draw(image)
        for link in workflow.get("links", []):
            source, target = boxes.get(link[1]), boxes.get(link[3])
            if source and target:
                draw.line([(source[2], (source[1] + source[3]) / 2), (target[0], (target[1] + target[3]) / 2)],
                          fill=LINK, width=2)
        font = ImageFont.load_default(size=max(9, min(16, int(22 * scale))))
        for i, (x0, y0, x1, y1) in boxes.items():
            bar = min(y1 - y0, max(12.0, 30 * scale))
            draw.rounded_rectangle((x0, y0, x1, y1), radius=4, fill=NODE, outline=TITLE)
            draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y0 + bar), fill=TITLE)
            title = str(nodes[i].get("title") or nodes[i].get("type", ""))
            while title and draw.textlength(title, font=font) > x1 - x0 - 6:
                title = title[:-1]
            draw.text((x0 + 3, y0 + bar / 2), title, fill=TEXT, font=font, anchor="lm")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _box(node: dict) -> tuple[float, float, float, float]:
    pos, size = node["pos"], node.get("size") or [200, 100]
    if isinstance(pos, dict):  # older files: {"0": x, "1": y}
        pos = [pos.get("0", 0), pos.get("1", 0)]
    if isinstance(size, dict):
        size = [size.get("0", 200), size.get("1", 100)]
    return float(pos[0]), float(pos[1]), float(pos[0]) + float(size[0]), float(pos[1]) + float(size[1])

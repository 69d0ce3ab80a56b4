"""Laying IMAGE batches out as one titled grid picture, and text drawn as pictures.

Used by the inspection nodes (ImageGrid, PreviewLatentChannels) and the tutorial figure script.
Cells are placed row by row; titles go in a strip above the columns and left of the rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

GAP = 2  # pixels between cells
BACKGROUND = (1.0, 1.0, 1.0)
INK = (20, 20, 20)


def parse_titles(text: str) -> list[str]:
    """Comma-separated titles; an empty text means no titles."""
    text = (text or "").strip()
    return [t.strip() for t in text.split(",")] if text else []


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=8)
def mono_font(size: int) -> ImageFont.ImageFont:
    """A monospaced font for tables when the system has one (columns line up), else the default."""
    for name in ("DejaVuSansMono.ttf", "LiberationMono-Regular.ttf", "Menlo.ttc", "consola.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return font(size)


def font_size_for(cell_height: int) -> int:
    """Titles readable next to small cells (32 px) and not huge next to big ones (512 px)."""
    return int(min(24, max(10, cell_height // 5)))


def text_width(text: str, size: int, face=None) -> int:
    left, _, right, _ = (face or font(size)).getbbox(text) if text else (0, 0, 0, 0)
    return right - left


def text_image(lines: list[str], size: int = 12, pad: int = 6) -> Image.Image:
    """Lines of text drawn black on white (a table rendered as a picture)."""
    face = mono_font(size)
    line_h = size + 4
    width = max([text_width(line, size, face) for line in lines] + [1]) + 2 * pad
    image = Image.new("RGB", (width, line_h * max(len(lines), 1) + 2 * pad), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, fill=INK, font=face)
    return image


@dataclass
class Layout:
    columns: int
    rows: int
    cell: tuple[int, int]  # height, width
    left: int  # width of the row-title strip
    top: int  # height of the column-title strip
    size: int  # font size
    pitch: int = 0  # width of a column: the cell's, or its title's when wider (the cell centred in it)

    def box(self, index: int) -> tuple[int, int]:
        """Top-left (x, y) of cell `index` in the grid picture."""
        r, c = divmod(index, self.columns)
        pitch = max(self.pitch, self.cell[1])
        return self.left + c * (pitch + GAP) + (pitch - self.cell[1]) // 2, self.top + r * (self.cell[0] + GAP)

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.cell
        return self.top + self.rows * (h + GAP) - GAP, self.left + self.columns * (max(self.pitch, w) + GAP) - GAP


def layout(count: int, cell: tuple[int, int], columns: int, row_titles: list[str],
           column_titles: list[str]) -> Layout:
    rows = -(-count // columns)
    size = font_size_for(cell[0])
    left = max([text_width(t, size) for t in row_titles] + [0])
    left = left + 2 * GAP + 4 if left else 0
    top = size + 2 * GAP + 4 if any(column_titles) else 0
    pitch = max([text_width(t, size) + 4 * GAP for t in column_titles] + [cell[1]])
    return Layout(columns, rows, cell, left, top, size, pitch)


def make_grid(images: torch.Tensor, columns: int, row_titles: list[str] = (),
              column_titles: list[str] = ()) -> tuple[torch.Tensor, Layout]:
    """IMAGE batch (N, H, W, 3) -> one IMAGE (1, H', W', 3) with the cells row by row, and its layout.
    The caller checks that the titles fit the rows and columns."""
    images = images.detach().float().cpu()
    count, h, w, _ = images.shape
    grid = layout(count, (h, w), columns, list(row_titles), list(column_titles))
    height, width = grid.shape
    canvas = torch.tensor(BACKGROUND).expand(height, width, 3).clone()
    for i in range(count):
        x, y = grid.box(i)
        canvas[y:y + h, x:x + w] = images[i]
    if grid.left or grid.top:
        canvas = _draw_titles(canvas, grid, list(row_titles), list(column_titles))
    return canvas[None], grid


def _draw_titles(canvas: torch.Tensor, grid: Layout, row_titles: list[str], column_titles: list[str]) -> torch.Tensor:
    pil = Image.fromarray((canvas.numpy() * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    f = font(grid.size)
    h, w = grid.cell
    for c, title in enumerate(column_titles):
        x, _ = grid.box(c)
        draw.text((x + (w - text_width(title, grid.size)) / 2, GAP), title, fill=INK, font=f)
    for r, title in enumerate(row_titles):
        _, y = grid.box(r * grid.columns)
        draw.text((GAP, y + (h - grid.size) / 2), title, fill=INK, font=f)
    drawn = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0)
    # Only the title strips are copied back: the cells keep their exact values.
    canvas[:grid.top], canvas[:, :grid.left] = drawn[:grid.top], drawn[:, :grid.left]
    return canvas

"""A procedural 10-class data set of 32x32 grayscale shapes and textures.

Fashion-MNIST cannot be downloaded here, so the class-conditional example brings its own data. Every
image is drawn from a few random parameters (position, size, brightness, period, phase) plus a little
pixel noise, for a whole batch at once with tensor operations, so that generating fresh data for each
training step costs far less than the step itself.
"""
from __future__ import annotations

import math

import torch

CLASS_NAMES = (
    "circle", "square", "triangle", "horizontal stripes", "vertical stripes",
    "cross", "ring", "diagonal bar", "checkerboard", "dots",
)
SIZE = 32


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, 1, 1, generator=g)


def masks(labels: torch.Tensor, g: torch.Generator, size: int = SIZE) -> torch.Tensor:
    """One 0/1 mask (N, size, size) per label; every shape is computed for all and the label picks.
    Lengths are drawn for SIZE and scaled by size / SIZE, so a larger size draws the same shapes finer."""
    n = labels.numel()
    k = size / SIZE
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = coords.view(1, size, 1), coords.view(1, 1, size)

    # Shapes: a random radius, and a centre that keeps the shape inside the image.
    r = _uniform(n, 6.0, 12.0, g) * k
    cx = r + k + (size - 2 * r - 2 * k) * torch.rand(n, 1, 1, generator=g)
    cy = r + k + (size - 2 * r - 2 * k) * torch.rand(n, 1, 1, generator=g)
    dx, dy = x - cx, y - cy
    dist = torch.sqrt(dx * dx + dy * dy)
    width = torch.clamp(r / 3.5, min=1.6 * k)  # stroke width of cross, ring and bar

    # Textures: a period and phase for stripes, checks and dots.
    period = _uniform(n, 5.0, 9.0, g) * k
    px = torch.rand(n, 1, 1, generator=g) * period
    py = torch.rand(n, 1, 1, generator=g) * period
    u, v = (x + px) / period, (y + py) / period
    fu, fv = u - torch.floor(u) - 0.5, v - torch.floor(v) - 0.5  # offset to the nearest cell centre
    duty = _uniform(n, 0.35, 0.55, g)

    # The diagonal bar goes either way: "\" or "/".
    sign = torch.where(torch.rand(n, 1, 1, generator=g) < 0.5, -1.0, 1.0)
    along, across = (dx + sign * dy) / math.sqrt(2), (dx - sign * dy) / math.sqrt(2)

    shapes = torch.stack(torch.broadcast_tensors(*[
        dist <= r,                                                       # circle
        torch.maximum(dx.abs(), dy.abs()) <= r * 0.85,                   # square
        (dy >= -r) & (dy <= r) & (dx.abs() <= (dy + r) * 0.5),           # triangle, apex up
        fv.abs() <= duty / 2,                                            # horizontal stripes
        fu.abs() <= duty / 2,                                            # vertical stripes
        ((dx.abs() <= width / 2) & (dy.abs() <= r)) | ((dy.abs() <= width / 2) & (dx.abs() <= r)),  # cross
        (dist <= r) & (dist >= r - width),                               # ring
        (across.abs() <= width / 2 + 0.5 * k) & (along.abs() <= r * 1.2),    # diagonal bar
        (torch.floor(u) + torch.floor(v)) % 2 == 0,                      # checkerboard
        torch.sqrt(fu * fu + fv * fv) * period <= period * 0.22 + 0.3 * k,   # dots
    ]), dim=1)  # (N, 10, SIZE, SIZE)
    return shapes[torch.arange(n), labels].float()


def make_batch(n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
               noise: float = 0.03) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` fresh images (N, 1, 32, 32) in 0..1 and their labels (N,) int64.

    Labels are uniform over the classes unless given. The same generator state gives the same batch.
    """
    g = generator if generator is not None else torch.Generator().manual_seed(torch.seed() % 2**63)
    if labels is None:
        labels = torch.randint(0, len(CLASS_NAMES), (n,), generator=g)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() != n:
        raise ValueError(f"make_batch: {labels.numel()} labels for {n} images")
    if n and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise ValueError(f"make_batch: labels must lie in 0..{len(CLASS_NAMES) - 1}")
    mask = masks(labels, g)
    background = _uniform(n, 0.0, 0.2, g)
    foreground = _uniform(n, 0.6, 1.0, g)
    images = background + (foreground - background) * mask
    images = images + noise * torch.randn(images.shape, generator=g)
    return images.clamp(0, 1).unsqueeze(1), labels

"""A procedural captioned data set: 64x64 RGB images of one coloured shape on a dark background.

The shapes are the ten classes of the class-conditional example (nodes.classcond.data), drawn at 64x64
with 2x2 supersampling (smooth edges), in one of six colours, each with a caption such as
`a red circle`, `yellow checkerboard` or `a blue ring on a black background`. The colour word always
names the shape's colour. A few captions name only the shape or only the colour (the other is then
random), so that `a circle` and `something red` mean something too. Vectorised like the classcond
data: a batch costs far less than a training step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nodes.classcond.data import CLASS_NAMES as SHAPES
from nodes.classcond.data import masks

SIZE = 64
COLOURS = {  # name -> RGB in 0..1
    "red": (0.90, 0.12, 0.10),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.15),
    "white": (0.95, 0.95, 0.95),
    "purple": (0.60, 0.20, 0.80),
}
COLOUR_NAMES = tuple(COLOURS)
PLURAL = {"horizontal stripes", "vertical stripes", "dots"}
# Full captions; {a} is "a " before a singular shape and nothing before a plural one.
TEMPLATES = (
    "{a}{colour} {shape}",
    "{colour} {shape}",
    "{a}{colour} {shape} on a black background",
    "a photo of {a}{colour} {shape}",
    "{a}{shape} in {colour}",
)
SHAPE_ONLY = ("{a}{shape}", "{a}{shape} on a black background")
COLOUR_ONLY = ("something {colour}", "a {colour} shape")
PARTIAL = 0.1  # share of captions that name only the shape or only the colour


def caption_words() -> list[str]:
    """Every word a caption may use (the tokenizer gives each one token)."""
    text = " ".join((*COLOUR_NAMES, *SHAPES, *TEMPLATES, *SHAPE_ONLY, *COLOUR_ONLY))
    return sorted({w for w in text.replace("{a}", " ").split() if not w.startswith("{")})


def caption(colour: int, shape: int, template: str) -> str:
    name = SHAPES[shape]
    return template.format(a="" if name in PLURAL else "a ", colour=COLOUR_NAMES[colour], shape=name)


def render(colours: torch.Tensor, shapes: torch.Tensor, g: torch.Generator, noise: float = 0.01) -> torch.Tensor:
    """Images (N, 3, SIZE, SIZE) in 0..1 of the given colour and shape indices."""
    return render_with_masks(colours, shapes, g, noise)[0]


def render_with_masks(colours: torch.Tensor, shapes: torch.Tensor, g: torch.Generator, noise: float = 0.01):
    """As `render`, also the shapes' coverage (N, 1, SIZE, SIZE) in 0..1 (what is foreground)."""
    n = shapes.numel()
    mask = F.avg_pool2d(masks(shapes, g, 2 * SIZE).unsqueeze(1), 2)  # 2x2 supersampling
    base = torch.tensor(list(COLOURS.values()))[colours]  # (N, 3)
    fg = (base * (0.85 + 0.15 * torch.rand(n, 1, generator=g)) + 0.06 * torch.randn(n, 3, generator=g))
    bg = 0.12 * torch.rand(n, 1, generator=g) + 0.02 * torch.randn(n, 3, generator=g)
    fg, bg = fg.clamp(0, 1)[:, :, None, None], bg.clamp(0, 1)[:, :, None, None]
    images = bg + (fg - bg) * mask
    images = images + noise * torch.randn(images.shape, generator=g)
    return images.clamp(0, 1), mask


def make_batch(n: int, generator: torch.Generator | None = None, colours: torch.Tensor | None = None,
               shapes: torch.Tensor | None = None, partial: float = PARTIAL):
    """`n` images (N, 3, 64, 64) in 0..1, their captions, colour indices (N,) and shape indices (N,).

    Colours and shapes are uniform unless given; given ones always get full captions. The same
    generator state gives the same batch."""
    g = generator if generator is not None else torch.Generator().manual_seed(torch.seed() % 2**63)
    given = colours is not None or shapes is not None
    colours = torch.randint(0, len(COLOURS), (n,), generator=g) if colours is None else torch.as_tensor(colours)
    shapes = torch.randint(0, len(SHAPES), (n,), generator=g) if shapes is None else torch.as_tensor(shapes)
    colours, shapes = colours.long().reshape(-1), shapes.long().reshape(-1)
    if colours.numel() != n or shapes.numel() != n:
        raise ValueError(f"make_batch: {colours.numel()} colours and {shapes.numel()} shapes for {n} images")
    if n and not (0 <= colours.min() and colours.max() < len(COLOURS) and 0 <= shapes.min()
                  and shapes.max() < len(SHAPES)):
        raise ValueError(f"make_batch: colours lie in 0..{len(COLOURS) - 1}, shapes in 0..{len(SHAPES) - 1}")
    kind = torch.rand(n, generator=g)
    pick = torch.randint(0, 1 << 30, (n,), generator=g).tolist()
    captions = []
    for i in range(n):
        if not given and kind[i] < partial / 2:
            templates = SHAPE_ONLY
        elif not given and kind[i] < partial:
            templates = COLOUR_ONLY
        else:
            templates = TEMPLATES
        captions.append(caption(int(colours[i]), int(shapes[i]), templates[pick[i] % len(templates)]))
    return render(colours, shapes, g), captions, colours, shapes

"""Render the tutorial pictures (docs/tutorial.md) by running workflows/tutorial/*.json.

    python scripts/tutorial_figures.py [--out docs/tutorial] [--models-dir DIR]

Uses the shipped text-to-image model `shapes64` (copied into a temporary models folder unless
--models-dir holds it) and the shipped class-conditional model, on the CPU in float32 with one
thread, so the pictures are the same on every machine. Tables (tokens, embeddings) are drawn as
pictures. Each PNG is kept under 50 KB: noisy pictures are reduced to fewer colours, then smaller,
until they fit.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIMIT = 50_000
ORDER = ["forward_noising", "class_grid", "tokens", "embeddings", "cfg_sweep", "one_word", "vae_roundtrip",
         "annotated_loop"]
# Cheaper settings for the pictures only: 4 samples per class instead of 8.
CHANGES = {"class_grid": {"2": {"count": 4}}}


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def fit(image) -> bytes:
    """The PNG of `image`, with fewer colours and then fewer pixels until it is under LIMIT bytes."""
    from PIL import Image

    while True:
        data = png_bytes(image)
        for colours in (256, 128, 64, 32):
            if len(data) <= LIMIT:
                return data
            data = png_bytes(image.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
        if len(data) <= LIMIT:
            return data
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)


def picture(loom, name: str):
    """The workflow's saved image, or its text tables drawn as a picture."""
    from PIL import Image

    from nodes.inspect.grid import text_image

    wf = json.loads((ROOT / "workflows" / "tutorial" / f"{name}.json").read_text())
    for node_id, inputs in CHANGES.get(name, {}).items():
        wf[node_id]["inputs"].update(inputs)
    result = loom.run(wf)
    if not result.ok:
        raise RuntimeError(f"{name}: {result.error['node_type']}: {result.error['exception_message']}")
    saved = [p for p in loom.image_paths(result) if p.parent.name == "tutorial"]
    if saved:
        with Image.open(saved[0]) as png:
            return png.convert("RGB")
    lines = [line for ui in result.outputs.values() for line in ui.get("text", [])]
    return text_image(lines, size=13)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "tutorial"))
    p.add_argument("--models-dir", default=None, help="a models folder holding shapes64 (default: copy it)")
    p.add_argument("names", nargs="*", default=ORDER)
    args = p.parse_args(argv)

    import torch

    from graph import Env, Loom
    from nodes.textcond.model import install_shipped

    torch.set_num_threads(1)  # the same pixels on every machine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(args.models_dir) if args.models_dir else Path(tmp) / "models"
        install_shipped(models)  # unless it is there
        loom = Loom(Env.from_data_dir(Path(tmp) / "data", models_dir=models, device="cpu", dtype="float32"))
        for name in args.names:
            data = fit(picture(loom, name))
            (out / f"{name}.png").write_bytes(data)
            print(f"{out / f'{name}.png'}  {len(data) / 1000:.1f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

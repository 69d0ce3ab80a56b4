"""Quality of the class-conditional model: does each generated image show the class it was asked for?

An independent small CNN is trained on fresh samples of the procedural data set (it never sees the
generator's output), checked on held-out samples, then classifies `--per-class` generated images of each
class. Prints per-class and overall accuracy and writes the grid (one row per class) under bench/out/.

    python bench/classcond_quality.py [--model FOLDER] [--sampler ddpm] [--steps 50] [--guidance 8]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes.classcond import model as cm  # noqa: E402
from nodes.classcond.data import CLASS_NAMES, make_batch  # noqa: E402
from nodes.classcond.nodes import SHIPPED_DIR  # noqa: E402
from nodes.classcond.sample import SAMPLERS, sample  # noqa: E402
from nodes.common import image_to_pil  # noqa: E402


def classifier() -> nn.Module:
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(block(1, 16), block(16, 32), block(32, 64), nn.Flatten(),
                         nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, len(CLASS_NAMES)))


def train_classifier(steps: int, seed: int) -> tuple[nn.Module, float]:
    """The classifier and its accuracy on 2000 held-out fresh samples."""
    torch.manual_seed(seed)
    net = classifier()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        images, labels = make_batch(128, gen)
        loss = nn.functional.cross_entropy(net(images * 2 - 1), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    images, labels = make_batch(2000, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        held_out = (net(images * 2 - 1).argmax(1) == labels).float().mean().item()
    return net, held_out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(SHIPPED_DIR), help="model folder (default: the shipped one)")
    p.add_argument("--sampler", default="ddpm", choices=list(SAMPLERS))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=8.0)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classifier-steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "classcond_grid.png"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    net, held_out = train_classifier(args.classifier_steps, seed=1234)
    print(f"classifier: {held_out:.1%} on held-out real samples ({time.perf_counter() - t0:.0f} s)")

    model = cm.load(args.model)
    if model.class_names != CLASS_NAMES:
        raise SystemExit(f"{args.model}: its classes {model.class_names} are not the procedural data set's")
    guidance = args.guidance if model.null_class is not None else 1.0
    labels = torch.arange(len(CLASS_NAMES)).repeat_interleave(args.per_class)
    t0 = time.perf_counter()
    images = torch.cat([sample(model, chunk, args.seed + i, args.sampler, args.steps, guidance)
                        for i, chunk in enumerate(labels.split(50))])
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        predicted = net(images * 2 - 1).argmax(1)

    params = sum(p.numel() for p in model.unet.parameters())
    print(f"model: {args.model} ({params / 1e6:.2f}M parameters), sampler {args.sampler}, {args.steps} steps, "
          f"guidance {guidance}; {len(labels)} images in {seconds:.0f} s")
    correct = predicted == labels
    for k, name in enumerate(CLASS_NAMES):
        mine = labels == k
        wrong = predicted[mine & ~correct].tolist()
        confused = ", ".join(f"{CLASS_NAMES[c]} x{wrong.count(c)}" for c in sorted(set(wrong)))
        print(f"  {name:<20} {correct[mine].float().mean().item():6.1%}" + (f"   (taken for {confused})" if wrong else ""))
    overall = correct.float().mean().item()
    worst = min(correct[labels == k].float().mean().item() for k in range(len(CLASS_NAMES)))
    print(f"overall {overall:.1%}, worst class {worst:.1%} (goal: >= 90% overall, no class below 70%)")

    grid = images.view(len(CLASS_NAMES), args.per_class, 32, 32).permute(0, 2, 1, 3).reshape(
        len(CLASS_NAMES) * 32, args.per_class * 32)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_to_pil(grid[None, :, :, None])[0].resize((grid.shape[1] * 2, grid.shape[0] * 2), 0).save(out)
    print(f"grid: {out}")


if __name__ == "__main__":
    main()

"""Quality of the text-to-image model: does each image show the colour and the shape its prompt names?

An independent small CNN with a colour head and a shape head is trained on fresh images of the
procedural data set (it never sees the generator's output) and checked on held-out ones. Then Loom's
own graph (LoadCheckpoint -> Tokenize/EncodeText -> MakeNoiseLatents -> Sample -> VAEDecode) makes
`--seeds` images for each of the 6 x 10 prompts "a {colour} {shape}", at each guidance scale, and
the classifier scores them. At guidance 0 the sample is the unconditional prediction, so the prompt
should not matter (near chance: 1/6 for colour, 1/10 for shape). Also prints the VAE's round-trip
PSNR on fresh images and writes one grid per guidance under bench/out/.

Accuracy alone does not catch smeared pictures (a blotchy green circle is still a green circle), so
per colour and per shape the bench also reports the classifier's mean probability for the true
colour and the true shape, and the foreground spread: the standard deviation of the foreground
pixels (those whose brightest channel exceeds FOREGROUND, i.e. not the dark background, and whose 8
neighbours do too, so that anti-aliased edges do not count) of each
picture, averaged over channels and pictures, for the generated pictures and for real ones of the
same colours and shapes. A clean flat shape has the spread of the data's noise and anti-aliased
edges; blotches, patches of another colour and dim areas raise it. A contact sheet (one picture
per prompt: a row per colour, a column per shape, the first seed) goes under bench/out/ too.

The scorer is an ensemble of `--classifiers` such CNNs (seeds 1234, 1235, ...), their probabilities
averaged. One classifier's verdict on a borderline picture (a lumpy circle: circle or square?) is
training noise: the same 480 pictures scored by single classifiers that differ only in seed or in the
CPU threads they trained on gave one colour 93.8% to 100% shape accuracy, each classifier missing
other pictures. Each classifier trains on one thread, so the scores do not depend on `--threads`, and
the per-colour table shows the range of the single classifiers' shape accuracy beside the ensemble's.

    python bench/textcond_quality.py [--model FOLDER] [--guidance 7.5 0] [--seeds 4] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graph.threads import configure_threads  # noqa: E402


def classifier():
    from torch import nn

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    class Net(nn.Module):
        def __init__(self, colours: int, shapes: int):
            super().__init__()
            self.body = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64), nn.Flatten(),
                                      nn.Linear(64 * 4 * 4, 128), nn.ReLU())
            self.colour, self.shape = nn.Linear(128, colours), nn.Linear(128, shapes)

        def forward(self, x):
            h = self.body(x * 2 - 1)
            return self.colour(h), self.shape(h)

    from nodes.textcond.data import COLOUR_NAMES, SHAPES

    return Net(len(COLOUR_NAMES), len(SHAPES))


def train_classifier(steps: int, seed: int):
    """The classifier and its (colour, shape) accuracy on 1000 held-out fresh images; trained on one
    CPU thread, so that the same seed gives the same classifier whatever torch's thread count."""
    import torch
    from torch.nn.functional import cross_entropy

    from nodes.common import torch_threads
    from nodes.textcond.data import make_batch

    with torch_threads(1):
        torch.manual_seed(seed)
        net = classifier()
        opt = torch.optim.Adam(net.parameters(), 2e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            images, _, colours, shapes = make_batch(64, gen)
            colour, shape = net(images)
            loss = cross_entropy(colour, colours) + cross_entropy(shape, shapes)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        images, _, colours, shapes = make_batch(1000, torch.Generator().manual_seed(seed + 1))
        with torch.no_grad():
            colour, shape = net(images)
    return net, ((colour.argmax(1) == colours).float().mean().item(), (shape.argmax(1) == shapes).float().mean().item())


def score(nets, images):
    """(p_colour, p_shape, member_shapes) of `images` (N, 3, H, W): the classifiers' probabilities
    averaged, and each classifier's own shape prediction (K, N)."""
    import torch

    with torch.no_grad():
        outputs = [net(images) for net in nets]
    p_colour = torch.stack([colour.softmax(1) for colour, _ in outputs]).mean(0)
    p_shape = torch.stack([shape.softmax(1) for _, shape in outputs]).mean(0)
    return p_colour, p_shape, torch.stack([shape.argmax(1) for _, shape in outputs])


def txt2img(prompt: str, seed: int, batch: int, guidance: float, steps: int, kind: str, model: str) -> dict:
    """workflows/shapes.json (Loom's txt2img graph at 64x64, API format) with these settings."""
    import json

    wf = json.loads((ROOT / "workflows" / "shapes.json").read_text())
    wf.pop("10")  # the images are scored, not saved
    wf["1"]["inputs"]["model"] = model
    wf["2"]["inputs"]["text"] = prompt
    wf["6"]["inputs"].update(kind=kind, steps=steps)
    wf["7"]["inputs"].update(batch_size=batch, seed=seed)
    wf["8"]["inputs"]["guidance_scale"] = guidance
    return wf


def generate(loom, model: str, guidance: float, seeds: int, steps: int, kind: str):
    """Images (60 * seeds, H, W, 3) in prompt order (colour-major), with their colour and shape indices."""
    import torch

    from nodes.textcond.data import COLOUR_NAMES, SHAPES, TEMPLATES, caption

    images, colours, shapes = [], [], []
    for c in range(len(COLOUR_NAMES)):
        for s in range(len(SHAPES)):
            wf = txt2img(caption(c, s, TEMPLATES[0]), 1000 * c + 10 * s, seeds, guidance, steps, kind, model)
            result = loom.run(loom.validate(wf, outputs=["9"]))
            assert result.ok, result.error
            images.append(result.values["9"][0])
            colours += [c] * seeds
            shapes += [s] * seeds
    return torch.cat(images), torch.tensor(colours), torch.tensor(shapes)


FOREGROUND = 0.35  # brightest channel above this: not background (the background is at most ~0.2)


def foreground_spread(images):
    """Per picture (N, H, W, 3 in 0..1): std of its inner foreground pixels, the mean over channels (NaN
    where a picture has under 8 foreground pixels)."""
    import torch
    import torch.nn.functional as F

    fg = (images.amax(-1) > FOREGROUND).float()[:, None]
    fg = (-F.max_pool2d(-fg, 3, 1, 1))[:, 0] > 0.5  # eroded: the anti-aliased edges are left out
    spreads = []
    for image, mask in zip(images, fg):
        pixels = image[mask]
        spreads.append(pixels.std(0).mean() if len(pixels) >= 8 else torch.tensor(float("nan")))
    return torch.stack(spreads)


def real_like(colours, shapes, seed: int = 99):
    """Real data-set pictures (N, H, W, 3) of these colours and shapes."""
    import torch

    from nodes.textcond.data import make_batch

    return make_batch(len(colours), torch.Generator().manual_seed(seed), colours, shapes)[0].permute(0, 2, 3, 1)


def ratio_interval(made, real, level: float = 0.95, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of mean(made) / mean(real) (NaNs left out): the pictures (made[i] and
    real[i] share a prompt) drawn again with replacement, `draws` times. With 40 pictures a colour
    the ratio moves by a few tenths between seed sets: this says how far."""
    import torch

    keep = ~(made.isnan() | real.isnan())
    made, real = made[keep], real[keep]
    index = torch.randint(0, len(made), (draws, len(made)), generator=torch.Generator().manual_seed(seed))
    ratios = made[index].mean(1) / real[index].mean(1)
    low, high = torch.quantile(ratios, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=ratios.dtype))
    return float(low), float(high)


def detail(title: str, names, key, colours, shapes, p_colour, p_shape, spread, spread_real,
           member_shapes) -> list[dict]:
    """Per colour or per shape (`key`: the index tensor grouped by): accuracies (the shape's also
    per single classifier: `member_shapes`, (K, N) predictions, as its lowest and highest), mean
    true-class probabilities, foreground spread of generated vs real pictures (with its ratio's 95%
    bootstrap interval). Printed; returned as rows."""
    print(f"  per {title}: colour acc, shape acc (single classifiers: lowest-highest), mean p(true colour), "
          f"mean p(true shape), foreground spread generated / real (ratio, 95% interval)")
    rows = []
    for k, name in enumerate(names):
        mine = key == k
        pc, ps = p_colour[mine], p_shape[mine]
        row = dict(name=name, colour=(pc.argmax(1) == colours[mine]).float().mean().item(),
                   shape=(ps.argmax(1) == shapes[mine]).float().mean().item(),
                   p_colour=pc.gather(1, colours[mine, None]).mean().item(),
                   p_shape=ps.gather(1, shapes[mine, None]).mean().item(),
                   p_shape_min=ps.gather(1, shapes[mine, None]).min().item(),
                   spread=spread[mine].nanmean().item(), spread_real=spread_real[mine].nanmean().item())
        members = (member_shapes[:, mine] == shapes[mine]).float().mean(1)
        row["shape_low"], row["shape_high"] = members.min().item(), members.max().item()
        row["spread_low"], row["spread_high"] = ratio_interval(spread[mine], spread_real[mine])
        rows.append(row)
        print(f"    {name:<20} {row['colour']:6.1%} {row['shape']:6.1%} ({row['shape_low']:.1%}-"
              f"{row['shape_high']:.1%})   {row['p_colour']:.3f}  "
              f"{row['p_shape']:.3f} (min {row['p_shape_min']:.2f})   {row['spread']:.3f} / "
              f"{row['spread_real']:.3f} ({row['spread'] / row['spread_real']:.2f}x, "
              f"{row['spread_low']:.2f}-{row['spread_high']:.2f})")
    return rows


# Per colour, at guidance > 1 (issue 26): accuracy, the classifier's confidence in the true shape, and
# the foreground spread within this factor of real pictures of that colour.
GOALS = dict(colour=0.97, shape=0.95, p_shape=0.9, spread_ratio=1.5)


def missed_goals(rows: list[dict]) -> list[str]:
    """The per-colour goals (GOALS) that `rows` (detail's, per colour) miss, as readable lines."""
    missed = []
    for row in rows:
        values = {**{key: row[key] for key in ("colour", "shape", "p_shape")},
                  "spread_ratio": row["spread"] / row["spread_real"]}
        for key, value in values.items():
            at_most = key == "spread_ratio"  # the only goal that is an upper bound
            if not (value <= GOALS[key] if at_most else value >= GOALS[key]):
                missed.append(f"{row['name']}: {key} {value:.3f} (goal {'<=' if at_most else '>='} {GOALS[key]})")
    return missed


def contact_sheet(images, colours: int, shapes: int, seeds: int, scale: int = 2):
    """The first seed of every prompt, a row per colour and a column per shape, scaled up, 2 px gaps."""
    import torch

    first = images.view(colours, shapes, seeds, *images.shape[1:])[:, :, 0]
    first = first.repeat_interleave(scale, 2).repeat_interleave(scale, 3)  # (C, S, h, w, 3)
    h, w = first.shape[2:4]
    sheet = torch.full((colours * (h + 2) + 2, shapes * (w + 2) + 2, 3), 0.5)
    for c in range(colours):
        for s in range(shapes):
            sheet[2 + c * (h + 2):2 + c * (h + 2) + h, 2 + s * (w + 2):2 + s * (w + 2) + w] = first[c, s]
    return sheet


def table(title: str, names, asked, predicted) -> float:
    print(f"  {title}")
    for k, name in enumerate(names):
        mine = asked == k
        right = (predicted[mine] == k).float().mean().item()
        wrong = predicted[mine & (predicted != k)].tolist()
        confused = ", ".join(f"{names[c]} x{wrong.count(c)}" for c in sorted(set(wrong)))
        print(f"    {name:<20} {right:6.1%}" + (f"   (taken for {confused})" if wrong else ""))
    overall = (asked == predicted).float().mean().item()
    print(f"    {'overall':<20} {overall:6.1%}   (chance {1 / len(names):.1%})")
    return overall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a diffusers folder (default: the shipped model)")
    p.add_argument("--guidance", type=float, nargs="+", default=[7.5, 0.0])
    p.add_argument("--seeds", type=int, default=4, help="images per prompt")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sampler", default="dpmpp_2m", help="a SetScheduler kind")
    p.add_argument("--classifier-steps", type=int, default=300)
    p.add_argument("--classifiers", type=int, default=3, help="classifiers in the scoring ensemble")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = p.parse_args()
    configure_threads(args.threads)

    import torch
    from diffusers import AutoencoderKL

    from graph import Env, Loom
    from nodes.common import image_to_pil
    from nodes.textcond.data import COLOUR_NAMES, SHAPES
    from nodes.textcond.model import shipped_folder
    from nodes.textcond.train import psnr

    folder = Path(args.model) if args.model else shipped_folder()
    vae = AutoencoderKL.from_pretrained(folder / "vae", dtype=torch.float32).eval()
    print(f"model: {folder}")
    print(f"VAE round trip on 256 fresh images: PSNR {psnr(vae, 256):.2f} dB (goal >= 28 dB)")

    t0 = time.perf_counter()
    nets = []
    for k in range(args.classifiers):
        net, (colour_acc, shape_acc) = train_classifier(args.classifier_steps, seed=1234 + k)
        nets.append(net)
        print(f"classifier {k + 1} of {args.classifiers}: colour {colour_acc:.1%}, shape {shape_acc:.1%} "
              f"on held-out real images ({time.perf_counter() - t0:.0f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"  # a models folder holding only this model
        shutil.copytree(folder, models / folder.name)
        loom = Loom(Env.from_data_dir(Path(tmp) / "data", models_dir=models, device="cpu", dtype="float32"))
        for guidance in args.guidance:
            t0 = time.perf_counter()
            images, colours, shapes = generate(loom, folder.name, guidance, args.seeds, args.steps, args.sampler)
            seconds = time.perf_counter() - t0
            p_colour, p_shape, member_shapes = score(nets, images.permute(0, 3, 1, 2))
            spread, spread_real = foreground_spread(images), foreground_spread(real_like(colours, shapes))
            print(f"\nguidance {guidance}: {len(images)} images ({args.sampler}, {args.steps} steps) in {seconds:.0f} s")
            c = table("colour accuracy", COLOUR_NAMES, colours, p_colour.argmax(1))
            s = table("shape accuracy", SHAPES, shapes, p_shape.argmax(1))
            goal = "goal: colour >= 90%, shape >= 75%" if guidance > 1 else "goal: near chance"
            print(f"  guidance {guidance}: colour {c:.1%}, shape {s:.1%} ({goal})")
            details = {
                "colours": detail("colour", COLOUR_NAMES, colours, colours, shapes, p_colour, p_shape, spread,
                                  spread_real, member_shapes),
                "shapes": detail("shape", SHAPES, shapes, colours, shapes, p_colour, p_shape, spread, spread_real,
                                 member_shapes)}
            if guidance > 1:
                missed = missed_goals(details["colours"])
                print("  per-colour goals (" + ", ".join(f"{k} {v}" for k, v in GOALS.items()) + "): "
                      + ("all met" if not missed else "missed: " + "; ".join(missed)))
            out = Path(args.out) / f"textcond_detail_g{guidance:g}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(dict(guidance=guidance, colour=c, shape=s, seeds=args.seeds,
                                           classifiers=args.classifiers,
                                           steps=args.steps, sampler=args.sampler, **details), indent=1))
            sheet = Path(args.out) / f"textcond_contact_g{guidance:g}.png"
            image_to_pil(contact_sheet(images, len(COLOUR_NAMES), len(SHAPES), args.seeds)[None])[0].save(sheet)
            print(f"  figures: {out}; contact sheet (a row per colour, a column per shape, first seed): {sheet}")
            rows, cols = len(COLOUR_NAMES) * len(SHAPES) // 10, 10 * args.seeds
            grid = images.view(rows, cols, 64, 64, 3).permute(0, 2, 1, 3, 4).reshape(rows * 64, cols * 64, 3)
            out = Path(args.out) / f"textcond_grid_g{guidance:g}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            image_to_pil(grid[None])[0].save(out)
            print(f"  grid (one row per colour, {args.seeds} seeds per shape): {out}")


if __name__ == "__main__":
    main()

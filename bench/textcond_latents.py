"""Where the text-to-image model's VAE puts each colour in latent space, and its round trip per colour.

For fresh pictures of each colour (all ten shapes), encodes them with the VAE (posterior means, the
shipped folder's raw latents) and reports per colour: the round-trip PSNR, the mean of each latent
channel over foreground cells (latent cells the shape covers fully) and over background cells (not
covered at all), and the separation of the colour from the background on each channel: the distance
of the means in units of the colour's within-colour standard deviation over its foreground cells;
and the round trip's foreground spread against the real pictures' (textcond_quality.foreground_spread):
a decoder that draws texture into flat shapes makes every generated picture blotchy too. The noisy
round trip decodes the latents with Gaussian noise of NOISE times the latents' std added, about the
error of the UNet's latents: a decoder that draws that error as blotches has a high spread there.
A colour close to the background (or to another colour) on the channels that carry colour is one
that small UNet errors turn into background (holes) or into that other colour.

    python bench/textcond_latents.py [--model FOLDER | --vae VAE_FOLDER] [--count 256]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graph.threads import configure_threads  # noqa: E402

NOISE = 0.2  # the UNet's latents miss the encoder's by about this (rms, in units of the latents' std)


def measure(vae, count: int = 256, seed: int = 777, batch: int = 64, cover: float = 0.95) -> dict:
    """Per colour: psnr (dB), fg (C,) and fg_std (C,) latent channel means/stds over foreground cells,
    the foreground spread of the round trip, of the noisy round trip and of the real pictures; also
    'background': bg (C,) and bg_std (C,). Images drawn with `seed`, `count` per colour.
    Foreground cells: those the shape covers more than `cover` of (0.5 takes in edge cells too)."""
    import torch
    import torch.nn.functional as F

    from nodes.textcond.data import COLOUR_NAMES, SHAPES, render_with_masks
    from nodes.textcond.train import latent_std
    from textcond_quality import foreground_spread

    noise = NOISE * latent_std(vae)
    gen = torch.Generator().manual_seed(seed)
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    result, backgrounds = {}, []
    for c, name in enumerate(COLOUR_NAMES):
        fgs, errors, spreads = [], [], []
        for start in range(0, count, batch):
            n = min(batch, count - start)
            shapes = torch.arange(start, start + n) % len(SHAPES)
            images, mask = render_with_masks(torch.full((n,), c), shapes, gen)
            with torch.no_grad():
                latents = vae.encode(images * 2 - 1).latent_dist.mode()
                recon, noisy = ((vae.decode(z).sample / 2 + 0.5).clamp(0, 1)
                                for z in (latents, latents + noise * torch.randn(latents.shape, generator=gen)))
            errors.append((recon - images).pow(2).flatten(1).mean(1))
            spreads.append(torch.stack([foreground_spread(x.permute(0, 2, 3, 1)) for x in (recon, noisy, images)], 1))
            covered = F.avg_pool2d(mask, down)[:, 0]  # (N, h, w)
            cells = latents.permute(0, 2, 3, 1)  # (N, h, w, C)
            fgs.append(cells[covered > cover])
            backgrounds.append(cells[covered < 0.05])
        fg = torch.cat(fgs)
        spread = torch.cat(spreads).nanmean(0)
        result[name] = dict(psnr=float(-10 * torch.log10(torch.cat(errors).mean())), fg=fg.mean(0), fg_std=fg.std(0),
                            spread=float(spread[0]), spread_noisy=float(spread[1]), spread_real=float(spread[2]))
    bg = torch.cat(backgrounds)
    result["background"] = dict(bg=bg.mean(0), bg_std=bg.std(0))
    return result


def overall_psnr(result: dict) -> float:
    """PSNR over all colours' pictures (each colour has the same count)."""
    import math

    mse = [10 ** (-r["psnr"] / 10) for k, r in result.items() if k != "background"]
    return -10 * math.log10(sum(mse) / len(mse))


def separation(result: dict, name: str, channel: int) -> float:
    """Distance of a colour's foreground mean from the background's, in its within-colour stds."""
    r = result[name]
    return float((r["fg"][channel] - result["background"]["bg"][channel]).abs() / r["fg_std"][channel])


def colour_channel(result: dict) -> int:
    """The channel whose foreground means vary most between colours (where colour lives)."""
    import torch

    means = torch.stack([v["fg"] for k, v in result.items() if k != "background"])
    return int(means.std(0).argmax())


def report(result: dict) -> None:
    bg = result["background"]
    channels = len(bg["bg"])
    ch = colour_channel(result)
    print(f"colour lives mostly on channel {ch}")
    print(f"{'':<11} {'PSNR':>6}  " + "  ".join(f"ch{k} mean (std)" for k in range(channels))
          + f"  sep ch{ch}  sep all  gap bg  nearest colour (gap)  fg spread round trip / real, noisy / real")
    for name, r in result.items():
        if name == "background":
            continue
        dist = ((r["fg"] - bg["bg"]) / r["fg_std"]).norm()
        others = {k: float((v["fg"] - r["fg"]).norm()) for k, v in result.items() if k not in ("background", name)}
        near = min(others, key=others.get)
        print(f"{name:<11} {r['psnr']:6.2f}  " + "  ".join(f"{r['fg'][k]:6.2f} ({r['fg_std'][k]:.2f})" for k in range(channels))
              + f"  {separation(result, name, ch):7.2f}  {dist:7.2f}  {float((r['fg'] - bg['bg']).norm()):6.2f}"
              f"  {near} ({others[near]:.2f})  {r['spread']:.4f} / {r['spread_real']:.4f} ({r['spread'] / r['spread_real']:.2f}x)"
              f", {r['spread_noisy'] / r['spread_real']:.2f}x")
    print(f"{'background':<11} {'':>6}  " + "  ".join(f"{bg['bg'][k]:6.2f} ({bg['bg_std'][k]:.2f})" for k in range(channels)))
    low = [k for k, r in result.items() if k != "background" and r["psnr"] < 27]
    mean = overall_psnr(result)
    met = mean >= 28 and not low
    print(f"mean round trip: PSNR {mean:.2f} dB (goal >= 28 dB, every colour >= 27 dB: "
          + ("met)" if met else f"missed{': ' + ', '.join(low) + ' under 27' if low else ''})"))
    print("sep: |colour mean - background mean| / the colour's std (on the colour channel; over all channels);"
          " gap: Euclidean distance of the means (all channels) in latent units;"
          f" noisy: the latents plus Gaussian noise of {NOISE} x their std")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a diffusers folder (default: the shipped model)")
    p.add_argument("--vae", default=None, help="a VAE folder instead (e.g. RUN/vae)")
    p.add_argument("--count", type=int, default=256, help="pictures per colour")
    p.add_argument("--cover", type=float, default=0.95, help="foreground cells: covered more than this")
    p.add_argument("--scaled", action="store_true", help="latents of unit std (what the UNet sees)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    configure_threads(args.threads)

    import torch
    from diffusers import AutoencoderKL

    from nodes.textcond.model import shipped_folder

    folder = Path(args.vae) if args.vae else Path(args.model or shipped_folder()) / "vae"
    vae = AutoencoderKL.from_pretrained(folder, dtype=torch.float32).eval()
    print(f"VAE: {folder}, {args.count} pictures per colour")
    if args.scaled:  # latents of unit std, as the UNet sees them (for the shipped VAE: x 0.18215)
        from nodes.textcond.train import fold_scaling, latent_std

        fold_scaling(vae, 1 / latent_std(vae), target=1.0)
    report(measure(vae, args.count, cover=args.cover))


if __name__ == "__main__":
    main()

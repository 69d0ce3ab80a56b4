"""Command line of the text-to-image model: train its two stages, export a shippable folder.

    python -m nodes.textcond vae    --out RUN [--minutes M] [--resume]
    python -m nodes.textcond decoder --out RUN [--minutes M] [--resume]   (the encoder frozen; saves RUN/decoder)
    python -m nodes.textcond robust --out RUN [--latent-noise S]   (RUN/decoder on noisy latents; saves RUN/robust)
    python -m nodes.textcond unet   --out RUN [--minutes M] [--resume] [--init OTHER_RUN/unet_state.pt]
    python -m nodes.textcond guided --out RUN [--guided-weight W]   (RUN's UNet, guided prediction pulled to the noise; saves RUN/guided)
    python -m nodes.textcond export RUN/guided FOLDER [--decoder RUN/robust] [--single-file FILE.safetensors]
    python -m nodes.textcond retrain --out RUN [--colour-probe W]   (all of it, resumable: see retrain.py)

CPU threads are set before torch is imported (--threads, default one per physical core).
"""
from __future__ import annotations

import argparse
import sys

from graph.threads import configure_threads

from .retrain import RECIPE

DEFAULTS = {"vae": dict(steps=3000, batch=8, lr=5e-4), "decoder": dict(steps=3000, batch=8, lr=5e-4),
            "unet": dict(steps=6000, batch=32, lr=5e-4),
            **{stage: {k: RECIPE[stage][k] for k in ("steps", "batch", "lr")} for stage in ("robust", "guided")}}


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m nodes.textcond", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    helps = {"vae": "train the VAE (stage 1)", "decoder": "continue the VAE's decoder, its encoder frozen",
             "unet": "train the UNet and the text encoder on the frozen VAE (stage 2)",
             "robust": "fine-tune the decoder stage's decoder on noisy latents (the UNet's errors drawn flat)",
             "guided": "fine-tune the UNet stage's UNet so that its guided prediction is accurate in the nearly clean steps"}
    for stage, help_ in helps.items():
        s = sub.add_parser(stage, help=help_)
        s.add_argument("--out", required=True, help="run folder (vae/, pipeline/, training state)")
        s.add_argument("--steps", type=int, default=DEFAULTS[stage]["steps"])
        s.add_argument("--minutes", type=float, default=None, help="stop after this much training time")
        s.add_argument("--batch", type=int, default=DEFAULTS[stage]["batch"])
        s.add_argument("--lr", type=float, default=DEFAULTS[stage]["lr"])
        s.add_argument("--save-every", type=int, default=250)
        if stage not in ("unet", "guided"):
            s.add_argument("--crop", type=int, default=None, help="train on random crops of this size (e.g. 32)")
            if stage == "vae":
                s.add_argument("--colour-probe", type=float, default=1.0,
                               help="weight of the colour probe loss (latent cells carry their RGB linearly); 0: off")
            if stage == "robust":
                s.add_argument("--latent-noise", type=float, default=RECIPE["robust"]["latent_noise"],
                               help="noise std added to latents, up to this times their std")
                s.add_argument("--recon-loss", choices=("mse", "l1"), default=RECIPE["robust"]["recon_loss"],
                               help="reconstruction loss (l1: sharp edges where noise leaves them uncertain)")
        else:
            s.add_argument("--snr-gamma", type=float, default=5.0, help="min-SNR loss weighting; 0: plain MSE")
            s.add_argument("--offset-noise", type=float, default=0.3, help="std of the per-channel noise offset")
            s.add_argument("--x0-weight-cap", type=float, default=50.0,
                           help="cap of the (1 + SNR) / SNR loss weight at high noise; 0: none")
            if stage == "unet":
                s.add_argument("--init", default=None, help="start from this UNet-stage state file (fine-tuning)")
            else:
                s.add_argument("--guided-weight", type=float, default=RECIPE["guided"]["guided_weight"],
                               help="weight of the guided prediction's loss in the nearly clean steps")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--resume", action="store_true", help="continue from the run folder's training state")
        s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        s.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    r = sub.add_parser("retrain", help="all stages from scratch with today's defaults (resumable; about 150 min, 4.3 CPU-hours on 2 cores)")
    r.add_argument("--out", required=True, help="run folder; rerun the command to resume")
    r.add_argument("--colour-probe", type=float, default=1.0, help="the VAE stage's colour probe weight; 0: off")
    r.add_argument("--save-every", type=int, default=250)
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--device", default=None)
    e = sub.add_parser("export", help="write a float16 diffusers folder (and optionally a single file)")
    e.add_argument("src", help="a trained pipeline folder, e.g. RUN/pipeline")
    e.add_argument("dst")
    e.add_argument("--single-file", default=None, help="also write this LDM-layout .safetensors file")
    e.add_argument("--decoder", default=None, help="a VAE folder whose decoder replaces the run's (from `decoder` or `robust`)")
    e.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def progress_bar(desc: str, steps: int, position: int | None = None):
    """A tqdm bar and the on_step hook (step, total, loss) that moves it, showing the smoothed loss
    (`position`: its line, for bars shown at the same time)."""
    from tqdm import tqdm

    bar = tqdm(total=steps, unit="step", dynamic_ncols=True, desc=desc, mininterval=5, position=position)
    smooth = None

    def on_step(step, total, loss):
        nonlocal smooth
        smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
        bar.total = total
        bar.set_postfix(loss=f"{smooth:.4f}", refresh=False)
        bar.update(step - bar.n)  # redraws at most every mininterval (a log keeps a line per redraw)

    return bar, on_step


def main(argv=None) -> None:
    args = parse(argv)
    configure_threads(args.threads)
    if args.command == "export":
        from .export import export

        export(args.src, args.dst, args.single_file, args.decoder)
        print(f"wrote {args.dst}" + (f" and {args.single_file}" if args.single_file else ""))
        return
    import torch

    from . import train

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.command == "retrain":
        from .retrain import retrain

        bars = []

        def progress(stage, steps):
            bars.append(progress_bar(stage, steps, position=len(bars)))  # decoder and unet run at once
            return bars[-1][1]

        folder = retrain(args.out, device, colour_probe=args.colour_probe, save_every=args.save_every,
                         progress=progress)
        for bar, _ in bars:
            bar.close()
        print(f"wrote {folder}")
        return
    if args.command in train.UNET_STAGES:
        stage = dict(snr_gamma=args.snr_gamma or None, offset_noise=args.offset_noise,
                     x0_weight_cap=args.x0_weight_cap or None, guided_weight=getattr(args, "guided_weight", 0.0))
    else:
        stage = dict(crop=args.crop, colour_probe=getattr(args, "colour_probe", 0.0),
                     latent_noise=getattr(args, "latent_noise", 0.0), recon_loss=getattr(args, "recon_loss", "mse"))
    config = (train.UNetConfig if args.command in train.UNET_STAGES else train.StageConfig)(
        steps=args.steps, batch=args.batch, lr=args.lr, minutes=args.minutes, save_every=args.save_every,
        seed=args.seed, **stage)
    bar, on_step = progress_bar(args.command, config.steps)
    if args.command in train.VAE_STAGES:
        vae = train.train_vae(config, args.out, device, on_step, resume=args.resume, stage=args.command)
        bar.close()
        saved = f"{args.out}/{train.VAE_STAGES[args.command][2]}"
        print(f"VAE round trip on fresh images: PSNR {train.psnr(vae):.2f} dB; saved to {saved}")
    else:
        train.train_unet(config, args.out, device, on_step, resume=args.resume, init=getattr(args, "init", None),
                         stage=args.command)
        bar.close()
        print(f"saved the EMA pipeline to {args.out}/{train.UNET_STAGES[args.command][2]}")


if __name__ == "__main__":
    main(sys.argv[1:])

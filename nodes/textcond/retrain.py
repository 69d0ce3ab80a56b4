"""Retrain the text-to-image model from scratch in one command: the VAE, its decoder, the UNet, export.

    python -m nodes.textcond retrain --out RUN [--colour-probe W]

The VAE stage adds the colour probe loss (weight 1 by default; `--colour-probe 0` gives the shipped
model's VAE recipe): see train.StageConfig.colour_probe and docs/builtin-models.md.

Each stage writes RUN/<stage>.done (its settings and time, JSON) when it finishes; a rerun skips the
stages that have one, resumes an unfinished stage from its last checkpoint (RUN/<stage>_state.pt,
every `save_every` steps) and starts the rest. The settings (RECIPE) are those of the shipped model's
run, in steps rather than minutes so that a rerun on another machine trains the same amount; on this
machine's 2 shared CPU cores that was about 55 + 122 + 170 minutes. The decoder stage overwrites
RUN/vae with the better decoder (the encoder frozen: the latent space is the same), which the UNet
stage then trains on and export ships: RUN/shapes64, a float16 diffusers folder.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

STAGES = ("vae", "decoder", "unet", "export")
RECIPE = {
    "vae": dict(steps=1500, batch=16, lr=2e-3, crop=32),  # 55 min here
    "decoder": dict(steps=3900, batch=8, lr=1e-3),  # 122 min
    "unet": dict(steps=11600, batch=24, lr=5e-4),  # about 170 min (offset noise and x0 weighting: defaults)
}
MINUTES = {"vae": 55, "decoder": 122, "unet": 170, "export": 0}  # on this machine's 2 shared CPU cores
CHECKPOINT = {"vae": "vae_state.pt", "decoder": "decoder_state.pt", "unet": "unet_state.pt"}
EXPORTED = "shapes64"

Progress = Callable[[str, int], Callable[[int, int, float], None]]  # (stage, steps) -> on_step


def done_file(out: Path, stage: str) -> Path:
    return out / f"{stage}.done"


def plan(out: str | Path) -> list[tuple[str, str]]:
    """(stage, what happens to it: 'skip', 'resume' or 'start') for each stage, in order."""
    out = Path(out)
    return [(stage, "skip" if done_file(out, stage).is_file()
             else "resume" if stage in CHECKPOINT and (out / CHECKPOINT[stage]).is_file() else "start")
            for stage in STAGES]


def configs(recipe: dict, colour_probe: float = 1.0, save_every: int = 250, seed: int = 0) -> dict:
    """The stages' config objects from a recipe (stage -> StageConfig/UNetConfig fields)."""
    from .train import StageConfig, UNetConfig

    made = {}
    for stage in ("vae", "decoder", "unet"):
        fields = dict(save_every=save_every, seed=seed, **recipe[stage])
        if stage == "vae":
            fields.setdefault("colour_probe", colour_probe)
        made[stage] = (UNetConfig if stage == "unet" else StageConfig)(**fields)
    return made


def retrain(out: str | Path, device: str = "cpu", recipe: dict = RECIPE, colour_probe: float = 1.0,
            save_every: int = 250, progress: Progress | None = None, stages: dict | None = None) -> Path:
    """Run every stage not yet done (see the module docstring); returns the exported folder.
    `stages` replaces stage functions (name -> fn(config, out, device, on_step, resume)), for tests."""
    from . import train
    from .export import export

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = {"vae": lambda c, o, d, h, r: train.train_vae(c, o, d, h, resume=r),
           "decoder": lambda c, o, d, h, r: train.train_vae(c, o, d, h, resume=r, decoder_only=True),
           "unet": lambda c, o, d, h, r: train.train_unet(c, o, d, h, resume=r),
           "export": lambda c, o, d, h, r: export(o / "pipeline", o / EXPORTED)}
    run.update(stages or {})
    cfgs = configs(recipe, colour_probe, save_every)
    for stage, action in plan(out):
        if action == "skip":
            print(f"{stage}: done ({done_file(out, stage)}), skipped")
            continue
        cfg = cfgs.get(stage)
        print(f"{stage}: {action} ({cfg.steps if cfg else '-'} steps, about {MINUTES[stage]} min on 2 CPU cores)")
        hook = progress(stage, cfg.steps) if progress and cfg else None
        t0 = time.monotonic()
        run[stage](cfg, out, device, hook, action == "resume")
        record = {"stage": stage, "seconds": round(time.monotonic() - t0, 1), "resumed": action == "resume",
                  "config": vars(cfg) if cfg else None}
        done_file(out, stage).write_text(json.dumps(record, indent=1))
    return out / EXPORTED

"""Retrain the text-to-image model from scratch in one command: the VAE, its decoder, the UNet, a
decoder robust to the UNet's errors, the UNet fine-tuned for guidance, export.

    python -m nodes.textcond retrain --out RUN [--colour-probe W]

The VAE stage adds the colour probe loss (weight 1 by default, as the shipped model was trained;
`--colour-probe 0` turns it off): see train.StageConfig.colour_probe and docs/builtin-models.md.
The shipped model is this command's output: about 150 minutes, 4.3 CPU-hours on 2 cores (the
robust and guided stages, changed or added later, ran as this command's rerun on a copy of the
first run's folder; see docs/builtin-models.md).

The decoder stage (the encoder frozen, saved to RUN/decoder) and the UNet stage (on RUN/vae's latent
space, which the decoder stage does not change) run side by side in two threads, each with half of
torch's CPU threads: these small models gain almost nothing from a second thread per step, so the
pair takes about as long as the UNet alone. The robust stage then fine-tunes that decoder on
latents with added noise (train.StageConfig.latent_noise), saved to RUN/robust; the guided stage
fine-tunes the UNet so that its guided prediction is accurate in the nearly clean steps
(train.UNetConfig.guided_weight), saved to RUN/guided; export puts RUN/robust's decoder into
RUN/guided's pipeline: RUN/shapes64, a float16 diffusers folder.

Each stage writes RUN/<stage>.done (its settings and time, JSON) when it finishes; a rerun skips the
stages that have one, resumes an unfinished stage from its last checkpoint (RUN/<stage>_state.pt,
every `save_every` steps) and starts the rest. The settings (RECIPE) are in steps rather than
minutes so that a rerun on another machine trains the same amount (MINUTES: this machine's 2 CPU
cores, quiet).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable

STAGES = ("vae", "decoder", "unet", "robust", "guided", "export")
RECIPE = {
    "vae": dict(steps=3000, batch=16, lr=2e-3, crop=32),
    "decoder": dict(steps=10000, batch=8, lr=1e-3),
    "unet": dict(steps=11600, batch=24, lr=5e-4),  # offset noise and x0 weighting: the defaults
    "robust": dict(steps=5000, batch=8, lr=2e-4, latent_noise=1.2, recon_loss="l1"),
    "guided": dict(steps=1500, batch=24, lr=5e-5, guided_weight=0.1),
}
MINUTES = {"vae": 12, "decoder": 77, "unet": 93, "robust": 25, "guided": 20, "export": 0}  # measured on 2 quiet CPU cores; decoder beside unet
SIDE_BY_SIDE = ("decoder", "unet")
EXPORTED = "shapes64"

Progress = Callable[[str, int], Callable[[int, int, float], None]]  # (stage, steps) -> on_step


def done_file(out: Path, stage: str) -> Path:
    return out / f"{stage}.done"


def plan(out: str | Path) -> list[tuple[str, str]]:
    """(stage, what happens to it: 'skip', 'resume' or 'start') for each stage, in order."""
    from .train import CHECKPOINTS

    out = Path(out)
    return [(stage, "skip" if done_file(out, stage).is_file()
             else "resume" if stage in CHECKPOINTS and (out / CHECKPOINTS[stage]).is_file() else "start")
            for stage in STAGES]


def configs(recipe: dict, colour_probe: float = 1.0, save_every: int = 250, seed: int = 0) -> dict:
    """The stages' config objects from a recipe (stage -> StageConfig/UNetConfig fields)."""
    from .train import UNET_STAGES, StageConfig, UNetConfig

    made = {}
    for stage, settings in recipe.items():  # the training stages (export has no settings)
        fields = dict(save_every=save_every, seed=seed, **settings)
        if stage == "vae":
            fields.setdefault("colour_probe", colour_probe)
        made[stage] = (UNetConfig if stage in UNET_STAGES else StageConfig)(**fields)
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
           "decoder": lambda c, o, d, h, r: train.train_vae(c, o, d, h, resume=r, stage="decoder"),
           "unet": lambda c, o, d, h, r: train.train_unet(c, o, d, h, resume=r),
           "robust": lambda c, o, d, h, r: train.train_vae(c, o, d, h, resume=r, stage="robust"),
           "guided": lambda c, o, d, h, r: train.train_unet(c, o, d, h, resume=r, stage="guided"),
           "export": lambda c, o, d, h, r: export(o / train.GUIDED_DIR, o / EXPORTED, decoder=o / train.ROBUST_DIR)}
    run.update(stages or {})
    cfgs = configs(recipe, colour_probe, save_every)

    def one(stage: str, action: str) -> None:
        cfg = cfgs.get(stage)
        print(f"{stage}: {action} ({cfg.steps if cfg else '-'} steps, about {MINUTES[stage]} min on 2 CPU cores)")
        hook = progress(stage, cfg.steps) if progress and cfg else None
        t0 = time.monotonic()
        run[stage](cfg, out, device, hook, action == "resume")
        record = {"stage": stage, "seconds": round(time.monotonic() - t0, 1), "resumed": action == "resume",
                  "config": vars(cfg) if cfg else None}
        done_file(out, stage).write_text(json.dumps(record, indent=1))

    todo = []
    for stage, action in plan(out):
        if action == "skip":
            print(f"{stage}: done ({done_file(out, stage)}), skipped")
        else:
            todo.append((stage, action))
    pair = [(s, a) for s, a in todo if s in SIDE_BY_SIDE]
    for stage, action in todo:
        if stage not in SIDE_BY_SIDE:
            one(stage, action)
        elif (stage, action) == pair[0]:
            _side_by_side(one, pair)
    return out / EXPORTED


def _side_by_side(one, pair: list[tuple[str, str]]) -> None:
    """Run `one(stage, action)` for each pair in its own thread, torch's CPU threads split between
    them; the first error is raised once all have ended."""
    import torch

    from nodes.common import torch_threads

    errors: list[BaseException] = []

    def guarded(stage, action):
        try:
            one(stage, action)
        except BaseException as e:  # noqa: BLE001 -- re-raised in the caller's thread
            errors.append(e)

    workers = [threading.Thread(target=guarded, args=p, name=p[0], daemon=True) for p in pair]
    with torch_threads(max(1, torch.get_num_threads() // len(pair))):
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    if errors:
        raise errors[0]

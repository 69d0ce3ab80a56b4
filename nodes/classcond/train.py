"""Train a class-conditional UNet2DModel on the procedural data set.

    python -m nodes.classcond.train --out data/classcond-run --minutes 60

Noise-prediction MSE with the class labels passed to the UNet, as in diffusers' class-conditioned
example; fresh data every step (the data set is procedural), AdamW with warm-up and cosine decay, and an
exponential moving average (EMA) of the weights, which is what gets saved and sampled. The run stops at
`--steps` or after `--minutes`, whichever comes first; the learning-rate schedule follows whichever of
the two is further along, so a time-limited run still ends with a decayed rate.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if __name__ == "__main__":  # the command line: passive OpenMP waits and --threads, set before torch loads
    from graph.threads import configure_threads, threads_argument

    configure_threads(threads_argument(sys.argv[1:]))

import torch  # noqa: E402
import torch.nn.functional as F

from . import model as cm
from .data import CLASS_NAMES, make_batch


@dataclass
class TrainConfig:
    steps: int = 20_000
    minutes: float | None = None
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.995
    uncond_prob: float = 0.1  # share of labels replaced by the unconditional class (0: no guidance)
    seed: int = 0
    channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    attention: bool = False
    save_every: int = 250
    extra: dict = field(default_factory=dict)


class Ema:
    """EMA of a model's weights; the decay ramps up so early averages are not dominated by the init."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1 - decay)


def lr_factor(progress: float, step: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 5% as `progress` goes 0 -> 1."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(cfg: TrainConfig, out: str | Path | None = None, device: torch.device | str = "cpu",
          on_step: Callable[[int, int, float], None] | None = None, resume: bool = False):
    """Train and return the EMA UNet (float32). `on_step(step, total, loss)` is called after each step;
    it may raise to stop the run (the node's interrupt). With `out`, the EMA model is saved there every
    `save_every` steps and at the end, and the training state next to it for `resume`."""
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    num_classes = len(CLASS_NAMES)
    embeds = num_classes + (1 if cfg.uncond_prob > 0 else 0)  # the extra embedding: "no class"
    unet = cm.new_unet(cfg.channels, cfg.layers_per_block, cfg.attention, embeds).to(device).train()
    scheduler = cm.new_scheduler()
    alphas = scheduler.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=1e-4)
    ema = Ema(unet, cfg.ema_decay)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    step, spent = 0, 0.0
    state_file = Path(out) / "training_state.pt" if out else None
    if resume and state_file and state_file.is_file():
        state = torch.load(state_file, map_location=device, weights_only=False)
        unet.load_state_dict(state["unet"])
        ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, spent, ema.updates = state["step"], state["spent"], state["ema_updates"]
        data_gen.set_state(state["data_gen"])
    start = time.monotonic() - spent

    def progress() -> float:
        by_time = (time.monotonic() - start) / (60 * cfg.minutes) if cfg.minutes else 0.0
        return max(step / cfg.steps, by_time)

    def save() -> None:
        if out:
            cm.save(out, ema.model, CLASS_NAMES, scheduler)
            torch.save({"unet": unet.state_dict(), "ema": ema.model.state_dict(), "opt": opt.state_dict(),
                        "step": step, "spent": time.monotonic() - start, "ema_updates": ema.updates,
                        "data_gen": data_gen.get_state(), "config": cfg.__dict__}, state_file)

    while progress() < 1.0:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(progress(), step, cfg.warmup)
        images, labels = make_batch(cfg.batch, data_gen)
        x0 = (images * 2 - 1).to(device)  # the model works in -1..1
        if cfg.uncond_prob > 0:  # train the unconditional prediction that classifier-free guidance needs
            drop = torch.rand(cfg.batch, generator=data_gen) < cfg.uncond_prob
            labels = torch.where(drop, num_classes, labels)
        labels = labels.to(device)
        noise = torch.randn(x0.shape, generator=data_gen).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch,), generator=data_gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise  # same as scheduler.add_noise
        loss = F.mse_loss(unet(noisy, t, class_labels=labels).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet)
        step += 1
        if on_step:
            on_step(step, estimated_total(cfg.steps, step, progress()), loss.item())
        if cfg.save_every and step % cfg.save_every == 0:
            save()
    save()
    return ema.model.eval()


def estimated_total(steps: int, step: int, progress: float) -> int:
    """Total steps: `steps`, or fewer when a time limit will end the run first."""
    if progress <= 0:
        return steps
    return max(step, min(steps, round(step / progress)))


def main(argv=None) -> None:
    from tqdm import tqdm

    p = argparse.ArgumentParser(prog="python -m nodes.classcond.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the model (written every --save-every steps)")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time")
    p.add_argument("--batch", type=int, default=TrainConfig.batch)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--ema-decay", type=float, default=TrainConfig.ema_decay)
    p.add_argument("--uncond-prob", type=float, default=TrainConfig.uncond_prob,
                   help="share of unconditional samples (trains an extra 'no class' embedding for guidance)")
    p.add_argument("--channels", default="32,64,128", help="UNet block widths, e.g. 32,64,128")
    p.add_argument("--layers-per-block", type=int, default=TrainConfig.layers_per_block)
    p.add_argument("--attention", action="store_true", help="attention blocks at the lower resolutions")
    p.add_argument("--save-every", type=int, default=TrainConfig.save_every)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: one per physical core; OpenMP waits passively)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resume", action="store_true", help="continue from --out/training_state.pt")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(steps=args.steps, minutes=args.minutes, batch=args.batch, lr=args.lr,
                      ema_decay=args.ema_decay, uncond_prob=args.uncond_prob, seed=args.seed,
                      channels=tuple(int(c) for c in args.channels.split(",")),
                      layers_per_block=args.layers_per_block, attention=args.attention,
                      save_every=args.save_every)
    bar = tqdm(total=cfg.steps, unit="step", dynamic_ncols=True)
    smooth = None

    def on_step(step, total, loss):
        nonlocal smooth
        smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
        bar.total = total
        bar.n = step
        bar.set_postfix(loss=f"{smooth:.4f}", refresh=False)
        bar.refresh()

    train(cfg, args.out, args.device, on_step, resume=args.resume)
    bar.close()
    print(f"saved the EMA model to {args.out}")


if __name__ == "__main__":
    main()

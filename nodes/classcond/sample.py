"""Sampling a ClassModel: a diffusers scheduler loop with optional classifier-free guidance."""
from __future__ import annotations

from typing import Callable

import torch

from .model import ClassModel

# name -> (diffusers scheduler class name, config overrides, step options). All are reproducible per seed (DDPM's
# per-step noise comes from the seeded generator too) and class-correct at the sampler node's defaults
# (bench/classcond_quality.py). The training schedule clips x0 to -1..1 (DDPM's default, which the
# DDPM and DDIM steps inherit); DDIM then has to derive its noise estimate again from the clipped x0,
# since mixing a clipped x0 with the guidance-amplified, unclipped one gives garbage at guidance 8.
SAMPLERS = {
    "ddpm": ("DDPMScheduler", {}, {}),
    "ddim": ("DDIMScheduler", {}, {"use_clipped_model_output": True}),
    "dpm++ 2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, {}),
    "euler": ("EulerDiscreteScheduler", {}, {}),
}


def make_scheduler(model: ClassModel, kind: str):
    """The sampler `kind` built on the model's training noise schedule."""
    import diffusers  # on first use: importing it costs seconds, and a server starts without it

    name, overrides, _ = SAMPLERS[kind]
    return getattr(diffusers, name).from_config({**model.scheduler_config, **overrides})


@torch.no_grad()
def sample(model: ClassModel, labels: torch.Tensor, seed: int, kind: str = "ddim", steps: int = 50,
           guidance: float = 1.0, on_step: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Images (N, C, H, W) in 0..1, one per label. The initial noise (and DDPM's per-step noise) comes
    from one CPU generator seeded with `seed`, so results do not depend on the device.
    `on_step(k, steps, x)` follows each denoising step (progress, previews, interrupts)."""
    unet = model.unet
    device, dtype = unet.device, unet.dtype
    cfg = unet.config
    generator = torch.Generator("cpu").manual_seed(int(seed))
    scheduler = make_scheduler(model, kind)
    options = SAMPLERS[kind][2]
    scheduler.set_timesteps(steps, device=device)
    shape = (len(labels), cfg.in_channels, cfg.sample_size, cfg.sample_size)
    x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device) * scheduler.init_noise_sigma
    labels = labels.to(device)
    guided = guidance != 1.0 and model.null_class is not None
    if guided:
        labels = torch.cat([labels, torch.full_like(labels, model.null_class)])
    for k, t in enumerate(scheduler.timesteps):
        inp = scheduler.scale_model_input(x, t)
        if guided:
            inp = torch.cat([inp, inp])
        eps = unet(inp.to(dtype), t, class_labels=labels).sample.float()
        if guided:
            cond, uncond = eps.chunk(2)
            eps = uncond + guidance * (cond - uncond)
        x = scheduler.step(eps, t, x, generator=generator, **options).prev_sample
        if on_step:
            on_step(k + 1, len(scheduler.timesteps), x)
    return (x / 2 + 0.5).clamp(0, 1)

"""ComfyUI's noise: the starting noise of a batch and the noise samplers that stochastic samplers
draw their per-step noise from.

- `prepare_noise`: the whole batch from ONE CPU generator seeded with the seed (image i is not
  seed + i, as in Loom's stage nodes); with a LATENT's batch_index, image k takes the k-th draw.
- `default_noise_sampler`: ancestral samplers' step noise: a fresh generator on the latents' device
  seeded with the same seed, one draw of the whole batch per call.
- `BrownianTreeNoiseSampler`: SDE samplers' step noise: increments of a Brownian motion over sigma
  (torchsde's BrownianTree with the seed as entropy), scaled to unit variance.
"""
from __future__ import annotations

import torch


def prepare_noise(shape, seed: int, batch_index=None, dtype=torch.float32) -> torch.Tensor:
    """Starting noise of `shape` (B, C, h, w) on the CPU, drawn as ComfyUI's KSampler draws it."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    if batch_index is None:
        return torch.randn(tuple(shape), dtype=dtype, generator=generator)
    wanted = [int(i) for i in batch_index]
    one = (1, *tuple(shape)[1:])
    # Every draw up to the highest index is made, so image k gets the k-th draw of the seed.
    draws = {}
    for k in range(max(wanted) + 1):
        noise = torch.randn(one, dtype=dtype, generator=generator)
        if k in wanted:
            draws[k] = noise
    return torch.cat([draws[k] for k in wanted])


def default_noise_sampler(x: torch.Tensor, seed: int | None = None):
    """noise(sigma, sigma_next): unit Gaussian noise like x from one generator on x's device."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(int(seed))

    def noise(sigma, sigma_next):
        return torch.randn(x.shape, dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)

    return noise


class BrownianTreeNoiseSampler:
    """noise(sigma, sigma_next) = (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|) for one
    Brownian motion W over [sigma_min, sigma_max] seeded with `seed` (a list: one tree per image).
    cpu=True keeps the tree on the CPU (ComfyUI's samplers without _gpu in their name)."""

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed=None, cpu: bool = True):
        import torchsde

        self.device, self.dtype, self.cpu = x.device, x.dtype, cpu
        lo, hi = sorted((torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)), key=float)
        self.flip = 1 if float(sigma_min) < float(sigma_max) else -1
        if seed is None:
            seed = int(torch.randint(0, 2 ** 63 - 1, ()).item())
        self.batched = isinstance(seed, (list, tuple))
        seeds = list(seed) if self.batched else [seed]
        if self.batched and len(seeds) != x.shape[0]:
            raise ValueError(f"{len(seeds)} Brownian tree seeds for a batch of {x.shape[0]}")
        w0 = torch.zeros_like(x[0] if self.batched else x)
        if cpu:
            lo, hi, w0 = lo.detach().cpu(), hi.detach().cpu(), w0.cpu()
        self.trees = [torchsde.BrownianTree(lo, w0, hi, entropy=s) for s in seeds]

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        sign = 1
        if float(a) > float(b):
            a, b, sign = b, a, -1
        scale = (b - a).abs().sqrt()
        if self.cpu:
            a, b = a.detach().cpu().float(), b.detach().cpu().float()
        w = torch.stack([tree(a, b) for tree in self.trees]).to(device=self.device, dtype=self.dtype)
        w = w * (self.flip * sign)
        return (w if self.batched else w[0]) / scale.to(w.device)

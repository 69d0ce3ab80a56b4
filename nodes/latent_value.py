"""LATENT: the one typed value that travels on LATENT sockets (`Latent`), and the rule of each of its
fields for the three things done to latents: sampling, resizing and batching.

Nodes never change a Latent they receive (it is frozen); they derive a new one:
`latent.replace(...)` (fields named), `latent.sampled(samples, **made)` (a sampler's output),
`latent.resized(samples)` (a new size), `latent.rows(tensor_op, list_op)` (a sliced or repeated batch).
Each field's metadata says what these do to it, so no node keeps its own list of keys:

| field | what it holds | sampled | resized | batched |
|---|---|---|---|---|
| samples | (B, C, h, w) in `space` | new | new | rows |
| space | the latent space the samples are in | kept* | kept | kept |
| noise | unit noise not yet applied (the next sampler applies it) | dropped | dropped | rows |
| empty | samples hold no picture (txt2img) | dropped | dropped | kept |
| width, height | the pixel size an empty LATENT was asked for (ComfyUI's) | dropped | dropped | kept |
| seeds | each image's seed | dropped* | kept | rows |
| generator | each image's CPU generator state (stage samplers continue it) | dropped* | dropped | rows |
| dist | VAEEncode's latent distribution (img2img samples it) | dropped | dropped | rows |
| sampler | the scheduler after the last stage step (SamplerState) | dropped* | dropped | dropped |
| noise_mask | (B or 1, 1, H, W), 1 = repaint | kept | kept | rows (batch 1: kept) |
| mask_source | (clean latents, noise) the unmasked area is reset to | dropped* | dropped | rows |
| inpaint_latents | a 9-channel UNet's extra channels, drawn once | kept* | dropped | rows |
| batch_index | ComfyUI's image numbers of a sliced or repeated batch | kept | kept | set by the node |
| denoised | the last step's prediction of the clean latents | dropped* | dropped | rows |

(*: a sampler sets it anew when it makes one: Loom's stage sampler sets generator, sampler, seeds,
mask_source; every sampler sets space, inpaint_latents and, when asked, denoised.)

Latent space: `samples = (z - shift) * scale` for the VAE's raw latents z (diffusers' convention).
VAEEncode tags its output with its VAE's space, a sampler with its model family's (when the input
has none), and VAEDecode decodes with the LATENT's space when it has one, else the VAE config's. So a
16-channel VAE file shared by families of different scales (SD3: 1.5305, 0.0609; Flux and Z-Image:
0.3611, 0.1159), whose file alone cannot say which, decodes each family's latents right; a sampler
given latents in another space than its model's re-expresses them first (`in_space`).

ComfyUI compatibility: a ComfyUI LATENT is a dict with "samples" (and "noise_mask", "batch_index").
`latent["samples"]` (and those two keys, and `.get`) read the fields, so code written against
ComfyUI's dict reads a Latent unchanged; writing keys is refused (frozen). `Latent.of(dict)` turns a
ComfyUI-style dict into a Latent.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

KEEP, DROP, ROWS = "kept", "dropped", "rows"
COMFY_KEYS = ("samples", "noise_mask", "batch_index")  # the keys ComfyUI's own LATENT dicts use


def _field(sampled: str, resized: str, batched: str, default: Any = None):
    return field(default=default, metadata={"sampled": sampled, "resized": resized, "batched": batched})


@dataclass(frozen=True)
class Space:
    """A latent space: samples = (vae latents - shift) * scale."""
    scale: float
    shift: float = 0.0


@dataclass(frozen=True)
class Dist:
    """A VAE's latent distribution (unscaled), as VAEEncode gives it: sampled for img2img."""
    mean: Any
    std: Any
    scaling_factor: float


@dataclass(frozen=True)
class Latent:
    samples: Any = field(metadata={"sampled": "new", "resized": "new", "batched": ROWS})
    space: Space | None = _field(KEEP, KEEP, KEEP)
    noise: Any = _field(DROP, DROP, ROWS)
    empty: bool = _field(DROP, DROP, KEEP, default=False)
    width: int | None = _field(DROP, DROP, KEEP)
    height: int | None = _field(DROP, DROP, KEEP)
    seeds: list | None = _field(DROP, KEEP, ROWS)
    generator: list | None = _field(DROP, DROP, ROWS)
    dist: Dist | None = _field(DROP, DROP, ROWS)
    sampler: Any = _field(DROP, DROP, DROP)
    noise_mask: Any = _field(KEEP, KEEP, ROWS)
    mask_source: tuple | None = _field(DROP, DROP, ROWS)
    inpaint_latents: Any = _field(KEEP, DROP, ROWS)
    batch_index: list | None = _field(KEEP, KEEP, KEEP)
    denoised: Any = _field(DROP, DROP, ROWS)

    # --- derivation -------------------------------------------------------------------------------

    def replace(self, **changes) -> "Latent":
        return dataclasses.replace(self, **changes)

    def _by_rule(self, operation: str) -> dict:
        """The fields that `operation` keeps (the others take their defaults)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get(operation) == KEEP}

    def sampled(self, samples, **made) -> "Latent":
        """A sampler's output: the fields sampling keeps, then what the sampler made."""
        return Latent(samples=samples, **{**self._by_rule("sampled"), **made})

    def resized(self, samples) -> "Latent":
        """The same latents at another size: what belongs to the old size is dropped."""
        return Latent(samples=samples, **self._by_rule("resized"))

    def rows(self, tensor_op: Callable, list_op: Callable, **changes) -> "Latent":
        """A sliced or repeated batch: `tensor_op` on each per-image tensor (rows along dim 0),
        `list_op` on each per-image list; `changes` (e.g. batch_index) last."""
        batch = self.batch
        values = {}
        for f in dataclasses.fields(self):
            value, rule = getattr(self, f.name), f.metadata["batched"]
            if rule == KEEP or (rule == ROWS and value is not None):
                values[f.name] = value if rule == KEEP else _rows(value, tensor_op, list_op, batch)
        return Latent(**{**values, **changes})

    # --- reading --------------------------------------------------------------------------------

    @property
    def batch(self) -> int:
        return self.samples.shape[0]

    def in_space(self, space: Space | None):
        """The samples expressed in `space` (unchanged when either space is unknown, or the same)."""
        if space is None or self.space is None or space == self.space or self.empty:
            return self.samples
        raw = self.samples / self.space.scale + self.space.shift
        return (raw - space.shift) * space.scale

    def __getitem__(self, key: str):
        """ComfyUI's dict keys, read-only: code written against ComfyUI's LATENT dict reads a Latent."""
        if key not in COMFY_KEYS:
            raise KeyError(f"a LATENT is read by field (latent.{key}); as a dict only {', '.join(COMFY_KEYS)}")
        value = getattr(self, key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: str) -> bool:
        return key in COMFY_KEYS and getattr(self, key) is not None

    def get(self, key: str, default=None):
        return self[key] if key in self else default

    @classmethod
    def of(cls, value) -> "Latent":
        """A Latent as it is; a ComfyUI-style dict ({"samples", "noise_mask", "batch_index"}) as a Latent."""
        if isinstance(value, Latent):
            return value
        if isinstance(value, dict) and "samples" in value:
            return cls(**{k: value[k] for k in COMFY_KEYS if k in value})
        raise TypeError(f"expected a LATENT, got {type(value).__name__}")


def _rows(value, tensor_op: Callable, list_op: Callable, batch: int):
    if isinstance(value, Dist):
        return Dist(tensor_op(value.mean), tensor_op(value.std), value.scaling_factor)
    if isinstance(value, tuple):  # mask_source: (clean latents, noise)
        return tuple(tensor_op(t) for t in value)
    if isinstance(value, list):
        return list_op(list(value))
    if value.shape[0] != batch:  # one mask for the whole batch: it fits every slice and repeat
        return value
    return tensor_op(value)


def space_of_vae(vae) -> Space:
    """The latent space a VAE's config declares."""
    return Space(vae.config.scaling_factor, getattr(vae.config, "shift_factor", None) or 0.0)


def space_of_family(name: str | None) -> Space | None:
    """A model family's latent space (nodes.families' LatentFormat); None for an unknown family."""
    from .families import REGISTRY

    declared = REGISTRY.get(name) if name else None
    return None if declared is None else Space(declared.latent.scale, declared.latent.shift)

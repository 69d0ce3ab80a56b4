"""Inspection nodes: see what each stage of Stable Diffusion does (the tutorial's figures).

- AddNoise / AddNoiseToImage: the forward process x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps at a
  list of timesteps, with the checkpoint's training noise schedule.
- ImageGrid: several IMAGE batches as one titled grid picture.
- ShowTokens, ShowTensorInfo: tables shown on the node and kept in the history (`text` lines for
  people, plus a structured key for programs: `tokens`, `tensors`).
- PreviewLatentChannels, PreviewLatent: pictures of latents, saved to the temp folder like PreviewImage.
- ExampleImage: a built-in picture, so the examples need no input file.

Two AddNoise nodes rather than one with a LATENT-or-IMAGE input: sockets are typed, and a node with
both would leave one output empty. ImageGrid has fixed optional inputs images_1..images_8 rather than
a separate batch-concat node: a sweep of four Sample results stays four links into the node that
lays them out, with no chain of concat nodes to build and titles that follow the input order.
"""
from __future__ import annotations

import dataclasses
import math
import secrets

import torch

from graph import Combo, In, Int, Node, Out, String

from ..common import device_of, pil_to_image
from ..conditioning import Cond
from .grid import make_grid, parse_titles
from ..image import save_images
from ..latent import MAX_SEED, VAEDecode, generators, randn, seeds_for
from ..latent_value import Dist, Latent
from ..sampling import latent_preview

MAX_TIMESTEPS = 64


def parse_timesteps(text: str) -> list[int]:
    """'0, 143, 285' -> [0, 143, 285]; raises ValueError saying what is expected."""
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ValueError(f"expected whole numbers separated by commas, e.g. 0, 500, 999, got {text!r}") from None
    if not 1 <= len(values) <= MAX_TIMESTEPS or min(values) < 0:
        raise ValueError(f"expected 1 to {MAX_TIMESTEPS} timesteps of 0 or more, got {text!r}")
    return values


def forward_noise(spec, x0: torch.Tensor, timesteps: list[int], seed: int) -> torch.Tensor:
    """Each of the B images of x0 noised at each timestep (image-major: B*T results). One noise draw
    per image (seed + i, as MakeNoiseLatents), shared by its timesteps, so a row shows one path."""
    from diffusers import DDPMScheduler

    # The forward process belongs to training: DDPM's add_noise on the checkpoint's betas (inference
    # schedulers such as Euler only accept timesteps of their own schedule).
    scheduler = DDPMScheduler.from_config(spec.config)
    limit = scheduler.config.num_train_timesteps
    if max(timesteps) >= limit:
        raise ValueError(f"timesteps must be below the model's {limit} training timesteps, got {max(timesteps)}")
    batch, count = x0.shape[0], len(timesteps)
    noise = randn(tuple(x0.shape), generators(seeds_for(seed, batch)), x0.device, x0.dtype)
    t = torch.tensor(timesteps, dtype=torch.long, device=x0.device).repeat(batch)
    return scheduler.add_noise(x0.repeat_interleave(count, 0), noise.repeat_interleave(count, 0), t)


class _AddNoiseBase(Node):
    category = "inspect"
    scheduler = In("SCHEDULER", tooltip="its training noise schedule (betas) is used")
    timesteps = String("0, 143, 285, 428, 571, 714, 856, 999",
                       tooltip="comma-separated training timesteps (0: clean, 999: almost pure noise)")
    seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)

    @classmethod
    def check(cls, env, timesteps=None, **_):
        try:
            parse_timesteps(timesteps) if timesteps is not None else None
        except ValueError as exc:
            return {"timesteps": str(exc)}
        return {}


class AddNoise(_AddNoiseBase):
    """The forward (noising) process on latents: each latent at each timestep, as
    scheduler.add_noise(latents, noise, t). Output order: every timestep of image 0, then image 1..."""

    latents = In("LATENT")
    outputs = (Out("LATENT", "latents"),)

    @torch.no_grad()
    def run(self, ctx):
        samples = self.latents.samples
        return Latent(forward_noise(self.scheduler, samples, parse_timesteps(self.timesteps), self.seed),
                      space=self.latents.space)


class AddNoiseToImage(_AddNoiseBase):
    """The forward (noising) process in pixel space: pixels are mapped to -1..1 (as the VAE sees
    them), noised at each timestep and mapped back, clipped to 0..1 for display."""

    image = In("IMAGE")
    outputs = (Out("IMAGE", "images"),)

    @torch.no_grad()
    def run(self, ctx):
        x0 = 2.0 * self.image.permute(0, 3, 1, 2).float() - 1.0
        xt = forward_noise(self.scheduler, x0, parse_timesteps(self.timesteps), self.seed)
        return ((xt + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1)


class ImageGrid(Node):
    """Lays images out as one grid picture, row by row, with optional titles. The connected inputs
    are taken in order (images_1 first, a whole batch each), e.g. four Sample results side by side.
    columns 0: as many as the column titles, else images / row titles, else images_1's batch size."""

    category = "inspect"
    images_1 = In("IMAGE", tooltip="the first images; more may go to images_2..images_8")
    images_2 = In("IMAGE", optional=True)
    images_3 = In("IMAGE", optional=True)
    images_4 = In("IMAGE", optional=True)
    images_5 = In("IMAGE", optional=True)
    images_6 = In("IMAGE", optional=True)
    images_7 = In("IMAGE", optional=True)
    images_8 = In("IMAGE", optional=True)
    columns = Int(0, min=0, max=1024)
    row_titles = String("", tooltip="comma-separated, one per row")
    column_titles = String("", tooltip="comma-separated, one per column")
    outputs = (Out("IMAGE", "image"),)

    def images(self) -> torch.Tensor:
        batches = [(n, getattr(self, n)) for n in self.inputs if n.startswith("images_")
                   if getattr(self, n) is not None]
        size = batches[0][1].shape[1:]
        for name, batch in batches:
            if batch.shape[1:] != size:
                raise ValueError(f"ImageGrid: input '{name}' holds {tuple(batch.shape[1:3])} images, expected "
                                 f"{tuple(size[:2])} as images_1 (all cells have one size)")
        return torch.cat([b.to(batches[0][1].device).float() for _, b in batches])

    def run(self, ctx):
        images = self.images()
        rows, cols = parse_titles(self.row_titles), parse_titles(self.column_titles)
        columns = self.columns or len(cols) or (math.ceil(len(images) / len(rows)) if rows else len(self.images_1))
        n_rows = math.ceil(len(images) / columns)
        if len(cols) > columns:
            raise ValueError(f"ImageGrid: input 'column_titles' has {len(cols)} titles for {columns} columns")
        if len(rows) > n_rows:
            raise ValueError(f"ImageGrid: input 'row_titles' has {len(rows)} titles for {n_rows} rows "
                             f"({len(images)} images in {columns} columns)")
        grid, _ = make_grid(images, columns, rows, cols)
        return grid.to(images.device)


class ShowTokens(Node):
    """Shows token ids and the text piece each stands for (up to the end token; the padding after
    it is counted)."""

    category = "inspect"
    output_node = True
    tokenizer = In("TOKENIZER")
    tokens = In("TOKENS")

    def run(self, ctx):
        ids = torch.as_tensor(self.tokens).reshape(-1, self.tokens.shape[-1]).tolist()
        eos = self.tokenizer.eos_token_id
        rows, text = [], []
        for b, row in enumerate(ids):
            end = row.index(eos) + 1 if eos in row else len(row)
            pieces = self.tokenizer.convert_ids_to_tokens(row[:end])
            if len(ids) > 1:
                text.append(f"prompt {b}:")
            text.append(f"{'pos':>4} {'id':>6}  piece")
            for i, (token_id, piece) in enumerate(zip(row, pieces)):
                rows.append({"prompt": b, "position": i, "id": token_id, "piece": piece})
                text.append(f"{i:>4} {token_id:>6}  {piece}")
            text.append(f"{len(row)} positions: {end} tokens, then {len(row) - end} padding")
        ctx.show(tokens=rows, text=text)


def _number(value: float):
    """JSON has no NaN/inf: those are shown as text."""
    return value if math.isfinite(value) else str(value)


def tensor_info(name: str, t: torch.Tensor) -> dict:
    info = {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
            "device": str(t.device)}
    if t.numel() and not t.is_complex():
        f = t.detach().float()
        info.update(min=_number(f.min().item()), max=_number(f.max().item()), mean=_number(f.mean().item()),
                    std=_number(f.std().item()) if t.numel() > 1 else 0.0)
    return info


def tensors_in(value, name: str = "value") -> list[tuple[str, object]]:
    """The tensors (and other leaves) of a socket value: a tensor, a LATENT, lists of them."""
    if isinstance(value, torch.Tensor):
        return [(name, value)]
    if isinstance(value, (Latent, Dist)):  # its tensors (samples, noise, dist, mask), not its seeds or states
        return [item for f in dataclasses.fields(value) if isinstance(getattr(value, f.name), (torch.Tensor, Dist))
                for item in tensors_in(getattr(value, f.name), f"{name}.{f.name}")]
    if isinstance(value, dict):
        return [item for k, v in value.items() if isinstance(v, (torch.Tensor, torch.nn.Module, dict))
                for item in tensors_in(v, f"{name}.{k}")]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return [item for i, v in enumerate(value) for item in tensors_in(v, f"{name}[{i}]")]
    if isinstance(value, tuple) and value and all(isinstance(v, Cond) for v in value):  # a CONDITIONING
        return [item for i, entry in enumerate(value)
                for item in _cond_tensors(entry, name if len(value) == 1 else f"{name}[{i}]")]
    return [(name, value)]


def _cond_tensors(entry: Cond, name: str) -> list[tuple[str, torch.Tensor]]:
    """A conditioning entry's tensors: the embeddings under the entry's name, then pooled output and mask."""
    found = [(name, entry.embeds)]
    found += [(f"{name}.{field}", getattr(entry, field)) for field in ("pooled", "mask")
              if getattr(entry, field) is not None]
    return found


def _line(info: dict) -> str:
    stats = "".join(f" {k} {info[k]:.4g}" if isinstance(info[k], float) else f" {k} {info[k]}"
                    for k in ("min", "max", "mean", "std") if k in info)
    return f"{info['name']}: shape {tuple(info['shape'])} {info['dtype']} on {info['device']}{stats}"


class ShowTensorInfo(Node):
    """Shows the shape, dtype, device and min/max/mean/std of any tensor value (CONDITIONING, TOKENS,
    IMAGE, each tensor of a LATENT), or the parameter count of a model."""

    category = "inspect"
    output_node = True
    value = In("*")

    def source(self, ctx) -> str:
        """The linked node's title or type: what the value is called in the table."""
        link = (ctx.prompt or {}).get(ctx.node_id, {}).get("inputs", {}).get("value")
        node = (ctx.prompt or {}).get(str(link[0]), {}) if isinstance(link, list) else {}
        return node.get("_meta", {}).get("title") or node.get("class_type") or "value"

    def run(self, ctx):
        infos, text = [], []
        for name, item in tensors_in(self.value, self.source(ctx)):
            if isinstance(item, torch.Tensor):
                infos.append(tensor_info(name, item))
                text.append(_line(infos[-1]))
            elif isinstance(item, torch.nn.Module):
                p = next(item.parameters(), None)
                count = sum(q.numel() for q in item.parameters())
                infos.append({"name": name, "module": type(item).__name__, "parameters": count,
                              "dtype": str(p.dtype).replace("torch.", "") if p is not None else None,
                              "device": str(p.device) if p is not None else None})
                text.append(f"{name}: {type(item).__name__} with {count:,} parameters")
            else:
                infos.append({"name": name, "type": type(item).__name__})
                text.append(f"{name}: {type(item).__name__} (not a tensor)")
        ctx.show(tensors=infos, text=text)


def _normalize(x: torch.Tensor, dims: tuple) -> torch.Tensor:
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    return (x - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))


class PreviewLatentChannels(Node):
    """Shows each channel of the latents as a grey map (black: its minimum, white: its maximum),
    titled by channel; outputs the maps as images (every channel of image 0, then image 1...)."""

    category = "inspect"
    output_node = True
    latents = In("LATENT")
    pixel_size = Int(8, min=1, max=64, tooltip="screen pixels per latent pixel (8: the size of SD's images)")
    normalize = Combo(["per channel", "whole latent"], default="per channel")
    outputs = (Out("IMAGE", "maps"),)

    @torch.no_grad()
    def run(self, ctx):
        x = self.latents.samples.detach().float()
        batch, channels = x.shape[:2]
        maps = _normalize(x, (2, 3) if self.normalize == "per channel" else (1, 2, 3))
        k = self.pixel_size
        images = maps.reshape(batch * channels, *x.shape[2:], 1).repeat_interleave(k, 1).repeat_interleave(k, 2)
        images = images.expand(-1, -1, -1, 3).contiguous()
        titles = [f"channel {c}" for c in range(channels)]
        grid, _ = make_grid(images, channels, [f"image {b}" for b in range(batch)] if batch > 1 else [], titles)
        stats = [{"image": b, "channel": c, "min": x[b, c].min().item(), "max": x[b, c].max().item(),
                  "mean": x[b, c].mean().item()} for b in range(batch) for c in range(channels)]
        ctx.show(images=save_images(ctx, grid, "temp", "latent_channels_" + secrets.token_hex(4)), channels=stats,
                 text=[f"image {s['image']} channel {s['channel']}: min {s['min']:.4g} max {s['max']:.4g} "
                       f"mean {s['mean']:.4g}" for s in stats])
        return images.to(x.device)


class PreviewLatent(Node):
    """Shows latents as pictures: decoded by the VAE when one is connected, else a quick fixed
    projection of SD's four channels to RGB. A tap on a chain of steps; outputs what it shows."""

    category = "inspect"
    output_node = True
    latents = In("LATENT")
    vae = In("VAE", optional=True, tooltip="decode exactly (slower); without it, a rough colour projection")
    outputs = (Out("IMAGE", "image"),)

    @torch.no_grad()
    def run(self, ctx):
        if self.vae is not None:
            decode = VAEDecode()
            decode.vae, decode.samples = self.vae, self.latents
            images = decode.run(ctx)
        else:
            samples = self.latents.samples
            device = device_of(ctx.env)
            images = torch.cat([pil_to_image(latent_preview(samples[i:i + 1]), device)
                                for i in range(samples.shape[0])])
        ctx.show(images=save_images(ctx, images, "temp", "latent_preview_" + secrets.token_hex(4)))
        return images


class ExampleImage(Node):
    """A built-in picture (sky, sun, hills, a house), so examples run without an input file."""

    category = "image"
    width = Int(512, min=8, max=4096, step=8)
    height = Int(512, min=8, max=4096, step=8)
    outputs = (Out("IMAGE", "image"),)

    def run(self, ctx):
        h, w = self.height, self.width
        y = ((torch.arange(h, dtype=torch.float32) + 0.5) / h).view(h, 1, 1)
        x = ((torch.arange(w, dtype=torch.float32) + 0.5) / w).view(1, w, 1)
        sky = torch.tensor([0.35, 0.6, 0.95]) * (1 - y) + torch.tensor([0.85, 0.92, 1.0]) * y
        image = sky.expand(h, w, 3).clone()
        house = ((x - 0.3).abs() <= 0.12) & (y >= 0.5) & (y <= 0.72)
        roof = (y >= 0.36) & (y < 0.5) & ((x - 0.3).abs() <= (y - 0.36) * 1.1)
        door = ((x - 0.3).abs() <= 0.03) & (y >= 0.62) & (y <= 0.72)
        paint = [((x - 0.75) ** 2 + (y - 0.22) ** 2 <= 0.012, (1.0, 0.85, 0.2)),  # sun
                 (y >= 0.62 + 0.08 * torch.sin(6.0 * x), (0.25, 0.6, 0.25)),  # hills
                 (house, (0.85, 0.3, 0.25)), (roof, (0.45, 0.2, 0.15)), (door, (0.3, 0.2, 0.1))]
        for mask, colour in paint:
            image = torch.where(mask.expand(h, w, 1), torch.tensor(colour), image)
        return image[None].to(device_of(ctx.env))

"""ComfyUI's Stable Diffusion 1.x core nodes under their own names, so ComfyUI workflows (API and UI
format) run as they are: CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, KSampler and
KSamplerAdvanced. (VAEDecode, VAEEncode, LoadImage, SaveImage and PreviewImage are Loom's own
nodes, which also take ComfyUI's input names through `input_aliases`.)

Each is composed from Loom's stage nodes, so the model code lives once: CheckpointLoaderSimple is
LoadCheckpoint, CLIPTextEncode is Tokenize + EncodeText, KSampler is MakeNoiseLatents + the
denoising loop of Sample with ComfyUI's sampler and scheduler names mapped onto diffusers
schedulers (nodes.comfy_samplers). Keeping ComfyUI's class names and node ids, rather than
rewriting the graph into stage nodes, keeps what clients see intact: progress, errors and outputs
name the nodes of the workflow they sent.

ComfyUI's types MODEL (UNet + its scheduler settings) and CLIP (tokenizer + text encoder) are the
bundles of nodes.bundles; VAE, CONDITIONING, LATENT and IMAGE are Loom's. Images will not be identical to
ComfyUI's (other sampler code, per-image noise streams), but the graph, seed and settings are honoured.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from graph import Combo, Float, In, Int, Node, Out, String

from .bundles import Model
from .comfy_samplers import SAMPLER_NAMES, SCHEDULER_NAMES, Unmapped, resolve
from .common import device_of
from .latent import MAX_SEED, MakeNoiseLatents
from .loaders import LATENT_SCALE_ATTR, bundles, load_parts
from .model_files import kind_choices, kind_fingerprint, kind_path
from .sampling import MAX_STEP, denoise
from .schedulers import CHECKPOINT, SchedulerSpec
from .text import EncodeText, Tokenize

MAX_RESOLUTION = 16384
COMFY_LATENT_SCALE = 8  # ComfyUI's EmptyLatentImage assumes SD's 8 pixels per latent pixel


def call(node: type[Node], ctx, **inputs) -> Any:
    """Run another node's code with these inputs, as the executor would."""
    instance = node()
    for name, inp in node.inputs.items():
        setattr(instance, name, inputs.get(name, getattr(inp, "default", None)))
    return instance.run(ctx)


class CheckpointLoaderSimple(Node):
    """ComfyUI's checkpoint loader: LoadCheckpoint's parts grouped as MODEL, CLIP and VAE (any family;
    names in models/checkpoints, or in the models folder itself)."""
    category = "loaders"  # ComfyUI's
    ckpt_name = Combo(kind_choices("checkpoints"), model=True)
    outputs = (Out("MODEL", "MODEL"), Out("CLIP", "CLIP"), Out("VAE", "VAE"))

    @classmethod
    def fingerprint(cls, env, ckpt_name=None, **_):
        return kind_fingerprint(env, "checkpoints", ckpt_name)

    def run(self, ctx):
        path = kind_path(ctx.env, "checkpoints", self.ckpt_name, "CheckpointLoaderSimple")
        parts = load_parts(ctx.env, path, f"CheckpointLoaderSimple: {self.ckpt_name!r}")
        return (*bundles(parts), parts.vae)


class CLIPTextEncode(Node):
    """ComfyUI's prompt encoder: Tokenize, then EncodeText."""
    category = "conditioning"  # ComfyUI's
    text = String("", multiline=True)
    clip = In("CLIP")
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        tokens = call(Tokenize, ctx, tokenizer=self.clip.tokenizer, text=self.text)
        return call(EncodeText, ctx, text_encoder=self.clip.text_encoder, tokens=tokens)


class EmptyLatentImage(Node):
    """ComfyUI's empty latent: the size and batch of a txt2img run. The sampler makes the seeded
    noise at the model's own latent scale; `samples` has ComfyUI's SD shape for other readers."""
    category = "latent"  # ComfyUI's
    width = Int(512, min=16, max=MAX_RESOLUTION, step=8)
    height = Int(512, min=16, max=MAX_RESOLUTION, step=8)
    batch_size = Int(1, min=1, max=4096)
    outputs = (Out("LATENT", "LATENT"),)

    def run(self, ctx):
        shape = (self.batch_size, 4, self.height // COMFY_LATENT_SCALE, self.width // COMFY_LATENT_SCALE)
        return {"samples": torch.zeros(shape, device=device_of(ctx.env)), "empty": True,
                "width": self.width, "height": self.height}


def noised(model: Model, latent: dict, seed: int, ctx) -> dict:
    """The latent with seeded noise to add at the first step, as MakeNoiseLatents makes it: for an
    empty latent of its width and height, else for the image latents it holds (img2img)."""
    unet = model.unet
    count = latent["samples"].shape[0]
    if latent.get("empty"):
        scale = getattr(unet, LATENT_SCALE_ATTR, COMFY_LATENT_SCALE)
        h, w = latent["samples"].shape[-2:]
        width, height = latent.get("width") or w * scale, latent.get("height") or h * scale
        return call(MakeNoiseLatents, ctx, unet=unet, width=width, height=height, batch_size=count, seed=seed)
    return call(MakeNoiseLatents, ctx, unet=unet, batch_size=count, seed=seed, image=latent)


def schedule(model: Model, sampler_name: str, scheduler: str, steps: int, strength: float = 1.0) -> SchedulerSpec:
    """The checkpoint's scheduler config with ComfyUI's sampler and scheduler applied."""
    class_name, settings = resolve(sampler_name, scheduler)
    config = {**model.scheduler.config, "_class_name": class_name, **settings}
    return replace(model.scheduler, kind=CHECKPOINT, config=config, steps=steps, strength=strength)


def sampler_problems(sampler_name, scheduler) -> dict[str, str]:
    if not isinstance(sampler_name, str) or not isinstance(scheduler, str):
        return {}
    try:
        resolve(sampler_name, scheduler)
    except Unmapped as exc:
        return {exc.input: str(exc)}
    return {}


class KSampler(Node):
    """ComfyUI's sampler: seeded noise (MakeNoiseLatents) and the denoising loop (Sample). denoise < 1
    runs `steps` steps of a schedule of int(steps / denoise) steps, as ComfyUI does."""
    category = "sampling"  # ComfyUI's
    model = In("MODEL")
    seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)
    steps = Int(20, min=1, max=MAX_STEP)
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    sampler_name = Combo(SAMPLER_NAMES, default="euler")
    scheduler = Combo(SCHEDULER_NAMES, default="normal")
    positive = In("CONDITIONING")
    negative = In("CONDITIONING")
    latent_image = In("LATENT")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Out("LATENT", "LATENT"),)

    @classmethod
    def check(cls, env, sampler_name=None, scheduler=None, denoise=None, **_):
        problems = sampler_problems(sampler_name, scheduler)
        if isinstance(denoise, float) and denoise <= 0:
            problems["denoise"] = "denoise 0 leaves no step to take"
        return problems

    def run(self, ctx):
        if self.denoise >= 0.9999:
            spec = schedule(self.model, self.sampler_name, self.scheduler, self.steps)
        else:  # the last `steps` of a longer schedule; +0.5 so the kept count rounds to `steps`
            total = max(int(self.steps / self.denoise), self.steps)
            spec = schedule(self.model, self.sampler_name, self.scheduler, total, min(1.0, (self.steps + 0.5) / total))
        latents = noised(self.model, self.latent_image, self.seed, ctx)
        if spec.strength < 1.0:  # the noise belongs to the first kept step's level
            latents["empty"] = False
        return denoise(self.model.unet, spec, latents, self.positive, self.negative, self.cfg, 0, MAX_STEP,
                       progress=ctx.progress)


class KSamplerAdvanced(Node):
    """ComfyUI's sampler over a part of the schedule (start_at_step to end_at_step), with or without
    adding noise: two in a row, the first returning its leftover noise, continue each other exactly."""
    category = "sampling"  # ComfyUI's
    model = In("MODEL")
    add_noise = Combo(["enable", "disable"], default="enable")
    noise_seed = Int(0, min=0, max=MAX_SEED, control_after_generate=True)
    steps = Int(20, min=1, max=MAX_STEP)
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    sampler_name = Combo(SAMPLER_NAMES, default="euler")
    scheduler = Combo(SCHEDULER_NAMES, default="normal")
    positive = In("CONDITIONING")
    negative = In("CONDITIONING")
    latent_image = In("LATENT")
    start_at_step = Int(0, min=0, max=MAX_STEP)
    end_at_step = Int(MAX_STEP, min=0, max=MAX_STEP)
    return_with_leftover_noise = Combo(["disable", "enable"], default="disable")
    outputs = (Out("LATENT", "LATENT"),)

    @classmethod
    def check(cls, env, sampler_name=None, scheduler=None, steps=None, start_at_step=None, end_at_step=None,
              return_with_leftover_noise=None, **_):
        problems = sampler_problems(sampler_name, scheduler)
        if isinstance(steps, int) and isinstance(start_at_step, int) and start_at_step >= min(steps, end_at_step or 0):
            problems["start_at_step"] = f"start_at_step {start_at_step} leaves no step to take " \
                                        f"(steps {steps}, end_at_step {end_at_step})"
        elif isinstance(steps, int) and isinstance(end_at_step, int) and end_at_step < steps \
                and return_with_leftover_noise == "disable":
            problems["return_with_leftover_noise"] = (
                "stopping early (end_at_step < steps) without leftover noise is ComfyUI's forced full denoise, "
                "which diffusers' schedulers do not offer; use 'enable' and a second sampler for the rest")
        return problems

    def run(self, ctx):
        spec = schedule(self.model, self.sampler_name, self.scheduler, self.steps)
        start = self.start_at_step
        if self.add_noise == "enable":
            latents = noised(self.model, self.latent_image, self.noise_seed, ctx)
            if start > 0:  # the noise belongs to the start step's level, not the schedule's first
                latents["empty"] = False
        else:  # continue: a latent from a sampler carries its scheduler state and seed streams
            latents = {k: v for k, v in self.latent_image.items() if k not in ("noise", "empty", "width", "height")}
        return denoise(self.model.unet, spec, latents, self.positive, self.negative, self.cfg, start,
                       self.end_at_step, progress=ctx.progress)

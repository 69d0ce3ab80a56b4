"""ComfyUI's core nodes under their own names and inputs, so ComfyUI workflows (API and UI format) run
as they are: CheckpointLoaderSimple, CLIPTextEncode, CLIPSetLastLayer, CLIPTextEncodeSDXL(Refiner),
EmptyLatentImage, KSampler, KSamplerAdvanced, ControlNetLoader, ControlNetApply(Advanced) and
InpaintModelConditioning. The rest of ComfyUI's names live beside their kind: nodes.comfy.loaders
(separate loaders, LoRA), nodes.comfy.sampling (custom sampling), nodes.comfy.scaling (scaling,
upscale models, latent batches), nodes.comfy.primitives. Where ComfyUI's node is exactly a Loom stage, the
stage node carries ComfyUI's name and signature itself: VAEDecode, VAEEncode (nodes.latent),
LoadImage, SaveImage, PreviewImage (nodes.image), the Conditioning* nodes (nodes.conditioning),
SetLatentNoiseMask and VAEEncodeForInpaint (nodes.inpaint); earlier Loom input names load through
`input_aliases`. tests/test_comfy_signatures.py holds ComfyUI's declarations of every one of them.

Each is composed from Loom's stage nodes, so the model code lives once: CheckpointLoaderSimple is
LoadCheckpoint, CLIPTextEncode runs EncodeText's (EncodeTextSDXL's) encoders with ComfyUI's prompt
syntax (nodes.comfy.prompt_weights). KSampler and KSamplerAdvanced run ComfyUI's own sampling (nodes.comfy.ksampling:
its noise streams, sigma schedules and sampler maths) on Loom's guided UNet (nodes.denoiser), so they
give ComfyUI's pictures. Keeping ComfyUI's class names and node ids, rather than
rewriting the graph into stage nodes, keeps what clients see intact: progress, errors and outputs
name the nodes of the workflow they sent.

ComfyUI's types MODEL (UNet + its scheduler settings) and CLIP (tokenizers + text encoders) are the
bundles of nodes.loading.bundles; VAE, CONDITIONING, LATENT and IMAGE are Loom's. docs/samplers.md lists what still differs from ComfyUI.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from graph import Boolean, Combo, Float, In, Int, Node, Out, String

from ..loading.bundles import Clip, Model
from .sampler_names import SAMPLER_NAMES, SCHEDULER_NAMES, Unmapped, check_names
from ..common import MAX_RESOLUTION, call, device_of
from ..families import runtime_of
from ..conditioning import SetAestheticScore, SetSizeConditioning, update
from ..controlnet import ApplyControlNet, LoadControlNet
from ..inpaint import InpaintConditioning, SetLatentNoiseMask, crop_with_mask, fit_mask, mask_batch
from .ksampling.ksampler import SamplerChoice, empty_latent, latent_image, model_sampling, starting_noise
from .ksampling.ksampler import sample as ksampling_run
from .ksampling.schedules import ksampler_sigmas
from ..latent import MAX_SEED, VAEEncode, crop_to_vae
from ..latent_value import Latent
from ..loading.loaders import bundles, load_parts
from ..loading.model_files import kind_choices, kind_fingerprint, kind_path
from ..sampling import MAX_STEP
from .prompt_weights import embeddings_fingerprint, encode_comfy_prompt, plain_text
from ..text import check_prompt



class CheckpointLoaderSimple(Node):
    """ComfyUI's checkpoint loader: LoadCheckpoint's parts grouped as MODEL, CLIP and VAE (any family;
    names in models/checkpoints, or in the models folder itself)."""
    category = "loaders"  # ComfyUI's
    ckpt_name = Combo(kind_choices("checkpoints"), model=True, model_kind="checkpoints")
    outputs = (Out("MODEL", "MODEL"), Out("CLIP", "CLIP"), Out("VAE", "VAE"))

    @classmethod
    def fingerprint(cls, env, ckpt_name=None, **_):
        return kind_fingerprint(env, "checkpoints", ckpt_name)

    def run(self, ctx):
        path = kind_path(ctx.env, "checkpoints", self.ckpt_name, "CheckpointLoaderSimple")
        parts = load_parts(ctx.env, path, f"CheckpointLoaderSimple: {self.ckpt_name!r}")
        return (*bundles(parts), parts.vae)


def clip_skip(clip: Clip) -> int:
    """EncodeText's clip_skip for the CLIP's stop_at_clip_layer (CLIPSetLastLayer; -1: the default).
    SD 1.x: -1 is the last layer, -2 the one before. SD 2.x and SDXL: ComfyUI's default and -2 are
    the penultimate layer, which diffusers' SD 2.x encoder ends with (one layer shorter than
    OpenCLIP) and SDXL's pipeline reads; -3 is one earlier."""
    if clip.text_encoder_2 is not None or clip.family in ("sd2", "sdxl", "sdxl_refiner"):
        return max(-clip.layer - 2, 0)
    return -clip.layer - 1


def encode_prompt(ctx, clip: Clip, text: str, text_2: str | None = None) -> tuple:
    """CONDITIONING of a prompt in ComfyUI's syntax (weights, embeddings, chunks of 75 tokens; see
    nodes.comfy.prompt_weights) with a CLIP bundle. SDXL: `text` for the first encoder (CLIP-L), `text_2`
    (default: the same) for the second (OpenCLIP bigG). A plain prompt of up to 75 tokens gives what
    its family's pipeline encodes. A family with its own torch side encodes as its runtime says
    (nodes.families.spec.Runtime.encode; Z-Image: its Qwen3 encoding)."""
    runtime = runtime_of(clip.family)
    if runtime is not None:
        return runtime.encode(clip, text)
    for tokenizer, words in ((clip.tokenizer, text), (clip.tokenizer_2, text if text_2 is None else text_2)):
        if tokenizer is not None:  # long prompts go in chunks here: nothing is cut off, unknown words are named
            check_prompt(ctx, tokenizer, plain_text(words), cut=False)
    return (encode_comfy_prompt(ctx.env.models_dir, clip, clip_skip(clip), text, text_2),)


class CLIPTextEncode(Node):
    """ComfyUI's prompt encoder, with ComfyUI's prompt syntax: (word:1.2), (word), \\( \\), embedding:name,
    prompts longer than 75 tokens in chunks (docs/prompt-syntax.md). SD 1.x/2.x and SDXL."""
    category = "conditioning"  # ComfyUI's
    text = String("", multiline=True)
    clip = In("CLIP")
    outputs = (Out("CONDITIONING", "CONDITIONING"),)
    fingerprint = classmethod(embeddings_fingerprint)

    def run(self, ctx):
        return encode_prompt(ctx, self.clip, self.text)


class CLIPSetLastLayer(Node):
    """ComfyUI's clip skip: the CLIP with the text encoder stopped at this layer (-1: the last)."""
    category = "conditioning"  # ComfyUI's
    clip = In("CLIP")
    stop_at_clip_layer = Int(-1, min=-24, max=-1)
    outputs = (Out("CLIP", "CLIP"),)

    def run(self, ctx):
        return replace(self.clip, layer=self.stop_at_clip_layer)


def _sdxl_clip(node: str, clip: Clip) -> Clip:
    if clip.text_encoder_2 is None:
        raise ValueError(f"{node}: this CLIP is not SDXL's (it has no second text encoder)")
    return clip


class CLIPTextEncodeSDXL(Node):
    """ComfyUI's SDXL prompt encoder: text_g for OpenCLIP bigG, text_l for CLIP-L, and the size
    conditioning (original size, crop, target size) set with SetSizeConditioning."""
    category = "advanced/conditioning"  # ComfyUI's
    clip = In("CLIP")
    width = Int(1024, min=0, max=MAX_RESOLUTION)
    height = Int(1024, min=0, max=MAX_RESOLUTION)
    crop_w = Int(0, min=0, max=MAX_RESOLUTION)
    crop_h = Int(0, min=0, max=MAX_RESOLUTION)
    target_width = Int(1024, min=0, max=MAX_RESOLUTION)
    target_height = Int(1024, min=0, max=MAX_RESOLUTION)
    text_g = String("", multiline=True)
    text_l = String("", multiline=True)
    outputs = (Out("CONDITIONING", "CONDITIONING"),)
    fingerprint = classmethod(embeddings_fingerprint)

    def run(self, ctx):
        cond = encode_prompt(ctx, _sdxl_clip("CLIPTextEncodeSDXL", self.clip), self.text_l, self.text_g)
        return call(SetSizeConditioning, ctx, conditioning=cond, width=self.width, height=self.height,
                    crop_w=self.crop_w, crop_h=self.crop_h, target_width=self.target_width,
                    target_height=self.target_height)


class CLIPTextEncodeSDXLRefiner(Node):
    """ComfyUI's SDXL refiner prompt encoder: the prompt, the aesthetic score and the original size."""
    category = "advanced/conditioning"  # ComfyUI's
    ascore = Float(6.0, min=0.0, max=1000.0, step=0.01)
    width = Int(1024, min=0, max=MAX_RESOLUTION)
    height = Int(1024, min=0, max=MAX_RESOLUTION)
    text = String("", multiline=True)
    clip = In("CLIP")
    outputs = (Out("CONDITIONING", "CONDITIONING"),)
    fingerprint = classmethod(embeddings_fingerprint)

    def run(self, ctx):
        cond = encode_prompt(ctx, _sdxl_clip("CLIPTextEncodeSDXLRefiner", self.clip), self.text)
        cond = call(SetSizeConditioning, ctx, conditioning=cond, width=self.width, height=self.height)
        return call(SetAestheticScore, ctx, conditioning=cond, score=self.ascore)


class EmptyLatentImage(Node):
    """ComfyUI's empty latent: the size and batch of a txt2img run. The sampler makes the seeded
    noise at the model's own latent scale; `samples` has ComfyUI's SD shape for other readers."""
    category = "latent"  # ComfyUI's
    width = Int(512, min=16, max=MAX_RESOLUTION, step=8)
    height = Int(512, min=16, max=MAX_RESOLUTION, step=8)
    batch_size = Int(1, min=1, max=4096)
    outputs = (Out("LATENT", "LATENT"),)

    def run(self, ctx):
        return empty_latent(self.batch_size, 4, self.width, self.height, device_of(ctx.env))


def sampler_problems(sampler_name, scheduler) -> dict[str, str]:
    try:
        check_names(sampler_name if isinstance(sampler_name, str) else None,
                    scheduler if isinstance(scheduler, str) else None)
    except Unmapped as exc:
        return {exc.input: str(exc)}
    return {}


def ksample(ctx, model: Model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive,
            negative, latent: Latent, denoise: float = 1.0, add_noise: bool = True, start_step: int | None = None,
            last_step: int | None = None, force_full_denoise: bool = False) -> Latent:
    """ComfyUI's common_ksampler: its noise (the whole batch from one generator seeded with `seed`, or
    none), its schedule for `steps` and `denoise`, cut to start_step..last_step, and its sampler."""
    sigmas = ksampler_sigmas(model_sampling(model), sampler_name, scheduler, steps, denoise)
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:  # nothing left to do: the latent as it is
            return latent.replace(empty=False, width=None, height=None)
        sigmas = sigmas[start_step:]
    image = latent_image(model, latent)
    noise = starting_noise(model, latent, seed) if add_noise else torch.zeros_like(image)
    out, _ = ksampling_run(ctx, model, positive, negative, cfg, SamplerChoice(sampler_name), sigmas, latent, noise,
                           seed)
    return out


class KSampler(Node):
    """ComfyUI's sampler, by ComfyUI's rules (nodes.comfy.ksampling): the same seed, settings and batch give
    ComfyUI's latents. denoise < 1 runs the last `steps` steps of a schedule of int(steps / denoise)."""
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
    def check(cls, env, sampler_name=None, scheduler=None, **_):
        return sampler_problems(sampler_name, scheduler)

    def run(self, ctx):
        return ksample(ctx, self.model, self.seed, self.steps, self.cfg, self.sampler_name, self.scheduler,
                       self.positive, self.negative, self.latent_image, self.denoise)


class KSamplerAdvanced(Node):
    """ComfyUI's sampler over a part of the schedule (start_at_step to end_at_step), with or without
    adding noise; without leftover noise, a run that stops early ends at sigma 0 (fully denoised)."""
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
    def check(cls, env, sampler_name=None, scheduler=None, **_):
        return sampler_problems(sampler_name, scheduler)

    def run(self, ctx):
        return ksample(ctx, self.model, self.noise_seed, self.steps, self.cfg, self.sampler_name, self.scheduler,
                       self.positive, self.negative, self.latent_image, add_noise=self.add_noise == "enable",
                       start_step=self.start_at_step, last_step=self.end_at_step,
                       force_full_denoise=self.return_with_leftover_noise != "enable")


class ControlNetLoader(Node):
    """ComfyUI's ControlNet loader: LoadControlNet (models/controlnet)."""
    category = "loaders"  # ComfyUI's
    control_net_name = Combo(kind_choices("controlnet"), model=True, model_kind="controlnet")
    outputs = (Out("CONTROL_NET", "CONTROL_NET"),)

    @classmethod
    def fingerprint(cls, env, control_net_name=None, **_):
        return LoadControlNet.fingerprint(env, name=control_net_name)

    def run(self, ctx):
        return call(LoadControlNet, ctx, name=self.control_net_name)


class ControlNetApply(Node):
    """ComfyUI's first ControlNet node: ApplyControlNet on one conditioning; the sampler's negative
    pass gets the same ControlNet (ComfyUI's control_apply_to_uncond)."""
    category = "conditioning/controlnet"  # ComfyUI's
    display_name = "Apply ControlNet (OLD)"
    conditioning = In("CONDITIONING")
    control_net = In("CONTROL_NET")
    image = In("IMAGE")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        if self.strength == 0:
            return self.conditioning
        cond = call(ApplyControlNet, ctx, conditioning=self.conditioning, control_net=self.control_net,
                    image=self.image, strength=self.strength)
        return update(cond, control_to_uncond=True)


class ControlNetApplyAdvanced(Node):
    """ComfyUI's ControlNet node: ApplyControlNet on the positive and the negative conditioning,
    acting from start_percent to end_percent of the steps. (`vae` is for ControlNets that take
    latent hints, which diffusers' ControlNetModel does not; it is accepted and not needed.)"""
    category = "conditioning/controlnet"  # ComfyUI's
    display_name = "Apply ControlNet"
    positive = In("CONDITIONING")
    negative = In("CONDITIONING")
    control_net = In("CONTROL_NET")
    image = In("IMAGE")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001)
    vae = In("VAE", optional=True)
    outputs = (Out("CONDITIONING", "positive"), Out("CONDITIONING", "negative"))

    @classmethod
    def check(cls, env, **constants):
        return ApplyControlNet.check(env, **constants)

    def run(self, ctx):
        settings = dict(control_net=self.control_net, image=self.image, strength=self.strength,
                        start_percent=self.start_percent, end_percent=self.end_percent)
        return (call(ApplyControlNet, ctx, conditioning=self.positive, **settings),
                call(ApplyControlNet, ctx, conditioning=self.negative, **settings))


class InpaintModelConditioning(Node):
    """ComfyUI's inpainting conditioning: InpaintConditioning (the masked image and mask, for
    inpainting UNets) on both conditionings, the image's latents (VAEEncode) and, with noise_mask,
    the mask as their noise mask (SetLatentNoiseMask)."""
    category = "conditioning/inpaint"  # ComfyUI's
    positive = In("CONDITIONING")
    negative = In("CONDITIONING")
    vae = In("VAE")
    pixels = In("IMAGE")
    mask = In("MASK")
    noise_mask = Boolean(True, tooltip="Add a noise mask to the latent so sampling will only happen within the mask")
    outputs = (Out("CONDITIONING", "positive"), Out("CONDITIONING", "negative"), Out("LATENT", "latent"))

    def run(self, ctx):
        positive, negative = call(InpaintConditioning, ctx, positive=self.positive, negative=self.negative,
                                  vae=self.vae, image=self.pixels, mask=self.mask)
        latent = call(VAEEncode, ctx, vae=self.vae, pixels=self.pixels)
        if self.noise_mask:
            mask = self.mask
            if crop_to_vae(self.pixels, self.vae).shape != self.pixels.shape:  # cropped: the mask alike
                mask = crop_with_mask(self.vae, self.pixels, fit_mask(mask_batch(mask), self.pixels))[1]
            latent = call(SetLatentNoiseMask, ctx, samples=latent, mask=mask)
        return positive, negative, latent

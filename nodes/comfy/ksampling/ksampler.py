"""One run of a ComfyUI sampler node, by ComfyUI's rules (comfy.samplers.KSampler / CFGGuider):
the latents `latent_image + noise * sigma_0` (noise * sqrt(1 + sigma_0^2) when sigma_0 is the model's
largest), the sampler function over the sigmas with the seed in extra_args, progress per step."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ...denoiser import Guide
from ...loading.loaders import LATENT_SCALE_ATTR
from ...families import family, runtime_of
from ...latent_value import Latent, space_of_family
from ...sampling import latent_preview
from .denoiser import Denoiser, DiscreteSchedule, FlowSchedule, prepare_mask
from .dual import DualCFG, DualGuide
from .noise import prepare_noise
from .samplers import FLOW_PENDING, NEEDS_UNCOND, SAMPLERS, UNAVAILABLE

COMFY_LATENT_SCALE = 8  # ComfyUI's empty latents assume SD's 8 pixels per latent pixel
_SCHEDULES: dict = {}


@dataclass(frozen=True)
class SamplerChoice:
    """A sampler and its options (KSamplerSelect: none; SamplerER_SDE etc.: theirs)."""
    name: str
    options: tuple = field(default=())  # (key, value) pairs

    def function(self):
        if self.name not in SAMPLERS:
            raise ValueError(unavailable_message(self.name))
        return SAMPLERS[self.name]


def unavailable_message(name: str) -> str:
    if name in UNAVAILABLE:
        return (f"ComfyUI's sampler '{name}' is not available in Loom; these ComfyUI samplers are not: "
                f"{', '.join(UNAVAILABLE)}")
    return f"unknown sampler '{name}'"


FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)


def model_sampling(model) -> DiscreteSchedule | FlowSchedule:
    """The model's sampling: the one a ModelSampling* node set, else its scheduler config's (a
    flow-matching scheduler: flow sampling with its shift and the family's timestep multiplier),
    made once per config."""
    if getattr(model, "sampling", None) is not None:
        return model.sampling
    runtime = runtime_of(getattr(model, "family", "sd1"))
    if runtime is not None and hasattr(runtime, "model_sampling"):  # the family's default for this denoiser
        return runtime.model_sampling(model.unet)
    config = dict(model.scheduler.config)
    key = (getattr(model, "family", None),) + tuple(sorted((k, repr(v)) for k, v in config.items()))
    if key not in _SCHEDULES:
        if config.get("_class_name") in FLOW_SCHEDULERS:
            _SCHEDULES[key] = FlowSchedule(config.get("shift", 1.0), family(model.family).sampling.multiplier)
        else:
            _SCHEDULES[key] = DiscreteSchedule(config)
    return _SCHEDULES[key]


def empty_latent(batch_size: int, channels: int, width: int, height: int, device) -> Latent:
    """ComfyUI's empty LATENT: zeros at its 8-pixel scale, marked empty with the asked size, so that
    latent_image makes it again at the sampled model's own channels and scale."""
    shape = (batch_size, channels, height // COMFY_LATENT_SCALE, width // COMFY_LATENT_SCALE)
    return Latent(torch.zeros(shape, device=device), empty=True, width=width, height=height)


def latent_image(model, latent: Latent) -> torch.Tensor:
    """The LATENT's samples as float32 in the model's latent space, an empty one at the model's latent
    shape (ComfyUI's fix_empty_latent_channels: zeros with the model's channels)."""
    unet = model.unet
    samples = latent.samples
    if latent.empty:
        scale = getattr(unet, LATENT_SCALE_ATTR, COMFY_LATENT_SCALE)
        h, w = samples.shape[-2:]
        height, width = latent.height or h * COMFY_LATENT_SCALE, latent.width or w * COMFY_LATENT_SCALE
        if width % scale or height % scale:
            raise ValueError(f"width and height must be multiples of {scale} for this model, got {width}x{height}")
        declared = family(getattr(model, "family", "sd1"))
        channels = declared.latent.channels if declared.runtime else \
            getattr(unet.config, "out_channels", None) or unet.config.in_channels  # transformers: in only
        shape = (samples.shape[0], channels, height // scale, width // scale)
        return torch.zeros(shape, dtype=torch.float32)
    return latent.in_space(model_space(model)).detach().float().cpu()


def model_space(model):
    """The latent space of the model's family (nodes.latent_value.Space)."""
    return space_of_family(getattr(model, "family", None))


def starting_noise(model, latent: Latent, seed: int) -> torch.Tensor:
    """ComfyUI's prepare_noise for this LATENT (its batch_index honoured), on the CPU."""
    return prepare_noise(latent_image(model, latent).shape, seed, latent.batch_index)


def sample(ctx, model, positive, negative, cfg: float, sampler: SamplerChoice, sigmas: torch.Tensor,
           latent: Latent, noise: torch.Tensor, seed: int,
           dual: DualCFG | None = None) -> tuple[Latent, torch.Tensor | None]:
    """(the output LATENT, the last step's denoised latents or None) of one run. `dual`: DualCFGGuider's
    middle conditioning and scales (nodes.comfy.ksampling.dual), `cfg` then unused."""
    unet = model.unet
    function = sampler.function()
    device = unet.device
    source = latent_image(model, latent).to(device)
    space = model_space(model) or latent.space  # latent_image re-expressed the samples in the model's
    if sigmas.numel() == 0:
        return latent.sampled(source.to(unet.dtype), space=space), None
    ms = model_sampling(model)
    if isinstance(ms, FlowSchedule) and sampler.name in FLOW_PENDING:
        raise ValueError(f"the sampler '{sampler.name}' does not run on flow-matching models in Loom yet; these do "
                         f"not: {', '.join(FLOW_PENDING)}")
    sigmas = sigmas.detach().float().to(device)
    noise = noise.to(device=device, dtype=torch.float32)
    first = float(sigmas[0])
    full = math.isclose(float(ms.sigma_max), first, rel_tol=1e-5) or first > float(ms.sigma_max)
    x = ms.noise_scaling(sigmas[0] if isinstance(ms, FlowSchedule) else first, noise, source, full)
    mask = None if latent.noise_mask is None else prepare_mask(latent.noise_mask, source)
    like = x.to(unet.dtype)
    runtime = runtime_of(getattr(model, "family", "sd1"))
    def make_guide(positive, negative, cfg: float, keep_uncond: bool):
        if runtime is not None:  # a transformer family's own prediction (nodes.families.spec.Runtime); a
            # noise mask is the Denoiser's, as for any model
            return runtime.guide(model, positive, negative, cfg, keep_uncond=keep_uncond)
        return Guide(unet, positive, negative, cfg, like, getattr(unet, LATENT_SCALE_ATTR, COMFY_LATENT_SCALE),
                     _generators(seed, x.shape), latent.inpaint_latents,
                     None if mask is None else (mask.to(unet.dtype), source.to(unet.dtype)), keep_uncond=keep_uncond)

    if dual is None:
        guide = make_guide(positive, negative, cfg, sampler.name in NEEDS_UNCOND)
    else:
        if sampler.name in NEEDS_UNCOND:
            raise ValueError(f"the sampler '{sampler.name}' needs a CFG guider's negative pass; DualCFGGuider has none")
        guide = DualGuide(lambda conditioning: make_guide(conditioning, None, 1.0, False), positive, negative, dual)
    post_cfg = [p for p in getattr(model, "patches", ()) if getattr(p, "post_cfg", False)]
    if post_cfg and not getattr(guide, "applies_post_cfg", False):  # CFGNorm: the guide must apply it
        raise ValueError(f"{type(post_cfg[0]).__name__.removesuffix('Patch')} (a CFG patch of the MODEL) is not "
                         f"supported on {family(getattr(model, 'family', 'sd1')).label} models or DualCFGGuider yet")
    masked_noise = noise
    if mask is not None and sampler.name == "ddim":  # ComfyUI's ddim noises the kept area with seed + 1
        generator = torch.Generator("cpu").manual_seed(seed + 1)
        masked_noise = torch.randn(noise.shape, generator=generator).to(device)
    denoiser = Denoiser(guide, ms, unet.dtype, sigmas, mask, source if mask is not None else None, masked_noise,
                        getattr(model, "denoise_mask_function", None))
    steps = len(sigmas) - 1
    last = {}

    def callback(info):
        last["denoised"] = info["denoised"]
        if ctx is not None and ctx.progress is not None:
            ctx.progress(min(info["i"] + 1, steps), steps, lambda x=info["denoised"]: latent_preview(x))

    with torch.no_grad():
        samples = function(denoiser, x, sigmas, extra_args={"seed": seed}, callback=callback, disable=True,
                           **dict(sampler.options))
    drawn = getattr(guide, "inpaint_latents", None)  # an inpainting UNet's, drawn by this run or given
    out = latent.sampled(ms.inverse_noise_scaling(sigmas[-1], samples).to(unet.dtype), space=space,
                         inpaint_latents=latent.inpaint_latents if drawn is None else drawn)
    denoised = last.get("denoised")
    return out, None if denoised is None else denoised.to(unet.dtype)


def _generators(seed: int, shape) -> list[torch.Generator]:
    """The stream for what Loom's Guide draws itself (an inpainting UNet's masked-image latents): the
    seed's generator after the starting noise, one image after another (as the inpainting pipeline)."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    torch.randn(tuple(shape), generator=generator)
    return [generator] * shape[0]


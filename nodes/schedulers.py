"""The SCHEDULER value and how a diffusers scheduler is made from it.

SCHEDULER is a frozen `SchedulerSpec(kind, config, steps, strength, sigmas)`: a description, not a
live scheduler. `kind` names one of KINDS (or "checkpoint": the class the checkpoint was saved with),
`config` is the checkpoint's scheduler config (betas, offsets, prediction_type: "epsilon" or SD 2.x's
"v_prediction", ...), `steps` the number of inference steps and `strength` the img2img denoising
strength (1.0: the whole schedule). `sigmas` (optional): an explicit noise schedule (ComfyUI's
SIGMAS, descending), which replaces `steps` (see `set_sigmas`).

`spec.make()` builds a fresh diffusers scheduler exactly as StableDiffusion(Img2Img)Pipeline sets it
up: `set_timesteps(steps)`, then for strength < 1 the first `steps - int(steps * strength)` steps are
skipped (`set_begin_index`). Step numbers used by Sample/UNetStep index `spec.make().timesteps`
after that skip: step 0 is the first UNet call of this (possibly shortened) schedule. Most kinds
make one UNet call per step; PNDM makes steps + 1.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

# kind -> (diffusers class name, extra config)
KINDS: dict[str, tuple[str, dict]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
CHECKPOINT = "checkpoint"
# A flow-matching checkpoint (its config's class is one of these): the kinds that exist for flow models.
# (FlowMatchHeunDiscreteScheduler takes no custom sigmas, which the families' pipelines set.)
FLOW_KINDS: dict[str, str] = {"euler": "FlowMatchEulerDiscreteScheduler"}
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")


@dataclass(frozen=True)
class SchedulerSpec:
    kind: str
    config: dict = field(hash=False, compare=True)
    steps: int = 50
    strength: float = 1.0
    sigmas: tuple[float, ...] | None = None

    def class_and_config(self) -> tuple[type, dict]:
        import diffusers

        if self.kind == CHECKPOINT:
            name, extra = self.config.get("_class_name", "PNDMScheduler"), {}
        elif self.config.get("_class_name") in FLOW_SCHEDULERS:  # a flow model: its kinds, on its config
            if self.kind not in FLOW_KINDS:
                raise ValueError(f"the scheduler kind '{self.kind}' does not run on a flow-matching model; these "
                                 f"do: {', '.join(FLOW_KINDS)}")
            name, extra = FLOW_KINDS[self.kind], {}
        else:
            name, extra = KINDS[self.kind]
        return getattr(diffusers, name), {**self.config, **extra}

    @property
    def skipped(self) -> int:
        """Steps of the full schedule skipped for img2img (the pipeline's `t_start`)."""
        return max(self.steps - min(int(self.steps * self.strength), self.steps), 0)

    def make(self, device: Any = None, set_timesteps=None):
        """A fresh scheduler at the start of this schedule. set_timesteps(scheduler, steps, device): how a
        model family's pipeline sets its steps (nodes.families.spec.Runtime.stage_timesteps), else the
        scheduler's own set_timesteps(steps)."""
        cls, config = self.class_and_config()
        if self.sigmas is not None:
            return set_sigmas(cls, config, self.sigmas, device)
        scheduler = cls.from_config(config)
        if set_timesteps is not None:
            set_timesteps(scheduler, self.steps, device)
        else:
            scheduler.set_timesteps(self.steps, device=device)
        if self.strength < 1.0:
            start_at(scheduler, self.offset(scheduler))
        return scheduler

    def offset(self, scheduler) -> int:
        """Index in `scheduler.timesteps` of this schedule's step 0."""
        return self.skipped * scheduler.order

    def key(self) -> tuple:
        """What identifies the schedule: a sampler state made for another key is not continued."""
        return (self.kind, tuple(sorted((k, repr(v)) for k, v in self.config.items())), self.steps, self.strength,
                self.sigmas)


def step_kwargs(scheduler, generators: list | None, eta: float = 0.0) -> dict:
    """Extra arguments of `scheduler.step`, chosen as the pipelines' prepare_extra_step_kwargs does."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generators
    return kwargs


def start_at(scheduler, index: int) -> None:
    """Make a fresh scheduler start at absolute timestep index `index` (it has no history)."""
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(index)


class UnsupportedSigmas(ValueError):
    pass


def set_sigmas(cls, config: dict, sigmas, device=None):
    """A fresh scheduler of class `cls` that follows an explicit noise schedule (descending sigmas,
    in the model's noise units). Schedulers whose set_timesteps takes `sigmas` (Euler) get them as
    they are; the others that offer Karras sigmas take them in place of their Karras schedule, so
    diffusers itself derives the timesteps (and the interleaving of second-order samplers)."""
    import numpy as np

    values = [float(s) for s in sigmas]
    if len(values) < 2:
        raise UnsupportedSigmas("a noise schedule needs at least two sigmas (one step)")
    if "sigmas" in inspect.signature(cls.set_timesteps).parameters:
        scheduler = cls.from_config(config)
        scheduler.set_timesteps(sigmas=values, device=device)
        return scheduler
    if "use_karras_sigmas" not in inspect.signature(cls.__init__).parameters or not hasattr(cls, "_convert_to_karras"):
        raise UnsupportedSigmas(f"diffusers' {cls.__name__} cannot follow an explicit noise schedule (it has no "
                                "custom or Karras sigmas); use a sampler such as euler, dpmpp_2m, heun or lms")
    if values[-1] != 0.0:
        raise UnsupportedSigmas(f"diffusers' {cls.__name__} only follows noise schedules that end at 0 (this one "
                                f"ends at {values[-1]:g}); use the euler sampler for a partial schedule")
    accepted = set(inspect.signature(cls.__init__).parameters)
    flags = {"use_karras_sigmas": True, "use_exponential_sigmas": False, "use_beta_sigmas": False,
             "final_sigmas_type": "zero"}
    scheduler = cls.from_config({**config, **{k: v for k, v in flags.items() if k in accepted}})
    schedule = np.array(values[:-1], dtype=np.float64)
    scheduler._convert_to_karras = lambda in_sigmas, num_inference_steps: schedule
    scheduler.set_timesteps(len(values) - 1, device=device)
    return scheduler

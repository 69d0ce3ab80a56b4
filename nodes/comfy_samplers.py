"""ComfyUI's `sampler_name` and `scheduler` names, mapped onto diffusers schedulers.

A ComfyUI sampler is an integration method (-> a diffusers scheduler class and its settings); a
ComfyUI scheduler is the spacing of the noise levels (-> timestep_spacing or the *_sigmas flags of
that class). Names ComfyUI knows but diffusers has no equivalent for (or that need a package that
is not installed) are kept in the choices, so that a ComfyUI workflow using one is told exactly
which name is the problem instead of failing as an unknown value.
"""
from __future__ import annotations

import inspect

# ComfyUI sampler -> (diffusers class, its settings)
SAMPLERS: dict[str, tuple[str, dict]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {}),
    "dpmpp_sde_gpu": ("DPMSolverSDEScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde_gpu": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_3m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    "dpmpp_3m_sde_gpu": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    "ddpm": ("DDPMScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    # bh1 ends in NaN when its last step goes to sigma 0 (diffusers 0.42): it stops at sigma_min.
    "uni_pc": ("UniPCMultistepScheduler", {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
    "uni_pc_bh2": ("UniPCMultistepScheduler", {"solver_type": "bh2"}),
    # Not ComfyUI's names, but those of older UIs and diffusers' own pipelines.
    "pndm": ("PNDMScheduler", {}),
    "plms": ("PNDMScheduler", {}),
}
# ComfyUI samplers without a diffusers equivalent.
UNMAPPED_SAMPLERS = (
    "euler_cfg_pp", "euler_ancestral_cfg_pp", "heunpp2", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "ipndm", "ipndm_v", "res_multistep", "res_multistep_cfg_pp",
    "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
)
# ComfyUI scheduler -> settings of the diffusers class. karras, exponential and beta span the model's
# whole noise range, as ComfyUI's: some classes (Euler, Heun, LMS) take the range from the spaced
# timesteps, which a checkpoint's "leading" spacing (SDXL's) would cut short.
FULL_RANGE = {"timestep_spacing": "linspace"}
SCHEDULERS: dict[str, dict] = {
    "normal": {"timestep_spacing": "linspace"},
    "karras": {**FULL_RANGE, "use_karras_sigmas": True},
    "exponential": {**FULL_RANGE, "use_exponential_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "simple": {"timestep_spacing": "trailing"},
    "ddim_uniform": {"timestep_spacing": "leading"},
    "beta": {**FULL_RANGE, "use_beta_sigmas": True},
}
UNMAPPED_SCHEDULERS = ("linear_quadratic", "kl_optimal")

SAMPLER_NAMES = list(SAMPLERS) + list(UNMAPPED_SAMPLERS)
SCHEDULER_NAMES = list(SCHEDULERS) + list(UNMAPPED_SCHEDULERS)


class Unmapped(ValueError):
    """A ComfyUI sampler or scheduler name Loom cannot honour; `input` names the widget."""

    def __init__(self, input: str, message: str):
        super().__init__(message)
        self.input = input


def resolve(sampler_name: str, scheduler: str) -> tuple[str, dict]:
    """(diffusers class name, settings) for a ComfyUI sampler and scheduler, or raise Unmapped."""
    if sampler_name not in SAMPLERS:
        usable = [name for name, (cls, _) in SAMPLERS.items() if _installed(_scheduler_class(cls))]
        raise Unmapped("sampler_name", f"ComfyUI's sampler '{sampler_name}' has no diffusers equivalent in Loom; "
                                       f"these do: {', '.join(usable)}")
    if scheduler not in SCHEDULERS:
        raise Unmapped("scheduler", f"ComfyUI's scheduler '{scheduler}' has no diffusers equivalent in Loom; "
                                    f"these do: {', '.join(SCHEDULERS)}")
    class_name, settings = SAMPLERS[sampler_name]
    cls = _scheduler_class(class_name)
    if not _installed(cls):
        raise Unmapped("sampler_name", f"sampler '{sampler_name}' needs diffusers' {class_name}, which needs a "
                                       f"package that is not installed ({_missing_backend(cls)})")
    spacing = SCHEDULERS[scheduler]
    accepted = set(inspect.signature(cls.__init__).parameters)
    unknown = [key for key in spacing if key not in accepted]
    if unknown:
        raise Unmapped("scheduler", f"scheduler '{scheduler}' cannot be used with sampler '{sampler_name}': "
                                    f"diffusers' {class_name} has no {unknown[0]} setting")
    if spacing.get("use_beta_sigmas"):
        from diffusers.utils import is_scipy_available

        if not is_scipy_available():
            raise Unmapped("scheduler", "scheduler 'beta' needs scipy, which is not installed")
    return class_name, {**settings, **spacing}


def _scheduler_class(name: str) -> type:
    import diffusers

    return getattr(diffusers, name)


def _installed(cls) -> bool:
    """False for diffusers' placeholder of a class whose optional package is missing."""
    return "dummy" not in cls.__module__


def _missing_backend(cls) -> str:
    backends = getattr(cls, "_backends", None) or []
    return ", ".join(b for b in backends if b != "torch") or "an optional dependency"

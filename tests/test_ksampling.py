"""nodes.comfy.ksampling against references: k-diffusion's samplers (the PyPI package, tests/_kdiffusion.py)
on the same denoiser and noise, ComfyUI's facts for schedules and noise, and for the samplers that
only ComfyUI has, the exact answer of a Gaussian data distribution."""
import math

import pytest
import torch

from nodes.comfy.ksampling import samplers as ours
from nodes.comfy.ksampling.denoiser import DiscreteSchedule
from nodes.comfy.ksampling.noise import BrownianTreeNoiseSampler, default_noise_sampler, prepare_noise
from nodes.comfy.ksampling.schedules import SCHEDULER_NAMES, calculate_sigmas, karras, ksampler_sigmas
from tests._kdiffusion import load_sampling

MU, SPREAD = 0.3, 0.5  # the Gaussian data: N(MU, SPREAD^2) per value
pytestmark = pytest.mark.filterwarnings("ignore:Should have tb<=t1")  # torchsde: float32 ends of the tree
SD1 = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
TOLERANCE = 1e-5  # float32 sums in another order (ComfyUI's fork writes a few formulas differently)


def denoiser(x, sigma, **_):
    """A smooth non-linear denoiser: the Gaussian data's exact one plus a tanh term."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    mu = torch.linspace(-0.5, 0.5, x.shape[-1])
    return (SPREAD ** 2 * x + s ** 2 * mu) / (SPREAD ** 2 + s ** 2) + 0.1 * torch.tanh(x) * s / (1 + s)


class Shared:
    """One noise per (sigma, sigma_next) pair, whichever sampler asks: k-diffusion queries its noise
    at exp(-log sigma), ComfyUI's at sigma itself, which a Brownian tree tells apart by ~1e-7."""

    def __init__(self, sampler):
        self.sampler, self.cache = sampler, {}

    def __call__(self, sigma, sigma_next):
        key = (round(float(sigma), 4), round(float(sigma_next), 4))
        if key not in self.cache:
            self.cache[key] = self.sampler(sigma, sigma_next)
        return self.cache[key]


# name -> (k-diffusion function, its extra options, noise: None / "generator" / "tree")
K_REFERENCE = {
    "euler": ("sample_euler", {}, None),
    "euler_ancestral": ("sample_euler_ancestral", {}, "generator"),
    "heun": ("sample_heun", {}, None),
    "dpm_2": ("sample_dpm_2", {}, None),
    "dpm_2_ancestral": ("sample_dpm_2_ancestral", {}, "generator"),
    "lms": ("sample_lms", {}, None),
    "dpmpp_2s_ancestral": ("sample_dpmpp_2s_ancestral", {}, "generator"),
    "dpmpp_sde": ("sample_dpmpp_sde", {}, "tree"),
    "dpmpp_2m": ("sample_dpmpp_2m", {}, None),
    "dpmpp_2m_sde": ("sample_dpmpp_2m_sde", {}, "tree"),
    "dpmpp_2m_sde_heun": ("sample_dpmpp_2m_sde", {"solver_type": "heun"}, "tree"),
    "dpmpp_3m_sde": ("sample_dpmpp_3m_sde", {}, "tree"),
    "ddim": ("sample_euler", {}, None),
    "dpm_fast": ("sample_dpm_fast", {}, "ends"),  # k-diffusion's take the schedule's ends, not the sigmas
    "dpm_adaptive": ("sample_dpm_adaptive", {}, "ends"),
}
FULL = karras(12, 0.0292, 14.6146)  # ends at 0
PARTIAL = FULL[:8]  # a run that stops with noise left (KSamplerAdvanced's leftover noise)


def _start(sigmas, batch=2):
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * sigmas[0]


@pytest.mark.parametrize("sigmas", [FULL, PARTIAL], ids=["to_zero", "partial"])
@pytest.mark.parametrize("name", list(K_REFERENCE))
def test_samplers_equal_k_diffusion(name, sigmas):
    k = load_sampling()
    function, options, noise = K_REFERENCE[name]
    if name == "lms" and sigmas[-1] == 0:
        pytest.skip("ComfyUI's lms ends on the denoised latents; k-diffusion's integrates to 0 (test below)")
    x = _start(sigmas)
    positive = sigmas[sigmas > 0]
    if noise == "generator":
        mine = theirs = Shared(default_noise_sampler(x, 5))
    elif noise == "tree":
        mine = Shared(BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=5))
        theirs = mine
    else:
        mine = theirs = None
    ours_out = ours.SAMPLERS[name](denoiser, x.clone(), sigmas, extra_args={"seed": 5}, noise_sampler=mine)
    if theirs is not None:
        options = {**options, "noise_sampler": theirs}
    if noise == "ends":  # ComfyUI's wrapper: a final 0 is replaced by the level before it
        low = sigmas[-1] if sigmas[-1] != 0 else sigmas[-2]
        calls = (len(sigmas) - 1,) if name == "dpm_fast" else ()
        reference = getattr(k, function)(denoiser, x.clone(), low, sigmas[0], *calls, disable=True)
    else:
        reference = getattr(k, function)(denoiser, x.clone(), sigmas, disable=True, **options)
    assert torch.isfinite(reference).all()
    assert (ours_out - reference).abs().max().item() <= TOLERANCE


def test_lms_last_step_is_the_denoised_latents():
    """ComfyUI's lms takes the prediction at the last step; up to there it is k-diffusion's."""
    k = load_sampling()
    x = _start(FULL)
    seen = []
    out = ours.sample_lms(denoiser, x.clone(), FULL, callback=lambda info: seen.append(info["x"]))
    before = k.sample_lms(denoiser, x.clone(), FULL[:-1], disable=True)
    assert (seen[-1] - before).abs().max() <= TOLERANCE
    assert torch.allclose(out, denoiser(seen[-1], FULL[-2:-1]), atol=1e-6)


def test_brownian_tree_equals_k_diffusion_for_the_same_seed():
    k = load_sampling()
    x = torch.zeros(2, 4, 8, 8)
    mine = BrownianTreeNoiseSampler(x, FULL[-2], FULL[0], seed=1234)
    theirs = k.BrownianTreeNoiseSampler(x, FULL[-2], FULL[0], seed=1234)
    for i in range(len(FULL) - 2):
        a, b = mine(FULL[i], FULL[i + 1]), theirs(FULL[i], FULL[i + 1])
        assert a.shape == x.shape and torch.equal(a, b)
        assert 0.7 < a.std() < 1.3  # unit variance increments
    other = BrownianTreeNoiseSampler(x, FULL[-2], FULL[0], seed=1235)
    assert not torch.allclose(other(FULL[0], FULL[1]), mine(FULL[0], FULL[1]))


def test_sde_samplers_seed_their_tree_with_the_seed():
    """Without a noise sampler, dpmpp_2m_sde's noise is a Brownian tree seeded with extra_args' seed
    (ComfyUI's); the same seed gives the same latents, another seed others."""
    k = load_sampling()
    x = _start(FULL)
    tree = k.BrownianTreeNoiseSampler(x, FULL[-2], FULL[0], seed=77)
    expected = k.sample_dpmpp_2m_sde(denoiser, x.clone(), FULL, disable=True, noise_sampler=tree)
    got = ours.sample_dpmpp_2m_sde(denoiser, x.clone(), FULL, extra_args={"seed": 77})
    assert (got - expected).abs().max() <= TOLERANCE
    assert (ours.sample_dpmpp_2m_sde(denoiser, x.clone(), FULL, extra_args={"seed": 78}) - got).abs().max() > 1e-3


def test_ancestral_samplers_draw_from_a_generator_seeded_with_the_seed():
    """euler_ancestral's step noise: a fresh generator seeded with the seed, one whole-batch draw per step."""
    k = load_sampling()
    x = _start(FULL)
    generator = torch.Generator().manual_seed(42)
    expected = k.sample_euler_ancestral(denoiser, x.clone(), FULL, disable=True,
                                        noise_sampler=lambda s, t: torch.randn(x.shape, generator=generator))
    got = ours.sample_euler_ancestral(denoiser, x.clone(), FULL, extra_args={"seed": 42})
    assert (got - expected).abs().max() <= TOLERANCE


# --- samplers only ComfyUI has --------------------------------------------------------------------

def gaussian(x, sigma, **_):
    """The exact denoiser of N(MU, SPREAD^2) data."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return (SPREAD ** 2 * x + s ** 2 * MU) / (SPREAD ** 2 + s ** 2)


class WithUncond:
    """A guided model whose negative prediction is the positive one: CFG++ is then its base method."""

    def __init__(self, model):
        self.model, self.uncond_denoised = model, None
        self.percent_to_sigma = DiscreteSchedule(SD1).percent_to_sigma  # sa_solver's noise interval

    def __call__(self, x, sigma, **kwargs):
        self.uncond_denoised = self.model(x, sigma, **kwargs)
        return self.uncond_denoised


ODE = ["heun", "heunpp2", "exp_heun_2_x0", "lms", "dpmpp_2m", "ipndm", "ipndm_v", "deis", "uni_pc", "uni_pc_bh2", "dpm_fast", "res_multistep", "gradient_estimation", "ddim",
       "euler_cfg_pp", "dpmpp_2m_cfg_pp", "res_multistep_cfg_pp", "gradient_estimation_cfg_pp"]


@pytest.mark.parametrize("name", ODE)
def test_deterministic_samplers_solve_the_probability_flow_ode(name):
    """For Gaussian data the ODE's solution is exact: x_0 = MU + (x_T - MU) * SPREAD / sqrt(SPREAD^2 + T^2).
    Each sampler converges to it: 4x the steps cut the error at least 3x (first order: 4x)."""
    errors = []
    for steps in (40, 160):
        sigmas = karras(steps, 0.002, 80.0)
        x = _start(sigmas)
        out = ours.SAMPLERS[name](WithUncond(gaussian), x.clone(), sigmas, extra_args={"seed": 0})
        exact = MU + (x - MU) * SPREAD / math.sqrt(SPREAD ** 2 + float(sigmas[0]) ** 2)
        errors.append((out - exact).abs().max().item())
    assert errors[1] < errors[0] / 2.2 and errors[1] < 0.04, errors


# Not lcm (a consistency model's sampler: with another denoiser it ends too smooth) nor
# dpmpp_2s_ancestral_cfg_pp (ComfyUI's final update reads the midpoint's negative prediction).
STOCHASTIC = ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
              "dpmpp_2m_sde_heun", "dpmpp_3m_sde", "ddpm", "res_multistep_ancestral", "er_sde", "seeds_2",
              "seeds_3", "exp_heun_2_x0_sde", "sa_solver", "sa_solver_pece", "euler_ancestral_cfg_pp",
              "res_multistep_ancestral_cfg_pp"]


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_sample_the_data_distribution(name):
    """From noise, the 4096 samples end distributed as the data: mean MU and spread SPREAD (+-0.04;
    their sampling error is ~0.01)."""
    sigmas = karras(100, 0.002, 14.6)
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(3)) * sigmas[0] + MU
    out = ours.SAMPLERS[name](WithUncond(gaussian), x, sigmas, extra_args={"seed": 9})
    assert abs(out.mean().item() - MU) < 0.04 and abs(out.std().item() - SPREAD) < 0.04, (out.mean(), out.std())


@pytest.mark.parametrize("pp, base", [("euler_cfg_pp", "euler"), ("euler_ancestral_cfg_pp", "euler_ancestral"),
                                      ("dpmpp_2m_cfg_pp", "dpmpp_2m"), ("res_multistep_cfg_pp", "res_multistep"),
                                      ("res_multistep_ancestral_cfg_pp", "res_multistep_ancestral"),
                                      ("gradient_estimation_cfg_pp", "gradient_estimation")])
def test_cfg_pp_is_its_base_sampler_when_the_negative_prediction_is_the_positive(pp, base):
    x = _start(FULL)
    a = ours.SAMPLERS[pp](WithUncond(denoiser), x.clone(), FULL, extra_args={"seed": 3})
    b = ours.SAMPLERS[base](WithUncond(denoiser), x.clone(), FULL, extra_args={"seed": 3})
    assert (a - b).abs().max() <= 1e-4


def test_every_comfyui_sampler_runs():
    assert set(ours.SAMPLERS) == set(ours.COMFY_SAMPLER_NAMES) and not ours.UNAVAILABLE
    assert len(ours.SAMPLERS) == 44


# --- schedules and noise --------------------------------------------------------------------------

def test_schedules_follow_comfyui_rules():
    ms = DiscreteSchedule(SD1)
    assert ms.sigmas.dtype == torch.float32 and abs(float(ms.sigma_max) - 14.614642) < 1e-4
    assert abs(float(ms.sigma_min) - 0.0291675) < 1e-6
    assert int(ms.timestep(ms.sigmas[123])) == 123
    for name in SCHEDULER_NAMES:
        sigmas = calculate_sigmas(ms, name, 10)
        assert len(sigmas) == 11 and sigmas[-1] == 0 and (sigmas[:-1] > 0).all(), name
        assert (sigmas[:-1] > sigmas[1:]).all(), name
    # normal: timesteps 999 .. 0 evenly (here whole numbers), their table sigmas
    normal = calculate_sigmas(ms, "normal", 4)
    assert torch.allclose(normal[:-1], ms.sigmas[[999, 666, 333, 0]], rtol=1e-6)
    # simple: every 1000 / steps-th table entry from the top
    assert torch.equal(calculate_sigmas(ms, "simple", 4)[:-1], ms.sigmas[[999, 749, 499, 249]])
    # ddim_uniform: table entries 1, 1 + 250, ... reversed
    assert torch.equal(calculate_sigmas(ms, "ddim_uniform", 4)[:-1], ms.sigmas[[751, 501, 251, 1]])
    karras_sigmas = calculate_sigmas(ms, "karras", 5)
    assert torch.allclose(karras_sigmas, load_sampling().get_sigmas_karras(5, ms.sigma_min.item(),
                                                                          ms.sigma_max.item()), rtol=1e-6)
    # denoise 0.5 of 4 steps: the last 5 levels of an 8-step schedule; dpm_2 drops the next-to-last level
    assert torch.equal(ksampler_sigmas(ms, "euler", "normal", 4, 0.5), calculate_sigmas(ms, "normal", 8)[-5:])
    with_extra = calculate_sigmas(ms, "karras", 5)
    assert torch.equal(ksampler_sigmas(ms, "dpm_2", "karras", 4), torch.cat([with_extra[:-2], with_extra[-1:]]))


def test_beta_schedule_uses_the_beta_distribution_quantiles():
    from scipy.stats import beta

    ms = DiscreteSchedule(SD1)
    sigmas = calculate_sigmas(ms, "beta", 6)
    quantiles = 1 - torch.linspace(0, 1, 7)[:-1].double().numpy()
    steps = [int(round(v)) for v in beta.ppf(quantiles, 0.6, 0.6) * 999]
    assert torch.equal(sigmas[:-1], ms.sigmas[steps])


def test_batch_noise_is_one_generator_for_the_whole_batch():
    noise = prepare_noise((3, 4, 8, 8), 42)
    assert torch.equal(noise, torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(42)))
    alone = prepare_noise((1, 4, 8, 8), 42)
    assert torch.equal(noise[:1], alone) and not torch.equal(noise[1:2], prepare_noise((1, 4, 8, 8), 43))
    # batch_index [2, 0]: the third and first draws of the seed
    assert torch.equal(prepare_noise((2, 4, 8, 8), 42, [2, 0]), noise[[2, 0]])


# --- the scheduler and sampler nodes ---------------------------------------------------------------

def test_scheduler_and_sampler_nodes():
    from types import SimpleNamespace

    from nodes.common import call
    from nodes.comfy.sampling import BetaSamplingScheduler, SamplerER_SDE, SDTurboScheduler

    model = SimpleNamespace(scheduler=SimpleNamespace(config=SD1))
    ms = DiscreteSchedule(SD1)
    turbo = call(SDTurboScheduler, None, model=model, steps=2, denoise=1.0).values
    # exp(log sigma) of the table entries (ComfyUI's sigma(t)): the entries to float rounding
    assert torch.allclose(turbo, torch.cat([ms.sigmas[[999, 899]], torch.zeros(1)]), rtol=1e-6, atol=0)
    half = call(SDTurboScheduler, None, model=model, steps=1, denoise=0.5).values  # starts 5 of 10 later
    assert torch.allclose(half, torch.cat([ms.sigmas[[499]], torch.zeros(1)]), rtol=1e-6, atol=0)
    beta = call(BetaSamplingScheduler, None, model=model, steps=7, alpha=0.6, beta=0.6).values
    assert torch.equal(beta, calculate_sigmas(ms, "beta", 7))
    assert not torch.equal(call(BetaSamplingScheduler, None, model=model, steps=7, alpha=0.3, beta=0.6).values, beta)
    # ODE: no noise, noise scale x^1; the same settings make equal SAMPLERs (the cache compares them)
    ode = call(SamplerER_SDE, None, solver_type="ODE", max_stage=3, eta=1.0, s_noise=1.0)
    assert ode == call(SamplerER_SDE, None, solver_type="Reverse-time SDE", max_stage=3, eta=0.0, s_noise=1.0)
    x = _start(FULL)
    got = ode.function()(denoiser, x.clone(), FULL, extra_args={"seed": 1}, **dict(ode.options))
    plain = ours.sample_er_sde(denoiser, x.clone(), FULL, s_noise=0.0, noise_scaler=lambda v: v)
    assert torch.equal(got, plain)
    sde = call(SamplerER_SDE, None, solver_type="ER-SDE", max_stage=2, eta=1.0, s_noise=1.0)
    assert dict(sde.options) == {"s_noise": 1.0, "noise_scaler": None, "max_stage": 2}

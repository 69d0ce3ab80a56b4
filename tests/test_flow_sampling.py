"""Flow-matching sampling by ComfyUI's rules (ModelSamplingDiscreteFlow + CONST): the sigma table and
timesteps, schedules on it, the start and the denoised latents, and the nodes that set it."""
import pytest
import torch

from nodes.loading.bundles import Model
from nodes.common import call
from nodes.comfy.flow import EmptySD3LatentImage, ModelSamplingAuraFlow, ModelSamplingSD3
from nodes.comfy.ksampling import samplers
from nodes.comfy.ksampling.denoiser import Denoiser, FlowSchedule
from nodes.comfy.ksampling.ksampler import model_sampling
from nodes.comfy.ksampling.schedules import calculate_sigmas, ksampler_sigmas
from nodes.latent_value import Latent


def shifted(shift, s):
    return shift * s / (1 + (shift - 1) * s)


@pytest.mark.parametrize("shift,multiplier", [(1.0, 1000), (3.0, 1000), (3.0, 1.0), (6.0, 1.0)])
def test_the_sigma_table_is_the_shifted_timesteps(shift, multiplier):
    ms = FlowSchedule(shift, multiplier)
    s = torch.arange(1, 1001, dtype=torch.float64) / 1000
    torch.testing.assert_close(ms.sigmas.double(), shifted(shift, s), rtol=0, atol=1e-6)  # float32 table
    assert float(ms.sigma_max) == 1.0 and ms.sigmas.dtype == torch.float32
    sigma = torch.tensor([0.25, 0.5])
    assert torch.equal(ms.timestep(sigma), sigma * multiplier)
    torch.testing.assert_close(ms.sigma(ms.timestep(sigma)), shifted(shift, sigma), rtol=1e-6, atol=0)
    assert ms.percent_to_sigma(0.0) == 1.0 and ms.percent_to_sigma(1.0) == 0.0
    assert ms.percent_to_sigma(0.25) == pytest.approx(shifted(shift, 0.75))


def test_schedules_on_a_flow_model():
    ms = FlowSchedule(3.0, 1.0)
    simple = calculate_sigmas(ms, "simple", 8)  # every 125th of the 1000 shifted timesteps from the top
    expected = [shifted(3.0, (1000 - 125 * k) / 1000) for k in range(8)] + [0.0]
    torch.testing.assert_close(simple.double(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-6)
    normal = calculate_sigmas(ms, "normal", 4)  # timesteps evenly from sigma_max's to sigma_min's
    t = torch.linspace(1.0, float(ms.sigma_min), 4, dtype=torch.float64)
    torch.testing.assert_close(normal.double(), torch.cat([shifted(3.0, t), t.new_zeros(1)]), rtol=0, atol=1e-6)
    for name in ("karras", "exponential", "sgm_uniform", "beta", "kl_optimal", "linear_quadratic", "ddim_uniform"):
        sigmas = ksampler_sigmas(ms, "euler", name, 5)
        assert sigmas[0] <= 1.0 and sigmas[-1] == 0 and bool((sigmas[:-1] > sigmas[1:]).all()), name


def velocity_guide(target):
    """A flow model that knows the answer: v = (x - target) / sigma, read off its timestep (= sigma)."""
    return lambda x, t, step, total: (x.float() - target) / t


def test_the_flow_denoiser_sees_x_unscaled_and_returns_x_minus_sigma_v():
    ms, target = FlowSchedule(3.0, 1.0), torch.randn(1, 16, 4, 4)
    seen = []

    def guide(x, t, step, total):
        seen.append((x.clone(), t))
        return torch.ones_like(x)

    x = torch.randn(1, 16, 4, 4)
    out = Denoiser(guide, ms, torch.float32, torch.tensor([0.5, 0.0]))(x, torch.tensor([0.5]))
    assert torch.equal(seen[0][0], x) and float(seen[0][1]) == 0.5
    assert torch.equal(out, x - 0.5 * torch.ones_like(x))
    denoiser = Denoiser(velocity_guide(target), ms, torch.float32, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(denoiser(x, torch.tensor([0.7])), target)


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "res_multistep", "lms", "ipndm", "deis"])
def test_deterministic_samplers_reach_the_target_of_a_flow_model(name):
    """The exact denoiser of one point: every ODE sampler lands on it (sigma 0 last)."""
    ms, target = FlowSchedule(3.0, 1.0), torch.randn(2, 16, 4, 4)
    sigmas = ksampler_sigmas(ms, name, "simple", 6)
    noise = torch.randn_like(target)
    x = ms.noise_scaling(sigmas[0], noise, torch.zeros_like(target))
    assert torch.equal(x, sigmas[0] * noise)
    denoiser = Denoiser(velocity_guide(target), ms, torch.float32, sigmas)
    out = samplers.SAMPLERS[name](denoiser, x, sigmas, extra_args={"seed": 0}, disable=True)
    torch.testing.assert_close(ms.inverse_noise_scaling(sigmas[-1], out), target, rtol=0, atol=1e-5)


def test_a_start_from_latents_mixes_them_with_noise():
    ms = FlowSchedule(1.0, 1000)
    latent, noise, sigma = torch.full((1, 4, 2, 2), 2.0), torch.ones(1, 4, 2, 2), torch.tensor(0.25)
    assert torch.equal(ms.noise_scaling(sigma, noise, latent), torch.full((1, 4, 2, 2), 0.25 + 0.75 * 2.0))
    assert torch.equal(ms.inverse_noise_scaling(torch.tensor(0.5), latent), latent * 2)


def test_model_sampling_nodes_set_the_shift_and_multiplier():
    base = Model(unet=None, scheduler=None, family="sd1")
    aura = call(ModelSamplingAuraFlow, None, model=base, shift=3.0)
    ms = model_sampling(aura)
    assert isinstance(ms, FlowSchedule) and (ms.shift, ms.multiplier, ms.prediction) == (3.0, 1.0, "flow")
    sd3 = model_sampling(call(ModelSamplingSD3, None, model=base, shift=2.5))
    assert (sd3.shift, sd3.multiplier) == (2.5, 1000)
    assert base.sampling is None  # the input model is unchanged
    velocity = model_sampling(call(ModelSamplingAuraFlow, None, model=base, shift=1.0, sampling="img_to_img_velocity"))
    latent = torch.randn(1, 4, 2, 2)
    assert torch.equal(velocity.noise_scaling(torch.tensor(1.0), torch.randn_like(latent), latent), latent)


def test_node_signatures_are_comfyuis():
    info = EmptySD3LatentImage.object_info()["input"]["required"]
    assert info["width"] == ["INT", {"default": 1024, "min": 16, "max": 16384, "step": 16}]
    assert info["batch_size"][1]["max"] == 4096
    aura = ModelSamplingAuraFlow.object_info()["input"]
    assert aura["required"]["shift"][1]["default"] == 1.73
    assert aura["optional"]["sampling"][0] == ["flow", "img_to_img_velocity"]
    assert ModelSamplingSD3.object_info()["input"]["required"]["shift"][1]["default"] == 3.0


def test_empty_sd3_latent_is_16_channels_of_zeros():
    class Ctx:
        env = None

    latent = call(EmptySD3LatentImage, Ctx(), width=64, height=32, batch_size=2)
    assert latent["samples"].shape == (2, 16, 4, 8) and not latent["samples"].any() and latent.empty


@pytest.mark.parametrize("name", ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "lcm", "dpmpp_2m_sde",
                                  "dpmpp_2m_sde_heun", "dpmpp_3m_sde", "dpmpp_sde"])
def test_stochastic_samplers_keep_a_flow_models_marginals(name):
    """On a flow model the ancestral samplers keep x at the flow's marginal: with the exact denoiser of
    one point, x at each sigma is (1 - sigma) * target + sigma * (unit noise), so the last is the target
    and every intermediate x has the right signal share (not the eps models' x0 + sigma * noise)."""
    ms, target = FlowSchedule(3.0, 1.0), torch.full((1, 16, 8, 8), 0.5)
    sigmas = ksampler_sigmas(ms, name, "simple", 4)
    x = ms.noise_scaling(sigmas[0], torch.randn_like(target), torch.zeros_like(target))
    denoiser, seen = Denoiser(velocity_guide(target), ms, torch.float32, sigmas), []
    out = samplers.SAMPLERS[name](denoiser, x, sigmas, extra_args={"seed": 1}, disable=True,
                                  callback=lambda info: seen.append((info["x"], info["sigma"])))
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)
    for x_i, sigma in seen[1:]:
        residual = (x_i - (1 - sigma) * target) / sigma  # the noise part: mean 0, std 1 (1024 values)
        assert float(residual.mean().abs()) < 0.15 and abs(float(residual.std()) - 1) < 0.15



def test_half_log_snr_samplers_refuse_flow_models_with_a_clear_error():
    from nodes.comfy.ksampling.ksampler import SamplerChoice, sample

    class Unet:
        device, dtype, config = torch.device("cpu"), torch.float32, None

    model = Model(unet=Unet(), scheduler=None, sampling=FlowSchedule(3.0, 1.0))
    latent = Latent(torch.zeros(1, 16, 2, 2))
    with pytest.raises(ValueError, match="'er_sde' does not run on flow-matching models"):
        sample(None, model, [], [], 1.0, SamplerChoice("er_sde"), torch.tensor([1.0, 0.0]), latent,
               torch.zeros(1, 16, 2, 2), 0)

"""Conditioning utilities (combine, area, mask, zero out, average), the guidance rule, and
ComfyUI's custom-sampling nodes (which must give KSampler's very images)."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nodes.common import call
from nodes.conditioning import (Cond, ConditioningAverage, ConditioningCombine, ConditioningSetArea,
                                ConditioningSetMask, ConditioningZeroOut)
from nodes.denoiser import Guide
from tests._sd_families import context, sd
from tests._tiny_assets import controlnet
from tests.test_sd_families import CFG, NEGATIVE, PROMPT, SEED, decode, encode, ksampler


class ConstantUNet:
    """A stand-in UNet whose prediction is the mean of the prompt embeddings, everywhere: the
    sampler's weighting of entries can then be checked exactly."""
    config = SimpleNamespace(in_channels=4, out_channels=4, addition_embed_type=None)

    def __init__(self):
        self.calls = []

    def __call__(self, sample, t, encoder_hidden_states=None, return_dict=False, **kwargs):
        self.calls.append(sample.shape)
        value = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return (torch.zeros_like(sample) + value,)


def cond(value: float) -> tuple:
    return (Cond(torch.full((1, 77, 8), value)),)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.set_num_threads(1)
    return context(tmp_path_factory.mktemp("conditioning"))


def predict(positive, negative=None, scale=1.0, unet=None):
    x = torch.zeros(1, 4, 32, 32)  # latents of a 64 x 64 image (2 pixels per latent pixel)
    return Guide(unet or ConstantUNet(), positive, negative, scale, x, latent_scale=2)(x, torch.tensor(500), 0, 1)


def test_combined_area_entries_average_with_feathered_edges(ctx):
    """ConditioningCombine of a whole-image entry (1.0) and an entry on the left half (3.0): the
    left half averages both, the right half is the first alone, and the area's inner edge fades
    over min(8, width / 4) latent pixels, as ComfyUI weights them."""
    left = call(ConditioningSetArea, ctx, conditioning=cond(3.0), width=32, height=64, x=0, y=0, strength=1.0)
    assert left[0].area == (0, 0, 32, 64)
    both = call(ConditioningCombine, ctx, conditioning_1=cond(1.0), conditioning_2=left)
    out = predict(both)[0, 0]
    weights = {12: 1.0, 13: 0.75, 14: 0.5, 15: 0.25}  # area width 16 latent pixels: a 4-pixel fade
    for column in range(32):
        w = 1.0 if column < 12 else weights.get(column, 0.0)
        assert torch.allclose(out[:, column], torch.tensor((1.0 + 3.0 * w) / (1.0 + w)), atol=1e-6), column
    stronger = call(ConditioningSetArea, ctx, conditioning=cond(3.0), width=32, height=64, x=0, y=0, strength=3.0)
    out = predict(call(ConditioningCombine, ctx, conditioning_1=cond(1.0), conditioning_2=stronger))[0, 0]
    assert torch.allclose(out[:, 0], torch.tensor((1.0 + 9.0) / 4.0))


def test_guidance_with_areas_runs_the_negative_on_the_same_area(ctx):
    """CFG per pixel: u + g (c - u); the negative also runs on the positive's area (ComfyUI's rule),
    so the guidance is the same inside and outside it when the negative is one prompt."""
    unet = ConstantUNet()
    area = call(ConditioningSetArea, ctx, conditioning=cond(3.0), width=64, height=32, x=0, y=32, strength=1.0)
    out = predict(call(ConditioningCombine, ctx, conditioning_1=cond(3.0), conditioning_2=area), cond(1.0), 2.0, unet)
    assert torch.allclose(out, torch.full_like(out, 1.0 + 2.0 * (3.0 - 1.0)))
    assert len(unet.calls) == 4 and unet.calls[-1] == (1, 4, 16, 32)  # two entries a side, the area cropped


def test_mask_entries_weight_by_the_mask(ctx):
    """ConditioningSetMask: the entry counts where its mask is, weighted by mask and strength."""
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    masked = call(ConditioningSetMask, ctx, conditioning=cond(5.0), mask=mask, strength=1.0, set_cond_area="default")
    out = predict(call(ConditioningCombine, ctx, conditioning_1=cond(1.0), conditioning_2=masked))[0, 0]
    assert torch.allclose(out[:, :16], torch.tensor(1.0)) and torch.allclose(out[:, 16:], torch.tensor(3.0))
    unet = ConstantUNet()
    bounds = call(ConditioningSetMask, ctx, conditioning=cond(5.0), mask=mask, strength=1.0,
                  set_cond_area="mask bounds")
    out = predict(call(ConditioningCombine, ctx, conditioning_1=cond(1.0), conditioning_2=bounds), unet=unet)[0, 0]
    assert torch.allclose(out[:, 16:], torch.tensor(3.0)) and unet.calls[-1] == (1, 4, 32, 16)


def test_zero_out_and_average(ctx):
    from tests._sd_families import sdxl

    m = sdxl()
    a, b = encode(ctx, m["clip"], PROMPT), encode(ctx, m["clip"], NEGATIVE)
    (zero,) = call(ConditioningZeroOut, ctx, conditioning=a)
    assert not zero.embeds.any() and not zero.pooled.any() and zero.embeds.shape == a[0].embeds.shape
    (mixed,) = call(ConditioningAverage, ctx, conditioning_to=a, conditioning_from=b, conditioning_to_strength=0.25)
    assert torch.allclose(mixed.embeds, 0.25 * a[0].embeds + 0.75 * b[0].embeds)
    assert torch.allclose(mixed.pooled, 0.25 * a[0].pooled + 0.75 * b[0].pooled)
    short = (Cond(b[0].embeds[:, :10]),)
    (padded,) = call(ConditioningAverage, ctx, conditioning_to=a, conditioning_from=short, conditioning_to_strength=0.5)
    assert torch.allclose(padded.embeds[:, 10:], 0.5 * a[0].embeds[:, 10:])  # the shorter one is padded with zeros


def test_guidance_rule_skips_the_negative_only_at_one():
    """u + g (c - u) for every g but exactly 1 (textcond's rule): g = 0 gives the negative prediction."""
    for scale, calls, value in ((1.0, 1, 3.0), (0.0, 1, 1.0), (0.5, 1, 2.0), (4.0, 1, 9.0)):
        unet = ConstantUNet()
        out = predict(cond(3.0), cond(1.0), scale, unet)
        assert torch.allclose(out, torch.tensor(value)) and len(unet.calls) == calls
        assert unet.calls[0][0] == (1 if scale == 1.0 else 2)  # one batched call on cat([x, x]) when guided


def test_combined_copies_stay_close_to_the_single_prompt(ctx):
    """A prompt combined with itself runs entry by entry (per-entry calls instead of one batched
    call) and gives the single prompt's image to rounding."""
    m = sd(seed=80)
    pos, neg = encode(ctx, m["clip"], PROMPT), encode(ctx, m["clip"], NEGATIVE)
    single = ksampler(ctx, m, pos, neg, steps=3)
    doubled = ksampler(ctx, m, call(ConditioningCombine, ctx, conditioning_1=pos, conditioning_2=pos), neg, steps=3)
    assert 0 < np.abs(single - doubled).max() < 1e-4


# --- custom sampling ---------------------------------------------------------------------------------

def custom(ctx, m, sampler_name, sigmas, seed=SEED, cfg=CFG, positive=None, negative=None, latent=None, guider=None):
    from nodes.comfy.core import EmptyLatentImage
    from nodes.comfy.sampling import CFGGuider, KSamplerSelect, RandomNoise, SamplerCustomAdvanced

    positive = positive or encode(ctx, m["clip"], PROMPT)
    negative = negative or encode(ctx, m["clip"], NEGATIVE)
    guider = guider or call(CFGGuider, ctx, model=m["model"], positive=positive, negative=negative, cfg=cfg)
    latent = latent or call(EmptyLatentImage, ctx, width=64, height=64, batch_size=1)
    output, denoised = call(SamplerCustomAdvanced, ctx, noise=call(RandomNoise, ctx, noise_seed=seed), guider=guider,
                            sampler=call(KSamplerSelect, ctx, sampler_name=sampler_name), sigmas=sigmas,
                            latent_image=latent)
    return decode(ctx, m["vae"], output), output, denoised


@pytest.fixture(scope="module")
def model():
    return sd(seed=90)


@pytest.mark.parametrize("sampler, scheduler, denoise", [("euler", "normal", 1.0), ("dpmpp_2m", "karras", 1.0),
                                                         ("euler_ancestral", "normal", 1.0), ("euler", "normal", 0.6)])
def test_custom_sampling_gives_ksamplers_image(ctx, model, sampler, scheduler, denoise):
    """RandomNoise + CFGGuider + KSamplerSelect + BasicScheduler -> SamplerCustomAdvanced is KSampler."""
    from nodes.comfy.sampling import BasicScheduler

    sigmas = call(BasicScheduler, ctx, model=model["model"], scheduler=scheduler, steps=4, denoise=denoise)
    assert sigmas.values.shape == (5,) and sigmas.values[-1] == 0 and (sigmas.values[:-1] > sigmas.values[1:]).all()
    ours, output, denoised = custom(ctx, model, sampler, sigmas)
    pos, neg = encode(ctx, model["clip"], PROMPT), encode(ctx, model["clip"], NEGATIVE)
    expected = ksampler(ctx, model, pos, neg, sampler=sampler, scheduler=scheduler, steps=4, denoise=denoise)
    np.testing.assert_array_equal(ours, expected)
    if sampler.startswith("euler"):  # Euler reports its x0 prediction; the last step goes to sigma 0, onto it
        assert denoised is not output and "denoised" not in output
        assert torch.allclose(denoised["samples"], output["samples"], atol=1e-4)


def test_sampler_custom_equals_the_advanced_one(ctx, model):
    from nodes.comfy.core import EmptyLatentImage
    from nodes.comfy.sampling import BasicScheduler, KSamplerSelect, SamplerCustom

    sigmas = call(BasicScheduler, ctx, model=model["model"], scheduler="normal", steps=3, denoise=1.0)
    latent = call(EmptyLatentImage, ctx, width=64, height=64, batch_size=1)
    output, _ = call(SamplerCustom, ctx, model=model["model"], add_noise=True, noise_seed=SEED, cfg=CFG,
                     positive=encode(ctx, model["clip"], PROMPT), negative=encode(ctx, model["clip"], NEGATIVE),
                     sampler=call(KSamplerSelect, ctx, sampler_name="euler"), sigmas=sigmas, latent_image=latent)
    np.testing.assert_array_equal(decode(ctx, model["vae"], output), custom(ctx, model, "euler", sigmas)[0])


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "heun"])
def test_karras_sigmas_follow_the_model_schedule(ctx, model, sampler):
    """KarrasScheduler with the model's own sigma range (ComfyUI's table) is KSampler's karras schedule:
    the same sigmas, so the same image."""
    from nodes.comfy.sampling import KarrasScheduler
    from nodes.comfy.ksampling.ksampler import model_sampling

    ms = model_sampling(model["model"])
    sigma_max, sigma_min = float(ms.sigma_max), float(ms.sigma_min)
    sigmas = call(KarrasScheduler, ctx, steps=4, sigma_max=sigma_max, sigma_min=sigma_min, rho=7.0)
    assert sigmas.values[0] == pytest.approx(sigma_max) and sigmas.values[-2] == pytest.approx(sigma_min)
    ours = custom(ctx, model, sampler, sigmas)[0]
    pos, neg = encode(ctx, model["clip"], PROMPT), encode(ctx, model["clip"], NEGATIVE)
    expected = ksampler(ctx, model, pos, neg, sampler=sampler, scheduler="karras", steps=4)
    np.testing.assert_array_equal(ours, expected)


def test_basic_guider_is_cfg_one_and_any_sigmas_are_followed(ctx, model):
    from nodes.comfy.sampling import BasicGuider, BasicScheduler, CFGGuider, KarrasScheduler, Sigmas

    sigmas = call(BasicScheduler, ctx, model=model["model"], scheduler="normal", steps=2, denoise=1.0)
    pos = encode(ctx, model["clip"], PROMPT)
    basic = call(BasicGuider, ctx, model=model["model"], conditioning=pos)
    neg = encode(ctx, model["clip"], NEGATIVE)
    one = call(CFGGuider, ctx, model=model["model"], positive=pos, negative=neg, cfg=1.0)
    np.testing.assert_array_equal(custom(ctx, model, "euler", sigmas, guider=basic)[0],
                                  custom(ctx, model, "euler", sigmas, guider=one)[0])
    karras = call(KarrasScheduler, ctx, steps=2, sigma_max=10.0, sigma_min=0.1, rho=7.0)
    # ComfyUI's ddim is Euler, on any sigmas
    np.testing.assert_array_equal(custom(ctx, model, "ddim", karras)[0], custom(ctx, model, "euler", karras)[0])
    partial = Sigmas(karras.values[:2])  # stops at a noise level above 0: the latents keep that noise
    _, output, denoised = custom(ctx, model, "dpmpp_2m", partial)
    assert (output["samples"] - denoised["samples"]).abs().max() > 0.01


def test_comfy_workflow_with_the_new_nodes_runs_through_the_engine(tiny_sd, tmp_path):
    """An API-format workflow on the tiny SD 1.x checkpoint through validation, the executor and its
    cache: CLIPSetLastLayer, ConditioningSetArea + Combine, a ControlNet from models/controlnet with
    a LoadImage hint of another shape, and the custom-sampling set. Changing only the guider's cfg
    re-runs the sampler alone."""
    from PIL import Image

    from graph import Env, Loom
    from tests._sd_families import picture

    shutil.copytree(tiny_sd, tmp_path / "models" / "tiny-sd")
    loom = Loom(Env.from_data_dir(tmp_path / "data", models_dir=tmp_path / "models", device="cpu", dtype="float32"))
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    controlnet(unet, seed=31).save_pretrained(tmp_path / "models" / "controlnet" / "cn")
    Image.fromarray(picture()).save(loom.env.input_dir / "hint.png")

    def node(cls, **inputs):
        return {"class_type": cls, "inputs": inputs}

    wf = {
        "1": node("CheckpointLoaderSimple", ckpt_name="tiny-sd"),
        "2": node("CLIPSetLastLayer", clip=["1", 1], stop_at_clip_layer=-2),
        "3": node("CLIPTextEncode", clip=["2", 0], text=PROMPT),
        "4": node("CLIPTextEncode", clip=["2", 0], text="a castle"),
        "5": node("ConditioningSetArea", conditioning=["4", 0], width=64, height=64, x=0, y=0, strength=1.0),
        "6": node("ConditioningCombine", conditioning_1=["3", 0], conditioning_2=["5", 0]),
        "7": node("CLIPTextEncode", clip=["2", 0], text=NEGATIVE),
        "8": node("ControlNetLoader", control_net_name="cn"),
        "9": node("LoadImage", image="hint.png"),
        "10": node("ControlNetApplyAdvanced", positive=["6", 0], negative=["7", 0], control_net=["8", 0],
                   image=["9", 0], strength=0.8, start_percent=0.0, end_percent=0.5),
        "11": node("EmptyLatentImage", width=128, height=64, batch_size=1),  # the area: the left half
        "12": node("KSamplerSelect", sampler_name="dpmpp_2m"),
        "13": node("BasicScheduler", model=["1", 0], scheduler="karras", steps=3, denoise=1.0),
        "14": node("RandomNoise", noise_seed=SEED),
        "15": node("CFGGuider", model=["1", 0], positive=["10", 0], negative=["10", 1], cfg=CFG),
        "16": node("SamplerCustomAdvanced", noise=["14", 0], guider=["15", 0], sampler=["12", 0], sigmas=["13", 0],
                   latent_image=["11", 0]),
        "17": node("VAEDecode", samples=["16", 0], vae=["1", 2]),
        "18": node("SaveImage", images=["17", 0], filename_prefix="custom"),
    }
    first = loom.run(wf)
    assert first.ok, first.error
    (path,) = loom.image_paths(first)
    assert np.asarray(Image.open(path)).std() > 1
    wf["15"]["inputs"]["cfg"] = 3.0
    again = loom.run(wf)
    assert again.ok and sorted(again.executed) == ["15", "16", "17", "18"]
    bad = loom.validate({**wf, "12": node("KSamplerSelect", sampler_name="no_such_sampler")})
    assert not bad.ok and "no_such_sampler" in json.dumps(bad.node_errors["12"])

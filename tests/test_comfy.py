"""ComfyUI workflows (tests/fixtures/comfy, hand-written in ComfyUI's API and UI formats) on the tiny
model: they run, they match diffusers' own pipelines, and their files travel (save, PNG, extract)."""
import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

import server
from graph import Env, Loom, read_workflow_file, to_api

FIXTURES = Path(__file__).parent / "fixtures" / "comfy"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def loom(tiny_sd, tmp_path_factory):
    torch.set_num_threads(1)  # the machine's cores are shared; oversubscribed threads crawl
    env = Env.from_data_dir(tmp_path_factory.mktemp("data"), models_dir=tiny_sd.parent, device="cpu", dtype="float32")
    gradient = np.indices((64, 64)).sum(0).astype(np.uint8) * 2
    Image.fromarray(np.stack([gradient, 255 - gradient, gradient // 2], -1)).save(env.input_dir / "comfy_input.png")
    return Loom(env)


@pytest.fixture(scope="module")
def pipelines(tiny_sd):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    txt2img = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)
    txt2img.set_progress_bar_config(disable=True)
    img2img = StableDiffusionImg2ImgPipeline(**txt2img.components)
    img2img.set_progress_bar_config(disable=True)
    return txt2img, img2img


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def run_images(loom, workflow) -> list[np.ndarray]:
    """Run and read back the images, made again: every cached result but the loaded models is
    dropped first, so nothing is served from the cache."""
    cache = loom.executor.cache
    for key in cache.keys():
        if not any(type(v).__name__ in ("Model", "UNet2DConditionModel") for v in cache.get(key).outputs):
            cache._drop(key)
    result = loom.run(workflow)
    assert result.ok, result.error
    assert not {"3", "10", "11"} & set(result.cached)  # the samplers ran
    return [pixels(p) for p in loom.image_paths(result)]


def decoded(loom, workflow, node="8") -> np.ndarray:
    """The float output of the VAEDecode node: compared before PNG rounding."""
    validation = loom.validate(workflow, outputs=[node])
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    return result.values[node][0].numpy()


# --- formats ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["txt2img", "img2img"])
def test_ui_format_gives_the_api_prompt(loom, name):
    """Positional widgets_values (with the hidden control_after_generate value), links by name,
    ComfyUI's input names (samples, pixels), notes dropped."""
    ui, api = to_api(fixture(f"{name}_ui"), loom.registry), to_api(fixture(f"{name}_api"), loom.registry)
    assert {k: v["inputs"] for k, v in ui.items()} == {k: v["inputs"] for k, v in api.items()}
    assert api["8"]["inputs"] == {"samples": ["3", 0], "vae": ["4", 2]}
    from loomqueue.routing import model_keys  # Ray's routing sees ComfyUI's loader as one

    assert model_keys(api, loom.registry) == {"CheckpointLoaderSimple(ckpt_name=tiny-sd)"}


def test_shared_workflow_reports_everything_it_needs(loom):
    v = loom.validate(fixture("custom_node_missing_model_ui"))
    report = v.preflight
    assert report.missing_nodes == {"LoraLoader|pysssss": ["10"]}  # UpscaleModelLoader & co. are Loom's now
    missing = {m.name: (m.nodes, m.sha256, m.directory) for m in report.missing_models}
    assert missing == {
        "v1-5-pruned-emaonly-fp16.safetensors": (["4"], None, "checkpoints"),
        "add_detail.safetensors": (["10"], "7c6bad76eb54f80f3b1d8c5d1a9e6a1f0c2e4a6b8d0f1e3c5a7b9d1f3e5c7a9b", "loras"),
        "4x-UltraSharp.pth": (["11"], None, None)}
    details = v.error["details"]
    assert details.index("Pre-flight:") == 0 and details.count("is not installed") == 2  # report + node errors
    assert "'4x-UltraSharp.pth' is not among the choices" in details


def test_unknown_sampler_and_scheduler_names_are_refused_by_name(loom):
    from nodes.comfy.sampler_names import Unmapped, check_names

    for sampler, scheduler, field in (("no_such", "normal", "sampler_name"), ("euler", "no_such", "scheduler")):
        with pytest.raises(Unmapped) as caught:
            check_names(sampler, scheduler)
        assert caught.value.input == field and "'no_such'" in str(caught.value)
    wf = fixture("txt2img_api")
    wf["3"]["inputs"].update(sampler_name="no_such")
    (error,) = loom.validate(wf).node_errors["3"]["errors"]
    assert error["extra_info"]["input_name"] == "sampler_name" and "no_such" in error["message"]


def test_every_sampler_and_scheduler_name_runs_or_is_refused(tiny_sd):
    """Every ComfyUI sampler takes 3 steps of every scheduler's sigmas for the tiny model's noise table
    to finite latents, or is refused by name."""
    from nodes.comfy.sampler_names import SAMPLER_NAMES, SCHEDULER_NAMES, Unmapped, check_names
    from nodes.comfy.ksampling.denoiser import DiscreteSchedule
    from nodes.comfy.ksampling.samplers import SAMPLERS
    from nodes.comfy.ksampling.schedules import ksampler_sigmas

    ms = DiscreteSchedule(json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text()))

    def model(x, sigma, **_):
        model.uncond_denoised = x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)
        return 0.9 * model.uncond_denoised

    model.percent_to_sigma = ms.percent_to_sigma  # sa_solver's noise interval

    ran = 0
    for sampler in SAMPLER_NAMES:
        try:
            check_names(sampler, "normal")
        except Unmapped as exc:
            assert exc.input == "sampler_name" and f"'{sampler}'" in str(exc)
            continue
        for scheduler in SCHEDULER_NAMES:
            sigmas = ksampler_sigmas(ms, sampler, scheduler, 3)
            assert torch.isfinite(sigmas).all() and (sigmas[:-1] > sigmas[1:]).all(), (sampler, scheduler)
            x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * sigmas[0]
            out = SAMPLERS[sampler](model, x, sigmas, extra_args={"seed": 1})
            assert torch.isfinite(out).all(), (sampler, scheduler)
            ran += 1
    assert ran == len(SAMPLER_NAMES) * len(SCHEDULER_NAMES)  # every name runs


# --- running: ComfyUI's rules -------------------------------------------------------------------

def latents(loom, workflow, node="3") -> torch.Tensor:
    """The LATENT samples a sampler node returns."""
    validation = loom.validate(workflow, outputs=[node])
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    return result.values[node][0]["samples"].float()


class ComfyReference:
    """The latents ComfyUI makes, written out from its rules with k-diffusion's samplers (not Loom's
    code): sigma table from float64 betas; noise for the whole batch from one CPU generator seeded with
    the seed, times sigma_0 (sqrt(1 + sigma_0^2) when sigma_0 is the model's top sigma); the UNet fed x / sqrt(sigma^2 + 1) at
    the nearest training timestep, CFG u + g * (c - u); ancestral step noise from a new generator seeded
    with the seed, SDE step noise from a Brownian tree seeded with it; ddim is Euler."""

    def __init__(self, pipe, k):
        self.pipe, self.k = pipe, k
        config = pipe.scheduler.config
        betas = torch.linspace(config.beta_start ** 0.5, config.beta_end ** 0.5, 1000, dtype=torch.float64) ** 2
        abar = torch.cumprod(1 - betas, 0)
        self.table = (((1 - abar) / abar) ** 0.5).float()

    def sigmas(self, scheduler: str, steps: int) -> torch.Tensor:
        table = self.table
        if scheduler == "karras":
            return self.k.get_sigmas_karras(steps, table[0].item(), table[-1].item())
        if scheduler == "ddim_uniform":
            picked = table[torch.arange(1, 1000, 1000 // steps)].flip(0)
        else:  # normal: timesteps evenly from 999 to 0, log-linear between table entries
            t = torch.linspace(999, 0, steps)
            low, high, w = t.floor().long(), t.ceil().long(), t.frac()
            picked = ((1 - w) * table[low].log() + w * table[high].log()).exp()
        return torch.cat([picked, picked.new_zeros(1)])

    def __call__(self, wf: dict, image: torch.Tensor | None = None) -> torch.Tensor:
        """KSampler "3"'s latents: txt2img from EmptyLatentImage "5", or img2img from `image` latents."""
        k_in, pipe = wf["3"]["inputs"], self.pipe
        seed, cfg, steps, denoise = k_in["seed"], k_in["cfg"], k_in["steps"], k_in["denoise"]
        scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)  # the tiny model's: 2, not SD's 8
        shape = tuple(image.shape) if image is not None else \
            (wf["5"]["inputs"]["batch_size"], 4, wf["5"]["inputs"]["height"] // scale, wf["5"]["inputs"]["width"] // scale)
        batch = shape[0]
        positive, negative = (pipe.encode_prompt(wf[n]["inputs"]["text"], "cpu", 1, False)[0] for n in ("6", "7"))
        embeds = torch.cat([negative.repeat(batch, 1, 1), positive.repeat(batch, 1, 1)])
        log_table = self.table.log()

        def model(x, sigma, **_):
            s = sigma[0]
            t = (s.log() - log_table).abs().argmin().float()
            x_in = x / (s ** 2 + 1) ** 0.5
            uncond, cond = pipe.unet(torch.cat([x_in, x_in]), t, encoder_hidden_states=embeds).sample.chunk(2)
            return x - (uncond + cfg * (cond - uncond)) * s

        # denoise < 1: the last steps + 1 sigmas of a schedule of int(steps / denoise) steps
        sigmas = self.sigmas(k_in["scheduler"], int(steps / denoise))[-(steps + 1):]
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        top = math.isclose(sigmas[0].item(), self.table[-1].item(), rel_tol=1e-5)  # ddim_uniform starts lower
        x = noise * ((1 + sigmas[0] ** 2) ** 0.5 if top else sigmas[0])
        if image is not None:
            x = x + image
        name = k_in["sampler_name"]
        with torch.no_grad():
            if name == "euler_ancestral":
                steps = torch.Generator().manual_seed(seed)
                return self.k.sample_euler_ancestral(model, x, sigmas, disable=True,
                                                     noise_sampler=lambda a, b: torch.randn(x.shape, generator=steps))
            if name == "dpmpp_2m_sde":
                tree = self.k.BrownianTreeNoiseSampler(x, sigmas[-2], sigmas[0], seed=seed)
                return self.k.sample_dpmpp_2m_sde(model, x, sigmas, disable=True, noise_sampler=tree)
            return getattr(self.k, "sample_" + ("euler" if name == "ddim" else name))(model, x, sigmas, disable=True)


@pytest.mark.parametrize("sampler, scheduler", [("euler", "normal"), ("euler_ancestral", "normal"),
                                                ("dpmpp_2m_sde", "karras"), ("ddim", "ddim_uniform")])
def test_ksampler_gives_comfyuis_latents_for_a_batch(loom, pipelines, sampler, scheduler):
    """The txt2img workflow with a batch of 2: KSampler's latents are those ComfyUI's rules give (the
    tolerance: k-diffusion writes a few formulas in another order, ~1e-6 on these latents)."""
    from tests._kdiffusion import load_sampling

    wf = fixture("txt2img_api")
    wf["3"]["inputs"].update(sampler_name=sampler, scheduler=scheduler, steps=5)
    wf["5"]["inputs"]["batch_size"] = 2
    ours = latents(loom, wf)
    expected = ComfyReference(pipelines[0], load_sampling())(wf)
    assert ours.shape == expected.shape == (2, 4, 32, 32)
    assert (ours - expected).abs().max().item() < 1e-4
    # image 2 is the seed's second draw, not the image of seed + 1 alone (Loom's stage nodes' rule)
    wf["3"]["inputs"]["seed"] += 1
    wf["5"]["inputs"]["batch_size"] = 1
    assert (latents(loom, wf)[0] - ours[1]).abs().max() > 1e-2


def test_img2img_denoise_follows_comfyuis_schedule(loom, pipelines):
    """denoise 0.5 of 4 steps: the last 4 steps of an 8-step karras schedule; the VAE's latents (their
    mean: ComfyUI does not sample the distribution) plus noise * sigma_0; dpmpp_2m."""
    from tests._kdiffusion import load_sampling

    wf = fixture("img2img_api")
    ours = latents(loom, wf)
    expected = ComfyReference(pipelines[0], load_sampling())(wf, latents(loom, wf, "12"))
    assert (ours - expected).abs().max().item() < 1e-4
    wf["3"]["inputs"]["denoise"] = 0.75  # another split: 4 steps of int(4 / 0.75) = 5
    assert not torch.allclose(latents(loom, wf), ours, atol=1e-3)


def test_two_advanced_samplers_continue_exactly(loom):
    """KSamplerAdvanced 0-2 with leftover noise, then 2-end without adding noise, equals one KSampler
    (with euler: ComfyUI's multistep samplers start their history anew in the second)."""
    two = fixture("two_stage_advanced_api")
    for node in ("10", "11"):
        two[node]["inputs"]["sampler_name"] = "euler"
    one = {k: copy.deepcopy(v) for k, v in two.items() if k != "11"}
    one["10"] = {"class_type": "KSampler", "inputs": {
        "seed": 7, "steps": 4, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
    one["8"]["inputs"]["samples"] = ["10", 0]
    (a,), (b,) = run_images(loom, two), run_images(loom, one)
    np.testing.assert_array_equal(a, b)


# --- files that travel --------------------------------------------------------------------------

def test_save_png_extract_and_run_give_the_same_images(loom, tmp_path, capsys):
    ui = fixture("txt2img_ui")
    (first,) = run_images(loom, ui)
    saved = json.dumps(loom.save(ui))  # save -> load -> run
    assert json.loads(saved)["models"] == [{"name": "tiny-sd", "sha256": loom.models.sha256(loom.env.models_dir / "tiny-sd")}]
    (again,) = run_images(loom, json.loads(saved))
    np.testing.assert_array_equal(first, again)

    result = loom.run(ui)  # the PNG SaveImage wrote carries the prompt and the Loom file
    png = loom.image_paths(result)[0]
    carried = read_workflow_file(png)
    assert carried["extra_data"]["extra_pnginfo"]["workflow"] == json.loads(saved)
    out = tmp_path / "extracted.json"
    # --threads 1 as the fixture: another thread count changes the last float bits, and a value on a
    # PNG quantisation boundary then lands one level apart
    assert server.main(["--threads", "1", "workflow", "extract", str(png), "--out", str(out)]) == 0
    (extracted,) = run_images(loom, json.loads(out.read_text()))  # PNG -> extract -> run
    np.testing.assert_array_equal(first, extracted)

    args = ["--data-dir", str(loom.env.data_dir), "--models-dir", str(loom.env.models_dir), "--device", "cpu",
            "--dtype", "float32", "--threads", "1"]
    capsys.readouterr()
    assert server.main(args + ["run", str(png), "--out", str(tmp_path / "cli")]) == 0  # `run` takes the PNG
    (printed,) = capsys.readouterr().out.split()
    np.testing.assert_array_equal(first, pixels(printed))


def test_comfyui_made_png_runs(loom, tmp_path):
    """A PNG as ComfyUI saves it (tEXt `prompt` in API format, tEXt `workflow` in UI format) runs
    its prompt and gives the image of the API workflow."""
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(fixture("txt2img_api")))
    info.add_text("workflow", json.dumps(fixture("txt2img_ui")))
    Image.new("RGB", (64, 64)).save(tmp_path / "ComfyUI_00001_.png", pnginfo=info)
    carried = read_workflow_file(tmp_path / "ComfyUI_00001_.png")
    assert loom.validate(carried).loaded.workflow["format"] == "loom-workflow"  # migrated to travel on
    (from_png,), (from_api,) = run_images(loom, carried), run_images(loom, fixture("txt2img_api"))
    np.testing.assert_array_equal(from_png, from_api)


def test_a_prompt_longer_than_77_tokens_runs_beside_a_short_negative(loom):
    """The positive encodes as two chunks (154 tokens), the negative as one: the batched UNet call
    repeats the shorter to their lcm, as ComfyUI does; the second chunk changes the picture."""
    wf = fixture("txt2img_api")
    short = decoded(loom, wf)
    wf["6"]["inputs"]["text"] += ", with red hair" * 20
    long = decoded(loom, wf)
    assert np.isfinite(long).all() and np.abs(long - short).max() > 1e-3


def test_same_length_repeats_embeddings_to_their_lcm():
    from nodes.denoiser import same_length

    a, b = torch.randn(1, 77, 4), torch.randn(1, 154, 4)
    ra, rb = same_length([a, b])
    assert rb is b and torch.equal(ra, torch.cat([a, a], dim=1))

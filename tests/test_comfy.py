"""ComfyUI workflows (tests/fixtures/comfy, hand-written in ComfyUI's API and UI formats) on the tiny
model: they run, they match diffusers' own pipelines, and their files travel (save, PNG, extract)."""
import copy
import json
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
    assert "ComfyUI's sampler 'dpmpp_2s_ancestral' has no diffusers equivalent" in details
    assert details.index("Pre-flight:") == 0 and details.count("is not installed") == 2  # report + node errors
    assert "'4x-UltraSharp.pth' is not among the choices" in details


@pytest.mark.parametrize("sampler, scheduler, input, message", [
    ("res_multistep", "normal", "sampler_name", "sampler 'res_multistep' has no diffusers equivalent"),
    ("euler", "kl_optimal", "scheduler", "scheduler 'kl_optimal' has no diffusers equivalent"),
    ("euler_ancestral", "karras", "scheduler",
     "scheduler 'karras' cannot be used with sampler 'euler_ancestral': diffusers' EulerAncestralDiscreteScheduler "
     "has no use_karras_sigmas setting"),
])
def test_unmapped_sampler_names_are_reported_by_name(loom, sampler, scheduler, input, message):
    wf = fixture("txt2img_api")
    wf["3"]["inputs"].update(sampler_name=sampler, scheduler=scheduler)
    v = loom.validate(wf)
    (error,) = v.node_errors["3"]["errors"]
    assert error["extra_info"]["input_name"] == input and message in error["message"]


def test_every_mapped_sampler_and_scheduler_steps_to_finite_values(tiny_sd):
    """Every sampler (with the normal scheduler) and every scheduler (with samplers of three
    families) either makes a diffusers scheduler that runs a short schedule, or is refused by name."""
    import diffusers

    from nodes.comfy_samplers import SAMPLER_NAMES, SCHEDULER_NAMES, Unmapped, resolve

    base = json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text())
    generator, ran = torch.Generator().manual_seed(0), 0
    pairs = [(sampler, "normal") for sampler in SAMPLER_NAMES] + \
        [(sampler, name) for sampler in ("euler", "dpmpp_2m", "uni_pc") for name in SCHEDULER_NAMES]
    for sampler, name in pairs:
        try:
            class_name, settings = resolve(sampler, name)
        except Unmapped as exc:
            assert f"'{sampler}'" in str(exc) or f"'{name}'" in str(exc)
            continue
        scheduler = getattr(diffusers, class_name).from_config({**base, **settings})
        scheduler.set_timesteps(4)
        x = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            eps = torch.randn(1, 4, 8, 8, generator=generator)
            x = scheduler.step(eps, t, scheduler.scale_model_input(x, t)).prev_sample
        assert torch.isfinite(x).all(), (sampler, name)
        ran += 1
    assert ran >= 35


# --- running ------------------------------------------------------------------------------------

def test_txt2img_matches_the_diffusers_pipeline(loom, pipelines):
    """euler + normal is EulerDiscreteScheduler with linspace timesteps: the very same pixels."""
    from diffusers import EulerDiscreteScheduler

    wf = fixture("txt2img_api")
    ours = decoded(loom, wf)
    pipe = pipelines[0]
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    k = wf["3"]["inputs"]
    expected = pipe(wf["6"]["inputs"]["text"], negative_prompt=wf["7"]["inputs"]["text"], num_inference_steps=k["steps"],
                    guidance_scale=k["cfg"], height=64, width=64, output_type="np",
                    generator=torch.Generator("cpu").manual_seed(k["seed"])).images
    assert ours.shape == expected.shape == (1, 64, 64, 3)
    assert np.abs(ours - expected).max() == 0.0


def test_img2img_denoise_matches_the_img2img_pipeline(loom, pipelines):
    """denoise 0.5 of 4 steps: ComfyUI runs the last 4 steps of an 8-step schedule, which is the
    img2img pipeline's strength 0.5 of 8 steps (dpmpp_2m + karras: DPM-Solver++ with Karras sigmas).
    The tolerance: Loom's img2img stages themselves differ from the pipeline by ~1e-6 on this image."""
    from diffusers import DPMSolverMultistepScheduler

    wf = fixture("img2img_api")
    ours = decoded(loom, wf)
    pipe = pipelines[1]
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)
    k = wf["3"]["inputs"]
    expected = pipe(wf["6"]["inputs"]["text"], negative_prompt=wf["7"]["inputs"]["text"],
                    image=Image.open(loom.env.input_dir / "comfy_input.png"), strength=0.5, num_inference_steps=8,
                    guidance_scale=k["cfg"], output_type="np",
                    generator=torch.Generator("cpu").manual_seed(k["seed"])).images
    assert np.abs(ours - expected).max() < 1e-5
    wf["3"]["inputs"]["denoise"] = 0.75  # another split: 4 steps of int(4 / 0.75) = 5
    assert not np.allclose(decoded(loom, wf), ours, atol=1e-3)


def test_two_advanced_samplers_continue_exactly(loom):
    """KSamplerAdvanced 0-2 with leftover noise, then 2-end without adding noise, equals one KSampler."""
    two = fixture("two_stage_advanced_api")
    one = {k: copy.deepcopy(v) for k, v in two.items() if k != "11"}
    one["10"] = {"class_type": "KSampler", "inputs": {
        "seed": 7, "steps": 4, "cfg": 6.0, "sampler_name": "dpmpp_2m", "scheduler": "normal", "denoise": 1.0,
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

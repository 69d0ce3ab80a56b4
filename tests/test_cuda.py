"""Checks that need CUDA (skipped elsewhere; bench/gpu_run.sh runs them on a GPU machine): the nodes
give the pipeline's pixels on the GPU in float32, models move to RAM and back under a real budget
and still give the same pixels, and the speed defaults are on in half precision."""
import shutil

import numpy as np
import pytest
import torch

from graph import Env, Loom
from nodes.loading.placement import TorchPlacement, margin, placement_for
from nodes.loading.speed import Applied
from tests._sd import as_array, workflow

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def cuda_loom(tmp_path, models_dir, dtype="float32", vram_bytes=None) -> Loom:
    env = Env.from_data_dir(tmp_path / f"data-{dtype}", models_dir=models_dir, device="cuda", dtype=dtype)
    return Loom(env, placement=placement_for(env), vram_bytes=vram_bytes)


def run(loom: Loom, model: str = "tiny-sd", seed: int = 42):
    wf = workflow("txt2img", **{"1": {"model": model}, "7": {"seed": seed}})
    result = loom.run(loom.validate(wf, outputs=["1", "9"]))
    assert result.ok, result.error
    return result.values["1"], as_array(result.values["9"][0])


def test_float32_on_the_gpu_gives_the_pipelines_pixels(tiny_sd, tmp_path):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    _, image = run(cuda_loom(tmp_path, tiny_sd.parent))
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None).to("cuda")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    wf = workflow("txt2img")
    expected = pipe(wf["2"]["inputs"]["text"], negative_prompt=wf["3"]["inputs"]["text"], num_inference_steps=20,
                    guidance_scale=7.5, height=64, width=64, generator=torch.Generator("cpu").manual_seed(42),
                    output_type="np").images
    assert np.abs(image - expected).max() == 0.0


def test_the_default_budget_is_free_memory_less_a_margin():
    placement = TorchPlacement(torch.device("cuda"))
    free, total = torch.cuda.mem_get_info()
    assert placement.device == f"cuda:{torch.cuda.current_device()}"
    assert 0 < placement.default_budget() <= free - margin(total) + (64 << 20)


def test_models_move_to_ram_and_back_with_the_same_pixels(tiny_sd, tmp_path):
    models = tmp_path / "models"
    for name in ("a", "b"):
        shutil.copytree(tiny_sd, models / name)
    loom = cuda_loom(tmp_path, models)
    memory = loom.executor.memory
    (_, _, unet_a, *_), _ = run(loom, "a", seed=1)
    memory.budget = int(memory.bytes * 1.25)  # one model and its tensors, not two
    (_, _, unet_b, *_), _ = run(loom, "b", seed=1)
    assert unet_a.device.type == "cpu" and unet_b.device.type == "cuda"
    _, image = run(loom, "a", seed=2)  # "a" comes back from RAM
    assert unet_a.device.type == "cuda" and unet_b.device.type == "cpu"
    assert memory.offloads >= 2 and memory.reloads >= 1 and memory.bytes <= memory.budget
    _, expected = run(cuda_loom(tmp_path / "fresh", models), "a", seed=2)
    assert np.abs(image - expected).max() == 0.0


def test_half_precision_gets_the_speed_defaults(tiny_sd, tmp_path):
    (_, _, unet, *_), image = run(cuda_loom(tmp_path, tiny_sd.parent, dtype="float16"))
    assert unet.loom_speed == Applied(channels_last=True, cudnn_benchmark=True, compile=False)
    assert unet.dtype == torch.float16 and torch.backends.cudnn.benchmark
    assert np.isfinite(image).all()

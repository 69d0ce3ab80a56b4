"""ComfyUI's current templates (comfyui-workflow-templates-json 0.1.123) run end to end on Loom with tiny
models, through scripts/template_runs.py: loaded as the frontend queues them, tiny models under the
file names they ask for, shrunk, run in-process. The Z-Image and SDXL ones that Loom runs must keep
running and make images; the full per-family table is docs/template-status.md."""
from __future__ import annotations

import json
from collections import Counter

import pytest

pytest.importorskip("comfyui_workflow_templates_json")

from graph import Registry  # noqa: E402
from scripts import template_runs as tr  # noqa: E402

# The templates of Z-Image and SDXL that run today (a new one that runs belongs here): the first two
# in the fast suite, all of them (about 15 s of CPU, a minute on a busy machine) with the slow tests.
FAST = ["image_z_image_turbo", "image_sdxl_simple"]
MORE = ["image_z_image_turbo_int8", "image_z_image", "image_z_image_int8", "basic_switch_node",
        "sdxl_simple_example", "sdxlturbo_example", "sdxl_refiner_prompt_example"]


@pytest.fixture(scope="module")
def measure(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    folder = tr.default_templates()
    registry = Registry()
    registry.add_package("nodes")
    tags = tr.template_tags(folder)
    work = tmp_path_factory.mktemp("template-runs")
    tiny = tr.TinyModels(work / "tiny")
    return lambda name: tr.measure(name, json.loads((folder / f"{name}.json").read_text(encoding="utf-8")),
                                   tags[name], registry, tiny, work)


@pytest.mark.parametrize("name", FAST + [pytest.param(name, marks=pytest.mark.slow) for name in MORE])
def test_the_template_runs_to_images(measure, name):
    outcome = measure(name)
    assert outcome.complete and outcome.status == "ran", outcome.detail
    assert int(outcome.detail.split()[0]) >= 1, outcome.detail  # image files were written
    assert outcome.family == ("SDXL" if "sdxl" in name else "Z-Image")


def test_families_by_tag_are_the_issues_counts():
    """By their index.json tags alone, the families hold what issues 21 and 22 counted."""
    folder = tr.default_templates()
    tags = tr.template_tags(folder)
    counts = Counter(tr.template_family(tags[name], []) for name in tr.image_templates(folder))
    assert {label: counts[label] for label in ("Qwen-Image", "Flux.1", "Flux.2", "HiDream", "Z-Image", "SD3.5",
                                               "Chroma", "SDXL")} == \
        {"Qwen-Image": 31, "Flux.1": 13, "Flux.2": 10, "HiDream": 7, "Z-Image": 7, "SD3.5": 4, "Chroma": 2, "SDXL": 5}


def test_shrink_keeps_the_aspect_and_the_declared_minimums():
    registry = Registry()
    registry.add_package("nodes")
    prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1536}},
              "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": ["1", 0], "batch_size": 4}},
              "3": {"class_type": "KSamplerAdvanced", "inputs": {"steps": 20, "start_at_step": 10, "end_at_step": 10000}},
              "4": {"class_type": "ResolutionSelector", "inputs": {"megapixels": 2.0, "minimum": 1024}}}
    tr.shrink(prompt, registry)
    assert prompt["2"]["inputs"]["width"] == 48 and prompt["1"]["inputs"]["value"] == 64  # 1024 x 1536 -> 48 x 64
    assert prompt["2"]["inputs"]["batch_size"] == 1
    assert prompt["3"]["inputs"] == {"steps": 2, "start_at_step": 1, "end_at_step": 2}
    assert prompt["4"]["inputs"] == {"megapixels": 0.1, "minimum": 32}  # ResolutionSelector's own minimum: 0.1 MP


def test_a_lora_is_made_on_the_tiny_denoisers_layers(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    save_file({"model.diffusion_model.blocks.0.proj.weight": torch.zeros(6, 5),
               "model.diffusion_model.blocks.0.proj.bias": torch.zeros(6)}, str(tmp_path / "unet.safetensors"))
    tr.write_lora(tmp_path / "unet.safetensors", tmp_path / "lora.safetensors")
    lora = load_file(str(tmp_path / "lora.safetensors"))
    assert {k: tuple(v.shape) for k, v in lora.items()} == {
        "diffusion_model.blocks.0.proj.lora_A.weight": (tr.LORA_RANK, 5),
        "diffusion_model.blocks.0.proj.lora_B.weight": (6, tr.LORA_RANK)}

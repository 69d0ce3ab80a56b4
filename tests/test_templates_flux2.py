"""ComfyUI's Flux.2 templates (Dev and Klein, comfyui-workflow-templates) end to end on tiny models
written under the file names they ask for: small sizes, 2 steps. Each template that runs makes images;
each that cannot is listed with what it lacks."""
import json

import numpy as np
import pytest
from PIL import Image


# Flux.2 templates that need more than Flux.2: what each lacks.
LACKING = {"image_flux2_klein_9b_kv_image_edit": "FluxKVCache (ComfyUI's KV cache of reference tokens)"}
SMALL = 64


def flux2_templates() -> dict[str, dict]:

    folder = pytest.importorskip("comfyui_workflow_templates_json").__file__
    from pathlib import Path

    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((Path(folder).parent / "templates").glob("image_flux2*.json"))}


@pytest.fixture(scope="module")
def loom(tmp_path_factory):
    from graph import Env, Loom
    from nodes.families.flux2.tiny import write_comfy_files

    models = tmp_path_factory.mktemp("flux2_template_models")
    write_comfy_files(models, variant="dev")
    write_comfy_files(models, variant="klein", seed=1)  # the VAE files are then Klein's: both read them
    env = Env.from_data_dir(tmp_path_factory.mktemp("flux2_template_data"), models_dir=models, device="cpu",
                            dtype="float32")
    return Loom(env)


def tiny_prompt(loom, template: dict) -> dict:
    from graph.formats import to_api

    prompt = to_api(template, loom.registry)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in ("EmptyFlux2LatentImage", "Flux2Scheduler"):
            for key in ("width", "height"):
                if isinstance(inputs.get(key), int):
                    inputs[key] = SMALL
            if "steps" in inputs:
                inputs["steps"] = 2
        elif kind == "ImageScaleToTotalPixels":
            inputs["megapixels"] = 0.01
        elif kind == "LoadImage":
            path = loom.env.input_dir / inputs["image"]
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.random.default_rng(0).integers(0, 256, (SMALL, SMALL, 3), dtype=np.uint8)).save(path)
    return prompt


def run(loom, template: dict) -> str | None:
    prompt = tiny_prompt(loom, template)
    validation = loom.validate(prompt)
    if not validation.ok:
        return "invalid: " + json.dumps(validation.response())[:600]
    result = loom.run(validation)
    if not result.ok:
        return f"{result.error.get('node_type')}: {result.error.get('exception_message')}"[:600]
    return None if loom.image_paths(result) else "ran but made no image"


@pytest.mark.slow
def test_flux2_templates_run_on_tiny_models(loom, record_property):
    templates = flux2_templates()
    assert len(templates) >= 10, sorted(templates)
    failed, report = [], []
    for name, template in sorted(templates.items()):
        if name in LACKING:
            report.append(f"{name}: lacks {LACKING[name]}")
            continue
        error = run(loom, template)
        report.append(f"{name}: {'runs' if error is None else error}")
        if error is not None:
            failed.append(f"{name}: {error}")
    record_property("flux2_templates", "\n".join(report))
    print("\n".join(report))
    assert not failed, "\n".join(failed)

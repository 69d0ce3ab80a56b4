"""The SD nodes as a user meets them: example workflows, image files, progress, cache, demo model."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests._sd import ROOT, as_array, make_loom, pin_threads, run_node, workflow


@pytest.fixture(scope="module")
def loom(tiny_sd, tmp_path_factory):
    pin_threads()
    loom = make_loom(tmp_path_factory.mktemp("nodes_data"), tiny_sd.parent)
    y, x = np.mgrid[0:64, 0:64]
    Image.fromarray(np.stack([x * 4, y * 4, 255 - x * 2], -1).astype(np.uint8)).save(loom.env.input_dir / "example.png")
    return loom


@pytest.mark.parametrize("name", ["txt2img", "img2img", "step_by_step", "prompt_switch"])
def test_example_workflow_saves_a_png_with_the_workflow(loom, name):
    wf = json.loads((ROOT / "workflows" / f"{name}.json").read_text())
    editor_graph = {"nodes": [], "links": [], "version": 0.4}
    result = loom.run(wf, extra_data={"extra_pnginfo": {"workflow": editor_graph}})
    assert result.ok, result.error
    [path] = loom.image_paths(result)
    assert path.parent == loom.env.output_dir and path.name.startswith(name + "_")
    with Image.open(path) as png:
        assert png.size == (64, 64)
        assert json.loads(png.text["prompt"]) == wf
        assert json.loads(png.text["workflow"]) == editor_graph
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 1  # a picture, not a flat fill


def test_save_image_counts_up_and_stays_in_the_output_folder(loom):
    wf = workflow("txt2img", **{"10": {"filename_prefix": "cats/tabby"}})
    first = loom.run(wf)
    assert first.outputs["10"]["images"] == [{"filename": "tabby_00001_.png", "subfolder": "cats", "type": "output"}]
    again = loom.run(workflow("txt2img", **{"10": {"filename_prefix": "cats/tabby"}, "7": {"seed": 7}}))
    assert again.outputs["10"]["images"][0]["filename"] == "tabby_00002_.png"
    assert (loom.env.output_dir / "cats" / "tabby_00002_.png").is_file()
    bad = loom.run(workflow("txt2img", **{"10": {"filename_prefix": "../outside"}}))
    assert bad.status == "error" and "filename_prefix" in bad.error["exception_message"]
    assert not (loom.env.output_dir.parent / "outside_00001_.png").exists()


def test_preview_image_goes_to_temp(loom):
    wf = workflow("txt2img")
    wf["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}}
    result = loom.run(wf)
    [shown] = result.outputs["10"]["images"]
    assert shown["type"] == "temp" and (loom.env.temp_dir / shown["filename"]).is_file()


def test_load_image_matches_the_file_and_reloads_when_replaced(loom):
    wf = workflow("img2img")
    image = run_node(loom, wf, "11")
    expected = np.asarray(Image.open(loom.env.input_dir / "example.png").convert("RGB"), dtype=np.float32) / 255
    assert image.shape == (1, 64, 64, 3) and np.array_equal(as_array(image)[0], expected)
    Image.new("RGB", (64, 64), (10, 20, 30)).save(loom.env.input_dir / "flat.png")
    wf["11"]["inputs"]["image"] = "flat.png"
    assert as_array(run_node(loom, wf, "11"))[0, 0, 0].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255])
    Image.new("RGB", (64, 64), (200, 20, 30)).save(loom.env.input_dir / "flat.png")
    assert as_array(run_node(loom, wf, "11"))[0, 0, 0, 0] == pytest.approx(200 / 255)


def test_load_image_errors_are_clear(loom):
    missing = loom.validate(workflow("img2img", **{"11": {"image": "nope.png"}}))
    assert not missing.ok and missing.node_errors["11"]["errors"][0]["type"] == "value_not_in_list"
    (loom.env.input_dir / "notes.png").write_text("not an image")
    result = loom.run(workflow("img2img", **{"11": {"image": "notes.png"}}))
    assert result.status == "error" and result.error["node_type"] == "LoadImage"
    assert "'notes.png' is not an image" in result.error["exception_message"]


def test_sample_reports_each_step_with_previews(loom):
    events = []
    result = loom.run(workflow("txt2img", **{"7": {"seed": 1234}}), previews=True,
                      emit=lambda event, data: events.append((event, data)))
    assert result.ok
    steps = [d["value"] for e, d in events if e == "progress" and d["node"] == "8"]
    assert steps == list(range(1, 21))
    previews = [d["image"] for e, d in events if e == "preview"]
    assert previews and all(isinstance(p, Image.Image) and p.mode == "RGB" for p in previews)


def test_cached_latents_are_never_changed(loom, tiny_sd, tmp_path):
    """Changing the second half of a prompt switch re-runs only it, from the cached first half, and
    gives what a fresh server gives: samplers copy the state they continue instead of mutating it."""
    loom.run(workflow("prompt_switch"))
    changed = workflow("prompt_switch", **{"20": {"text": "a red dragon flying over a castle"}})
    result = loom.run(loom.validate(changed, outputs=["9"]))
    assert "8" not in result.executed and "22" in result.executed
    fresh = make_loom(tmp_path, tiny_sd.parent)
    assert torch.equal(result.values["9"][0], run_node(fresh, changed))


def test_invalid_sizes_and_steps_are_named(loom):
    odd = loom.run(workflow("txt2img", **{"7": {"width": 63}}))
    assert odd.status == "error" and odd.error["node_type"] == "MakeNoiseLatents"
    assert "multiples of 2" in odd.error["exception_message"]
    bad = loom.validate(workflow("txt2img", **{"6": {"steps": 2, "strength": 0.3}}))
    assert not bad.ok and "strength" in json.dumps(bad.node_errors["6"])
    past = workflow("step_by_step")
    past["119"]["inputs"]["step"] = 25
    result = loom.run(past)
    assert result.status == "error" and "step 25" in result.error["exception_message"]


def test_ensure_tiny_model_writes_only_into_an_empty_folder(tmp_path, tiny_sd):
    from nodes.loading.model_files import list_models
    from nodes.loading.tiny import ensure_tiny_model

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.safetensors").write_bytes(b"")
    assert ensure_tiny_model(tmp_path / "full") is None
    assert list_models(tmp_path / "full") == ["mine.safetensors"]
    written = ensure_tiny_model(tmp_path / "empty")
    assert list_models(tmp_path / "empty") == ["tiny-sd"]
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(written, safety_checker=None)
    ref = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)
    assert all(torch.equal(a, b) for a, b in zip(pipe.unet.state_dict().values(), ref.unet.state_dict().values()))
    assert (written / "tokenizer" / "vocab.json").is_file() and (written / "tokenizer" / "merges.txt").is_file()


def test_sample_stops_when_interrupted(loom):
    import threading

    interrupt = threading.Event()
    steps = []

    def emit(event, data):
        if event == "progress" and data["node"] == "8":
            steps.append(data["value"])
            if data["value"] == 3:
                interrupt.set()

    result = loom.run(workflow("txt2img", **{"7": {"seed": 99}}), emit=emit, interrupt=interrupt)
    assert result.status == "interrupted" and steps == [1, 2, 3]
    assert "8" not in result.executed

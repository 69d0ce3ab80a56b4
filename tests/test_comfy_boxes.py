"""ComfyUI's bounding-box nodes (nodes/comfy/boxes.py): the canvas widget's boxes as pixel boxes,
prompt elements and a preview; DrawBBoxes' outlines; bad values refused naming node and input;
the templates' CreateBoundingBoxes widgets load from the editor file."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from graph import Env, Loom
from graph.formats import load
from nodes.comfy import boxes as cb
from nodes.common import call

RED = torch.tensor([1.0, 0.0, 0.0])


class Ctx:
    """What a node's run gets from the executor, as far as these nodes use it."""
    def __init__(self):
        self.ui = {}

    def show(self, **ui):
        for key, values in ui.items():
            self.ui.setdefault(key, []).extend(values)


@pytest.fixture(scope="module")
def loom(tmp_path_factory):
    torch.set_num_threads(1)
    return Loom(Env.from_data_dir(tmp_path_factory.mktemp("data"), device="cpu", dtype="float32"))


CANVAS = [
    {"x": 0, "y": 0, "width": 200, "height": 100, "metadata": {"type": "obj", "desc": "sky", "palette": ["#00ff00", "nope"]}},
    {"x": 50, "y": 60, "width": 100, "height": 20, "metadata": {"type": "text", "text": "HELLO", "desc": "title"}},
]


def test_create_bounding_boxes_from_the_canvas_widget():
    ctx = Ctx()
    preview, bboxes, elements = call(cb.CreateBoundingBoxes, ctx, width=200, height=100, editor_state=CANVAS)
    assert bboxes == [[{"x": 0, "y": 0, "width": 200, "height": 100}, {"x": 50, "y": 60, "width": 100, "height": 20}]]
    # bbox is [ymin, xmin, ymax, xmax] on a 0..1000 grid of the canvas
    assert elements == [{"type": "obj", "bbox": [0, 0, 1000, 1000], "desc": "sky", "color_palette": ["#00FF00"]},
                        {"type": "text", "bbox": [600, 250, 800, 750], "text": "HELLO", "desc": "title"}]
    assert ctx.ui == {"dims": [200, 100]}
    assert preview.shape == (1, 100, 200, 3)
    grey = round(128 * cb.PREVIEW_DIM) / 255  # the empty canvas: grey dimmed to a quarter
    assert torch.allclose(preview[0, 40, 20], torch.full((3,), grey))
    grey_box = torch.tensor([140, 140, 140]) / 255  # the text box has no palette: a grey outline
    assert torch.allclose(preview[0, 70, 50], grey_box) and torch.allclose(preview[0, 70, 75], torch.full((3,), grey))


def test_a_new_bboxes_input_replaces_the_canvas_until_it_is_the_last_incoming():
    elements = [{"type": "obj", "bbox": [100, 200, 500, 600], "desc": "cat"}]
    ctx = Ctx()
    _, bboxes, out = call(cb.CreateBoundingBoxes, ctx, width=1000, height=500, editor_state=CANVAS,
                          bboxes=json.dumps(elements))
    assert bboxes == [[{"x": 200, "y": 50, "width": 400, "height": 200}]]
    assert out == [{"type": "obj", "bbox": [100, 200, 500, 600], "desc": "cat"}]
    assert ctx.ui["input_bboxes"][0]["metadata"]["desc"] == "cat"
    # once the canvas has taken it (last_incoming), the canvas's own boxes win again
    _, bboxes, _ = call(cb.CreateBoundingBoxes, Ctx(), width=1000, height=500, editor_state=CANVAS,
                        bboxes=json.dumps(elements), last_incoming=ctx.ui["input_bboxes"])
    assert len(bboxes[0]) == 2 and bboxes[0][1] == {"x": 50, "y": 60, "width": 100, "height": 20}
    # a BOUNDING_BOX value (a detector's frames) also initializes it
    _, bboxes, _ = call(cb.CreateBoundingBoxes, Ctx(), width=64, height=64, editor_state=[],
                        bboxes=[[{"x": 1, "y": 2, "width": 3, "height": 4, "label": "cat", "score": 0.9}]])
    assert bboxes == [[{"x": 1, "y": 2, "width": 3, "height": 4}]]
    _, bboxes, elements = call(cb.CreateBoundingBoxes, Ctx(), width=64, height=64, editor_state=[])
    assert bboxes == [] and elements == []


def test_draw_bboxes_outlines_each_box():
    image = torch.full((2, 40, 50, 3), 0.5)
    box = {"x": 10, "y": 8, "width": 20, "height": 16}
    out = call(cb.DrawBBoxes, None, image=image, bboxes=[box])  # one list: every image of the batch
    assert out.shape == (2, 40, 50, 3)
    grey = torch.full((3,), round(0.5 * 255) / 255)  # 8 bits per channel, as ComfyUI's PIL round trip
    for i in range(2):
        for y, x in ((8, 20), (24, 20), (16, 10), (16, 30), (10, 12)):  # on the edges, 3 pixels wide inside
            assert torch.equal(out[i, y, x], RED), (i, y, x)
        for y, x in ((16, 20), (12, 14), (30, 40), (4, 20)):  # inside the box and outside it
            assert torch.equal(out[i, y, x], grey), (i, y, x)
    # a list per image: the second image has no box
    out = call(cb.DrawBBoxes, None, image=image, bboxes=[[box], []])
    assert torch.equal(out[0, 8, 20], RED) and torch.equal(out[1, 8, 20], grey)
    # without an image: black, just large enough for the boxes
    out = call(cb.DrawBBoxes, None, bboxes=box)
    assert out.shape == (1, 24, 30, 3) and torch.equal(out[0, 8, 20], RED) and out[0, 16, 20].abs().sum() == 0


def test_bad_boxes_are_refused_naming_node_and_input(loom):
    prompt = {"1": {"class_type": "CreateBoundingBoxes",
                    "inputs": {"width": 256, "height": 256, "editor_state": "[{\"x\": 1, \"y\": 2}]"}}}
    validation = loom.validate(prompt)
    assert validation.node_errors["1"]["class_type"] == "CreateBoundingBoxes"
    [error] = validation.node_errors["1"]["errors"]
    assert error["extra_info"]["input_name"] == "editor_state"
    assert error["message"] == "input 'editor_state': box 0 lacks a number for width, height"
    prompt["1"]["inputs"]["editor_state"] = "__import__('os')"
    [error] = loom.validate(prompt).node_errors["1"]["errors"]
    assert "is not valid JSON" in error["message"]
    with pytest.raises(ValueError, match="DrawBBoxes: input 'bboxes' .*box 0 of image 0 lacks a number for y"):
        call(cb.DrawBBoxes, None, bboxes=[[{"x": 1, "y": "2", "width": 3, "height": 4}]])
    with pytest.raises(ValueError, match="CreateBoundingBoxes: input 'bboxes' .*element 0 lacks a 'bbox'"):
        call(cb.CreateBoundingBoxes, Ctx(), width=64, height=64, editor_state=[], bboxes=[{"bbox": [1, 2]}])


def test_the_template_canvas_runs_into_draw_bboxes(loom):
    """A current template's CreateBoundingBoxes (widgets: width, height, editor_state, last_incoming)
    loads from the editor file; its boxes drawn by DrawBBoxes, as the API prompt runs it."""
    import comfyui_workflow_templates_json
    from pathlib import Path

    path = Path(comfyui_workflow_templates_json.__file__).parent / "templates" / "image_flux3_klein_t2i.json"
    prompt = load(json.loads(path.read_text()), loom.registry).prompt
    [canvas] = [n for n in prompt.values() if n["class_type"] == "CreateBoundingBoxes"]
    assert canvas["inputs"]["width"] == 1024 and isinstance(canvas["inputs"]["editor_state"], list)
    boxes = [{"x": 4, "y": 4, "width": 8, "height": 8}]
    run = {"1": {"class_type": "CreateBoundingBoxes",
                 "inputs": {"width": 64, "height": 64, "editor_state": boxes, "last_incoming": []}},
           "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
           "3": {"class_type": "DrawBBoxes", "inputs": {"image": ["2", 0], "bboxes": ["1", 1]}},
           "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    result = loom.run(run)
    assert result.ok, result.error
    [path] = loom.image_paths(result)
    drawn = np.asarray(Image.open(path).convert("RGB"))
    assert tuple(drawn[4, 8]) == (255, 0, 0) and tuple(drawn[8, 8]) == (0, 0, 0)
    assert result.outputs["1"]["dims"] == [64, 64]

"""Editor workflows with subgraphs run as the frontend would have flattened them; model hints are
reported, not refused; older files' control_after_generate `true` is read."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graph import Env, Loom, to_api

FIXTURES = Path(__file__).parent / "fixtures" / "comfy"


@pytest.fixture(scope="module")
def loom(tiny_sd, tmp_path_factory):
    torch.set_num_threads(1)
    env = Env.from_data_dir(tmp_path_factory.mktemp("data"), models_dir=tiny_sd.parent, device="cpu", dtype="float32")
    return Loom(env)


def flat_workflow() -> dict:
    return json.loads((FIXTURES / "txt2img_ui.json").read_text())


def link(i, o, os, t, ts, kind):
    return {"id": i, "origin_id": o, "origin_slot": os, "target_id": t, "target_slot": ts, "type": kind}


def nested_workflow(instance_text: bool = True) -> dict:
    """flat_workflow() with its two text encoders and sampler inside subgraph `sampler`, each encoder an
    instance of a nested subgraph `enc`; the seed and the prompt texts are promoted widgets whose
    values the instances hold (the older way)."""
    enc = {"id": "enc", "name": "Encode", "version": 1, "state": {}, "config": {}, "extra": {},
           "inputs": [{"id": "a", "name": "clip", "type": "CLIP", "linkIds": [1]},
                      {"id": "b", "name": "text", "type": "STRING", "linkIds": [2]}],
           "outputs": [{"id": "c", "name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [3]}],
           "nodes": [{"id": 1, "type": "CLIPTextEncode", "pos": [0, 0], "size": [200, 100], "mode": 0,
                      "inputs": [{"name": "clip", "type": "CLIP", "link": 1},
                                 {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": 2}],
                      "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [3]}],
                      "widgets_values": ["the inner widget's own text"]}],
           "links": [link(1, -10, 0, 1, 0, "CLIP"), link(2, -10, 1, 1, 1, "STRING"),
                     link(3, 1, 0, -20, 0, "CONDITIONING")]}
    texts = ["beautiful scenery nature glass bottle landscape, purple galaxy bottle", "text, watermark"]

    def encoder(node_id, text, clip_link, out_link):
        return {"id": node_id, "type": "enc", "pos": [0, 0], "size": [200, 100], "mode": 0,
                "inputs": [{"name": "clip", "type": "CLIP", "link": clip_link},
                           {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": None}],
                "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [out_link]}],
                "widgets_values": [text] if instance_text else []}

    sampler = {"id": "sampler", "name": "Sample", "version": 1, "state": {}, "config": {}, "extra": {},
               "inputs": [{"id": "m", "name": "model", "type": "MODEL", "linkIds": [11]},
                          {"id": "k", "name": "clip", "type": "CLIP", "linkIds": [12, 13]},
                          {"id": "l", "name": "latent_image", "type": "LATENT", "linkIds": [14]},
                          {"id": "s", "name": "seed", "type": "INT", "linkIds": [15]}],
               "outputs": [{"id": "o", "name": "LATENT", "type": "LATENT", "linkIds": [18]}],
               "nodes": [encoder(30, texts[0], 12, 16), encoder(31, texts[1], 13, 17),
                         {"id": 3, "type": "KSampler", "pos": [0, 0], "size": [300, 260], "mode": 0,
                          "inputs": [{"name": "model", "type": "MODEL", "link": 11},
                                     {"name": "positive", "type": "CONDITIONING", "link": 16},
                                     {"name": "negative", "type": "CONDITIONING", "link": 17},
                                     {"name": "latent_image", "type": "LATENT", "link": 14},
                                     {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 15}],
                          "outputs": [{"name": "LATENT", "type": "LATENT", "links": [18]}],
                          "widgets_values": [0, "fixed", 4, 8, "euler", "normal", 1]}],
               "links": [link(11, -10, 0, 3, 0, "MODEL"), link(12, -10, 1, 30, 0, "CLIP"),
                         link(13, -10, 1, 31, 0, "CLIP"), link(14, -10, 2, 3, 3, "LATENT"),
                         link(15, -10, 3, 3, 4, "INT"), link(16, 30, 0, 3, 1, "CONDITIONING"),
                         link(17, 31, 0, 3, 2, "CONDITIONING"), link(18, 3, 0, -20, 0, "LATENT")]}
    wf = flat_workflow()
    nodes = {n["id"]: n for n in wf["nodes"]}
    instance = {"id": 20, "type": "sampler", "pos": [863, 186], "size": [315, 200], "mode": 0,
                "inputs": [{"name": "model", "type": "MODEL", "link": 1}, {"name": "clip", "type": "CLIP", "link": 3},
                           {"name": "latent_image", "type": "LATENT", "link": 2},
                           {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": None}],
                "outputs": [{"name": "LATENT", "type": "LATENT", "links": [7]}],
                "widgets_values": [156680208700286, "randomize"]}
    wf["nodes"] = [nodes[4], nodes[5], instance, nodes[8], nodes[9]]
    nodes[4]["outputs"][1]["links"] = [3]
    wf["links"] = [[1, 4, 0, 20, 0, "MODEL"], [2, 5, 0, 20, 2, "LATENT"], [3, 4, 1, 20, 1, "CLIP"],
                   [7, 20, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"], [9, 8, 0, 9, 0, "IMAGE"]]
    wf["definitions"] = {"subgraphs": [sampler, enc]}
    return wf


def test_nested_subgraphs_flatten_to_the_flat_workflow(loom):
    flat, nested = to_api(flat_workflow(), loom.registry), to_api(nested_workflow(), loom.registry)
    renamed = {"6": "20:30:1", "7": "20:31:1", "3": "20:3"}  # the frontend's execution ids
    expected = json.loads(json.dumps(flat))
    for old, new in renamed.items():
        expected[new] = expected.pop(old)
    for node in expected.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] in renamed:
                node["inputs"][name] = [renamed[value[0]], value[1]]
    assert {k: v["inputs"] for k, v in nested.items()} == {k: v["inputs"] for k, v in expected.items()}
    assert nested["20:3"]["inputs"]["seed"] == 156680208700286  # the instance's value, not the inner 0

    # without instance values the inner widgets keep theirs (the frontend's promoted "proxy" widgets)
    inner = to_api(nested_workflow(instance_text=False), loom.registry)
    assert inner["20:30:1"]["inputs"]["text"] == inner["20:31:1"]["inputs"]["text"] == "the inner widget's own text"


def pixels(loom, workflow) -> np.ndarray:
    result = loom.run(workflow)
    assert result.ok, result.error
    [path] = loom.image_paths(result)
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_subgraph_workflow_makes_the_flat_workflows_image(loom):
    loom.executor.cache.clear()
    first = pixels(loom, nested_workflow())
    loom.executor.cache.clear()
    assert np.array_equal(first, pixels(loom, flat_workflow()))


def test_a_current_template_with_a_subgraph_is_expanded(tmp_path):
    """A real file of the templates package: its subgraph becomes its nodes; what is missing is named
    (the model files it needs), never the subgraph's id."""
    pytest.importorskip("comfyui_workflow_templates_json")
    from importlib import resources

    from graph import Registry

    path = resources.files("comfyui_workflow_templates_json") / "templates" / "image_anima_preview.json"
    template = json.loads(path.read_text())
    registry = Registry()
    registry.add_package("nodes")
    prompt = to_api(template, registry)
    instance = next(n for n in template["nodes"] if n["type"] == template["definitions"]["subgraphs"][0]["id"])
    inner = {f"{instance['id']}:{n['id']}": n["type"] for n in template["definitions"]["subgraphs"][0]["nodes"]}
    assert {k: v["class_type"] for k, v in prompt.items() if ":" in k} == inner
    sampler = next(k for k, v in inner.items() if v == "KSampler")
    decode = next(k for k, v in inner.items() if v == "VAEDecode")
    assert prompt[decode]["inputs"]["samples"] == [sampler, 0]
    assert [n["inputs"]["images"] for n in prompt.values() if n["class_type"] == "SaveImage"] == [[decode, 0]]
    assert prompt[sampler]["inputs"]["steps"] == 30  # the inner widget values (proxy widgets)
    report = Loom(Env.from_data_dir(tmp_path), registry=registry).preflight(template)
    assert report.missing_nodes == {}  # UNETLoader, CLIPLoader and VAELoader are Loom's too now
    needed = {n["widgets_values"][0] for n in template["definitions"]["subgraphs"][0]["nodes"]
              if n["type"] in ("UNETLoader", "CLIPLoader", "VAELoader")}
    assert {m.name for m in report.models if m.status == "missing"} == needed
    assert all(":" in node for m in report.models for node in m.nodes)  # filed on the inner nodes


def test_model_hints_are_reported_not_refused(loom):
    wf = flat_workflow()
    loader = next(n for n in wf["nodes"] if n["type"] == "CheckpointLoaderSimple")
    loader["properties"]["models"] = [{"name": "v1-5-pruned-emaonly-fp16.safetensors", "directory": "checkpoints",
                                       "url": "https://example.invalid/v1-5-pruned-emaonly-fp16.safetensors"}]
    wf["models"] = [{"name": "extra-hint.safetensors", "directory": "vae"}]
    validation = loom.validate(wf)
    assert validation.ok, validation.response()
    report = validation.preflight
    assert report.ok and not report.missing_models
    assert sorted(m.name for m in report.missing_hints) == ["extra-hint.safetensors",
                                                           "v1-5-pruned-emaonly-fp16.safetensors"]
    assert any("no node uses it" in line for line in report.lines())
    loader["widgets_values"] = ["v1-5-pruned-emaonly-fp16.safetensors"]  # what a node needs is refused
    refused = loom.validate(wf)
    assert not refused.ok and "models not found: v1-5-pruned-emaonly-fp16.safetensors" in refused.error["message"]


def test_control_after_generate_true_of_older_files(loom):
    wf = flat_workflow()
    sampler = next(n for n in wf["nodes"] if n["type"] == "KSampler")
    sampler["widgets_values"] = [42, True, 4, 8, "euler", "normal", 1]
    inputs = to_api(wf, loom.registry)["3"]["inputs"]
    assert (inputs["seed"], inputs["steps"], inputs["cfg"], inputs["sampler_name"]) == (42, 4, 8, "euler")
    sampler["widgets_values"] = [42, 4, 8, "euler", "normal", 1]  # none saved at all
    assert to_api(copy.deepcopy(wf), loom.registry)["3"]["inputs"]["steps"] == 4


def test_instance_inputs_are_matched_to_the_subgraph_inputs_by_name(loom):
    """The frontend keeps only some of a subgraph's inputs on an instance, in its own order: each
    instance input feeds the subgraph input of its name, not of its position."""
    expected = to_api(nested_workflow(), loom.registry)
    shuffled = nested_workflow()
    definitions = shuffled["definitions"]["subgraphs"]
    instances = [n for d in definitions for n in d["nodes"] if n["type"] == "enc"]
    assert instances
    for node in instances:  # the text input first, the clip second
        node["inputs"].reverse()
    assert to_api(shuffled, loom.registry) == expected
    for node in instances:  # an instance without the text input: the inner widget's own text
        node["inputs"] = [i for i in node["inputs"] if i["name"] != "text"]
        node["widgets_values"] = []
    partial = to_api(shuffled, loom.registry)
    assert partial["20:30:1"]["inputs"]["text"] == "the inner widget's own text"
    assert partial["20:30:1"]["inputs"]["clip"] == expected["20:30:1"]["inputs"]["clip"]


def test_promoted_widgets_without_sockets_take_the_values_in_the_subgraphs_order():
    """The frontend (1.58) gives an instance one widget per subgraph input that feeds an inner widget,
    in the subgraph's input order, and saves one value each, even when the instance's saved inputs
    list only some of them as sockets (ComfyUI's FLUX.2 Klein edit templates: `unet_name`, `clip_name`,
    `vae_name` are widgets only, `text` a socket too). Each value goes to its own input."""
    from graph import Registry

    registry = Registry()
    registry.add_package("nodes")
    definition = {"id": "load", "name": "Load", "version": 1, "state": {}, "config": {}, "extra": {},
                  "inputs": [{"id": "u", "name": "ckpt_name", "type": "COMBO", "linkIds": [1]},
                             {"id": "t", "name": "text", "type": "STRING", "linkIds": [2]},
                             {"id": "c", "name": "clip", "type": "CLIP", "linkIds": []}],
                  "outputs": [{"id": "o", "name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [4]}],
                  "nodes": [{"id": 1, "type": "CheckpointLoaderSimple", "mode": 0,
                             "inputs": [{"name": "ckpt_name", "type": "COMBO", "widget": {"name": "ckpt_name"},
                                         "link": 1}],
                             "outputs": [{"name": "MODEL", "type": "MODEL", "links": []},
                                         {"name": "CLIP", "type": "CLIP", "links": [3]},
                                         {"name": "VAE", "type": "VAE", "links": []}],
                             "widgets_values": ["inner.safetensors"]},
                            {"id": 2, "type": "CLIPTextEncode", "mode": 0,
                             "inputs": [{"name": "clip", "type": "CLIP", "link": 3},
                                        {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": 2}],
                             "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [4]}],
                             "widgets_values": ["the inner text"]}],
                  "links": [link(1, -10, 0, 1, 0, "COMBO"), link(2, -10, 1, 2, 1, "STRING"),
                            link(3, 1, 1, 2, 0, "CLIP"), link(4, 2, 0, -20, 0, "CONDITIONING")]}
    instance = {"id": 5, "type": "load", "mode": 0,
                "inputs": [{"label": "prompt", "name": "text", "type": "STRING", "widget": {"name": "text"},
                            "link": None}],
                "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": []}],
                "widgets_values": ["asked.safetensors", "a prompt", 42]}
    workflow = {"version": 0.4, "nodes": [instance], "links": [], "groups": [], "extra": {},
                "definitions": {"subgraphs": [definition]}}
    prompt = to_api(workflow, registry)
    assert prompt["5:1"]["inputs"]["ckpt_name"] == "asked.safetensors"
    assert prompt["5:2"]["inputs"]["text"] == "a prompt"
    # every widget input shown as a socket (older files): the values follow the sockets, as before
    instance["inputs"].insert(0, {"name": "ckpt_name", "type": "COMBO", "widget": {"name": "ckpt_name"}, "link": None})
    instance["widgets_values"] = ["other.safetensors", "another prompt"]
    prompt = to_api(workflow, registry)
    assert (prompt["5:1"]["inputs"]["ckpt_name"], prompt["5:2"]["inputs"]["text"]) == \
        ("other.safetensors", "another prompt")

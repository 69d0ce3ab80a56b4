"""Workflows from outside (issue 24): subgraph expansion is bounded (nodes, depth, time) and refused
at once with flat memory; malformed API node entries are filed on their nodes, and the entries
ComfyUI's frontend sends for node types the server lacks say which types are missing."""
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from graph import Env, Loom, Registry
from graph.entries import editor_type
from graph.subgraphs import ExpansionLimit, Limits, expand
from graph.workflow import migrate

HERE = Path(__file__).parent
FRONTEND_REQUEST = HERE / "fixtures" / "comfy" / "frontend_default_request.json"


@pytest.fixture(scope="module")
def loom(tmp_path_factory):
    registry = Registry()
    registry.add_folder(HERE / "custom_nodes")
    return Loom(Env.from_data_dir(tmp_path_factory.mktemp("data")), registry=registry)


def _link(i, o, os_, t, ts, kind="FLOAT"):
    return {"id": i, "origin_id": o, "origin_slot": os_, "target_id": t, "target_slot": ts, "type": kind}


def _instance(node_id, kind, in_link, out_links):
    return {"id": node_id, "type": kind, "pos": [0, 0], "size": [200, 60], "mode": 0,
            "inputs": [{"name": "x", "type": "FLOAT", "link": in_link}],
            "outputs": [{"name": "y", "type": "FLOAT", "links": out_links}]}


def _level(k: int, fan: int) -> dict:
    """Subgraph `level-k`: x -> `fan` instances of level k-1 in a chain -> y; level 0 is one Scale."""
    sub = {"id": f"level-{k}", "name": f"Level {k}", "version": 1, "state": {}, "config": {}, "extra": {},
           "inputs": [{"id": "i", "name": "x", "type": "FLOAT", "linkIds": [1]}],
           "outputs": [{"id": "o", "name": "y", "type": "FLOAT", "linkIds": [fan + 1 if k else 2]}]}
    if k == 0:
        sub["nodes"] = [{"id": 1, "type": "Scale", "pos": [0, 0], "size": [200, 60], "mode": 0,
                         "inputs": [{"name": "x", "type": "FLOAT", "link": 1}],
                         "outputs": [{"name": "scaled", "type": "FLOAT", "links": [2]}], "widgets_values": [1]}]
        sub["links"] = [_link(1, -10, 0, 1, 0), _link(2, 1, 0, -20, 0)]
        return sub
    sub["nodes"] = [_instance(i, f"level-{k - 1}", i, [i + 1]) for i in range(1, fan + 1)]
    sub["links"] = [_link(1, -10, 0, 1, 0)] + [_link(i + 1, i, 0, i + 1 if i < fan else -20, 0)
                                               for i in range(1, fan + 1)]
    return sub


def nested(levels: int, fan: int) -> dict:
    """Number -> an instance of the top level -> ToText -> Show; fan**(levels - 1) Scale nodes when flat."""
    nodes = [{"id": 1, "type": "Number", "pos": [0, 0], "size": [200, 60], "mode": 0, "inputs": [],
              "outputs": [{"name": "value", "type": "FLOAT", "links": [1]}], "widgets_values": [1.0]},
             _instance(2, f"level-{levels - 1}", 1, [2]),
             {"id": 3, "type": "ToText", "pos": [0, 0], "size": [200, 60], "mode": 0,
              "inputs": [{"name": "x", "type": "FLOAT", "link": 2}],
              "outputs": [{"name": "text", "type": "STRING", "links": [3]}], "widgets_values": ["plain", ""]},
             {"id": 4, "type": "Show", "pos": [0, 0], "size": [200, 60], "mode": 0,
              "inputs": [{"name": "text", "type": "STRING", "link": 3}], "outputs": []}]
    return {"version": 0.4, "last_node_id": 4, "last_link_id": 3, "nodes": nodes,
            "links": [[1, 1, 0, 2, 0, "FLOAT"], [2, 2, 0, 3, 0, "FLOAT"], [3, 3, 0, 4, 0, "STRING"]],
            "groups": [], "config": {}, "extra": {}, "definitions": {"subgraphs": [_level(k, fan) for k in range(levels)]}}


def measured(loom, workflow):
    """(validation, CPU seconds (the machine may be busy), peak bytes Python allocated meanwhile)."""
    tracemalloc.start()
    start = time.process_time()
    try:
        validation = loom.validate(workflow)
        return validation, time.process_time() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_nested_subgraphs_flatten_into_one_chain(loom):
    v = loom.validate(nested(3, 3))
    assert v.ok, v.error
    node, scales = v.prompt["3"]["inputs"]["x"], []
    while v.prompt[node[0]]["class_type"] == "Scale":  # walk back from ToText to the Number
        scales.append(node[0])
        node = v.prompt[node[0]]["inputs"]["x"]
    assert node == ["1", 0]
    assert scales == [f"2:{a}:{b}:1" for a in (3, 2, 1) for b in (3, 2, 1)]


def test_a_subgraph_bomb_is_refused_at_once(loom):
    """10 levels, each using the level below 10 times: 10^10 nodes. Before: no answer in 120 s,
    memory past 1.6 GB. Now refused from the definitions' sizes, before anything is copied."""
    v, seconds, peak = measured(loom, nested(11, 10))
    assert not v.ok and v.error["type"] == "invalid_prompt"
    assert "subgraph 'Level 10' (node 2) alone expands to 10,000,000,000 nodes" in v.error["message"]
    assert "LOOM_MAX_EXPANDED_NODES" in v.error["message"]
    assert seconds < 0.5 and peak < 2 << 20, (seconds, peak)


def test_a_hundred_thousand_node_workflow_is_refused_at_once(loom):
    """10^5 nodes when flat (before: 14.6 s to accept); the default limit is 20,000 nodes."""
    v, seconds, peak = measured(loom, nested(6, 10))
    assert not v.ok and "the subgraphs expand to 100,003 nodes; at most 20,000 nodes" in v.error["message"]
    assert "'Level 5' (node 2)" in v.error["message"]
    assert seconds < 0.5 and peak < 2 << 20, (seconds, peak)


def test_a_thousand_nested_nodes_are_expanded(loom):
    v = loom.validate(nested(4, 10))
    assert v.ok, v.error
    assert sum(n["class_type"] == "Scale" for n in v.prompt.values()) == 1000


def test_depth_is_bounded():
    workflow = migrate(nested(34, 1), "litegraph-0.4")
    with pytest.raises(ExpansionLimit, match=r"subgraphs nest deeper than 32 levels \(LOOM_MAX_SUBGRAPH_DEPTH\): "
                                             r"Level 33 > Level 32 > Level 31 > Level 30 > \.\.\."):
        expand(workflow)
    assert len(expand(workflow, Limits(depth=40))["nodes"]) == 4


def test_limits_are_settable():
    workflow = migrate(nested(4, 10), "litegraph-0.4")  # 1,003 nodes
    with pytest.raises(ExpansionLimit, match="expand to 1,003 nodes; at most 500 nodes"):
        expand(workflow, Limits(nodes=500))
    assert len(expand(workflow, Limits(nodes=1003))["nodes"]) == 1003
    with pytest.raises(ExpansionLimit, match=r"took longer than -1 s \(LOOM_MAX_EXPAND_SECONDS\), at subgraph"):
        expand(workflow, Limits(seconds=-1))
    env = {**os.environ, "LOOM_MAX_EXPANDED_NODES": "123", "LOOM_MAX_SUBGRAPH_DEPTH": "7",
           "LOOM_MAX_EXPAND_SECONDS": "3"}
    out = subprocess.run([sys.executable, "-c", "from graph.subgraphs import LIMITS as L; print(L.nodes, L.depth, "
                          "L.seconds, L.links)"], env=env, cwd=HERE.parent, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["123", "7", "3.0", "492"]


@pytest.mark.slow
def test_a_hundred_thousand_nodes_when_allowed(loom):
    workflow = migrate(nested(6, 10), "litegraph-0.4")
    start = time.perf_counter()
    flat = expand(workflow, Limits(nodes=200_000, seconds=600))
    print(f"10^5 nodes expanded in {time.perf_counter() - start:.1f} s")
    assert len(flat["nodes"]) == 100_003


# --- malformed API entries --------------------------------------------------------------------------

@pytest.mark.parametrize("entry,kind,needle", [
    ({"inputs": {}}, "missing_node_type", "the node type of node 2 is not installed (the entry has no class_type)"),
    ({"class_type": 5, "inputs": {}}, "invalid_node_entry", "'class_type' must be the name of a node type, not a number"),
    ({"class_type": "", "inputs": {}}, "invalid_node_entry", "'class_type' must be the name of a node type"),
    ({"class_type": "Show", "inputs": [1]}, "invalid_node_entry", "'inputs' must be an object"),
    ({"class_type": "Show", "inputs": {}, "_meta": "t"}, "invalid_node_entry", "'_meta' must be an object"),
    ("Show", "invalid_node_entry", "a node entry must be an object {class_type, inputs}, not a string"),
])
def test_malformed_entries_are_filed_on_their_node(loom, entry, kind, needle):
    """Before: one message naming the node ('at node 2: ...') and node_errors {}."""
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1.0}}, "2": entry}
    for workflow in (prompt, {"prompt": prompt}):
        v = loom.validate(workflow)
        assert not v.ok and list(v.node_errors) == ["2"], v.response()
        (error,) = v.node_errors["2"]["errors"]
        assert error["type"] == kind and needle in error["message"] and error["extra_info"]["node_id"] == "2"
        assert needle in v.error["details"]


def test_the_official_frontends_default_workflow_names_the_missing_types(loom):
    """What ComfyUI's frontend 1.58.1 sends for its default workflow (captured from it, served by
    Loom): no class_type on nodes 68 and 69, whose types Loom lacks. Before: 400 "at node 68:
    'class_type' is a required property", node_errors {}."""
    body = json.loads(FRONTEND_REQUEST.read_text())
    assert [k for k, v in body["prompt"].items() if "class_type" not in v] == ["68", "69"]
    v = loom.validate(body["prompt"], extra_data=body["extra_data"])
    assert v.error["type"] == "missing_node_type"
    assert v.error["message"] == "node types not installed: EmptySD3LatentImage, ModelSamplingAuraFlow"
    assert v.error["extra_info"]["nodes"] == {"EmptySD3LatentImage": ["68"], "ModelSamplingAuraFlow": ["69"]}
    assert {k: e["class_type"] for k, e in v.node_errors.items()} == \
        {"68": "EmptySD3LatentImage", "69": "ModelSamplingAuraFlow"}
    assert v.node_errors["69"]["errors"][0]["message"] == \
        "node type 'ModelSamplingAuraFlow' is not installed (the entry has no class_type)"
    assert loom.validate(body).node_errors.keys() == {"68", "69"}  # the same body as one request


def test_missing_types_inside_subgraph_instances_are_named():
    editor = {"nodes": [{"id": 5, "type": "sub"}, {"id": 6, "type": "Plain"}],
              "definitions": {"subgraphs": [{"id": "sub", "nodes": [{"id": 7, "type": "inner"}, {"id": 8, "type": "Fancy"}]},
                                            {"id": "inner", "nodes": [{"id": 9, "type": "Deeper"}]}]}}
    assert [editor_type(editor, i) for i in ("6", "5:8", "5:7:9", "5", "5:7", "5:99", "6:1", "x")] == \
        ["Plain", "Fancy", "Deeper", None, None, None, None, None]
    for junk in ({"nodes": "junk"}, None, {"nodes": [], "definitions": {"subgraphs": 5}}, {"definitions": []},
                 {"nodes": [{"id": 1, "type": ["x"]}]}):
        assert editor_type(junk, "1") is None and editor_type(junk, "1:2") is None


def test_the_default_workflow_from_a_page_older_than_the_server_asks_for_a_reload():
    """The same body on a server that has both types (Loom's built-in nodes since issue 21): the page
    was loaded before, so the answer says to reload it rather than that the types are missing."""
    from graph.entries import entry_errors

    body = json.loads(FRONTEND_REQUEST.read_text())
    v = entry_errors(body["prompt"], body["extra_data"]["extra_pnginfo"]["workflow"],
                     installed={"EmptySD3LatentImage", "ModelSamplingAuraFlow"})
    assert v.error["type"] == "invalid_prompt"
    assert v.error["message"] == ("the page that sent this prompt is out of date: reload it (it sent no class_type for "
                                  "node types this server has: EmptySD3LatentImage, ModelSamplingAuraFlow)")
    assert v.error["extra_info"]["nodes"] == {"EmptySD3LatentImage": ["68"], "ModelSamplingAuraFlow": ["69"]}
    assert "(reload the page)" in v.node_errors["69"]["errors"][0]["message"]
    only_one = entry_errors(body["prompt"], body["extra_data"]["extra_pnginfo"]["workflow"],
                            installed={"EmptySD3LatentImage"})
    assert only_one.error["message"] == "node types not installed: ModelSamplingAuraFlow"

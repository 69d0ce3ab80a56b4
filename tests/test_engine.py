"""The engine on small pure-Python nodes: planning, validation, formats, execution, cache."""
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from graph import Cache, Env, Executor, Loom, Registry, ValidationFailed, plan, to_api, validate

HERE = Path(__file__).parent


@pytest.fixture
def loom(tmp_path):
    registry = Registry()
    registry.add_folder(HERE / "custom_nodes")
    assert not registry.load_errors
    return Loom(Env.from_data_dir(tmp_path), registry=registry)


@pytest.fixture
def calls():
    mod = sys.modules["loom_custom_nodes.math_nodes"]
    mod.CALLS.clear()
    return mod.CALLS


def chain_prompt(a=1.0, b=2.0, factor=3):
    """1:Number(a) 2:Number(b) -> 3:Add -> 4:Scale(factor) -> 5:ToText -> 6:Show; 7 dangles."""
    return {
        "1": {"class_type": "Number", "inputs": {"value": a}},
        "2": {"class_type": "Number", "inputs": {"value": b}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Scale", "inputs": {"x": ["3", 0], "factor": factor}},
        "5": {"class_type": "ToText", "inputs": {"x": ["4", 0], "style": "fixed"}},
        "6": {"class_type": "Show", "inputs": {"text": ["5", 0]}},
        "7": {"class_type": "Number", "inputs": {"value": 9.0}},
    }


def errors_of(loom, prompt):
    v = loom.validate(prompt)
    assert not v.ok
    return v, {nid: [e["type"] for e in entry["errors"]] for nid, entry in v.node_errors.items()}


# --- planning ---------------------------------------------------------------------------------

def test_plan_is_topological_and_pruned():
    prompt = chain_prompt()
    order = plan(prompt, ["6"])
    assert set(order) == {"1", "2", "3", "4", "5", "6"}  # 7 feeds no output
    pos = {n: i for i, n in enumerate(order)}
    for node_id, node in prompt.items():
        for value in node["inputs"].values():
            if isinstance(value, list) and node_id in pos:
                assert pos[value[0]] < pos[node_id]


def test_run_executes_only_ancestors_of_outputs(loom, calls):
    result = loom.run(chain_prompt())
    assert result.ok
    assert sorted(calls) == ["1", "2", "3", "4", "5", "6"]
    assert result.outputs["6"] == {"text": ["9.00"]}


# --- validation: one test per error type --------------------------------------------------------

def test_unknown_node_types_are_all_listed(loom):
    prompt = chain_prompt()
    prompt["8"] = {"class_type": "Frobnicate", "inputs": {}}
    prompt["9"] = {"class_type": "Blur3000", "inputs": {}}
    v, errs = errors_of(loom, prompt)
    assert errs["8"] == ["unknown_node_type"] and errs["9"] == ["unknown_node_type"]
    assert "Blur3000" in v.error["message"] and "Frobnicate" in v.error["message"]


def test_missing_required_input(loom):
    prompt = chain_prompt()
    del prompt["3"]["inputs"]["b"]
    v, errs = errors_of(loom, prompt)
    assert errs == {"3": ["required_input_missing"]}
    assert v.node_errors["3"]["errors"][0]["extra_info"]["input_name"] == "b"
    assert v.node_errors["3"]["dependent_outputs"] == ["6"]
    assert v.node_errors["3"]["class_type"] == "Add"


def test_link_to_missing_node(loom):
    prompt = chain_prompt()
    prompt["3"]["inputs"]["b"] = ["42", 0]
    v, errs = errors_of(loom, prompt)
    assert errs == {"3": ["bad_linked_input"]}
    assert "node 42" in v.node_errors["3"]["errors"][0]["message"]


def test_link_to_missing_slot(loom):
    prompt = chain_prompt()
    prompt["3"]["inputs"]["b"] = ["2", 3]
    v, errs = errors_of(loom, prompt)
    assert errs == {"3": ["bad_linked_input"]}
    assert "output 3" in v.node_errors["3"]["errors"][0]["message"]


def test_type_mismatch_names_both_types(loom):
    prompt = chain_prompt()
    prompt["4"]["inputs"]["x"] = ["5", 0]  # STRING into FLOAT (also makes a cycle 4->5->4)
    v, errs = errors_of(loom, prompt)
    message = v.node_errors["4"]["errors"][0]["message"]
    assert errs["4"][0] == "return_type_mismatch"
    assert "FLOAT" in message and "STRING" in message


def test_value_out_of_range(loom):
    prompt = chain_prompt(factor=11)
    prompt["1"]["inputs"]["value"] = -5000
    _, errs = errors_of(loom, prompt)
    assert errs == {"4": ["value_bigger_than_max"], "1": ["value_smaller_than_min"]}


def test_value_not_a_number(loom):
    prompt = chain_prompt()
    prompt["4"]["inputs"]["factor"] = "three"
    prompt["1"]["inputs"]["value"] = True
    prompt["2"]["inputs"]["value"] = "2.5"  # numeric text is accepted and converted
    v, errs = errors_of(loom, prompt)
    assert errs == {"4": ["invalid_input_type"], "1": ["invalid_input_type"]}
    assert v.prompt["2"]["inputs"]["value"] == 2.5


def test_value_not_in_choices(loom):
    prompt = chain_prompt()
    prompt["5"]["inputs"]["style"] = "fancy"
    v, errs = errors_of(loom, prompt)
    assert errs == {"5": ["value_not_in_list"]}
    assert "'plain'" in v.node_errors["5"]["errors"][0]["message"]


def test_no_output_node(loom):
    prompt = chain_prompt()
    del prompt["6"]
    v = loom.validate(prompt)
    assert v.error["type"] == "prompt_no_outputs"


def test_cycle_names_its_nodes(loom):
    prompt = chain_prompt()
    prompt["3"]["inputs"]["a"] = ["4", 0]
    v, errs = errors_of(loom, prompt)
    assert errs == {"3": ["dependency_cycle"], "4": ["dependency_cycle"]}
    message = v.node_errors["3"]["errors"][0]["message"]
    assert "#3 Add" in message and "#4 Scale" in message


def test_errors_have_no_tracebacks_and_are_all_reported_at_once(loom):
    prompt = chain_prompt(factor=99)
    prompt["5"]["inputs"]["style"] = "fancy"
    del prompt["3"]["inputs"]["a"]
    v = loom.validate(prompt)
    assert set(v.node_errors) == {"3", "4", "5"}
    assert "Traceback" not in str(v.response())


def test_malformed_workflows_are_invalid_prompt(loom):
    for bad in ([1, 2], "x", {}, {"nodes": [{"id": 1}], "links": []}):
        v = loom.validate(bad)
        assert v.error["type"] == "invalid_prompt", bad
    # an entry without class_type is a node type this server lacks (what ComfyUI's frontend sends),
    # filed under its node so clients can mark it
    v = loom.validate({"1": {"inputs": {}}})
    assert v.error["type"] == "missing_node_type"
    assert [e["type"] for e in v.node_errors["1"]["errors"]] == ["missing_node_type"]


# --- formats ----------------------------------------------------------------------------------

def editor_version():
    """chain_prompt() as the editor saves it, with a reroute, a muted node and a note."""
    def node(id, type, widgets, inputs=(), outputs=(), mode=0):
        return {"id": id, "type": type, "pos": [id * 10, 0], "size": [200, 80], "flags": {}, "order": id,
                "mode": mode, "inputs": [{"name": n, "type": t, "link": l} for n, t, l in inputs],
                "outputs": [{"name": n, "type": t, "links": l} for n, t, l in outputs],
                "properties": {}, "widgets_values": widgets}
    return {
        "last_node_id": 11, "last_link_id": 7, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            node(1, "Number", [1.0], outputs=[("value", "FLOAT", [1])]),
            node(2, "Number", [2.0], outputs=[("value", "FLOAT", [2])]),
            node(3, "Add", [], [("a", "FLOAT", 1), ("b", "FLOAT", 2)], [("sum", "FLOAT", [3])]),
            node(10, "Reroute", [], [("", "*", 3)], [("", "FLOAT", [4])]),
            node(4, "Scale", [3], [("x", "FLOAT", 4)], [("scaled", "FLOAT", [5])]),
            node(5, "ToText", ["fixed", ""], [("x", "FLOAT", 5)], [("text", "STRING", [6])]),
            node(6, "Show", [], [("text", "STRING", 6)]),
            node(11, "Show", [], [("text", "STRING", 7)], mode=2),
            node(12, "Note", ["remember the milk"]),
        ],
        "links": [[1, 1, 0, 3, 0, "FLOAT"], [2, 2, 0, 3, 1, "FLOAT"], [3, 3, 0, 10, 0, "FLOAT"],
                  [4, 10, 0, 4, 0, "FLOAT"], [5, 4, 0, 5, 0, "FLOAT"], [6, 5, 0, 6, 0, "STRING"],
                  [7, 5, 0, 11, 0, "STRING"]],
    }


def test_both_formats_give_the_same_execution(loom, calls):
    api = chain_prompt()
    del api["7"]
    converted = to_api(editor_version(), loom.registry)
    assert {k: v["inputs"] for k, v in converted.items()} == \
        {k: {**v["inputs"], **({"prefix": ""} if k == "5" else {})} for k, v in api.items()}
    a = loom.run(api)
    loom.executor.cache.clear()
    b = loom.run(editor_version())
    assert a.outputs == b.outputs == {"6": {"text": ["9.00"]}}
    assert sorted(a.executed) == sorted(b.executed)


def test_editor_bypass_rewires_and_seed_control_value_is_skipped(tmp_path):
    from graph import Int, Node, Out

    class Seeded(Node):
        seed = Int(0, min=0, max=100, control_after_generate=True)
        label = Int(7)
        outputs = (Out("INT", "seed"),)

    reg = Registry([Seeded])
    wf = {"nodes": [{"id": 1, "type": "Seeded", "widgets_values": [5, "randomize", 8], "inputs": [], "mode": 0}],
          "links": []}
    assert to_api(wf, reg)["1"]["inputs"] == {"seed": 5, "label": 8}

    registry = Registry()
    registry.add_folder(HERE / "custom_nodes")
    wf = editor_version()
    scale = next(n for n in wf["nodes"] if n["id"] == 4)
    scale["mode"] = 4  # bypass: ToText now reads the Reroute's source, Add
    assert to_api(wf, registry)["5"]["inputs"]["x"] == ["3", 0]
    assert "4" not in to_api(wf, registry)


# --- execution and cache ----------------------------------------------------------------------

def test_identical_rerun_executes_nothing(loom, calls):
    first = loom.run(chain_prompt())
    calls.clear()
    second = loom.run(chain_prompt())
    assert calls == [] and second.executed == []
    assert sorted(second.cached) == ["1", "2", "3", "4", "5", "6"]
    assert second.outputs == first.outputs


def test_changed_constant_reruns_exactly_its_descendants(loom, calls):
    loom.run(chain_prompt())
    calls.clear()
    result = loom.run(chain_prompt(b=5.0))
    assert sorted(result.executed) == ["2", "3", "4", "5", "6"]
    assert result.outputs["6"] == {"text": ["18.00"]}
    calls.clear()
    result = loom.run(chain_prompt(b=5.0, factor=4))
    assert sorted(result.executed) == ["4", "5", "6"]


def test_cache_keys_ignore_node_ids(loom, calls):
    loom.run(chain_prompt())
    renumbered = {str(int(k) + 100): {**v, "inputs": {n: [str(int(x[0]) + 100), x[1]] if isinstance(x, list) else x
                                                      for n, x in v["inputs"].items()}}
                  for k, v in chain_prompt().items()}
    calls.clear()
    assert loom.run(renumbered).executed == []


def test_not_idempotent_nodes_always_run(loom, calls):
    prompt = {"1": {"class_type": "Clock", "inputs": {}},
              "2": {"class_type": "ToText", "inputs": {"x": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"text": ["2", 0]}}}
    loom.run(prompt)
    calls.clear()
    assert sorted(loom.run(prompt).executed) == ["1", "2", "3"]


def test_node_error_is_reported_and_cache_stays_sound(loom, calls):
    prompt = chain_prompt()
    prompt["4"] = {"class_type": "Fail", "inputs": {"x": ["3", 0]}}
    events = []
    result = loom.run(prompt, emit=lambda e, d: events.append((e, d)))
    assert result.status == "error"
    assert result.error["node_id"] == "4" and result.error["node_type"] == "Fail"
    assert result.error["exception_message"] == "this node always fails"
    assert ("execution_error", result.error) in events
    calls.clear()
    fixed = loom.run(chain_prompt())  # 1, 2, 3 came from the cache
    assert fixed.ok and sorted(fixed.executed) == ["4", "5", "6"]


def test_interrupt_stops_at_next_progress_check(loom, calls):
    gate = sys.modules["loom_custom_nodes.math_nodes"].GATE
    gate.set()
    prompt = chain_prompt()
    prompt["4"] = {"class_type": "Slow", "inputs": {"x": ["3", 0]}}
    stop = threading.Event()
    steps = []

    def emit(event, data):
        if event == "progress":
            steps.append(data["value"])
            if data["value"] == 2:
                stop.set()

    result = loom.run(prompt, emit=emit, interrupt=stop)
    assert result.status == "interrupted"
    assert steps == [1, 2]
    assert "5" not in calls and "6" not in calls


def test_events_follow_comfyui_order(loom):
    events = []
    loom.run(chain_prompt(), emit=lambda e, d: events.append(e))
    assert events[:2] == ["execution_start", "execution_cached"]
    assert events[-3:] == ["executed", "execution_success", "executing"]
    events.clear()
    loom.run(chain_prompt(), emit=lambda e, d: events.append(e))
    assert events == ["execution_start", "execution_cached", "executed", "execution_success", "executing"]


def test_budget_eviction_is_lru_and_counts_shared_storage_once():
    torch = pytest.importorskip("torch")
    cache = Cache(budget_bytes=3000)
    a, b, c = (torch.zeros(250) for _ in range(3))  # 1000 bytes each
    cache.put("a", (a,))
    cache.put("a-view", (a[10:], a.view(25, 10)))  # same storage as "a": no new bytes
    assert cache.bytes == 1000
    cache.put("b", (b,))
    cache.put("c", (c,))
    assert cache.bytes == 3000 and len(cache) == 4
    cache.get("a")  # "a" is now more recent than "a-view", "b", "c"
    cache.put("d", (torch.zeros(250),))  # over budget: evict LRU, but "a-view" frees no bytes
    assert cache.keys() == ["c", "a", "d"]
    assert cache.bytes == 3000
    cache.put("e", (torch.zeros(500),), pinned={"c", "a", "d"})  # everything pinned: over budget
    assert cache.keys() == ["c", "a", "d", "e"] and cache.bytes == 5000
    cache.trim()
    assert cache.keys() == ["d", "e"] and cache.bytes == 3000


def test_module_parameters_are_counted():
    torch = pytest.importorskip("torch")
    cache = Cache(budget_bytes=10**9)
    lin = torch.nn.Linear(10, 10)  # 110 floats
    cache.put("m", (lin, {"weight": lin.weight}))
    assert cache.bytes == 440


def test_run_never_evicts_what_it_still_needs(tmp_path, calls):
    """With a budget of one entry, every node's outputs still reach its consumers."""
    registry = Registry()
    registry.add_folder(HERE / "custom_nodes")
    small = Loom(Env.from_data_dir(tmp_path), registry=registry, cache_bytes=0)
    assert small.run(chain_prompt()).outputs["6"] == {"text": ["9.00"]}


def test_object_info_shape(loom):
    info = loom.registry.object_info()["ToText"]
    assert info["input"]["required"]["x"] == ["FLOAT", {}]
    assert info["input"]["required"]["style"] == [["plain", "fixed"], {"default": "plain"}]
    assert info["input"]["optional"]["prefix"] == ["STRING", {"default": ""}]
    assert info["output"] == ["STRING"] and info["output_name"] == ["text"]
    assert info["description"] == "Formats a number as text." and info["category"] == "text"
    assert loom.registry.object_info()["Show"]["output_node"] is True


def test_broken_custom_node_file_is_reported_not_fatal(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "broken.py").write_text("raise ImportError('needs a missing package')\n")
    (folder / "fine.py").write_text("from graph import Node\nclass Fine(Node):\n    output_node = True\n"
                                    "    def run(self, ctx):\n        pass\n")
    registry = Registry()
    registry.add_folder(folder)
    assert "Fine" in registry
    assert "needs a missing package" in next(iter(registry.load_errors.values()))


def test_invalid_workflow_raises_on_run(loom):
    with pytest.raises(ValidationFailed):
        loom.run({"1": {"class_type": "Nope", "inputs": {}}})


def test_graph_imports_no_torch():
    code = "import sys, graph, graph.runtime; assert 'torch' not in sys.modules, 'graph imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=HERE.parent)


def test_loading_the_nodes_imports_neither_diffusers_nor_transformers_models():
    """A server lists its nodes without diffusers (seconds of imports, with torch._dynamo and peft):
    it is imported by the first node that needs it."""
    code = ("import sys; from graph import Registry; Registry().add_package('nodes'); "
            "print(sorted(m for m in ('diffusers', 'transformers.modeling_utils', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"

"""Lazy inputs in the engine (graph.lazy): a switch runs only the branch it takes, problems on the
branch not taken do not fail the prompt, the cache and the queue's model routing follow the branch
that runs. Small pure-Python nodes; no torch."""
import pytest

from graph import Boolean, Combo, Env, Float, In, Loom, Node, Out, Registry
from loomqueue.routing import model_keys

CALLS: list[str] = []


class Flag(Node):
    """A constant boolean, `pure`: validation may compute it to decide a switch early."""
    pure = True
    value = Boolean(False)
    outputs = (Out("BOOLEAN", "value"),)

    def run(self, ctx):
        if ctx is not None:
            CALLS.append(ctx.node_id)
        return self.value


class Sensor(Node):
    """A boolean validation may not compute (not pure): the switch is decided at run time."""
    value = Boolean(False)
    outputs = (Out("BOOLEAN", "value"),)

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        return self.value


class Count(Node):
    value = Float(0.0)
    outputs = (Out("FLOAT", "value"),)

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        return self.value


class LoadWeights(Node):
    category = "loaders"
    name = Combo(lambda env: sorted(p.name for p in env.models_dir.iterdir()), model=True, model_kind="checkpoints")
    outputs = (Out("WEIGHTS", "weights"),)

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        return (ctx.env.models_dir / self.name).read_text()


class Boom(Node):
    weights = In("WEIGHTS")
    outputs = (Out("FLOAT", "value"),)

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        raise RuntimeError("this node always fails")


class Switch(Node):
    switch = Boolean(False)
    on_false = In("*", optional=True, lazy=True)
    on_true = In("*", optional=True, lazy=True)
    outputs = (Out("*", "output"),)

    def needs(self, lazy):
        return ["on_true" if self.switch else "on_false"]

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        return self.on_true if self.switch else self.on_false


class Both(Node):
    """Lazy inputs and the default `needs`: every linked lazy input is evaluated."""
    a = In("FLOAT", lazy=True)
    b = In("FLOAT", lazy=True)
    outputs = (Out("FLOAT", "sum"),)

    def run(self, ctx):
        return self.a + self.b


class Gate(Node):
    """A lazy widget holding a constant is there when `needs` is asked; a linked one is not yet."""
    pure = True
    limit = Float(0.0, lazy=True)
    x = In("FLOAT", optional=True, lazy=True)
    outputs = (Out("FLOAT", "value"),)

    def needs(self, lazy):
        return ["x"] if self.limit is None or self.limit > 0 else []

    def run(self, ctx):
        return -1.0 if self.x is None else self.x


class Show(Node):
    output_node = True
    value = In("*")

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        ctx.show(text=[str(self.value)])


class Unused(Node):
    """A node that takes no FLOAT: linking one to it is a wiring error."""
    text = In("STRING")
    outputs = (Out("FLOAT", "value"),)

    def run(self, ctx):
        return 0.0


@pytest.fixture
def loom(tmp_path):
    CALLS.clear()
    env = Env.from_data_dir(tmp_path)
    (env.models_dir / "here.safetensors").write_text("weights")
    return Loom(env, registry=Registry([Flag, Sensor, Count, LoadWeights, Boom, Switch, Both, Gate, Show, Unused]))


def switch_prompt(switch: bool, decider: str = "Flag", broken_false: bool = True, false_value: float = 2.0):
    """on_true: Count 1.0; on_false: a missing model feeding a node that fails (broken_false), else
    Count `false_value`. The switch reads node 1 (Flag: decided by validation; Sensor: at run time)."""
    prompt = {
        "1": {"class_type": decider, "inputs": {"value": switch}},
        "2": {"class_type": "Count", "inputs": {"value": 1.0}},
        "3": {"class_type": "Count", "inputs": {"value": false_value}},
        "4": {"class_type": "LoadWeights", "inputs": {"name": "gone.safetensors"}},
        "5": {"class_type": "Boom", "inputs": {"weights": ["4", 0]}},
        "6": {"class_type": "Switch", "inputs": {"switch": ["1", 0], "on_true": ["2", 0],
                                                 "on_false": ["5", 0] if broken_false else ["3", 0]}},
        "7": {"class_type": "Show", "inputs": {"value": ["6", 0]}},
    }
    for node_id in ("3",) if broken_false else ("4", "5"):
        del prompt[node_id]
    return prompt


def run_ok(loom, prompt):
    CALLS.clear()
    validation = loom.validate(prompt)
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    return validation, result


def test_the_branch_not_taken_may_lack_its_model_and_fail(loom):
    validation, result = run_ok(loom, switch_prompt(True))
    assert validation.decisions == {"6": {"on_true"}}
    assert validation.untaken == {"4", "5"} and not validation.maybe
    # the missing model is known, and kept for the case the branch is taken
    assert {e["type"] for e in validation.deferred["4"]["errors"]} == {"value_not_in_list", "model_not_found"}
    assert result.outputs["7"] == {"text": ["1.0"]}
    assert sorted(CALLS) == ["1", "2", "6", "7"]  # neither the loader nor the failing node ran
    assert "4" not in validation.order and "5" not in validation.order

    _, again = run_ok(loom, switch_prompt(True))
    assert again.executed == [] and CALLS == []  # all cached
    assert set(again.cached) == {"1", "2", "6", "7"}


def test_taking_the_broken_branch_fails_validation_as_comfyui_does(loom):
    validation = loom.validate(switch_prompt(False))
    assert not validation.ok
    assert "model_not_found" in {e["type"] for e in validation.node_errors["4"]["errors"]}
    assert "gone.safetensors" in validation.error["message"]


def test_switching_runs_the_other_branch_and_both_stay_cached(loom):
    _, first = run_ok(loom, switch_prompt(True, broken_false=False))
    assert first.outputs["7"] == {"text": ["1.0"]} and "3" not in CALLS
    _, other = run_ok(loom, switch_prompt(False, broken_false=False))
    assert other.outputs["7"] == {"text": ["2.0"]}
    assert sorted(CALLS) == ["1", "3", "6", "7"]  # the false branch ran, the true one did not
    for value in (True, False):
        _, again = run_ok(loom, switch_prompt(value, broken_false=False))
        assert again.executed == [] and again.outputs["7"] == {"text": ["1.0" if value else "2.0"]}


def test_a_change_on_the_branch_not_taken_reruns_nothing(loom):
    run_ok(loom, switch_prompt(True, broken_false=False, false_value=2.0))
    _, result = run_ok(loom, switch_prompt(True, broken_false=False, false_value=5.0))
    assert result.executed == []  # the switch's signature covers the branch it takes only


def test_a_switch_decided_at_run_time(loom):
    validation, result = run_ok(loom, switch_prompt(True, decider="Sensor"))
    assert validation.decisions == {} and validation.maybe == {"2", "4", "5"}
    assert result.outputs["7"] == {"text": ["1.0"]}
    assert sorted(CALLS) == ["1", "2", "6", "7"]
    _, again = run_ok(loom, switch_prompt(True, decider="Sensor"))
    assert again.executed == []
    sigs, _ = loom.executor.signatures(validation.prompt, ["1"])
    loom.executor.cache.discard(sigs["1"])  # the sensor's value is gone from the cache, the switch's is not
    _, again = run_ok(loom, switch_prompt(True, decider="Sensor"))
    assert again.executed == []  # the decision is remembered with the switch's other inputs

    CALLS.clear()
    validation = loom.validate(switch_prompt(False, decider="Sensor"))
    assert validation.ok, validation.response()  # the model is missing only if the branch is taken
    result = loom.run(validation)
    assert result.status == "error" and result.error["node_id"] == "4"
    assert result.error["exception_type"] == "InvalidLazyBranch"
    assert "gone.safetensors" in result.error["exception_message"]
    assert CALLS == ["1"]  # it stops before running anything of the branch


def test_a_run_time_switch_runs_only_its_branch(loom):
    _, result = run_ok(loom, switch_prompt(False, decider="Sensor", broken_false=False))
    assert result.outputs["7"] == {"text": ["2.0"]}
    assert sorted(CALLS) == ["1", "3", "6", "7"]


def test_wiring_errors_fail_on_any_branch(loom):
    prompt = switch_prompt(True, broken_false=False)
    prompt["8"] = {"class_type": "Unused", "inputs": {"text": ["3", 0]}}  # a FLOAT into a STRING
    prompt["6"]["inputs"]["on_false"] = ["8", 0]
    validation = loom.validate(prompt)
    assert not validation.ok
    assert [e["type"] for e in validation.node_errors["8"]["errors"]] == ["return_type_mismatch"]


def test_a_missing_node_type_on_the_branch_not_taken_is_deferred(loom):
    prompt = switch_prompt(True, broken_false=False)
    prompt["3"] = {"class_type": "TextGenerate", "inputs": {"prompt": "a cat"}}
    validation, result = run_ok(loom, prompt)
    assert validation.deferred["3"]["errors"][0]["type"] == "unknown_node_type"
    assert result.outputs["7"] == {"text": ["1.0"]}
    assert not loom.validate(switch_prompt(True, broken_false=False) | {"9": prompt["3"]}).ok  # not on a branch


def test_model_routing_counts_the_branch_that_runs(loom):
    prompt = switch_prompt(True)
    prompt["4"]["inputs"]["name"] = "here.safetensors"
    validation = loom.validate(prompt)
    assert validation.ok
    registry = loom.registry
    assert model_keys(validation.prompt, registry) == {"LoadWeights(name=here.safetensors)"}
    assert model_keys(validation.prompt, registry, validation.runnable) == frozenset()
    prompt["1"]["inputs"]["value"] = False
    validation = loom.validate(prompt)
    assert model_keys(validation.prompt, registry, validation.runnable) == {"LoadWeights(name=here.safetensors)"}
    prompt["1"]["class_type"] = "Sensor"  # undecided before the run: the loader may run
    validation = loom.validate(prompt)
    assert model_keys(validation.prompt, registry, validation.runnable) == {"LoadWeights(name=here.safetensors)"}


def test_lazy_inputs_default_to_all_and_show_in_object_info(loom):
    prompt = {"1": {"class_type": "Count", "inputs": {"value": 1.5}},
              "2": {"class_type": "Count", "inputs": {"value": 2.0}},
              "3": {"class_type": "Both", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}}}
    _, result = run_ok(loom, prompt)
    assert result.outputs["4"] == {"text": ["3.5"]}
    info = Switch.object_info()
    assert info["input"]["optional"]["on_true"] == ["*", {"lazy": True}]
    assert info["input"]["required"]["switch"] == ["BOOLEAN", {"default": False}]


@pytest.mark.parametrize("limit, shown", [(1.0, "2.5"), (0.0, "-1.0"), (["9", 0], "2.5")])
def test_a_lazy_widget_with_a_constant_is_there_to_decide(loom, limit, shown):
    prompt = {"1": {"class_type": "Count", "inputs": {"value": 2.5}},
              "2": {"class_type": "Gate", "inputs": {"limit": limit, "x": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
              "9": {"class_type": "Count", "inputs": {"value": 0.0}}}
    validation, result = run_ok(loom, prompt)
    assert result.outputs["3"] == {"text": [shown]}
    assert ("1" in result.executed) == (shown == "2.5")

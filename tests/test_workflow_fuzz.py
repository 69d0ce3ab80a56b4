"""Malformed workflow files, generated: the loader always answers with a clear WorkflowError (or an
`invalid_prompt` validation), never with a crash."""
import copy
import json
import os

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from graph import Env, Loom, Registry, Validation, WorkflowError, read_workflow_file
from graph.pngmeta import PNG_SIGNATURE
from graph.workflow import check
from tests.test_engine import HERE, chain_prompt
from tests.test_workflow_files import LoadModel, as_version_1, model_workflow, png_with
from tests.test_workflow_limits import nested

EXAMPLES = int(os.environ.get("LOOM_FUZZ_EXAMPLES", "120"))  # more for a long local hunt
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers(-3, 30) | st.floats() | st.text(max_size=8) \
    | st.sampled_from(["Show", "Add", "LoadModel", "x.safetensors", "0", "1", "nodes", "links", "FLOAT"])
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8) | st.sampled_from(["id", "type", "link", "inputs"]),
                                             inner, max_size=5), max_leaves=20)
VALID = [model_workflow(), as_version_1(model_workflow()), chain_prompt(),
         {"prompt": chain_prompt(), "extra_data": {"extra_pnginfo": {"workflow": model_workflow()}}}, nested(3, 2)]


@pytest.fixture(scope="module")
def loom(tmp_path_factory):
    registry = Registry([LoadModel])
    registry.add_folder(HERE / "custom_nodes")
    env = Env.from_data_dir(tmp_path_factory.mktemp("data"))
    (env.models_dir / "alpha.safetensors").write_bytes(b"weights")
    return Loom(env, registry=registry)


def paths(value, prefix=()):
    """Every place in a JSON value: the key paths to each dict entry and list item."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from paths(child, prefix + (key,))


@st.composite
def mutated(draw):
    """A valid workflow with a few places replaced by random JSON or removed."""
    data = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        places = [p for p in paths(data) if p]
        if not places:
            break
        place = draw(st.sampled_from(places))
        parent = data
        for key in place[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[place[-1]]
        else:
            parent[place[-1]] = draw(json_values)
    return data


def check_loads_cleanly(loom, data):
    try:
        loaded = loom.load(data)
    except WorkflowError as exc:
        assert str(exc)
    else:  # whatever loads is migrated to a file that follows the published schema
        if loaded.workflow is not None:
            check(loaded.workflow, "loom-1")
    validation = loom.validate(data)
    assert isinstance(validation, Validation)
    if not validation.ok:
        assert validation.error["message"] and "Traceback" not in json.dumps(validation.response(), default=str)


@FUZZ
@given(data=mutated())
def test_mutated_workflows_never_crash_the_loader(loom, data):
    check_loads_cleanly(loom, data)


@FUZZ
@given(data=json_values)
@example(data={"²": None})  # a node id that is a digit to str.isdigit() but no number to int()
def test_random_json_never_crashes_the_loader(loom, data):
    check_loads_cleanly(loom, data)


@settings(max_examples=60, deadline=None)
@given(head=st.sampled_from([b"", PNG_SIGNATURE, png_with({"prompt": "{}"})[:60]]), tail=st.binary(max_size=300),
       chunk=st.none() | st.text(max_size=40))
def test_random_bytes_and_pngs_give_workflow_errors(tmp_path_factory, head, tail, chunk):
    path = tmp_path_factory.mktemp("fuzz") / "file"
    path.write_bytes(png_with({"workflow": chunk}) if chunk is not None else head + tail)
    try:
        read_workflow_file(path)
    except WorkflowError as exc:
        assert str(exc)

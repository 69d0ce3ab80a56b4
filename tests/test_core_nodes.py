"""ComfyUI's core nodes of today's templates (nodes.comfy.logic, comfy_utils, comfy_strings): their
behaviour, the safe expression evaluator, and real templates of comfyui-workflow-templates 0.11.97
that use them. No torch: images are numpy arrays here (GetImageSize reads only the shape)."""
import json
import math
from importlib import resources

import numpy as np
import pytest

from graph import Env, Loom, Registry
from nodes.comfy import logic as comfy_logic
from nodes.comfy import primitives
from nodes.comfy import strings as comfy_strings
from nodes.comfy import utils as comfy_utils
from nodes.comfy.expressions import ExpressionError, evaluate

MINE = {"ComfySwitchNode", "PreviewAny", "GetImageSize", "ResolutionSelector", "ComfyMathExpression",
        "StringConcatenate", "StringReplace", "ComfyNumberConvert", "CustomCombo", "RegexReplace", "RegexExtract",
        "JsonExtractString", "StringFormat", "StringLength", "ConvertArrayToString", "ConvertDictionaryToString"}


@pytest.fixture
def loom(tmp_path):
    registry = Registry()
    for module in (comfy_logic, comfy_strings, comfy_utils, primitives):
        registry.add_module(module)
    return Loom(Env.from_data_dir(tmp_path), registry=registry)


def call(node, **inputs):
    """Run a pure node directly, its optional inputs at their defaults."""
    instance = node()
    for name, inp in node.inputs.items():
        setattr(instance, name, inputs.get(name, getattr(inp, "default", None)))
    return instance.run(None)


def run(loom, prompt):
    validation = loom.validate(prompt)
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    return validation, result


# --- the switch -------------------------------------------------------------------------------

def switch_prompt(value):
    """A switch read from a PrimitiveBoolean: on_true doubles 7, on_false divides it by zero."""
    return {
        "1": {"class_type": "PrimitiveBoolean", "inputs": {"value": value}},
        "2": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a * 2", "values.a": ["3", 0]}},
        "3": {"class_type": "PrimitiveInt", "inputs": {"value": 7}},
        "4": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a / 0", "values.a": ["3", 0]}},
        "5": {"class_type": "ComfySwitchNode", "inputs": {"switch": ["1", 0], "on_true": ["2", 0], "on_false": ["4", 0]}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }


def test_the_switch_runs_only_its_branch(loom):
    validation, result = run(loom, switch_prompt(True))
    assert validation.decisions == {"5": {"on_true"}}  # PrimitiveBoolean is pure: decided before the run
    assert result.outputs["6"] == {"text": ["14.0"]}
    assert "4" not in result.executed  # the division by zero never ran
    failed = loom.run(loom.validate(switch_prompt(False)))
    assert failed.status == "error" and failed.error["node_id"] == "4"
    assert "division by zero" in failed.error["exception_message"]


def test_a_switch_branch_left_unlinked_gives_none(loom):
    prompt = switch_prompt(False)
    del prompt["5"]["inputs"]["on_false"]
    _, result = run(loom, prompt)
    assert result.outputs["6"] == {"text": ["None"]}


def test_the_switch_passes_on_one_type(loom):
    """ComfyUI's editor types both branches and the output alike (MatchType); Loom's validation
    checks the same for prompts from anywhere."""
    prompt = switch_prompt(True)
    prompt["7"] = {"class_type": "StringConcatenate", "inputs": {"string_a": "x", "string_b": "y"}}
    prompt["5"]["inputs"]["on_false"] = ["7", 0]  # STRING on one branch, FLOAT on the other
    errors = loom.validate(prompt).node_errors
    assert [e["type"] for e in errors["5"]["errors"]] == ["return_type_mismatch"]
    prompt = switch_prompt(True)
    prompt["8"] = {"class_type": "StringLength", "inputs": {"string": ["5", 0]}}  # the switch gives a FLOAT
    prompt["9"] = {"class_type": "PreviewAny", "inputs": {"source": ["8", 0]}}
    errors = loom.validate(prompt).node_errors
    assert list(errors) == ["8"] and "FLOAT" in errors["8"]["errors"][0]["message"]


def test_switch_object_info_is_comfyuis():
    info = comfy_logic.ComfySwitchNode.object_info()
    assert info["input_order"] == {"required": ["switch"], "optional": ["on_false", "on_true"]}
    assert info["input"]["optional"]["on_true"][1] == {"lazy": True}
    assert (info["output"], info["output_name"], info["category"]) == (["*"], ["output"], "utilities/logic")


# --- Preview Any, Custom Combo ------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [("hi", "hi"), (3, "3"), (2.5, "2.5"), (True, "True"), (None, "None"),
                                         ({"a": [1, 2]}, '{"a": [1, 2]}'), (object, str(object))])
def test_preview_any_shows_text_as_comfyui(value, text):
    class Ctx:
        ui = {}

        def show(self, **ui):
            self.ui = ui

    ctx, node = Ctx(), comfy_utils.PreviewAny()
    node.source = value
    assert node.run(ctx) == text and ctx.ui == {"text": [text]}


def test_custom_combo_takes_any_choice_and_its_index(loom):
    prompt = {"1": {"class_type": "CustomCombo", "inputs": {"choice": "Turbo", "index": 2}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}
    _, result = run(loom, prompt)
    assert result.outputs["2"] == {"text": ["Turbo"]} and result.outputs["3"] == {"text": ["2"]}
    info = comfy_logic.CustomCombo.object_info()
    assert info["input_order"]["required"] == ["choice"] and "index" not in info["input"]["optional"]
    # ComfyUI's editor saves the choice, then its index, then the options
    editor = {"last_node_id": 1, "last_link_id": 0, "links": [], "version": 0.4,
              "nodes": [{"id": 1, "type": "CustomCombo", "mode": 0, "inputs": [], "outputs": [],
                         "widgets_values": ["Default", 1, "Quality", "Default", "Turbo", ""]}]}
    assert loom.load(editor).prompt["1"]["inputs"] == {"choice": "Default", "index": 1}


# --- sizes and numbers --------------------------------------------------------------------------

def test_get_image_size_reads_batch_height_width():
    assert call(comfy_utils.GetImageSize, image=np.zeros((2, 48, 64, 3), np.float32)) == (64, 48, 2)


@pytest.mark.parametrize("ratio", list(comfy_utils.ASPECT_RATIOS))
@pytest.mark.parametrize("megapixels, multiple, minimum", [(1.0, 8, 256), (2.0, 16, 256), (0.1, 8, 256),
                                                           (0.1, 64, 512)])
def test_resolution_selector(ratio, megapixels, multiple, minimum):
    width, height = call(comfy_utils.ResolutionSelector, aspect_ratio=ratio, megapixels=megapixels,
                         multiple=multiple, minimum=minimum)
    w, h = comfy_utils.ASPECT_RATIOS[ratio]
    assert width % multiple == 0 and height % multiple == 0
    if min(width, height) >= minimum and abs(width * height / 2**20 - megapixels) < 0.25 * megapixels:
        # near the target: the ratio within what rounding to `multiple` allows
        assert abs(width / height - w / h) <= multiple / min(width, height) * 2
    else:  # raised to the minimum: an exact multiple of the ratio, the smallest such
        assert width * h == height * w and min(width, height) >= minimum
        k = width // w
        smaller = [j for j in range(1, k) if (j * w) % multiple == 0 and (j * h) % multiple == 0
                   and min(j * w, j * h) >= minimum]
        assert smaller == []
    if (ratio, megapixels, multiple) == ("1:1 (Square)", 1.0, 8):
        assert (width, height) == (1024, 1024)


@pytest.mark.parametrize("value, expected", [("12.7", (12.7, 12)), (" -3 ", (-3.0, -3)), (True, (1.0, 1)),
                                             (7, (7.0, 7)), (2.9, (2.9, 2)),
                                             ("12345678901234567890", (1.2345678901234567e19, 12345678901234567890))])
def test_number_convert(value, expected):
    assert call(comfy_utils.ComfyNumberConvert, value=value) == expected


@pytest.mark.parametrize("value", ["", "abc", "inf", float("nan")])
def test_number_convert_refuses_what_is_no_finite_number(value):
    with pytest.raises(ValueError):
        call(comfy_utils.ComfyNumberConvert, value=value)


# --- the math expression ------------------------------------------------------------------------

@pytest.mark.parametrize("expression, a, expected", [
    ("max(((a + 15) // 16) * 16, 256)", 1000, (1008.0, 1008, True)),  # templates' own expressions
    ("a & -8", 1023, (1016.0, 1016, True)),
    ("a > 2048", 4096, (1.0, 1, True)),
    ("a", False, (0.0, 0, False)),
    ("a / 4", 10, (2.5, 2, True)),
    ("2 ** 10 if a else -1", 1, (1024.0, 1024, True)),
    ("sum(values) + min(a, 3) + round(sqrt(16))", 5, (12.0, 12, True)),
    ("not a or 0 < a < 10", 5, (1.0, 1, True)),
])
def test_math_expression(expression, a, expected):
    assert call(comfy_utils.ComfyMathExpression, expression=expression, **{"values.a": a}) == expected


@pytest.mark.parametrize("expression", [
    "__import__('os').system('true')", "a.__class__", "(1).real", "open('x')", "'text' * 3", "[1, 2]",
    "lambda: 1", "eval('1')", "9 ** 9 ** 9", "2 ** 5000", "1 << 100000", "(10 ** 4000) ** 8",
    "values[0:1]", "a if", "b + 1", "x.y",
])
def test_math_expression_refuses_what_is_not_arithmetic(expression):
    with pytest.raises(ExpressionError):
        evaluate(expression, {"a": 1, "values": [1]})


def test_math_expression_needs_a_number_and_a_finite_one():
    with pytest.raises(ValueError, match="empty"):
        call(comfy_utils.ComfyMathExpression, expression="  ", **{"values.a": 1})
    with pytest.raises(ValueError, match="must give a number"):
        call(comfy_utils.ComfyMathExpression, expression="None", **{"values.a": 1})
    with pytest.raises(ValueError):
        call(comfy_utils.ComfyMathExpression, expression="a * 1e308 * 10", **{"values.a": 1.0})
    assert call(comfy_utils.ComfyMathExpression, expression="a + b + z",
                **{"values.a": 1, "values.b": 2.5, "values.z": True}) == (4.5, 4, True)
    assert math.isclose(evaluate("log(a) + cos(0)", {"a": math.e}), 2.0)


# --- text ----------------------------------------------------------------------------------------

def test_text_nodes():
    s = comfy_strings
    assert call(s.StringConcatenate, string_a="a", string_b="b", delimiter=", ") == "a, b"
    assert call(s.StringReplace, string="a cat, a hat", find="a ", replace="the ") == "the cat, the hat"
    assert call(s.StringLength, string="héllo") == 5
    assert call(s.StringSubstring, string="abcdef", start=1, end=-1) == "bcde"
    assert call(s.CaseConverter, string="hello world", mode="Title Case") == "Hello World"
    assert call(s.StringTrim, string="  x  ", mode="Left") == "x  "
    assert call(s.StringContains, string="Big Cat", substring="cat", case_sensitive=False) is True
    assert call(s.StringCompare, string_a="Photo.PNG", string_b=".png", mode="Ends With", case_sensitive=True) is False
    assert call(s.StringFormat, f_string="{a}:{b}, {c} × {d:.1f} px",
                **{"values.a": "16", "values.b": "9", "values.c": 1024, "values.d": 576.0}) == "16:9, 1024 × 576.0 px"
    with pytest.raises(ValueError, match="private"):
        call(s.StringFormat, f_string="{a.__class__.__mro__}", **{"values.a": "x"})


def test_regex_nodes():
    s, text = comfy_strings, "Cat: tom\ncat: felix\ndog: rex"
    extract = {mode: call(s.RegexExtract, string=text, regex_pattern=r"cat: (\w+)", mode=mode)
               for mode in ["First Match", "All Matches", "First Group", "All Groups"]}
    assert extract == {"First Match": "Cat: tom", "All Matches": "tom\nfelix", "First Group": "tom",
                       "All Groups": "tom\nfelix"}
    assert call(s.RegexExtract, string=text, regex_pattern="(", mode="First Match") == ""  # invalid: empty
    assert call(s.RegexExtract, string="(?sm)x", regex_pattern=r"(?sm)^(.*?)^---$(.*)", mode="First Group") == ""
    assert call(s.RegexReplace, string="```json\n{}\n```", regex_pattern=r"^```(?:json)?\s*\n?", replace="") == "{}\n```"
    assert call(s.RegexReplace, string="a a a", regex_pattern="A", replace="b", count=2) == "b b a"
    assert call(s.RegexMatch, string="Hello", regex_pattern="^h") is True


def test_json_nodes():
    s = comfy_strings
    reply = 'Sure! ```json\n{"prompt": "a red fox", "negative_prompt": null, "n": 3}\n```'
    assert call(s.JsonExtractString, json_string=reply, key="prompt") == "a red fox"
    assert call(s.JsonExtractString, json_string=reply, key="negative_prompt") == ""
    assert call(s.JsonExtractString, json_string=reply, key="n") == "3"
    assert call(s.JsonExtractString, json_string="{broken {\"k\": 1}", key="k") == "1"
    assert call(s.ConvertDictionaryToString, dictionary={"é": [1]}, indent=0) == '{"é": [1]}'
    assert call(s.ConvertArrayToString, array=[1, 2], indent=2) == "[\n  1,\n  2\n]"


# --- real templates (comfyui-workflow-templates 0.11.97) -------------------------------------------

def template(name: str) -> dict:
    pytest.importorskip("comfyui_workflow_templates_json")
    path = resources.files("comfyui_workflow_templates_json") / "templates" / f"{name}.json"
    return json.loads(path.read_text())


def test_basic_datatype_conversion_template_runs(loom):
    """All its outputs are Preview Any nodes: it used to have 'no outputs'; now every one shows."""
    validation, result = run(loom, template("basic_datatype_conversion"))
    shown = {k: ui["text"][0] for k, ui in result.outputs.items()}
    assert set(shown) == {k for k, n in validation.prompt.items() if n["class_type"] == "PreviewAny"}
    assert shown["22"] == "True" and shown["21"] == "1" and shown["20"] == "1.5"  # the float 1.5 as bool, int, float


@pytest.fixture(scope="module")
def full_registry():
    registry = Registry()
    registry.add_package("nodes")
    return registry


def test_qwen_image_template_validates_past_its_switch(full_registry, tmp_path):
    """image_qwen_image: a PrimitiveBoolean turns its 4-step LoRA off. The switch is decided before
    the run, the LoRA's loader is on the branch not taken: its missing model is kept for later, and
    refused with the rest only if the switch takes it."""
    data = template("image_qwen_image")
    loom = Loom(Env.from_data_dir(tmp_path), registry=full_registry)
    validation = loom.validate(data)
    switches = {k for k, n in validation.prompt.items() if n["class_type"] == "ComfySwitchNode"}
    assert switches and set(validation.decisions) == switches
    lora = next(k for k, n in validation.prompt.items() if n["class_type"] == "LoraLoaderModelOnly")
    assert lora in validation.untaken and lora not in validation.node_errors
    lora_file = validation.loaded.prompt[lora]["inputs"]["lora_name"]
    assert "model_not_found" in {e["type"] for e in validation.deferred[lora]["errors"]}
    assert lora_file not in validation.error["message"]  # what is refused: the models the run needs
    unknown = {e["class_type"] for e in validation.node_errors.values()}
    assert not unknown & MINE
    # the same template with the LoRA switched on needs that file
    on = loom.validate(flip_switches(data))
    assert lora in on.node_errors and lora_file in on.error["message"]


def flip_switches(data: dict) -> dict:
    data = json.loads(json.dumps(data))
    for graph in [data, *data.get("definitions", {}).get("subgraphs", [])]:
        for node in graph.get("nodes", []):
            if node.get("type") == "PrimitiveBoolean":
                node["widgets_values"] = [not node["widgets_values"][0]]
    return data


def test_no_template_lacks_these_nodes(full_registry):
    """Every node type this work owns is known to Loom, in every template of the package."""
    pytest.importorskip("comfyui_workflow_templates_json")
    folder = resources.files("comfyui_workflow_templates_json") / "templates"
    used = set()
    for path in folder.iterdir():
        if path.name.endswith(".json") and any(name in (text := path.read_text()) for name in MINE):
            data = json.loads(text)
            for graph in [data, *data.get("definitions", {}).get("subgraphs", [])] if isinstance(data, dict) else []:
                used |= {n.get("type") for n in graph.get("nodes", []) if isinstance(n, dict)}
    assert MINE <= used  # the templates do use them all
    assert {t for t in MINE if t not in full_registry} == set()


def test_a_subgraph_instance_with_fewer_sockets_is_wired_by_name(full_registry):
    """image_boogu_image_0_1_turbo_t2i: the instance shows only width and height as sockets (its text,
    seed and model names are promoted widgets), so its socket 0 is the subgraph's input 1. The
    Resolution Selector outside feeds the inner latent's size, not the prompt's text."""
    from graph.formats import load

    prompt = load(template("image_boogu_image_0_1_turbo_t2i"), full_registry).prompt
    latent = next(n for n in prompt.values() if n["class_type"] == "EmptyLatentImage")
    [selector] = [k for k, n in prompt.items() if n["class_type"] == "ResolutionSelector"]
    assert latent["inputs"]["width"] == [selector, 0] and latent["inputs"]["height"] == [selector, 1]
    [encode] = [n for n in prompt.values() if n["class_type"] == "CLIPTextEncode"]
    assert isinstance(encode["inputs"]["text"], str) and encode["inputs"]["text"].startswith("Abstract")

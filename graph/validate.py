"""Validation of an API-format prompt: every problem found at once, in ComfyUI's response shape.

    {"error": {type, message, details, extra_info},
     "node_errors": {id: {"errors": [{type, message, details, extra_info}], "dependent_outputs", "class_type"}}}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .formats import is_link
from .lazy import plan_lazy
from .node import Autogrow, InputError, accepts
from .plan import dependency_graph, find_cycles, needed_subgraph, sort_key
from .registry import Registry


@dataclass
class Validation:
    prompt: dict  # the prompt with every constant coerced to its declared type
    outputs: list[str]  # output node ids, in id order
    order: list[str] = field(default_factory=list)  # the plan: what the outputs need, topologically
    error: dict | None = None
    node_errors: dict = field(default_factory=dict)
    # Lazy inputs (graph.lazy): those decided before the run (node -> the lazy inputs it needs), the
    # nodes that run only if an undecided lazy input asks for them, those no run reaches, and the
    # problems found on either, in node_errors' shape: they fail the run only if it needs that node.
    decisions: dict = field(default_factory=dict)
    maybe: set = field(default_factory=set)
    untaken: set = field(default_factory=set)
    deferred: dict = field(default_factory=dict)
    loaded: Any = None  # graph.formats.Loaded: what the prompt was read from (set by Loom.validate)
    preflight: Any = None  # graph.preflight.Preflight: missing node types and models

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def runnable(self) -> set[str]:
        """The nodes a run may execute: the plan and the undecided lazy branches."""
        return set(self.order) | self.maybe

    def response(self) -> dict:
        """The body ComfyUI clients expect for a rejected prompt."""
        return {"error": self.error, "node_errors": self.node_errors}


def _title(prompt: dict, node_id: str) -> str:
    node = prompt.get(node_id, {})
    return f"#{node_id} {node.get('_meta', {}).get('title') or node.get('class_type', '?')}"


class _Collector:
    def __init__(self, prompt: dict):
        self.prompt = prompt
        self.node_errors: dict[str, dict] = {}

    def add(self, node_id: str, kind: str, message: str, details: str = "", **extra) -> None:
        entry = self.node_errors.setdefault(node_id, {
            "errors": [], "dependent_outputs": [],
            "class_type": self.prompt.get(node_id, {}).get("class_type")})
        entry["errors"].append({"type": kind, "message": message, "details": details, "extra_info": extra})

    def lines(self) -> list[str]:
        return [f"{_title(self.prompt, nid)}: {e['message']}" + (f" ({e['details']})" if e["details"] else "")
                for nid in sorted(self.node_errors, key=sort_key) for e in self.node_errors[nid]["errors"]]


def _unwrap(value: Any) -> Any:
    """The API format wraps literal lists as {"__value__": [...]} so they are not read as links."""
    if isinstance(value, dict) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def link_type(prompt: dict, registry: Registry, node_id: str, slot: int, seen: frozenset = frozenset()) -> str:
    """The type of a node's output: its declared one, or for a `*` output of a node that declares
    `match_type` (the switch), the type of what its first typed input of those is linked to."""
    node = prompt.get(node_id)
    cls = registry.get(node["class_type"]) if node else None
    if cls is None or not 0 <= slot < len(cls.outputs):
        return "*"
    declared = cls.outputs[slot].type
    if declared != "*" or not cls.match_type or node_id in seen:
        return declared
    for name in cls.match_type:
        value = node.get("inputs", {}).get(name)
        if is_link(value) and (found := link_type(prompt, registry, str(value[0]), value[1], seen | {node_id})) != "*":
            return found
    return "*"


def _check_match(errs: _Collector, prompt: dict, registry: Registry, node_id: str, cls) -> None:
    """The inputs of a `match_type` node (both branches of a switch) are linked to outputs of one type."""
    given = prompt[node_id].get("inputs", {})
    typed = [(name, link_type(prompt, registry, str(given[name][0]), given[name][1]))
             for name in cls.match_type if is_link(given.get(name))]
    typed = [(name, t) for name, t in typed if t != "*"]
    for name, found in typed[1:]:
        first, wanted = typed[0]
        if not accepts(wanted, found):
            errs.add(node_id, "return_type_mismatch",
                     f"input '{name}' is linked to a {found} output but '{first}' to a {wanted} output: "
                     f"the node passes on one type", f"{name}: {found} -> {wanted}", input_name=name)


def _check_input(errs: _Collector, prompt: dict, registry: Registry, env, node_id: str,
                 inp, value: Any, coerced: dict) -> None:
    name, where = inp.name, f"input '{inp.name}'"
    def info() -> dict:  # built only for an error: a Combo's spec may list a folder
        return {"input_name": name, "input_config": inp.spec(env), "received_value": value}

    if is_link(value):
        src_id, slot = str(value[0]), value[1]
        src = prompt.get(src_id)
        if src is None:
            errs.add(node_id, "bad_linked_input", f"{where} is linked to node {src_id}, which is not in the workflow",
                     f"{name} <- [{src_id}, {slot}]", **info())
            return
        src_cls = registry.get(src["class_type"])
        if src_cls is None:
            coerced[name] = [src_id, slot]  # kept: the missing type is reported on the source node
            return
        if not 0 <= slot < len(src_cls.outputs):
            errs.add(node_id, "bad_linked_input",
                     f"{where} is linked to output {slot} of {_title(prompt, src_id)}, "
                     f"which has {len(src_cls.outputs)} output(s)", f"{name} <- [{src_id}, {slot}]", **info())
            return
        out_type = link_type(prompt, registry, src_id, slot)
        if not accepts(inp.type, out_type):
            errs.add(node_id, "return_type_mismatch",
                     f"{where} expects {inp.type} but is linked to the {out_type} output "
                     f"'{src_cls.outputs[slot].label}' of {_title(prompt, src_id)}",
                     f"{name}: {out_type} -> {inp.type}", **info())
        coerced[name] = [src_id, slot]
        return
    if not inp.is_widget:
        errs.add(node_id, "invalid_input_type",
                 f"{where} takes a link from a {inp.type} output, not a constant value", f"{name}: {inp.type}", **info())
        return
    try:
        coerced[name] = inp.coerce(_unwrap(value), env)
    except InputError as exc:
        errs.add(node_id, exc.kind, f"{where}: {exc}", f"{name}: {inp.type}", **info())


def validate(prompt: dict, registry: Registry, env: Any = None, outputs: list[str] | None = None) -> Validation:
    """Check `prompt` (API format) against the node declarations.

    `outputs` limits the run to those output nodes (default: every output node in the prompt).
    """
    errs = _Collector(prompt)
    unknown = sorted({n["class_type"] for n in prompt.values() if n["class_type"] not in registry})
    for node_id, node in prompt.items():
        if node["class_type"] in unknown:
            errs.add(node_id, "unknown_node_type", f"node type '{node['class_type']}' is not installed",
                     node["class_type"])

    if outputs is None:
        outputs = [nid for nid, n in prompt.items()
                   if (cls := registry.get(n["class_type"])) is not None and cls.output_node]
    else:
        for nid in outputs:
            if nid not in prompt:
                errs.add(nid, "bad_output", f"output node {nid} is not in the workflow")
        outputs = [nid for nid in outputs if nid in prompt]
    outputs = sorted(outputs, key=sort_key)

    g = dependency_graph(prompt)
    sub = needed_subgraph(g, outputs)
    normalized = {}
    for node_id, node in prompt.items():
        cls = registry.get(node["class_type"])
        if cls is None or node_id not in sub:
            normalized[node_id] = node
            continue
        given, coerced = node.get("inputs", {}), {}
        for inp in cls.inputs.values():
            if isinstance(inp, Autogrow):  # its value is its slots, each an input of its own
                continue
            if inp.name not in given or given[inp.name] is None:
                if inp.optional:
                    continue
                if inp.is_widget and inp.has_default:  # e.g. a file saved before the input existed
                    _check_input(errs, prompt, registry, env, node_id, inp, inp.default, coerced)
                    continue
                errs.add(node_id, "required_input_missing", f"required input '{inp.name}' ({inp.type}) is missing",
                         inp.name, input_name=inp.name, input_config=inp.spec(env))
                continue
            _check_input(errs, prompt, registry, env, node_id, inp, given[inp.name], coerced)
        if cls.match_type:
            _check_match(errs, prompt, registry, node_id, cls)
        constants = {k: v for k, v in coerced.items() if not is_link(v)}
        if not any(e["extra_info"].get("input_name") for e in errs.node_errors.get(node_id, {}).get("errors", [])):
            try:
                problems = cls.check(env, **constants)
            except Exception as exc:  # a custom check must not crash validation
                problems = {"": f"{type(exc).__name__}: {exc}"}
            for name, message in problems.items():
                errs.add(node_id, "custom_validation_failed", f"input '{name}': {message}" if name else message,
                         name, input_name=name, received_value=constants.get(name))
        normalized[node_id] = {**node, "inputs": coerced}

    cycles = find_cycles(sub)
    for cycle in cycles:
        names = " -> ".join(_title(prompt, n) for n in cycle + cycle[:1])
        for node_id in cycle:
            errs.add(node_id, "dependency_cycle", f"node is part of a cycle: {names}", names, cycle=cycle)
    lazy = plan_lazy(normalized, registry, outputs, set(errs.node_errors)) if not cycles else None
    deferred = defer(errs, lazy.maybe | lazy.untaken) if lazy else {}
    unknown = sorted({e["class_type"] for e in errs.node_errors.values()
                      if any(x["type"] == "unknown_node_type" for x in e["errors"])})

    error = None
    if not outputs:
        error = {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                 "details": "add an output node (such as SaveImage or PreviewImage) so there is something to run",
                 "extra_info": {}}
    if errs.node_errors:
        for node_id, entry in errs.node_errors.items():
            deps = {node_id} | (nx.descendants(g, node_id) if node_id in g else set())
            entry["dependent_outputs"] = sorted(set(outputs) & deps, key=sort_key)
        lines = errs.lines()
        message = "Prompt outputs failed validation"
        if unknown:
            message += "; node types not installed: " + ", ".join(unknown)
        error = error or {"type": "prompt_outputs_failed_validation", "message": message,
                          "details": "\n".join(lines), "extra_info": {}}
        if error["type"] == "prompt_no_outputs":
            error["details"] += "\n" + "\n".join(lines)
    order = [] if cycles else [n for n in nx.topological_sort(sub) if n in lazy.sure]
    validation = Validation(prompt=normalized, outputs=outputs, order=order, error=error, node_errors=errs.node_errors,
                            deferred=deferred)
    if lazy:
        validation.decisions, validation.maybe, validation.untaken = lazy.decisions, lazy.maybe, lazy.untaken
    return validation


# Problems of a workflow's wiring fail it wherever they are; the others (a missing model or node
# type, a value out of range or not among the choices) are deferred on lazy-only branches.
WIRING = {"bad_linked_input", "return_type_mismatch", "dependency_cycle", "required_input_missing", "bad_output"}


def defer(errs: _Collector, lazy_only: set[str]) -> dict:
    """Move the deferrable problems of nodes in `lazy_only` out of errs into the returned dict."""
    deferred = {}
    for node_id in [n for n in errs.node_errors if n in lazy_only]:
        entry = errs.node_errors[node_id]
        later = [e for e in entry["errors"] if e["type"] not in WIRING]
        if later:
            deferred[node_id] = {**entry, "errors": later}
            entry["errors"] = [e for e in entry["errors"] if e["type"] in WIRING]
            if not entry["errors"]:
                del errs.node_errors[node_id]
    return deferred

"""Lazy inputs: which links a run follows, decided as early as can be known.

A node with inputs declared `lazy=True` (a switch) runs the ancestors of a lazy input only when its
`needs` asks for it, which it answers from its other inputs. Before a run, validation decides what
it can: when those other inputs are constants, or come from `pure` nodes (PrimitiveBoolean, a math
expression) that it may compute on the spot. The rest is decided by the executor when it gets there.

The nodes a prompt's outputs reach fall in three sets:
- sure: needed whatever is decided at run time (non-lazy links and decided lazy ones);
- maybe: reached only through lazy inputs still undecided: they run if those inputs are asked for;
- untaken: reached only through lazy inputs decided against: they never run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .formats import is_link
from .node import normalize_outputs
from .registry import Registry


@dataclass
class LazyPlan:
    decisions: dict[str, frozenset] = field(default_factory=dict)  # node -> the lazy inputs it needs
    sure: set[str] = field(default_factory=set)
    maybe: set[str] = field(default_factory=set)
    untaken: set[str] = field(default_factory=set)


def is_lazy(cls, name: str) -> bool:
    inp = cls.inputs.get(name) if cls is not None else None
    return inp is not None and inp.lazy


def linked_lazy(node: dict, cls) -> list[str]:
    """The lazy inputs of a node that are linked (a constant on a lazy input is simply there)."""
    return [name for name, value in node.get("inputs", {}).items() if is_link(value) and is_lazy(cls, name)]


def followed_links(node: dict, cls, decision: frozenset | None, undecided: bool = False) -> Iterator[tuple]:
    """(input name, source id, slot) of each link an evaluation of the node follows: the non-lazy
    ones, and the lazy ones `decision` names (all of them when undecided and `undecided` is set)."""
    for name, value in node.get("inputs", {}).items():
        if not is_link(value):
            continue
        if is_lazy(cls, name) and not (name in decision if decision is not None else undecided):
            continue
        yield name, str(value[0]), value[1]


def decide(cls, inputs: dict, lazy: list[str]) -> frozenset:
    """Ask the node which of its linked lazy inputs `lazy` it needs; `inputs` holds the others."""
    instance = cls()
    for name, value in inputs.items():
        setattr(instance, name, None if name in lazy else value)  # a linked lazy input is not there yet
    return frozenset(name for name in instance.needs(list(lazy)) or () if name in lazy)


def with_defaults(cls, inputs: dict) -> dict:
    """Inputs as a node's run sees them: optional inputs left out read as their default."""
    for name, inp in cls.inputs.items():
        inputs.setdefault(name, getattr(inp, "default", None))
    return inputs


def reach(prompt: dict, registry: Registry, outputs: list[str], decisions: dict, undecided: bool) -> set[str]:
    """The nodes an evaluation of `outputs` follows, given `decisions` (see followed_links)."""
    seen, stack = set(), list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in prompt:
            continue
        seen.add(node_id)
        node = prompt[node_id]
        stack.extend(src for _, src, _ in followed_links(node, registry.get(node["class_type"]),
                                                         decisions.get(node_id), undecided))
    return seen


class _Folder:
    """Computes pure nodes during validation, to decide lazy inputs before the run. Anything it
    cannot compute (an impure or broken ancestor, a failure) is left undecided, never an error."""

    def __init__(self, prompt: dict, registry: Registry, broken: set[str]):
        self.prompt, self.registry, self.broken = prompt, registry, broken
        self.values: dict[str, tuple | None] = {}

    def inputs(self, node_id: str, cls, names=None) -> dict | None:
        inputs = {}
        for name, value in self.prompt[node_id].get("inputs", {}).items():
            if names is not None and name not in names:
                continue
            if is_link(value):
                src = self.value(str(value[0]))
                if src is None or not 0 <= value[1] < len(src):
                    return None
                inputs[name] = src[value[1]]
            else:
                inputs[name] = value
        return inputs

    def decision(self, node_id: str) -> frozenset | None:
        node = self.prompt[node_id]
        cls = self.registry.get(node["class_type"])
        if cls is None or node_id in self.broken:
            return None
        lazy = linked_lazy(node, cls)
        inputs = self.inputs(node_id, cls, [n for n in node.get("inputs", {}) if n not in lazy])
        if inputs is None:
            return None
        try:
            return decide(cls, with_defaults(cls, inputs), lazy)
        except Exception:  # the run will meet it again and report it
            return None

    def value(self, node_id: str) -> tuple | None:
        if node_id in self.values:
            return self.values[node_id]
        self.values[node_id] = None  # a cycle or a failure below reads as unknown
        node = self.prompt.get(node_id)
        cls = self.registry.get(node["class_type"]) if node else None
        if cls is None or not cls.pure or node_id in self.broken:
            return None
        decision = self.decision(node_id) if cls.lazy_inputs() else frozenset()
        if decision is None:
            return None
        skipped = set(linked_lazy(node, cls)) - decision
        inputs = self.inputs(node_id, cls, [n for n in node.get("inputs", {}) if n not in skipped])
        if inputs is None:
            return None
        instance = cls()
        for name, value in with_defaults(cls, inputs).items():
            setattr(instance, name, value)
        try:
            self.values[node_id] = normalize_outputs(cls, instance.run(None))
        except Exception:
            pass
        return self.values[node_id]


def plan_lazy(prompt: dict, registry: Registry, outputs: list[str], broken: set[str] = frozenset()) -> LazyPlan:
    """Decide what can be decided before the run and sort the reached nodes (module docstring).
    `broken` are nodes with validation errors: nothing is computed from them."""
    everything = reach(prompt, registry, outputs, {}, undecided=True)
    folder = _Folder(prompt, registry, set(broken))
    decisions = {}
    for node_id in everything:
        node = prompt[node_id]
        cls = registry.get(node["class_type"])
        if cls is not None and linked_lazy(node, cls):
            try:
                decision = folder.decision(node_id)
            except RecursionError:
                decision = None
            if decision is not None:
                decisions[node_id] = decision
    sure = reach(prompt, registry, outputs, decisions, undecided=False)
    possible = reach(prompt, registry, outputs, decisions, undecided=True)
    return LazyPlan(decisions, sure, possible - sure, everything - possible)

"""The executor: runs a validated prompt in plan order, reusing cached outputs by signature.

A node's signature hashes its class, its constant inputs and the signatures (and slots) of the
outputs it links to, never node ids: the same sub-graph in another workflow hits the same entries,
and a changed seed changes the signatures of its descendants only.

Events go to `emit(event, data)` with ComfyUI's WebSocket names and payloads (execution_start,
execution_cached, executing, progress, executed, execution_success, execution_error,
execution_interrupted) plus `preview` {node, prompt_id, image} for latent previews.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import networkx as nx

from .cache import Cache
from .formats import is_link
from .lazy import decide, followed_links, linked_lazy, reach, with_defaults
from .memory import DeviceMemory
from .node import model_inputs, normalize_outputs
from .registry import Registry
from .validate import Validation

Emit = Callable[[str, dict], None]
log = logging.getLogger(__name__)
DECISIONS_KEPT = 10_000  # lazy-input decisions remembered (by signature), oldest dropped first


class Interrupted(Exception):
    """Raised inside a run when its interrupt flag is set; the run stops at the next check."""


class Context:
    """What a running node may use: the environment, progress, interrupt and UI output."""

    preview_interval = 0.25  # seconds between two preview frames

    def __init__(self, env: Any, prompt_id: str, node_id: str, class_type: str, prompt: dict,
                 extra_data: dict, emit: Emit, interrupt, previews: bool):
        self.env, self.prompt_id, self.node_id, self.class_type = env, prompt_id, node_id, class_type
        self.prompt, self.extra_data = prompt, extra_data
        self._emit, self._interrupt, self.previews = emit, interrupt, previews
        self.ui: dict = {}
        self._last_preview = 0.0

    def check_interrupt(self) -> None:
        if self._interrupt is not None and self._interrupt.is_set():
            raise Interrupted()

    def progress(self, value: int, total: int, preview: Callable[[], Any] | None = None) -> None:
        """Report step `value` of `total`. `preview()` makes a preview image; it is only called when
        previews are wanted and the last frame is older than `preview_interval`."""
        self._emit("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": self.node_id})
        now = time.monotonic()
        if preview is not None and self.previews and (now - self._last_preview >= self.preview_interval
                                                      or value == total):
            self._last_preview = now
            self._emit("preview", {"node": self.node_id, "prompt_id": self.prompt_id, "image": preview()})
        self.check_interrupt()

    def show(self, **ui: list) -> None:
        """Add UI output (e.g. images=[{filename, subfolder, type}]) shown in history and the editor."""
        for key, values in ui.items():
            self.ui.setdefault(key, []).extend(values)


@dataclass
class RunResult:
    prompt_id: str
    status: str  # success | error | interrupted
    outputs: dict = field(default_factory=dict)  # node id -> ui data of output nodes
    executed: list = field(default_factory=list)
    cached: list = field(default_factory=list)
    error: dict | None = None
    messages: list = field(default_factory=list)  # [event, data] as in ComfyUI's history status
    values: dict = field(default_factory=dict)  # node id -> outputs tuple, for the output nodes

    @property
    def ok(self) -> bool:
        return self.status == "success"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def _instance(cls, inputs: dict):
    instance = cls()
    for name, value in inputs.items():
        setattr(instance, name, value)
    return instance


class InvalidLazyBranch(Exception):
    """A node whose validation problems were deferred (it sat on a lazy branch) is needed after all."""


class _Run:
    """The state of one run: signatures, decisions of lazy inputs and values, filled as it goes."""

    def __init__(self, prompt: dict, decisions: dict):
        self.prompt = prompt
        self.decisions = dict(decisions)
        self.sigs: dict[str, str] = {}
        self.presigs: dict[str, str] = {}  # lazy nodes: the signature without their lazy inputs
        self.volatile: set[str] = set()
        self.values: dict[str, tuple] = {}
        self.nonce = os.urandom(8).hex()
        self.current: str | None = None  # the node being run or decided, for error reports
        self.result = self.emit = self.interrupt = None
        self.prompt_id, self.extra_data, self.previews = "", {}, False


def _deferred_message(prompt: dict, node_id: str, entry: dict) -> str:
    problems = "; ".join(e["message"] for e in entry["errors"])
    return (f"node #{node_id} {prompt[node_id]['class_type']} sits on a lazy branch that this run takes, "
            f"and it failed validation: {problems}")


class Executor:
    """`memory`, when given, keeps what the cache holds on the GPU within its budget (graph.memory)."""

    def __init__(self, registry: Registry, env: Any = None, cache: Cache | None = None,
                 verbose_errors: bool = False, memory: DeviceMemory | None = None):
        self.registry, self.env = registry, env
        self.cache = cache if cache is not None else Cache()
        self.verbose_errors = verbose_errors
        self.memory = memory
        self.decided: OrderedDict[str, frozenset] = OrderedDict()  # pre-signature -> lazy inputs needed

    def signatures(self, prompt: dict, order: list[str], decisions: dict | None = None) -> tuple[dict[str, str], set[str]]:
        """Signature of every node in `order` (topological), and the volatile ones: not idempotent
        nodes and all that depend on them, which are never served from or stored in the cache.
        A node whose lazy inputs are not in `decisions` (nor anything downstream of it) gets none."""
        run = _Run(prompt, decisions or {})
        for node_id in order:
            self._sign(run, node_id)
        return run.sigs, run.volatile

    def _sign(self, run: _Run, node_id: str) -> str | None:
        """A node's signature from its constants and the signatures of the links it follows: a lazy
        input counts only when the node needs it, so the branch not taken changes nothing. None
        while that is undecided (then `run.presigs` has the signature of the rest) or a source has none."""
        if node_id in run.sigs:
            return run.sigs[node_id]
        node = run.prompt[node_id]
        cls = self.registry[node["class_type"]]
        lazy = linked_lazy(node, cls)
        decision = run.decisions.get(node_id) if lazy else frozenset()
        consts, links = {}, {}
        for name, value in node["inputs"].items():
            if not is_link(value):
                consts[name] = value
            elif name not in lazy or (decision is not None and name in decision):
                src = str(value[0])
                if src not in run.sigs:
                    return None
                links[name] = [run.sigs[src], value[1]]
                if src in run.volatile:
                    run.volatile.add(node_id)
        parts = [cls.type_name(), _canonical([consts, links, cls.fingerprint(self.env, **consts)])]
        if lazy:
            parts.append(_canonical(sorted(decision)) if decision is not None else "?")
        if not cls.idempotent:
            run.volatile.add(node_id)
        if node_id in run.volatile:
            parts.append(run.nonce)
        sig = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()
        if decision is None:
            run.presigs[node_id] = sig
            return None
        run.sigs[node_id] = sig
        return sig

    def _order(self, run: _Run, targets) -> list[str]:
        """What evaluating `targets` follows (given the decisions so far), topologically, ties in
        the prompt's order."""
        need = reach(run.prompt, self.registry, list(targets), run.decisions, undecided=False)
        g = nx.DiGraph()
        g.add_nodes_from(n for n in run.prompt if n in need)
        for node_id in g.nodes:
            node = run.prompt[node_id]
            cls = self.registry.get(node["class_type"])
            g.add_edges_from((src, node_id) for _, src, _ in followed_links(node, cls, run.decisions.get(node_id))
                             if src in need)
        return list(nx.topological_sort(g))

    def run(self, validation: Validation, prompt_id: str = "", emit: Emit | None = None, interrupt=None,
            extra_data: dict | None = None, previews: bool = False) -> RunResult:
        """Run a validated prompt. Never raises for a node's failure: the result says what happened."""
        emit = emit or (lambda event, data: None)
        result = RunResult(prompt_id=prompt_id, status="success")

        def send(event: str, data: dict) -> None:
            if event not in ("progress", "preview", "executing", "executed"):
                result.messages.append([event, {**data, "timestamp": int(time.time() * 1000)}])
            emit(event, data)

        prompt, outputs = validation.prompt, validation.outputs
        run = _Run(prompt, validation.decisions)
        run.result, run.emit, run.interrupt = result, emit, interrupt
        run.prompt_id, run.extra_data, run.previews = prompt_id, extra_data or {}, previews
        # Every planned node with a cache entry is reported cached, as ComfyUI does, though only
        # those whose outputs a running node reads are fetched.
        known = [n for n in self._order(run, outputs) if n not in validation.deferred and self._sign(run, n)]
        cached = [n for n in known if n not in run.volatile and run.sigs[n] in self.cache]
        result.cached = cached  # completed on success with what was decided at run time
        send("execution_start", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        send("execution_cached", {"nodes": cached, "prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        try:
            order = self._decide_all(run, outputs, validation.deferred)
            self._evaluate(run, outputs)
        except Interrupted:
            result.status = "interrupted"
            node_id = run.current
            send("execution_interrupted", {"prompt_id": prompt_id, "node_id": node_id,
                                           "node_type": prompt[node_id]["class_type"] if node_id else None,
                                           "executed": list(result.executed)})
        except Exception as exc:  # a node failed: report it, keep the cache as it was
            result.status = "error"
            node_id = run.current
            result.error = {
                "prompt_id": prompt_id, "node_id": node_id, "node_type": prompt[node_id]["class_type"] if node_id else None,
                "executed": list(result.executed), "exception_message": str(exc) or type(exc).__name__,
                "exception_type": type(exc).__name__,
                "traceback": traceback.format_exception(exc) if self.verbose_errors else [],
                "current_inputs": {}, "current_outputs": {}}
            send("execution_error", result.error)
        else:
            result.cached = [n for n in order if n not in result.executed and n not in run.volatile
                             and run.sigs[n] in self.cache]
            result.values = {n: run.values[n] for n in outputs}
            send("execution_success", {"prompt_id": prompt_id})
        finally:
            self.cache.trim()
            if self.memory is not None:
                self.memory.fit()
        emit("executing", {"node": None, "display_node": None, "prompt_id": prompt_id})
        return result

    def _decide_all(self, run: _Run, outputs: list[str], deferred: dict) -> list[str]:
        """Decide every lazy input the outputs reach, in topological order, running what a decision
        needs (a decision is remembered by the node's other inputs, so a re-run runs nothing to
        decide). Returns the final plan."""
        while True:
            order = self._order(run, outputs)
            for node_id in order:
                if node_id in deferred:
                    run.current = node_id
                    raise InvalidLazyBranch(_deferred_message(run.prompt, node_id, deferred[node_id]))
                self._sign(run, node_id)
            undecided = [n for n in order if n in run.presigs and n not in run.sigs]
            if not undecided:
                return order
            node_id = undecided[0]  # the first: everything it decides from is signed
            node = run.prompt[node_id]
            cls = self.registry[node["class_type"]]
            presig = run.presigs[node_id]
            decision = None if node_id in run.volatile else self.decided.get(presig)
            if decision is None:
                self._evaluate(run, [src for _, src, _ in followed_links(node, cls, frozenset())])
                run.current = node_id
                decision = decide(cls, with_defaults(cls, self._inputs(run, node_id, frozenset())),
                                  linked_lazy(node, cls))
                if node_id not in run.volatile:  # a volatile signature never comes again
                    self.decided[presig] = decision
                    while len(self.decided) > DECISIONS_KEPT:
                        self.decided.popitem(last=False)
            run.decisions[node_id] = decision

    def _inputs(self, run: _Run, node_id: str, decision: frozenset | None) -> dict:
        """A node's inputs from the values so far: its constants and the links it follows."""
        node = run.prompt[node_id]
        cls = self.registry[node["class_type"]]
        lazy = set(linked_lazy(node, cls))
        inputs = {name: value for name, value in node["inputs"].items() if not is_link(value)}
        for name, src, slot in followed_links(node, cls, decision):
            inputs[name] = run.values[src][slot]
        for name in lazy - set(inputs):
            inputs[name] = None  # a lazy input the node did not ask for
        return inputs

    def _evaluate(self, run: _Run, targets: list[str]) -> None:
        """Make the outputs of `targets` available: fetch what is cached, run the rest. Everything
        they follow is signed. A node runs if its outputs are not cached; only then are its inputs
        needed, so a cached node's ancestors are not even reached."""
        to_run, stack, seen = set(), list(targets), set()
        while stack:
            node_id = stack.pop()
            if node_id in seen or node_id in run.values:
                continue
            seen.add(node_id)
            if node_id not in run.volatile and run.sigs[node_id] in self.cache:
                continue
            to_run.add(node_id)
            node = run.prompt[node_id]
            stack.extend(src for _, src, _ in followed_links(node, self.registry[node["class_type"]],
                                                             run.decisions.get(node_id)))
        result, emit, prompt_id = run.result, run.emit, run.prompt_id
        pinned = set(run.sigs.values())
        for node_id in [n for n in self._order(run, targets) if n in seen]:
            run.current = node_id
            cls = self.registry[run.prompt[node_id]["class_type"]]
            if node_id not in to_run:
                entry = self.cache.get(run.sigs[node_id])
                run.values[node_id] = entry.outputs
                if cls.output_node and entry.ui:
                    result.outputs[node_id] = entry.ui
                    emit("executed", {"node": node_id, "display_node": node_id,
                                      "output": entry.ui, "prompt_id": prompt_id})
                continue
            if run.interrupt is not None and run.interrupt.is_set():
                raise Interrupted()
            emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
            ctx = Context(self.env, prompt_id, node_id, cls.type_name(), run.prompt, run.extra_data,
                          emit, run.interrupt, run.previews)
            inputs = with_defaults(cls, self._inputs(run, node_id, run.decisions.get(node_id)))
            run.values[node_id] = normalize_outputs(cls, self._call(cls, inputs, ctx, pinned))
            result.executed.append(node_id)
            if node_id not in run.volatile:
                self.cache.put(run.sigs[node_id], run.values[node_id], ctx.ui or None, pinned)
            if self.memory is not None:
                self.memory.after(run.values[node_id], inputs.values(), pinned)
            if ctx.ui:
                result.outputs[node_id] = ctx.ui
                emit("executed", {"node": node_id, "display_node": node_id, "output": ctx.ui,
                                  "prompt_id": prompt_id})

    def _call(self, cls, inputs: dict, ctx: Context, pinned: set[str]) -> Any:
        """Run a node. With device memory managed, the models it takes are on the device first, and a
        node that runs out of device memory runs once more after everything else has left it."""
        if self.memory is None:
            return _instance(cls, inputs).run(ctx)
        loads = bool(model_inputs(cls))  # it declares an input naming a model it loads
        try:
            self.memory.before(inputs.values(), pinned, loads)
            return _instance(cls, inputs).run(ctx)
        except Exception as exc:
            if not self.memory.is_out_of_memory(exc) or not self.memory.relieve(inputs.values(), pinned):
                raise
            log.warning("%s ran out of device memory; running it again with the device cleared", cls.type_name())
        # Out of the except block: the failed attempt's tensors, held by its traceback, are freed.
        ctx.ui = {}
        self.memory.before(inputs.values(), pinned, loads)
        return _instance(cls, inputs).run(ctx)

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
from dataclasses import dataclass, field
from typing import Any, Callable

from .cache import Cache
from .formats import is_link
from .memory import DeviceMemory
from .node import model_inputs
from .registry import Registry
from .validate import Validation

Emit = Callable[[str, dict], None]
log = logging.getLogger(__name__)


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


def _normalize_outputs(cls, value: Any) -> tuple:
    n = len(cls.outputs)
    if n == 0:
        return ()
    if n == 1:
        return (value,)
    if not isinstance(value, tuple) or len(value) != n:
        raise TypeError(f"{cls.type_name()}.run returned {type(value).__name__}, expected a tuple of {n} outputs")
    return value


def _instance(cls, inputs: dict):
    instance = cls()
    for name, value in inputs.items():
        setattr(instance, name, value)
    return instance


class Executor:
    """`memory`, when given, keeps what the cache holds on the GPU within its budget (graph.memory)."""

    def __init__(self, registry: Registry, env: Any = None, cache: Cache | None = None,
                 verbose_errors: bool = False, memory: DeviceMemory | None = None):
        self.registry, self.env = registry, env
        self.cache = cache if cache is not None else Cache()
        self.verbose_errors = verbose_errors
        self.memory = memory

    def signatures(self, prompt: dict, order: list[str]) -> tuple[dict[str, str], set[str]]:
        """Signature of every node in `order` (topological), and the volatile ones: not idempotent
        nodes and all that depend on them, which are never served from or stored in the cache."""
        sigs, volatile = {}, set()
        nonce = os.urandom(8).hex()
        for node_id in order:
            node = prompt[node_id]
            cls = self.registry[node["class_type"]]
            consts, links = {}, {}
            for name, value in node["inputs"].items():
                if is_link(value):
                    src = str(value[0])
                    links[name] = [sigs[src], value[1]]
                    if src in volatile:
                        volatile.add(node_id)
                else:
                    consts[name] = value
            parts = [cls.type_name(), _canonical([consts, links, cls.fingerprint(self.env, **consts)])]
            if not cls.idempotent:
                volatile.add(node_id)
            if node_id in volatile:
                parts.append(nonce)
            sigs[node_id] = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()
        return sigs, volatile

    def run(self, validation: Validation, prompt_id: str = "", emit: Emit | None = None, interrupt=None,
            extra_data: dict | None = None, previews: bool = False) -> RunResult:
        """Run a validated prompt. Never raises for a node's failure: the result says what happened."""
        emit = emit or (lambda event, data: None)
        result = RunResult(prompt_id=prompt_id, status="success")

        def send(event: str, data: dict) -> None:
            if event not in ("progress", "preview", "executing", "executed"):
                result.messages.append([event, {**data, "timestamp": int(time.time() * 1000)}])
            emit(event, data)

        prompt, outputs, order = validation.prompt, validation.outputs, validation.order
        sigs, volatile = self.signatures(prompt, order)
        pinned = set(sigs.values())
        to_run, reached = self._nodes_to_run(prompt, sigs, volatile, outputs)
        # Every planned node with a cache entry is reported cached, as ComfyUI does, though only
        # those whose outputs a running node reads are fetched.
        result.cached = [n for n in order if n not in to_run and sigs[n] in self.cache]
        order = [n for n in order if n in reached]
        values: dict[str, tuple] = {}
        send("execution_start", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        send("execution_cached", {"nodes": result.cached, "prompt_id": prompt_id,
                                  "timestamp": int(time.time() * 1000)})
        node_id = None
        try:
            for node_id in order:
                cls = self.registry[prompt[node_id]["class_type"]]
                if node_id not in to_run:
                    entry = self.cache.get(sigs[node_id])
                    values[node_id] = entry.outputs
                    if cls.output_node and entry.ui:
                        result.outputs[node_id] = entry.ui
                        emit("executed", {"node": node_id, "display_node": node_id,
                                          "output": entry.ui, "prompt_id": prompt_id})
                    continue
                if interrupt is not None and interrupt.is_set():
                    raise Interrupted()
                emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
                ctx = Context(self.env, prompt_id, node_id, cls.type_name(), prompt, extra_data or {},
                              emit, interrupt, previews)
                inputs = {name: values[str(value[0])][value[1]] if is_link(value) else value
                          for name, value in prompt[node_id]["inputs"].items()}
                for name, inp in cls.inputs.items():  # optional inputs left out read as their default
                    inputs.setdefault(name, getattr(inp, "default", None))
                values[node_id] = _normalize_outputs(cls, self._call(cls, inputs, ctx, pinned))
                result.executed.append(node_id)
                if node_id not in volatile:
                    self.cache.put(sigs[node_id], values[node_id], ctx.ui or None, pinned)
                if self.memory is not None:
                    self.memory.after(values[node_id], inputs.values(), pinned)
                if ctx.ui:
                    result.outputs[node_id] = ctx.ui
                    emit("executed", {"node": node_id, "display_node": node_id, "output": ctx.ui,
                                      "prompt_id": prompt_id})
        except Interrupted:
            result.status = "interrupted"
            send("execution_interrupted", {"prompt_id": prompt_id, "node_id": node_id,
                                           "node_type": prompt[node_id]["class_type"] if node_id else None,
                                           "executed": list(result.executed)})
        except Exception as exc:  # a node failed: report it, keep the cache as it was
            result.status = "error"
            result.error = {
                "prompt_id": prompt_id, "node_id": node_id, "node_type": prompt[node_id]["class_type"],
                "executed": list(result.executed), "exception_message": str(exc) or type(exc).__name__,
                "exception_type": type(exc).__name__,
                "traceback": traceback.format_exception(exc) if self.verbose_errors else [],
                "current_inputs": {}, "current_outputs": {}}
            send("execution_error", result.error)
        else:
            result.values = {n: values[n] for n in outputs}
            send("execution_success", {"prompt_id": prompt_id})
        finally:
            self.cache.trim()
            if self.memory is not None:
                self.memory.fit()
        emit("executing", {"node": None, "display_node": None, "prompt_id": prompt_id})
        return result

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

    def _nodes_to_run(self, prompt: dict, sigs: dict, volatile: set, outputs: list) -> tuple[set, set]:
        """Walk back from the outputs: a node runs if its outputs are not cached; only then are its
        inputs needed, so a cached node's ancestors are not even reached. Returns (to run, reached)."""
        to_run, stack, seen = set(), list(outputs), set()
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            if node_id not in volatile and sigs[node_id] in self.cache:
                continue
            to_run.add(node_id)
            stack.extend(str(v[0]) for v in prompt[node_id]["inputs"].values() if is_link(v))
        return to_run, seen

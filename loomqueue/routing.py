"""Which idle worker runs which pending prompt: pull-based routing with model affinity.

Loading a model costs far more than running a prompt on a model already in memory, so an idle
worker prefers, within a small window at the head of the queue, the earliest prompt whose models
it already holds, else the one with the most models in common. What no worker holds goes to the
least recently used idle worker, so workers that just used a model stay free for its prompts.
A prompt overtaken `max_skips` times is taken next by whichever worker is idle: nothing starves.

Models are named by the constant inputs of the loader nodes of a prompt (those declaring an input
that names a model, graph.node.model_inputs), e.g. "LoadCheckpoint(model=tiny-sd)"; the server
records them with each prompt when it is queued, leaving out loaders that only an untaken lazy
branch reaches (a switch decided before the run).
A routing pass (`Router.route`) reads only the head of the queue (window + idle workers rows, from
the queue's index, no workflow decoded), so its cost does not grow with the queue.
Nothing here imports torch or Ray.
"""
from __future__ import annotations

from dataclasses import dataclass

from graph.formats import is_link
from graph.node import model_files, model_inputs

from .store import Item, Store


def loader_key(node: dict, registry) -> str | None:
    """The model a node of an API prompt loads, e.g. "LoadCheckpoint(model=tiny-sd)"; None for a
    node that is not a loader."""
    cls = registry.get(node.get("class_type"))
    if cls is None or not model_inputs(cls):
        return None
    consts = sorted((k, v) for k, v in node.get("inputs", {}).items() if not is_link(v))
    return f"{cls.type_name()}(" + ", ".join(f"{k}={v}" for k, v in consts) + ")"


def model_keys(prompt: dict, registry, nodes=None) -> frozenset[str]:
    """The models an API prompt loads: one key per distinct loader node configuration. `nodes`
    limits them to the nodes a run may execute (graph.Validation.runnable: a loader on a branch a
    switch does not take loads nothing)."""
    keys = (loader_key(prompt[node_id], registry) for node_id in model_files(prompt, registry)
            if nodes is None or node_id in nodes)
    return frozenset(k for k in keys if k is not None)


@dataclass
class Pending:
    """A queued prompt as the router sees it; `skipped` counts how often later prompts overtook it."""

    id: str
    models: frozenset = frozenset()
    skipped: int = 0


@dataclass
class Idle:
    """An idle worker: the models it holds, and when it last started a prompt (monotonic seconds)."""

    name: str
    models: frozenset = frozenset()
    last_used: float = 0.0


@dataclass
class Policy:
    affinity: bool = True
    window: int = 8  # how far past the head of the queue a worker may look
    max_skips: int = 4  # a prompt overtaken this often goes next, affinity or not


def assign(pending: list[Pending], idle: list[Idle], policy: Policy | None = None) -> list[tuple[Idle, Pending]]:
    """Pairs (worker, prompt) to start now, and bump `skipped` of the prompts that were overtaken.
    `pending` is in queue order. Without affinity: queue order, least recently used worker first."""
    policy = policy or Policy()
    free = sorted(idle, key=lambda w: w.last_used)  # least recently used first
    if not free or not pending:
        return []
    if not policy.affinity:
        pairs = list(zip(free, pending))
    else:
        pairs = _affine(pending, free, policy)
    _count_skips(pending, {p.id for _, p in pairs})
    return pairs


def _affine(pending: list[Pending], free: list[Idle], policy: Policy) -> list[tuple[Idle, Pending]]:
    pairs: list[tuple[Idle, Pending]] = []
    window = pending[:policy.window]
    open_ = list(window)

    def take(worker: Idle, prompt: Pending) -> None:
        pairs.append((worker, prompt))
        free.remove(worker)
        if prompt in open_:
            open_.remove(prompt)

    # 1. starving prompts first, to the idle worker that holds most of their models (LRU on ties)
    for prompt in [p for p in window if p.skipped >= policy.max_skips]:
        if not free:
            return pairs
        take(max(free, key=lambda w: len(w.models & prompt.models)), prompt)
    # 2. a worker that holds every model of a prompt takes it (the earliest such prompt)
    for prompt in list(open_):
        holders = [w for w in free if prompt.models <= w.models]
        if holders:
            take(max(holders, key=lambda w: len(w.models & prompt.models)), prompt)
    # 3. most models in common, earliest prompt on ties
    for worker in list(free):
        best = max(open_, key=lambda p: (len(p.models & worker.models), -window.index(p)), default=None)
        if best is not None and best.models & worker.models:
            take(worker, best)
    # 4. what nobody holds: queue order (past the window too), least recently used worker first
    chosen = {p.id for _, p in pairs}
    for prompt in [p for p in pending if p.id not in chosen]:
        if not free:
            break
        take(free[0], prompt)
    return pairs


def _count_skips(pending: list[Pending], started: set[str]) -> None:
    """Every prompt not started that sits before a started one was overtaken once more."""
    if not started:
        return
    last = max(i for i, p in enumerate(pending) if p.id in started)
    for prompt in pending[:last]:
        if prompt.id not in started:
            prompt.skipped += 1


class Router:
    """Starts pending prompts on idle workers: one `route` call is one routing pass."""

    def __init__(self, store: Store, registry, policy: Policy | None = None):
        self.store, self.registry, self.policy = store, registry, policy or Policy()

    def route(self, idle: list[Idle]) -> list[tuple[Idle, Item]]:
        """Claim the prompts `assign` gives to `idle` workers; returns (worker, claimed item) pairs."""
        if not idle:
            return []
        head = self.store.head(self.policy.window + len(idle))
        pending = [Pending(h.id, h.models if h.models is not None else self._models(h.id), h.skipped)
                   for h in head]
        before = {p.id: p.skipped for p in pending}
        started = []
        for worker, prompt in assign(pending, idle, self.policy):
            item = self.store.claim(prompt.id)
            if item is not None:  # None: deleted meanwhile
                started.append((worker, item))
        self.store.set_skipped({p.id: p.skipped for p in pending if p.skipped != before[p.id]})
        return started

    def _models(self, prompt_id: str) -> frozenset:
        """Models of a prompt queued before they were recorded (an older queue file)."""
        item = self.store.get(prompt_id)
        models = model_keys(item.prompt, self.registry) if item is not None else frozenset()
        self.store.set_models(prompt_id, models)
        return models

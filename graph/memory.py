"""Device memory: what the cache holds on the compute device (a GPU), kept within a byte budget.

Two kinds of cached values live there: models (a UNet, a text encoder, a VAE) and intermediate
tensors (conditioning, latents, images). Whenever the device holds more than its budget, room is
made in this order, stopping as soon as everything fits:

1. cached tensors that the running prompt does not need are evicted, least recently used first
   (cheap to compute again);
2. models the running prompt does not need are moved to the host, least recently used first;
3. models the prompt needs later, but not the node at hand, are moved to the host.

Room is made after each node (for what it made), before a node that takes a model moved away (for
that model), and before a loader (for a model as large as the largest seen so far).

A moved model stays in the cache, now counted against the cache's host budget (which may drop it
later, the last level), and is moved back before the next node that takes it runs. A node that runs
out of device memory all the same (a model loading next to the others, a large VAE decode) runs once
more after everything it does not take has left the device.

Torch stays out of this module: a `Placement` (nodes.loading.placement) moves models and recognises
out-of-memory errors; sizes and devices come from the cache's storage counts.
"""
from __future__ import annotations

import itertools
import weakref
from typing import Any, Iterable, Protocol

from .cache import Cache, models, storages


class Placement(Protocol):
    device: str  # the compute device, named as its tensors name it ("cuda:0")
    host: str  # where models go when they leave it ("cpu")

    def move(self, model: Any, device: str) -> None:
        """Move the model's tensors to `device`, in place (the same object, elsewhere)."""

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether `exc` says the device ran out of memory."""

    def default_budget(self) -> int:
        """The budget when none is given: the device's free memory less a margin for activations."""


class DeviceMemory:
    def __init__(self, cache: Cache, placement: Placement, budget: int):
        self.cache, self.placement, self.budget = cache, placement, budget
        self.device = placement.device
        cache.managed.add(self.device)
        self._moved: weakref.WeakSet = weakref.WeakSet()  # models moved to the host
        self._used: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> when last used
        self._clock = itertools.count(1)
        self.offloads = self.reloads = self.evictions = self.retries = 0
        self.largest = 0  # bytes of the largest model made on the device so far

    @property
    def bytes(self) -> int:
        """Bytes the cache holds on the device."""
        return self.cache.device_bytes.get(self.device, 0)

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return self.placement.is_out_of_memory(exc)

    def before(self, inputs: Iterable[Any], pinned: set[str], loads: bool = False) -> None:
        """Before a node runs: its models are the most recently used, and those moved to the host
        come back, after room is made for them. A node that `loads` a model gets room for one as
        large as the largest seen, so a new model rarely lands next to the one it replaces."""
        wanted = models(inputs)
        for model in wanted:
            self._touch(model)
        away = self._away(wanted)
        need = sum(self._bytes(m, self.placement.host) for m in away) + (self.largest if loads else 0)
        if need:
            self.fit(pinned, keep=wanted, need=need)
        for model in away:
            self._move(model, self.device)
            self.reloads += 1
        # Forgotten only once back: a move cut short by the device's limit is tried again.
        for model in [m for m in self._moved if not self._bytes(m, self.placement.host)]:
            self._moved.discard(model)

    def after(self, outputs: tuple, inputs: Iterable[Any], pinned: set[str]) -> None:
        """After a node ran and its outputs were cached: models it made are the most recently used;
        then the device is brought within budget, keeping what the node took and made."""
        made = models(outputs)
        for model in made:
            self._touch(model)
            self.largest = max(self.largest, self._bytes(model, self.device))
        self.fit(pinned, keep=[*models(inputs), *made])

    def relieve(self, inputs: Iterable[Any], pinned: set[str]) -> bool:
        """After a node ran out of device memory: everything it does not take leaves the device.
        True when something did (the node is then worth running again)."""
        held = self.bytes
        self.fit(pinned, keep=models(inputs), limit=0)
        self.retries += 1
        return self.bytes < held

    def fit(self, pinned: set[str] = frozenset(), keep: Iterable[Any] = (), need: int = 0,
            limit: int | None = None) -> bool:
        """Make room until the device holds at most `limit` (the budget) minus `need` bytes, in the
        order of the module's docstring; models in `keep` stay. True when that was reached."""
        limit = self.budget if limit is None else limit

        def fits() -> bool:
            return self.bytes + need <= limit

        if fits():
            return True
        for key, entry in self.cache.items():  # 1. tensors, least recently used first
            if fits():
                return True
            if key not in pinned and not entry.models and any(d == self.device for d, _ in entry.storages):
                self.cache.discard(key)
                self.evictions += 1
        kept = {id(m) for m in keep}
        holders = [(m, keys) for m, keys in self._holders() if id(m) not in kept]
        # 2. then 3.: models the prompt does not need before those it does, least recently used first
        holders.sort(key=lambda mk: (not pinned.isdisjoint(mk[1]), self._last_use(mk[0])))
        for model, _ in holders:
            if fits():
                break
            if self._bytes(model, self.device) and self._remember_moved(model):
                self._move(model, self.placement.host)
                self.offloads += 1
        self.cache.trim(pinned)  # what moved now counts against the host's budget
        return fits()

    def stats(self) -> dict:
        on_device = sum(1 for m, _ in self._holders() if self._bytes(m, self.device))
        return {"device": self.device, "budget": self.budget, "bytes": self.bytes, "models_on_device": on_device,
                "models_moved_out": len(self._moved), "offloads": self.offloads, "reloads": self.reloads,
                "evictions": self.evictions, "retries": self.retries}

    def _holders(self) -> list[tuple[Any, list[str]]]:
        """Every model in the cache with the keys of the entries holding it."""
        found: dict[int, tuple[Any, list[str]]] = {}
        for key, entry in self.cache.items():
            for model in entry.models:
                found.setdefault(id(model), (model, []))[1].append(key)
        return list(found.values())

    def _away(self, wanted: list) -> list:
        """The models among `wanted` that were moved to the host, or share tensors with one that was
        (a LoRA view and its base: either one may have been moved, both need the weights back)."""
        if not len(self._moved):
            return []
        moved = set(storages(list(self._moved)))
        return [m for m in wanted if m in self._moved or not moved.isdisjoint(storages([m]))]

    def _move(self, model: Any, device: str) -> None:
        """Move a model; every entry holding any of its tensors (also through another object, such as
        a view of it) is counted again."""
        held = set(storages([model]))
        keys = [key for key, entry in self.cache.items() if not held.isdisjoint(entry.storages)]
        self.placement.move(model, device)
        self.cache.restat(keys)

    # Models are tracked by weak reference, so a model the cache dropped is forgotten here too. One
    # that cannot be weakly referenced ranks least recent and is never moved.
    def _touch(self, model: Any) -> None:
        try:
            self._used[model] = next(self._clock)
        except TypeError:
            pass

    def _last_use(self, model: Any) -> int:
        try:
            return self._used.get(model, 0)
        except TypeError:
            return 0

    def _remember_moved(self, model: Any) -> bool:
        try:
            self._moved.add(model)
        except TypeError:
            return False
        return True

    @staticmethod
    def _bytes(model: Any, device: str) -> int:
        return sum(n for (d, _), n in storages([model]).items() if d == device)

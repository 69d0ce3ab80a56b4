"""The signature cache: node outputs keyed by what produced them, under a byte budget.

Tensors stay where they were made (CPU or GPU); the cache only counts them, per device. Bytes are
counted per storage, so a tensor shared by several entries (a model returned by two nodes, a view of
a latent) counts once. The budget covers every device but those a graph.memory.DeviceMemory manages
(a GPU, which has its own budget). This module never imports torch: tensors and modules (models) are
recognised by their methods.
"""
from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator


def default_budget() -> int:
    """Half the machine's memory, at most 8 GiB: room for a fp32 SD 1.x model and its intermediates."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return min(8 << 30, ram // 2)


def is_tensor(obj: Any) -> bool:
    return hasattr(obj, "untyped_storage") and hasattr(obj, "device")


def is_model(obj: Any) -> bool:
    """A module (nn.Module or alike): what graph.memory moves between devices as one piece."""
    return callable(getattr(obj, "parameters", None)) and callable(getattr(obj, "buffers", None))


def _leaves(obj: Any, seen: set[int], depth: int = 0) -> Iterator[Any]:
    """Tensors and models reachable from `obj` (a model's own tensors are not visited)."""
    if depth > 6 or id(obj) in seen:
        return
    seen.add(id(obj))
    if is_tensor(obj) or is_model(obj):
        yield obj
    elif callable(getattr(obj, "cache_tensors", None)):  # a container that lists its own tensors
        for t in obj.cache_tensors():
            yield from _leaves(t, seen, depth + 1)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v, seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v, seen, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _leaves(getattr(obj, f.name), seen, depth + 1)


def inventory(values: Iterable[Any]) -> tuple[dict[tuple, int], list]:
    """({(device, storage address): bytes} of every tensor reachable from `values`, the models among them)."""
    found: dict[tuple, int] = {}
    models: list = []
    seen: set[int] = set()
    for value in values:
        for leaf in _leaves(value, seen):
            if is_tensor(leaf):
                tensors: Iterable = (leaf,)
            else:
                models.append(leaf)
                tensors = (*leaf.parameters(), *leaf.buffers())
            for t in tensors:
                s = t.untyped_storage()
                found[(str(t.device), s.data_ptr())] = s.nbytes()
    return found, models


def storages(values: Iterable[Any]) -> dict[tuple, int]:
    """{(device, storage address): bytes} of every tensor reachable from `values`."""
    return inventory(values)[0]


def models(values: Iterable[Any]) -> list:
    """The models reachable from `values`, each once."""
    seen: set[int] = set()
    return [leaf for value in values for leaf in _leaves(value, seen) if not is_tensor(leaf)]


@dataclass
class Entry:
    outputs: tuple
    ui: dict | None = None
    storages: dict = field(default_factory=dict)
    models: list = field(default_factory=list)


class Cache:
    """Entries from least to most recently used; `budget` bounds the bytes on devices not in `managed`."""

    def __init__(self, budget_bytes: int | None = None):
        self.budget = default_budget() if budget_bytes is None else budget_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._refs: dict[tuple, list] = {}  # storage -> [bytes, number of entries holding it]
        self.bytes = 0  # on all devices
        self.device_bytes: dict[str, int] = {}  # device -> bytes
        self.managed: set[str] = set()
        self.evictions = 0

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        return list(self._entries)

    def items(self) -> list[tuple[str, Entry]]:
        """(key, entry) from least to most recently used."""
        return list(self._entries.items())

    @property
    def host_bytes(self) -> int:
        """The bytes `budget` counts: all but those on managed devices."""
        return self.bytes - sum(self.device_bytes.get(device, 0) for device in self.managed)

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, outputs: tuple, ui: dict | None = None, pinned: set[str] = frozenset()) -> None:
        if key in self._entries:
            self._drop(key)
        entry = Entry(outputs, ui, *inventory(outputs))
        self._entries[key] = entry
        self._hold(entry)
        self.trim(pinned | {key})

    def trim(self, pinned: set[str] = frozenset()) -> None:
        """Evict least recently used entries not in `pinned` until the cache fits its budget.
        Pinned entries (what the running workflow still needs) are never evicted, even over budget."""
        if self.host_bytes <= self.budget:
            return
        for key in [k for k in self._entries if k not in pinned]:
            if self.host_bytes <= self.budget:
                break
            held = self._entries[key].storages
            if self.managed and held and all(device in self.managed for device, _ in held):
                continue  # it frees nothing this budget counts
            self._drop(key)
            self.evictions += 1

    def discard(self, key: str) -> None:
        """Forget an entry (graph.memory evicts tensors from the device this way)."""
        if key in self._entries:
            self._drop(key)

    def restat(self, keys: Iterable[str]) -> None:
        """Count the storages of these entries again: their models were moved to another device."""
        for key in keys:
            entry = self._entries[key]
            self._release(entry)
            entry.storages = inventory(entry.outputs)[0]
            self._hold(entry)

    def _hold(self, entry: Entry) -> None:
        for skey, nbytes in entry.storages.items():
            ref = self._refs.setdefault(skey, [nbytes, 0])
            if ref[1] == 0:
                self._count(skey[0], nbytes)
            ref[1] += 1

    def _release(self, entry: Entry) -> None:
        for skey in entry.storages:
            ref = self._refs[skey]
            ref[1] -= 1
            if ref[1] == 0:
                self._count(skey[0], -ref[0])
                del self._refs[skey]

    def _count(self, device: str, nbytes: int) -> None:
        self.bytes += nbytes
        self.device_bytes[device] = self.device_bytes.get(device, 0) + nbytes

    def _drop(self, key: str) -> None:
        self._release(self._entries.pop(key))

    def clear(self) -> None:
        self._entries.clear()
        self._refs.clear()
        self.bytes = 0
        self.device_bytes.clear()

    def stats(self) -> dict:
        return {"entries": len(self._entries), "bytes": self.bytes, "budget": self.budget,
                "evictions": self.evictions, "devices": {d: n for d, n in self.device_bytes.items() if n}}

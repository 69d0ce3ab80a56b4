"""The signature cache: node outputs keyed by what produced them, under a byte budget.

Tensors stay where they were made (CPU or GPU); the cache only counts them. Bytes are counted per
storage, so a tensor shared by several entries (a model returned by two nodes, a view of a latent)
counts once. This module never imports torch: tensors and modules are recognised by their methods.
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


def _tensors(obj: Any, seen: set[int], depth: int = 0) -> Iterator[Any]:
    if depth > 6 or id(obj) in seen:
        return
    seen.add(id(obj))
    if hasattr(obj, "untyped_storage") and hasattr(obj, "device"):  # torch.Tensor
        yield obj
    elif callable(getattr(obj, "parameters", None)) and callable(getattr(obj, "buffers", None)):  # nn.Module
        yield from obj.parameters()
        yield from obj.buffers()
    elif callable(getattr(obj, "cache_tensors", None)):  # a container that lists its own tensors
        for t in obj.cache_tensors():
            yield from _tensors(t, seen, depth + 1)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, seen, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name), seen, depth + 1)


def storages(values: Iterable[Any]) -> dict[tuple, int]:
    """{(device, storage address): bytes} of every tensor reachable from `values`."""
    found: dict[tuple, int] = {}
    seen: set[int] = set()
    for value in values:
        for t in _tensors(value, seen):
            s = t.untyped_storage()
            found[(str(t.device), s.data_ptr())] = s.nbytes()
    return found


@dataclass
class Entry:
    outputs: tuple
    ui: dict | None = None
    storages: dict = field(default_factory=dict)


class Cache:
    def __init__(self, budget_bytes: int | None = None):
        self.budget = default_budget() if budget_bytes is None else budget_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._refs: dict[tuple, list] = {}  # storage -> [bytes, number of entries holding it]
        self.bytes = 0
        self.evictions = 0

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        return list(self._entries)

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, outputs: tuple, ui: dict | None = None, pinned: set[str] = frozenset()) -> None:
        if key in self._entries:
            self._drop(key)
        entry = Entry(outputs, ui, storages(outputs))
        self._entries[key] = entry
        for skey, nbytes in entry.storages.items():
            ref = self._refs.setdefault(skey, [nbytes, 0])
            if ref[1] == 0:
                self.bytes += nbytes
            ref[1] += 1
        self.trim(pinned | {key})

    def trim(self, pinned: set[str] = frozenset()) -> None:
        """Evict least recently used entries not in `pinned` until the cache fits its budget.
        Pinned entries (what the running workflow still needs) are never evicted, even over budget."""
        if self.bytes <= self.budget:
            return
        for key in [k for k in self._entries if k not in pinned]:
            if self.bytes <= self.budget:
                break
            self._drop(key)
            self.evictions += 1

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        for skey in entry.storages:
            ref = self._refs[skey]
            ref[1] -= 1
            if ref[1] == 0:
                self.bytes -= ref[0]
                del self._refs[skey]

    def clear(self) -> None:
        self._entries.clear()
        self._refs.clear()
        self.bytes = 0

    def stats(self) -> dict:
        return {"entries": len(self._entries), "bytes": self.bytes, "budget": self.budget,
                "evictions": self.evictions}

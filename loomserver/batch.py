"""Group commit: concurrent writers share one transaction, so a burst of POST /prompt costs one fsync."""
from __future__ import annotations

import asyncio
from typing import Callable


class GroupCommit:
    """Concurrent POST /prompt share one transaction (one fsync): while a batch commits, the next
    requests gather; a lone request commits at once, with no added wait."""

    def __init__(self, write_many: Callable[[list], list]):
        self.write_many = write_many
        self.pending: list[tuple[dict, asyncio.Future]] = []
        self.flushing: asyncio.Task | None = None

    async def add(self, row: dict):
        future = asyncio.get_running_loop().create_future()
        self.pending.append((row, future))
        if self.flushing is None:
            self.flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    results = await asyncio.to_thread(self.write_many, [row for row, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        future.set_exception(exc)
                else:
                    for (_, future), result in zip(batch, results):
                        future.set_result(result)
        finally:
            self.flushing = None

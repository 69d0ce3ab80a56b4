"""The persistent queue and history: one SQLite table (stdlib sqlite3, WAL) in the data folder.

A prompt is a row whose `state` goes pending -> running -> done. `add` commits before it returns,
so a prompt the server accepted survives a crash or `kill -9`. On open, a row left `running` by a
crash is put back at the front of the queue for one more attempt; a prompt that was running during
`max_attempts` crashes is marked failed instead, so a prompt that kills the process cannot loop.

Rows keep what ComfyUI's queue and history report: the API prompt, extra_data, the output nodes,
and once done the status, outputs and messages.
"""
from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    id TEXT PRIMARY KEY,
    number INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done')),
    client_id TEXT,
    workflow TEXT NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS prompts_queue ON prompts (state, number);
CREATE INDEX IF NOT EXISTS prompts_history ON prompts (state, finished);
"""


@dataclass
class Item:
    """One queued prompt. `workflow` is what was posted (either format); `prompt` its API form."""

    id: str
    number: int
    client_id: str | None
    workflow: Any
    prompt: dict
    extra_data: dict
    outputs: list
    attempts: int = 0
    state: str = "pending"
    result: dict | None = None
    created: float = field(default_factory=time.time)

    def queue_entry(self) -> list:
        """ComfyUI's queue and history tuple: [number, prompt_id, prompt, extra_data, outputs]."""
        return [self.number, self.id, self.prompt, self.extra_data, self.outputs]

    def history_entry(self) -> dict:
        result = self.result or {}
        return {"prompt": self.queue_entry(), "outputs": result.get("outputs", {}),
                "status": result.get("status", {}), "meta": result.get("meta", {})}


class StoreInUse(RuntimeError):
    """Another process has this queue open; two would each take the other's running prompt for crashed."""


def _lock(path: Path):
    """An exclusive lock held while the store is open; the OS drops it when the process dies (kill -9)."""
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise StoreInUse(f"{path.parent} is in use by another Loom server (lock file {path.name})") from None
    return f


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Store:
    """Thread-safe: one connection behind a lock, used by the event loop's threads and the worker."""

    def __init__(self, path: str | Path, max_attempts: int = 2, max_history: int = 10_000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lockfile = _lock(self.path.with_name(self.path.name + ".lock"))
        self.max_attempts, self.max_history = max_attempts, max_history
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._sync = ""
        self._db.executescript(SCHEMA)
        self.recovered = self._recover()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._lockfile.close()  # releases the lock

    def _tx(self, fn, *args, durable: bool = False):
        """Run fn in a write transaction. `durable`: fsync before returning (FULL), so the change
        survives power loss; others (NORMAL, in WAL mode) survive a crash of the process but may be
        undone by power loss, which at worst runs a finished prompt again."""
        with self._lock:
            sync = "FULL" if durable else "NORMAL"
            if sync != self._sync:
                self._db.execute(f"PRAGMA synchronous={sync}")
                self._sync = sync
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(*args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    # --- recovery -------------------------------------------------------------------------------
    def _recover(self) -> list[tuple[str, str]]:
        """Rows left running by a crash: requeue at the front, or fail after max_attempts.
        Returns [(prompt_id, 'requeued' | 'failed')]."""
        def fix():
            done = []
            rows = self._db.execute("SELECT id, attempts FROM prompts WHERE state='running'").fetchall()
            for prompt_id, attempts in rows:
                if attempts < self.max_attempts:
                    self._db.execute("UPDATE prompts SET state='pending', number=? WHERE id=?",
                                     (self._front_number(), prompt_id))
                    done.append((prompt_id, "requeued"))
                else:
                    message = (f"the server stopped {attempts} times while running this prompt; "
                               "it is not run again")
                    self._finish(prompt_id, failed_result(prompt_id, message))
                    done.append((prompt_id, "failed"))
            return done
        return self._tx(fix)

    # --- queue ----------------------------------------------------------------------------------
    def _front_number(self) -> int:
        row = self._db.execute("SELECT MIN(number) FROM prompts WHERE state='pending'").fetchone()
        return min(row[0] if row[0] is not None else 0, 0) - 1

    def add(self, prompt_id: str, workflow: Any, prompt: dict, extra_data: dict, outputs: list,
            client_id: str | None = None, front: bool = False) -> int | None:
        """Queue a prompt and commit durably; returns its number, or None if the id is taken."""
        return self.add_many([dict(prompt_id=prompt_id, workflow=workflow, prompt=prompt, extra_data=extra_data,
                                   outputs=outputs, client_id=client_id, front=front)])[0]

    def add_many(self, rows: list[dict]) -> list[int | None]:
        """Queue several prompts (keyword dicts of `add`) in one transaction and one fsync: the server
        batches concurrent POSTs this way. Returns their numbers, None for an id already used."""
        def insert():
            numbers = []
            for row in rows:
                if row.get("front"):
                    number = self._front_number()
                else:
                    last = self._db.execute("SELECT MAX(number) FROM prompts").fetchone()[0]
                    number = max(last if last is not None else -1, -1) + 1
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO prompts (id, number, state, client_id, workflow, prompt, extra_data,"
                    " outputs, created) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
                    (row["prompt_id"], number, row.get("client_id"), _dumps(row["workflow"]), _dumps(row["prompt"]),
                     _dumps(row["extra_data"]), _dumps(row["outputs"]), time.time()))
                numbers.append(number if cur.rowcount else None)
            return numbers
        return self._tx(insert, durable=True)

    def claim(self, prompt_id: str | None = None) -> Item | None:
        """Mark the first pending prompt (or pending `prompt_id`) running, counting the attempt, and
        return it; None if there is none (or `prompt_id` is no longer pending)."""
        def take():
            where, args = ("AND id=? ", (prompt_id,)) if prompt_id is not None else ("", ())
            row = self._db.execute(f"SELECT {_COLUMNS} FROM prompts WHERE state='pending' {where}"
                                   "ORDER BY number LIMIT 1", args).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE prompts SET state='running', attempts=attempts+1, started=? WHERE id=?",
                             (time.time(), row[0]))
            item = _item(row)
            item.state, item.attempts = "running", item.attempts + 1
            return item
        return self._tx(take)

    def finish(self, prompt_id: str, result: dict, first_wins: bool = False) -> bool:
        """Move a prompt to the history with `result` {status, outputs, meta}. With `first_wins`
        (attempts that may overlap, as on Ray) a prompt already done is left as it is; returns
        whether this result was stored."""
        def done():
            if first_wins and self._db.execute("SELECT 1 FROM prompts WHERE id=? AND state!='done'",
                                               (prompt_id,)).fetchone() is None:
                return False
            self._finish(prompt_id, result)
            return True
        return self._tx(done)

    def retry(self, prompt_id: str, attempt: int, max_attempts: int, message: str) -> str | None:
        """Attempt `attempt` of a running prompt was lost (its worker died): put the prompt back at the
        front of the queue, or fail it with `message` once it used `max_attempts`. Returns 'requeued',
        'failed', or None when that attempt is no longer the prompt's current one."""
        def back():
            row = self._db.execute("SELECT attempts FROM prompts WHERE id=? AND state='running'",
                                   (prompt_id,)).fetchone()
            if row is None or row[0] != attempt:
                return None
            if attempt >= max_attempts:
                self._finish(prompt_id, failed_result(prompt_id, message, "WorkerLost"))
                return "failed"
            self._db.execute("UPDATE prompts SET state='pending', number=? WHERE id=?",
                             (self._front_number(), prompt_id))
            return "requeued"
        return self._tx(back)

    def _finish(self, prompt_id: str, result: dict) -> None:
        self._db.execute("UPDATE prompts SET state='done', finished=?, result=? WHERE id=?",
                         (time.time(), _dumps(result), prompt_id))
        over = self._db.execute("SELECT COUNT(*) FROM prompts WHERE state='done'").fetchone()[0] - self.max_history
        if over > 0:
            self._db.execute("DELETE FROM prompts WHERE id IN (SELECT id FROM prompts WHERE state='done' "
                             "ORDER BY finished LIMIT ?)", (over,))

    def requeue(self, prompt_id: str) -> None:
        """Put a running prompt back at the front, not counting this attempt (a clean shutdown)."""
        def back():
            self._db.execute("UPDATE prompts SET state='pending', number=?, attempts=MAX(attempts-1, 0) "
                             "WHERE id=? AND state='running'", (self._front_number(), prompt_id))
        self._tx(back)

    def queue(self) -> tuple[list[Item], list[Item]]:
        """(running, pending) in run order."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM prompts WHERE state IN ('pending', 'running') "
                                    "ORDER BY number").fetchall()
        items = [_item(r) for r in rows]
        return [i for i in items if i.state == "running"], [i for i in items if i.state == "pending"]

    def remaining(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM prompts WHERE state != 'done'").fetchone()[0]

    def delete_pending(self, ids: list[str] | None = None) -> int:
        """Remove pending prompts (all when ids is None); running and done ones are left alone."""
        return self._delete("pending", ids)

    def _delete(self, state: str, ids: list[str] | None) -> int:
        """Remove the prompts in `state` (only those of `ids` when given); returns how many went."""
        def delete():
            if ids is None:
                return self._db.execute("DELETE FROM prompts WHERE state=?", (state,)).rowcount
            return sum(self._db.execute("DELETE FROM prompts WHERE state=? AND id=?", (state, i)).rowcount
                       for i in ids)
        return self._tx(delete)

    # --- history --------------------------------------------------------------------------------
    def history(self, max_items: int | None = None, prompt_id: str | None = None) -> dict[str, dict]:
        """Finished prompts, oldest first (the newest `max_items` when given)."""
        with self._lock:
            if prompt_id is not None:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM prompts WHERE state='done' AND id=?",
                                        (prompt_id,)).fetchall()
            else:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM prompts WHERE state='done' "
                                        "ORDER BY finished DESC LIMIT ?", (max_items or -1,)).fetchall()[::-1]
        return {row[0]: _item(row).history_entry() for row in rows}

    def summaries(self, states: tuple[str, ...], newest_first: bool = True, limit: int | None = None,
                  offset: int = 0, workflow_id: str | None = None) -> tuple[list[dict], int]:
        """Light rows of the prompts in `states` (no prompt or workflow is read), ordered by creation,
        and how many match in all: {id, number, state, created, started, finished, result, workflow_id},
        where workflow_id is the editor workflow's `id` in extra_data (ComfyUI's jobs API)."""
        marks = ",".join("?" * len(states))
        where, args = f"state IN ({marks})", list(states)
        wf_id = "json_extract(extra_data, '$.extra_pnginfo.workflow.id')"
        if workflow_id is not None:
            where, args = where + f" AND {wf_id} = ?", args + [workflow_id]
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM prompts WHERE {where}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT id, number, state, created, started, finished, result, {wf_id} FROM prompts WHERE {where} "
                f"ORDER BY created {order}, number {order} LIMIT ? OFFSET ?",
                args + [-1 if limit is None else limit, offset]).fetchall()
        keys = ("id", "number", "state", "created", "started", "finished", "result", "workflow_id")
        out = [dict(zip(keys, row)) for row in rows]
        for row in out:
            row["result"] = json.loads(row["result"]) if row["result"] else None
        return out, total

    def delete_history(self, ids: list[str] | None = None) -> int:
        return self._delete("done", ids)

    def get(self, prompt_id: str) -> Item | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM prompts WHERE id=?", (prompt_id,)).fetchone()
        return _item(row) if row else None


_COLUMNS = "id, number, state, client_id, workflow, prompt, extra_data, outputs, attempts, created, result"


def _item(row) -> Item:
    (prompt_id, number, state, client_id, workflow, prompt, extra, outputs, attempts, created, result) = row
    return Item(id=prompt_id, number=number, client_id=client_id, workflow=json.loads(workflow),
                prompt=json.loads(prompt), extra_data=json.loads(extra), outputs=json.loads(outputs),
                attempts=attempts, state=state, result=json.loads(result) if result else None, created=created)


def failed_result(prompt_id: str, message: str, exception_type: str = "ServerStopped") -> dict:
    """A history result for a prompt that could not run, in the shape of an execution_error."""
    now = int(time.time() * 1000)
    error = {"prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
             "exception_message": message, "exception_type": exception_type, "traceback": [],
             "current_inputs": {}, "current_outputs": {}, "timestamp": now}
    return {"status": {"status_str": "error", "completed": False, "messages": [["execution_error", error]]},
            "outputs": {}, "meta": {}}

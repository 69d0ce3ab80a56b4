"""The persistent queue and history: SQLite (stdlib sqlite3, WAL) in the data folder.

A prompt is a row whose `state` goes pending -> running -> done. `add` commits before it returns,
so a prompt the server accepted survives a crash or `kill -9`.

Attempts, one rule for every cause: `claim` counts an attempt. An attempt that ends without a
result, because its worker was lost or because the server stopped (found `running` when the store
is opened again), is charged to the prompt by `lost`: the prompt goes back to the front of the
queue, or, once it has used `max_attempts` attempts, it is failed with the cause of each one. A
clean stop (`requeue`, `release_running`) does not charge the attempt. Counters of lost attempts
are rows too, so /system_stats reports them across restarts.

Cost: every query the queue runs per prompt uses an index (the head of the queue, the next number,
one id); the number of unfinished and finished rows is kept in memory, so POST /prompt and a
routing pass cost the same at 100 or 100k pending prompts. The listings (GET /queue, /history,
/api/jobs) read a page along an index on read-only connections of their own (WAL lets them read
while the queue writes) and hand back the stored JSON text undecoded (`RawEntry`): a page costs the
same at 1k or 100k rows and never waits for a write.

Rows keep what ComfyUI's queue and history report: the API prompt, extra_data, the output nodes,
and once done the status, outputs and messages; plus the models the prompt loads (for routing)
and the idempotency keys of POST /prompt (kept 24 hours).
"""
from __future__ import annotations

import fcntl
import heapq
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
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (created);
"""
# Columns added after the first release; an older queue file gains them when opened.
ADDED_COLUMNS = {"models": "TEXT", "skipped": "INTEGER NOT NULL DEFAULT 0", "lost": "TEXT"}
INDEXES = """
CREATE INDEX IF NOT EXISTS prompts_number ON prompts (number);
CREATE INDEX IF NOT EXISTS prompts_created ON prompts (state, created, number);
"""
IDEMPOTENCY_TTL = 24 * 3600.0  # seconds a key is remembered, as ComfyUI's API v2


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


@dataclass
class RawEntry:
    """A prompt as ComfyUI's queue and history list it, its JSON columns left as the stored text:
    a listing splices them into its reply instead of decoding and encoding them again. `result` is
    the stored {status, outputs, meta} text of a finished prompt, else None."""

    number: int
    id: str
    prompt: str
    extra_data: str
    outputs: str
    result: str | None = None


@dataclass
class Head:
    """A pending prompt as the router reads it: no workflow is decoded. `models` is None for a row
    queued before models were recorded."""

    id: str
    models: frozenset | None
    skipped: int


@dataclass
class Added:
    """What `add_many` did with one row: 'queued', 'replayed' (its idempotency key was used before
    with the same body: `prompt_id` and `number` are the first request's), 'key_reused' (the key
    was used with another body), or 'id_taken'."""

    status: str
    prompt_id: str
    number: int | None = None


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
        self.max_attempts, self.max_history = max(1, max_attempts), max_history
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._sync = ""
        self._db.executescript(SCHEMA)
        self._migrate()
        # listings read on connections of their own, one per thread: WAL lets them read while the
        # queue writes, and a long listing (the whole queue) holds up neither writes nor other reads
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        # unfinished and finished rows, kept here so that no request counts the table
        self._remaining = self._count("state != 'done'")
        self._done = self._count("state = 'done'")
        self._delta = [0, 0]
        self.recovered = self._recover()

    def _migrate(self) -> None:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(prompts)")}
        for name, decl in ADDED_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE prompts ADD COLUMN {name} {decl}")
        self._db.executescript(INDEXES)

    def _count(self, where: str) -> int:
        return self._db.execute(f"SELECT COUNT(*) FROM prompts WHERE {where}").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            for reader in self._readers:
                reader.close()
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
            self._delta = [0, 0]
            try:
                out = fn(*args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._remaining += self._delta[0]
            self._done += self._delta[1]
            return out

    # --- attempts -------------------------------------------------------------------------------
    def _recover(self) -> list[tuple[str, str]]:
        """Rows left running by a crash lost their attempt to the server stopping.
        Returns [(prompt_id, 'requeued' | 'failed')]."""
        def fix():
            rows = self._db.execute("SELECT id, attempts FROM prompts WHERE state='running'").fetchall()
            return [(prompt_id, self._lose(prompt_id, attempts, "the server stopped", "server_stopped"))
                    for prompt_id, attempts in rows]
        return self._tx(fix)

    def lost(self, prompt_id: str, attempt: int, cause: str, worker: str | None = None) -> str | None:
        """Attempt `attempt` of a running prompt ended without a result (`cause`, e.g. "worker ray-1
        was lost (ActorDiedError)"): the prompt goes back to the front of the queue, or is failed
        once it used max_attempts. Returns 'requeued', 'failed', or None when that attempt is no
        longer the prompt's current one (a newer attempt runs, or it finished)."""
        def lose():
            row = self._db.execute("SELECT attempts FROM prompts WHERE id=? AND state='running'",
                                   (prompt_id,)).fetchone()
            if row is None or row[0] != attempt:
                return None
            return self._lose(prompt_id, attempt, cause, "worker_lost", worker)
        return self._tx(lose)

    def _lose(self, prompt_id: str, attempt: int, cause: str, kind: str, worker: str | None = None) -> str:
        causes = json.loads(self._db.execute("SELECT lost FROM prompts WHERE id=?", (prompt_id,)).fetchone()[0]
                            or "[]") + [cause]
        self._db.execute("UPDATE prompts SET lost=? WHERE id=?", (_dumps(causes), prompt_id))
        self._bump("lost_attempts", f"lost_attempts.{kind}", *([f"lost_attempts.{worker}"] if worker else []))
        if attempt < self.max_attempts:
            self._db.execute("UPDATE prompts SET state='pending', number=? WHERE id=?",
                             (self._front_number(), prompt_id))
            return "requeued"
        listed = "; ".join(f"attempt {i}: {c}" for i, c in enumerate(causes, start=1))
        message = (f"the prompt was stopped before it finished on each of its {attempt} attempts ({listed}); "
                   "it is not run again")
        self._finish(prompt_id, failed_result(prompt_id, message, _EXCEPTION[kind]))
        self._bump("failed_after_attempts")
        return "failed"

    def _bump(self, *names: str) -> None:
        for name in names:
            self._db.execute("INSERT INTO counters (name, value) VALUES (?, 1) "
                             "ON CONFLICT(name) DO UPDATE SET value = value + 1", (name,))

    def counters(self) -> dict[str, int]:
        """Counters kept across restarts: lost_attempts (by cause: .worker_lost, .server_stopped;
        by worker: .ray-0, ...), failed_after_attempts."""
        with self._lock:
            return dict(self._db.execute("SELECT name, value FROM counters ORDER BY name").fetchall())

    # --- queue ----------------------------------------------------------------------------------
    def _front_number(self) -> int:
        row = self._db.execute("SELECT MIN(number) FROM prompts WHERE state='pending'").fetchone()
        return min(row[0] if row[0] is not None else 0, 0) - 1

    def add(self, prompt_id: str, workflow: Any, prompt: dict, extra_data: dict, outputs: list,
            client_id: str | None = None, front: bool = False, models: list | None = None) -> int | None:
        """Queue a prompt and commit durably; returns its number, or None if the id is taken."""
        added = self.add_many([dict(prompt_id=prompt_id, workflow=workflow, prompt=prompt, extra_data=extra_data,
                                    outputs=outputs, client_id=client_id, front=front, models=models)])[0]
        return added.number if added.status == "queued" else None

    def add_many(self, rows: list[dict]) -> list[Added]:
        """Queue several prompts (keyword dicts of `add`, optionally with `idempotency_key` and
        `fingerprint`) in one transaction and one fsync: the server batches concurrent POSTs this
        way. A key is stored with its prompt in that transaction, so a retry after a timeout or a
        crash finds it (and two requests racing with one key queue one prompt)."""
        def insert():
            now = time.time()
            self._db.execute("DELETE FROM idempotency WHERE created < ?", (now - IDEMPOTENCY_TTL,))
            return [self._insert(row, now) for row in rows]
        return self._tx(insert, durable=True)

    def _insert(self, row: dict, now: float) -> Added:
        key = row.get("idempotency_key")
        if key is not None:
            seen = self._db.execute("SELECT fingerprint, prompt_id, number FROM idempotency WHERE key=?",
                                    (key,)).fetchone()
            if seen is not None:
                return Added("replayed" if seen[0] == row["fingerprint"] else "key_reused", seen[1], seen[2])
        if row.get("front"):
            number = self._front_number()
        else:
            last = self._db.execute("SELECT MAX(number) FROM prompts").fetchone()[0]
            number = max(last if last is not None else -1, -1) + 1
        models = row.get("models")
        cur = self._db.execute(
            "INSERT OR IGNORE INTO prompts (id, number, state, client_id, workflow, prompt, extra_data,"
            " outputs, created, models) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
            (row["prompt_id"], number, row.get("client_id"), _dumps(row["workflow"]), _dumps(row["prompt"]),
             _dumps(row["extra_data"]), _dumps(row["outputs"]), now,
             _dumps(sorted(models)) if models is not None else None))
        if not cur.rowcount:
            return Added("id_taken", row["prompt_id"])
        self._delta[0] += 1
        if key is not None:
            self._db.execute("INSERT INTO idempotency (key, fingerprint, prompt_id, number, created) "
                             "VALUES (?, ?, ?, ?, ?)", (key, row["fingerprint"], row["prompt_id"], number, now))
        return Added("queued", row["prompt_id"], number)

    def idempotent(self, key: str) -> tuple[str, str, int] | None:
        """(fingerprint, prompt_id, number) of a POST made with idempotency `key` in the last 24 hours."""
        with self._lock:
            row = self._db.execute("SELECT fingerprint, prompt_id, number FROM idempotency WHERE key=? "
                                   "AND created >= ?", (key, time.time() - IDEMPOTENCY_TTL)).fetchone()
        return tuple(row) if row else None

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

    def head(self, limit: int) -> list[Head]:
        """The first `limit` pending prompts in run order, read from the queue's index alone."""
        with self._lock:
            rows = self._db.execute("SELECT id, models, skipped FROM prompts WHERE state='pending' "
                                    "ORDER BY number LIMIT ?", (limit,)).fetchall()
        return [Head(i, frozenset(json.loads(m)) if m is not None else None, s) for i, m, s in rows]

    def set_models(self, prompt_id: str, models) -> None:
        """Record the models of a prompt queued before they were recorded at POST time."""
        self._tx(lambda: self._db.execute("UPDATE prompts SET models=? WHERE id=?",
                                          (_dumps(sorted(models)), prompt_id)))

    def set_skipped(self, counts: dict[str, int]) -> None:
        """How often each pending prompt was overtaken by the router (its starvation guard)."""
        if counts:
            self._tx(lambda: self._db.executemany("UPDATE prompts SET skipped=? WHERE id=?",
                                                  [(n, i) for i, n in counts.items()]))

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

    def _finish(self, prompt_id: str, result: dict) -> None:
        row = self._db.execute("SELECT state FROM prompts WHERE id=?", (prompt_id,)).fetchone()
        if row is None:
            return
        # all three keys, always: the history splices this text into its entries (RawEntry)
        result = {"status": result.get("status", {}), "outputs": result.get("outputs", {}),
                  "meta": result.get("meta", {}), **result}
        self._db.execute("UPDATE prompts SET state='done', finished=?, result=? WHERE id=?",
                         (time.time(), _dumps(result), prompt_id))
        if row[0] != "done":
            self._delta[0] -= 1
            self._delta[1] += 1
        over = self._done + self._delta[1] - self.max_history
        if over > 0:
            gone = self._db.execute("DELETE FROM prompts WHERE id IN (SELECT id FROM prompts WHERE state='done' "
                                    "ORDER BY finished LIMIT ?)", (over,)).rowcount
            self._delta[1] -= gone

    def requeue(self, prompt_id: str) -> None:
        """Put a running prompt back at the front, not counting this attempt (a clean shutdown)."""
        def back():
            self._db.execute("UPDATE prompts SET state='pending', number=?, attempts=MAX(attempts-1, 0) "
                             "WHERE id=? AND state='running'", (self._front_number(), prompt_id))
        self._tx(back)

    def release_running(self) -> list[str]:
        """A clean stop: every prompt still marked running goes back to the front, its attempt not
        counted. Returns their ids."""
        def back():
            ids = [r[0] for r in self._db.execute("SELECT id FROM prompts WHERE state='running' "
                                                  "ORDER BY number DESC")]
            for prompt_id in ids:
                self._db.execute("UPDATE prompts SET state='pending', number=?, attempts=MAX(attempts-1, 0) "
                                 "WHERE id=?", (self._front_number(), prompt_id))
            return ids[::-1]
        return self._tx(back)

    def queue(self) -> tuple[list[Item], list[Item]]:
        """(running, pending) in run order."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM prompts WHERE state IN ('pending', 'running') "
                                    "ORDER BY number").fetchall()
        items = [_item(r) for r in rows]
        return [i for i in items if i.state == "running"], [i for i in items if i.state == "pending"]

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA query_only=ON")
            with self._lock:
                self._readers.append(db)
        return db

    def _read(self, sql: str, args=()) -> list[tuple]:
        return self._reader().execute(sql, args).fetchall()

    def queue_page(self, limit: int | None = None, offset: int = 0) -> tuple[list[RawEntry], list[RawEntry], int]:
        """(running, pending[offset:offset + limit], number pending) in run order, undecoded. The
        page is read along the queue's index: its cost does not grow with the queue (only, mildly,
        with `offset`, whose rows the index skips)."""
        columns = "number, id, prompt, extra_data, outputs"
        running = self._read(f"SELECT {columns} FROM prompts WHERE state='running' ORDER BY number")
        pending = self._read(f"SELECT {columns} FROM prompts WHERE state='pending' ORDER BY number LIMIT ? OFFSET ?",
                             (-1 if limit is None else limit, offset))
        return ([RawEntry(*r) for r in running], [RawEntry(*r) for r in pending],
                max(0, self._remaining - len(running)))

    def history_page(self, max_items: int | None = None, offset: int | None = None) -> list[RawEntry]:
        """Finished prompts, oldest first, undecoded, as ComfyUI pages its history: without an offset
        the newest `max_items` (all when None); with one, `max_items` after skipping `offset` of the
        oldest. The newest page is read along the history's index at a cost that does not grow
        with the history."""
        columns = "number, id, prompt, extra_data, outputs, result"
        limit = -1 if max_items is None else max_items
        if offset is None or offset < 0:
            rows = self._read(f"SELECT {columns} FROM prompts WHERE state='done' ORDER BY finished DESC LIMIT ?",
                              (limit,))[::-1]
        else:
            rows = self._read(f"SELECT {columns} FROM prompts WHERE state='done' ORDER BY finished LIMIT ? OFFSET ?",
                              (limit, offset))
        return [RawEntry(*r) for r in rows]

    def history_one(self, prompt_id: str) -> list[RawEntry]:
        rows = self._read("SELECT number, id, prompt, extra_data, outputs, result FROM prompts "
                          "WHERE state='done' AND id=?", (prompt_id,))
        return [RawEntry(*r) for r in rows]

    def remaining(self) -> int:
        """Prompts pending or running (kept in memory: no query)."""
        return self._remaining

    def delete_pending(self, ids: list[str] | None = None) -> int:
        """Remove pending prompts (all when ids is None); running and done ones are left alone."""
        return self._delete("pending", ids)

    def _delete(self, state: str, ids: list[str] | None) -> int:
        """Remove the prompts in `state` (only those of `ids` when given); returns how many went."""
        def delete():
            if ids is None:
                gone = self._db.execute("DELETE FROM prompts WHERE state=?", (state,)).rowcount
            else:
                gone = sum(self._db.execute("DELETE FROM prompts WHERE state=? AND id=?", (state, i)).rowcount
                           for i in ids)
            self._delta[0 if state != "done" else 1] -= gone
            return gone
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
        where workflow_id is the editor workflow's `id` in extra_data (ComfyUI's jobs API).

        Each state is read along the index (state, created, number), `offset + limit` rows at most,
        and the states merged here: a page near the top costs the same at 1k or 100k rows. The total
        comes from the counts kept in memory, except with `workflow_id` (then it is counted)."""
        wf_id = "json_extract(extra_data, '$.extra_pnginfo.workflow.id')"
        where, extra = ("", ()) if workflow_id is None else (f" AND {wf_id} = ?", (workflow_id,))
        order = "DESC" if newest_first else "ASC"
        wanted = -1 if limit is None else offset + limit
        per_state = [self._read(f"SELECT id, number, state, created, started, finished, result, {wf_id} FROM prompts "
                                f"WHERE state=?{where} ORDER BY created {order}, number {order} LIMIT ?",
                                (state, *extra, wanted)) for state in states]
        rows = list(heapq.merge(*per_state, key=lambda r: (r[3], r[1]), reverse=newest_first))
        rows = rows[offset:None if limit is None else offset + limit]
        if workflow_id is not None:
            marks = ",".join("?" * len(states))
            total = self._read(f"SELECT COUNT(*) FROM prompts WHERE state IN ({marks}){where}",
                               (*states, workflow_id))[0][0]
        else:
            counts = self._state_counts()
            total = sum(counts[state] for state in set(states))
        keys = ("id", "number", "state", "created", "started", "finished", "result", "workflow_id")
        out = [dict(zip(keys, row)) for row in rows]
        for row in out:
            row["result"] = json.loads(row["result"]) if row["result"] else None
        return out, total

    def _state_counts(self) -> dict[str, int]:
        """Rows per state: from the counts in memory; the running ones (a few) are counted."""
        running = self._read("SELECT COUNT(*) FROM prompts WHERE state='running'")[0][0]
        return {"pending": max(0, self._remaining - running), "running": running, "done": self._done}

    def delete_history(self, ids: list[str] | None = None) -> int:
        return self._delete("done", ids)

    def get(self, prompt_id: str) -> Item | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM prompts WHERE id=?", (prompt_id,)).fetchone()
        return _item(row) if row else None


_COLUMNS = "id, number, state, client_id, workflow, prompt, extra_data, outputs, attempts, created, result"
_EXCEPTION = {"worker_lost": "WorkerLost", "server_stopped": "ServerStopped"}


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

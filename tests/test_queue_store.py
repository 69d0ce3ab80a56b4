"""The queue store alone (loomqueue.store): attempts under one rule for every cause, counters and
idempotency keys that survive restarts, the in-memory counts, an older queue file. No server, no
torch, no Ray."""
import json
import sqlite3
import subprocess
import sys

import pytest

from loomqueue import store as store_module
from loomqueue.store import Store

SUCCESS = {"status": {"status_str": "success", "completed": True, "messages": []}, "outputs": {}, "meta": {}}


def row(store, prompt_id, **extra):
    store.add(prompt_id, {}, {"1": {}}, {}, ["1"], **extra)


def test_the_queue_imports_no_torch():
    code = "import loomqueue.store, loomqueue.worker, loomqueue.routing, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_worker_loss_then_server_crash_then_success_on_the_third_attempt(tmp_path):
    """The sequence of issue 15: one rule counts both causes, so 3 attempts allow exactly this."""
    path = tmp_path / "q.sqlite3"
    store = Store(path, max_attempts=3)
    row(store, "a")
    first = store.claim()
    assert store.lost("a", first.attempts, "worker ray-0 was lost (ActorDiedError)", "ray-0") == "requeued"
    assert store.claim().attempts == 2
    store.close()  # the server dies while attempt 2 runs

    store = Store(path, max_attempts=3)
    assert store.recovered == [("a", "requeued")]
    third = store.claim()
    assert third.attempts == 3
    store.finish("a", SUCCESS)
    assert store.history(prompt_id="a")["a"]["status"]["status_str"] == "success"
    store.close()

    store = Store(path)  # the counters are rows: /system_stats shows them after a restart
    assert store.counters() == {"lost_attempts": 2, "lost_attempts.ray-0": 1, "lost_attempts.server_stopped": 1,
                                "lost_attempts.worker_lost": 1}
    store.close()


def test_the_last_allowed_attempt_lost_fails_the_prompt_naming_each_cause(tmp_path):
    path = tmp_path / "q.sqlite3"
    store = Store(path, max_attempts=2)
    row(store, "a")
    store.claim()
    store.close()  # crash during attempt 1
    store = Store(path, max_attempts=2)
    item = store.claim()
    assert store.lost("a", item.attempts + 1, "stale", "ray-1") is None  # not its current attempt: ignored
    assert store.lost("a", item.attempts, "worker ray-1 was lost (ActorDiedError)", "ray-1") == "failed"
    error = store.history(prompt_id="a")["a"]["status"]["messages"][0][1]
    assert error["exception_type"] == "WorkerLost"
    assert error["exception_message"] == (
        "the prompt was stopped before it finished on each of its 2 attempts (attempt 1: the server stopped; "
        "attempt 2: worker ray-1 was lost (ActorDiedError)); it is not run again")
    assert store.counters()["failed_after_attempts"] == 1 and store.remaining() == 0
    store.close()


def test_a_clean_stop_charges_no_attempt(tmp_path):
    path = tmp_path / "q.sqlite3"
    store = Store(path, max_attempts=1)
    for i in "abc":
        row(store, i)
    store.claim("b")
    store.claim("c")
    store.requeue("c")  # the worker handed it back
    assert store.release_running() == ["b"]  # the server's backstop before it closes the store
    store.close()
    store = Store(path, max_attempts=1)
    assert store.recovered == [] and store.counters() == {}
    assert [(i.id, i.attempts) for i in store.queue()[1]] == [("b", 0), ("c", 0), ("a", 0)]
    store.close()


def test_store_claims_a_given_prompt(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    for i in "abc":
        row(store, i)
    item = store.claim("b")
    assert item.id == "b" and item.attempts == 1
    assert store.claim("b") is None  # no longer pending
    assert store.claim().id == "a"
    store.close()


def test_store_first_completion_wins(tmp_path):
    store = Store(tmp_path / "q.sqlite3", max_attempts=3)
    row(store, "a")
    store.claim("a")
    store.lost("a", 1, "lost", "ray-0")
    store.claim("a")  # attempt 2 runs while attempt 1, thought lost, still finishes
    second = {**SUCCESS, "outputs": {"1": 2}}
    assert store.finish("a", {**SUCCESS, "outputs": {"1": 1}}, first_wins=True)
    assert not store.finish("a", second, first_wins=True)
    assert store.history(prompt_id="a")["a"]["outputs"] == {"1": 1}
    store.close()


def test_the_counts_kept_in_memory_match_the_table(tmp_path):
    path = tmp_path / "q.sqlite3"
    store = Store(path, max_history=3)

    def check():
        with sqlite3.connect(path) as db:
            remaining = db.execute("SELECT COUNT(*) FROM prompts WHERE state != 'done'").fetchone()[0]
            done = db.execute("SELECT COUNT(*) FROM prompts WHERE state = 'done'").fetchone()[0]
        assert (store.remaining(), store._done) == (remaining, done)
        return remaining, done

    for i in range(8):
        row(store, str(i))
    row(store, "0")  # a taken id adds nothing
    assert check() == (8, 0)
    for _ in range(5):
        store.finish(store.claim().id, SUCCESS)
    assert check() == (3, 3)  # history trimmed to 3
    store.claim()
    assert store.delete_pending(None) == 2 and check() == (1, 3)
    assert store.delete_history(["7", "4"]) == 1 and check() == (1, 2)
    store.close()
    store = Store(path, max_history=3)  # the running one is recovered, then counted again
    assert check() == (1, 2)
    store.close()


def test_head_reads_pending_prompts_in_order_with_their_models(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    row(store, "a", models=["m2", "m1"])
    row(store, "b")
    row(store, "c", front=True, models=[])
    store.claim("a")
    heads = store.head(10)
    assert [(h.id, h.models, h.skipped) for h in heads] == [("c", frozenset(), 0), ("b", None, 0)]
    store.set_skipped({"b": 2})
    assert store.head(1)[0].id == "c" and store.head(2)[1].skipped == 2
    store.close()


def keyed(prompt_id, key, fingerprint):
    return dict(prompt_id=prompt_id, workflow={}, prompt={}, extra_data={}, outputs=[], idempotency_key=key,
                fingerprint=fingerprint)


def test_an_idempotency_key_queues_one_prompt_and_survives_a_restart(tmp_path):
    path = tmp_path / "q.sqlite3"
    store = Store(path)
    first, again, other = store.add_many([keyed("p1", "k", "f1"), keyed("p2", "k", "f1"), keyed("p3", "k", "f2")])
    assert (first.status, first.prompt_id) == ("queued", "p1")
    assert (again.status, again.prompt_id, again.number) == ("replayed", "p1", first.number)
    assert (other.status, other.prompt_id) == ("key_reused", "p1")
    assert store.remaining() == 1
    store.close()
    store = Store(path)
    assert store.idempotent("k") == ("f1", "p1", first.number)
    assert store.add_many([keyed("p4", "k", "f1")])[0].status == "replayed"
    assert store.idempotent("unknown") is None
    store.close()


def test_idempotency_keys_expire_after_a_day(tmp_path, monkeypatch):
    store = Store(tmp_path / "q.sqlite3")
    store.add_many([keyed("p1", "k", "f1")])
    later = store_module.time.time() + store_module.IDEMPOTENCY_TTL + 1
    monkeypatch.setattr(store_module.time, "time", lambda: later)
    assert store.idempotent("k") is None
    assert store.add_many([keyed("p2", "k", "f2")])[0].status == "queued"  # the old key was pruned
    store.close()


def test_an_older_queue_file_is_upgraded_in_place(tmp_path):
    path = tmp_path / "q.sqlite3"
    with sqlite3.connect(path) as db:  # the schema of the first release
        db.executescript("""
            CREATE TABLE prompts (id TEXT PRIMARY KEY, number INTEGER NOT NULL, state TEXT NOT NULL,
                client_id TEXT, workflow TEXT NOT NULL, prompt TEXT NOT NULL, extra_data TEXT NOT NULL,
                outputs TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
                started REAL, finished REAL, result TEXT);
            INSERT INTO prompts VALUES ('old', 0, 'running', NULL, '{}', '{}', '{}', '[]', 1, 0, NULL, NULL, NULL);
        """)
    store = Store(path)
    assert store.recovered == [("old", "requeued")]
    assert [(h.id, h.models) for h in store.head(5)] == [("old", None)]
    store.close()


def test_one_server_per_queue_file(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    with pytest.raises(store_module.StoreInUse):
        Store(tmp_path / "q.sqlite3")
    store.close()


def _listing_store(tmp_path, pending=6, done=5):
    """A store with `done` finished prompts (d0 oldest), one running and `pending` waiting (p0 first)."""
    store = Store(tmp_path / "q.sqlite3")
    for i in range(done):
        row(store, f"d{i}")
        store.finish(store.claim().id, {**SUCCESS, "outputs": {"1": {"n": i}}})
    row(store, "r")
    store.claim()
    for i in range(pending):
        row(store, f"p{i}")
    return store


def test_queue_page_is_a_slice_of_the_pending_prompts_in_run_order(tmp_path):
    store = _listing_store(tmp_path)
    row(store, "first", front=True)
    running, everything, total = store.queue_page()
    assert [e.id for e in running] == ["r"] and total == 7
    assert [e.id for e in everything] == ["first", "p0", "p1", "p2", "p3", "p4", "p5"]
    _, page, total = store.queue_page(limit=3, offset=2)
    assert [e.id for e in page] == ["p1", "p2", "p3"] and total == 7
    assert store.queue_page(limit=3, offset=6)[1][0].id == "p5"
    entry = page[0]  # the stored JSON text, undecoded
    assert (entry.prompt, entry.extra_data, entry.outputs) == ('{"1":{}}', "{}", '["1"]')


def test_history_page_follows_comfyui_max_items_and_offset(tmp_path):
    store = _listing_store(tmp_path)
    ids = lambda entries: [e.id for e in entries]  # noqa: E731
    assert ids(store.history_page()) == ["d0", "d1", "d2", "d3", "d4"]
    assert ids(store.history_page(2)) == ["d3", "d4"]  # the newest, oldest first
    assert ids(store.history_page(2, -1)) == ["d3", "d4"]
    assert ids(store.history_page(2, 1)) == ["d1", "d2"]  # after skipping the oldest one
    assert ids(store.history_page(None, 3)) == ["d3", "d4"]
    assert ids(store.history_one("d2")) == ["d2"] and store.history_one("p0") == []


def test_summaries_page_through_states_in_creation_order(tmp_path, monkeypatch):
    clock = iter(range(1000, 2000))
    monkeypatch.setattr(store_module.time, "time", lambda: float(next(clock)))
    store = _listing_store(tmp_path, pending=4, done=4)
    every, total = store.summaries(("pending", "running", "done"))
    keys = [(r["created"], r["number"]) for r in every]
    assert keys == sorted(keys, reverse=True) and total == len(every) == 9
    for newest_first in (True, False):
        whole = [r["id"] for r in store.summaries(("pending", "running", "done"), newest_first)[0]]
        pages = [r["id"] for k in range(0, 9, 2)
                 for r in store.summaries(("pending", "running", "done"), newest_first, 2, k)[0]]
        assert pages == whole
    assert store.summaries(("pending", "running"), limit=2)[1] == 5
    assert store.summaries(("done",), limit=2)[1] == 4


def test_listing_queries_read_along_an_index(tmp_path):
    """Flat cost at 100k rows: no listing query scans the table or sorts it (SQLite's query plan)."""
    store = _listing_store(tmp_path)
    seen = []

    def explain(sql, args=()):
        plan = " / ".join(r[-1] for r in store._reader().execute("EXPLAIN QUERY PLAN " + sql, args))
        seen.append((sql, plan))
        return store._reader().execute(sql, args).fetchall()

    store._read = explain
    store.queue_page(64)
    store.history_page(64)
    store.history_page(64, 10)
    store.summaries(("pending", "running", "done"), limit=64)
    store.summaries(("done",), newest_first=False, limit=64)
    assert len(seen) >= 7
    for sql, plan in seen:  # SEARCH: a range of an index; SCAN would read every row, a TEMP B-TREE sort them
        assert plan.startswith("SEARCH prompts USING") and "INDEX" in plan and "TEMP B-TREE" not in plan, (sql, plan)


def test_finished_results_are_stored_with_status_outputs_and_meta(tmp_path):
    """The history splices the stored result text, so it always holds the three keys."""
    store = Store(tmp_path / "q.sqlite3")
    row(store, "a")
    store.finish(store.claim().id, {"outputs": {"1": 2}})
    [entry] = store.history_one("a")
    assert json.loads(entry.result) == {"status": {}, "outputs": {"1": 2}, "meta": {}}

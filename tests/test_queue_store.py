"""The queue store alone (loomqueue.store): attempts under one rule for every cause, counters and
idempotency keys that survive restarts, the in-memory counts, an older queue file. No server, no
torch, no Ray."""
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

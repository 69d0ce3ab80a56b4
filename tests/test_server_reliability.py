"""Crash safety of the queue (kill -9 and restart) and interrupting a running prompt."""
import asyncio
import sqlite3
import time

import aiohttp
import pytest

from loomqueue.store import Store
from tests.server_harness import ROOT, ServerProc, WsLog, picture_prompt, post_prompt, run, wait_history


def test_kill_9_mid_queue_loses_nothing(tmp_path):
    data = tmp_path / "data"
    server = ServerProc(data).start()
    ids = []
    try:
        server.wait_ready()

        async def fill():
            async with aiohttp.ClientSession() as s, WsLog(s, server.url, "k") as ws:
                slow = await post_prompt(s, server.url, picture_prompt(seed=1, steps=40, delay=0.05), "k")
                ids.append(slow["prompt_id"])
                for seed in range(2, 7):
                    ids.append((await post_prompt(s, server.url, picture_prompt(seed=seed), "k"))["prompt_id"])
                await ws.wait_for(lambda m: m["type"] == "progress" and m["data"]["value"] >= 3)
        run(fill())
        server.kill()  # mid-sampling, five prompts pending
    finally:
        server.stop()

    with sqlite3.connect(data / "queue.sqlite3") as db:
        states = dict(db.execute("SELECT id, state FROM prompts"))
    assert states == {ids[0]: "running", **{i: "pending" for i in ids[1:]}}

    restarted = ServerProc(data).start()
    try:
        restarted.wait_ready()

        async def drain():
            async with aiohttp.ClientSession() as s:
                return [await wait_history(s, restarted.url, pid, timeout=60) for pid in ids]
        entries = run(drain())
    finally:
        restarted.stop()
    assert [e["status"]["status_str"] for e in entries] == ["success"] * len(ids)
    with sqlite3.connect(data / "queue.sqlite3") as db:
        attempts = dict(db.execute("SELECT id, attempts FROM prompts"))
    assert attempts[ids[0]] == 2 and all(attempts[i] == 1 for i in ids[1:])
    assert "was running when the server stopped: requeued" in restarted.output()


def test_store_requeues_a_crashed_prompt_once_then_fails_it(tmp_path):
    path = tmp_path / "q.sqlite3"
    store = Store(path)
    store.add("a", {}, {"1": {}}, {}, ["1"])
    store.add("b", {}, {"1": {}}, {}, ["1"])
    assert store.claim().id == "a"
    store.close()  # a crash while "a" runs

    store = Store(path)
    assert store.recovered == [("a", "requeued")]
    running, pending = store.queue()
    assert running == [] and [i.id for i in pending] == ["a", "b"]  # back at the front
    assert store.claim().id == "a"
    store.close()  # crashed again

    store = Store(path)
    assert store.recovered == [("a", "failed")]
    entry = store.history()["a"]
    assert entry["status"]["status_str"] == "error"
    assert "each of its 2 attempts (attempt 1: the server stopped; attempt 2: the server stopped)" in \
        entry["status"]["messages"][0][1]["exception_message"]
    assert [i.id for i in store.queue()[1]] == ["b"]
    assert store.add("c", {}, {}, {}, [], front=True) < store.add("d", {}, {}, {}, [])
    assert [i.id for i in store.queue()[1]] == ["c", "b", "d"]
    row = dict(prompt_id="e", workflow={}, prompt={}, extra_data={}, outputs=[])
    added = store.add_many([row, row, {**row, "prompt_id": "f"}])  # one batch, a repeated id refused
    assert [a.status for a in added] == ["queued", "id_taken", "queued"]
    assert added[2].number == added[0].number + 1
    store.close()


def test_interrupt_stops_within_one_step_and_queue_stays_responsive(tmp_path):
    server = ServerProc(tmp_path / "data").start()
    try:
        server.wait_ready()

        async def main():
            async with aiohttp.ClientSession() as s, WsLog(s, server.url, "i") as ws:
                pid = (await post_prompt(s, server.url, picture_prompt(seed=7, steps=500, delay=0.05), "i"))["prompt_id"]
                await ws.wait_for(lambda m: m["type"] == "progress" and m["data"]["value"] >= 3)
                t0 = time.monotonic()
                async with s.get(server.url + "/queue") as r:  # answered while the worker samples
                    running = (await r.json())["queue_running"]
                queue_latency = time.monotonic() - t0
                assert [e[1] for e in running] == [pid]
                async with s.post(server.url + "/interrupt", json={"prompt_id": "someone-else"}) as r:
                    assert (await r.json())["interrupted"] is False
                async with s.post(server.url + "/interrupt") as r:
                    assert (await r.json())["interrupted"] is True
                at_interrupt = max(m["data"]["value"] for m in ws.of(pid) if isinstance(m, dict)
                                   and m["type"] == "progress")
                msgs = await ws.until_done(pid)
                last = max(m["data"]["value"] for m in msgs if isinstance(m, dict) and m["type"] == "progress")
                assert last - at_interrupt <= 1, (at_interrupt, last)
                assert [m["type"] for m in msgs if isinstance(m, dict)][-3:] == \
                    ["execution_interrupted", "status", "executing"]
                entry = await wait_history(s, server.url, pid)
                assert entry["status"]["status_str"] == "error" and not entry["status"]["completed"]
                assert entry["status"]["messages"][-1][0] == "execution_interrupted"
                # the next prompt runs normally
                nxt = await post_prompt(s, server.url, picture_prompt(seed=8), "i")
                assert (await wait_history(s, server.url, nxt["prompt_id"]))["status"]["status_str"] == "success"
                return queue_latency
        latency = run(main())
        print(f"GET /queue during sampling answered in {latency * 1000:.1f} ms")
    finally:
        server.stop()


def test_queue_delete_clear_and_front(tmp_path):
    server = ServerProc(tmp_path / "data").start()
    try:
        server.wait_ready()

        async def main():
            async with aiohttp.ClientSession() as s, WsLog(s, server.url, "q") as ws:
                block = (await post_prompt(s, server.url, picture_prompt(seed=1, steps=400, delay=0.05), "q"))
                await ws.wait_for(lambda m: m["type"] == "progress")
                a = (await post_prompt(s, server.url, picture_prompt(seed=2), "q"))["prompt_id"]
                b = (await post_prompt(s, server.url, picture_prompt(seed=3), "q"))["prompt_id"]
                c = (await post_prompt(s, server.url, picture_prompt(seed=4), "q", front=True))["prompt_id"]
                async with s.get(server.url + "/queue") as r:
                    q = await r.json()
                assert [e[1] for e in q["queue_pending"]] == [c, a, b]
                assert [e[1] for e in q["queue_running"]] == [block["prompt_id"]]
                async with s.post(server.url + "/queue", json={"delete": [a]}) as r:
                    assert (await r.json())["deleted"] == 1
                status = await ws.wait_for(lambda m: m["type"] == "status"
                                           and m["data"]["status"]["exec_info"]["queue_remaining"] == 3)
                assert status
                async with s.post(server.url + "/queue", json={"clear": True}) as r:
                    assert (await r.json())["deleted"] == 2
                async with s.post(server.url + "/interrupt") as r:
                    assert (await r.json())["interrupted"]
                await wait_history(s, server.url, block["prompt_id"])
                await asyncio.sleep(0.3)
                async with s.get(server.url + "/queue") as r:
                    assert await r.json() == {"queue_running": [], "queue_pending": []}
                async with s.get(server.url + "/history") as r:
                    assert list(await r.json()) == [block["prompt_id"]]
        run(main())
    finally:
        server.stop()


def test_clean_shutdown_requeues_the_running_prompt(tmp_path):
    data = tmp_path / "data"
    server = ServerProc(data).start()
    try:
        server.wait_ready()

        async def start_slow():
            async with aiohttp.ClientSession() as s, WsLog(s, server.url, "t") as ws:
                pid = (await post_prompt(s, server.url, picture_prompt(seed=3, steps=100, delay=0.05), "t"))["prompt_id"]
                await ws.wait_for(lambda m: m["type"] == "progress")
                return pid
        pid = run(start_slow())
    finally:
        server.stop()  # SIGTERM
    assert server.proc.returncode == 0
    with sqlite3.connect(data / "queue.sqlite3") as db:
        assert db.execute("SELECT state, attempts FROM prompts WHERE id=?", (pid,)).fetchone() == ("pending", 0)


def test_answers_at_once_while_the_nodes_load(tmp_path):
    slow = ServerProc(tmp_path / "data", "--custom-nodes", str(ROOT / "tests" / "slow_nodes"), "--no-builtin-nodes",
                      "--ready-wait", "0.2", custom_nodes=False).start()
    try:
        async def main():
            async with aiohttp.ClientSession() as s:
                async with s.get(slow.url + "/system_stats") as r:
                    assert r.status == 200 and (await r.json())["loom"]["ready"] is False
                prompt = {"1": {"class_type": "Constant", "inputs": {"value": 2.0}}}
                async with s.post(slow.url + "/prompt", json={"prompt": prompt}) as r:
                    assert r.status == 503 and r.headers["Retry-After"] == "5"
                    assert (await r.json())["error"]["type"] == "loading"
                async with s.get(slow.url + "/queue") as r:  # the queue does not wait for the nodes
                    assert r.status == 200
                slow.wait_ready(timeout=30)
                pid = (await post_prompt(s, slow.url, prompt))["prompt_id"]
                assert (await wait_history(s, slow.url, pid))["outputs"] == {"1": {"values": [2.0]}}
        run(main())
    finally:
        slow.stop()


def test_a_second_server_on_the_same_data_folder_refuses_to_start(tmp_path):
    first = ServerProc(tmp_path / "data").start()
    try:
        first.wait_ready()
        second = ServerProc(tmp_path / "data")
        second.log_path = tmp_path / "second.log"
        with pytest.raises(RuntimeError, match="server exited with 2"):  # before it says it is listening
            second.start()
        (line,) = second.output().splitlines()  # one line, no traceback
        assert line.startswith("error: ") and "in use by another Loom server" in line
        assert run(_status(first.url)) == 200  # the first one is unharmed
    finally:
        first.stop()


async def _status(url):
    async with aiohttp.ClientSession() as s, s.get(url + "/queue") as r:
        return r.status

"""SIGTERM ends the server promptly with torch and the nodes loaded, idle and in the middle of a run, and
cleanly: the queue database is closed, a finished prompt stays in the history, the running and the pending
prompt are queued again without an attempt charged. (bench/shutdown.py prints the times themselves.)"""
import json
import signal
import sqlite3
import subprocess

import aiohttp

from tests.server_harness import ROOT, ServerProc, WsLog, post_prompt, run, wait_history

OUTLIVES = 3.0  # seconds after SIGTERM that a process counts as hanging (it takes ~0.2 s; 5 s before)


def shapes(seed: int, steps: int) -> dict:
    wf = json.loads((ROOT / "workflows" / "shapes.json").read_text())
    wf["6"]["inputs"]["steps"] = steps
    wf["7"]["inputs"]["seed"] = seed
    return wf


def sigterm(server: ServerProc) -> int:
    """SIGTERM, then the exit status; fails if the process outlives OUTLIVES seconds."""
    server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(OUTLIVES)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError(f"the server outlived SIGTERM by {OUTLIVES} s:\n{server.output()}") from None
    finally:
        server.stop()  # closes the log


def test_sigterm_exits_promptly_and_cleanly_idle_and_mid_run(tmp_path):
    data = tmp_path / "data"
    server = ServerProc(data, custom_nodes=False).start()
    try:
        server.wait_ready(timeout=300)
    except BaseException:
        server.stop()
        raise
    assert sigterm(server) == 0
    assert not (data / "queue.sqlite3-wal").exists()  # closed: SQLite folds the log in on the last close

    server = ServerProc(data, custom_nodes=False).start()
    try:
        server.wait_ready(timeout=300)

        async def fill():
            async with aiohttp.ClientSession() as s, WsLog(s, server.url, "t") as ws:
                done = (await post_prompt(s, server.url, shapes(1, 2), "t"))["prompt_id"]
                await wait_history(s, server.url, done)
                slow = (await post_prompt(s, server.url, shapes(2, 500), "t"))["prompt_id"]
                waiting = (await post_prompt(s, server.url, shapes(3, 2), "t"))["prompt_id"]
                await ws.wait_for(lambda m: m["type"] == "progress" and m["data"]["prompt_id"] == slow)
                return done, slow, waiting
        done, slow, waiting = run(fill())
    except BaseException:
        server.stop()
        raise
    assert sigterm(server) == 0
    assert not (data / "queue.sqlite3-wal").exists()
    assert "Traceback" not in server.output()
    with sqlite3.connect(data / "queue.sqlite3") as db:
        rows = {i: (s, a) for i, s, a in db.execute("SELECT id, state, attempts FROM prompts")}
    assert rows == {done: ("done", 1), slow: ("pending", 0), waiting: ("pending", 0)}

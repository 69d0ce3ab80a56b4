"""Faults in Ray mode, on a one-worker loopback cluster with the torch-free test nodes (workers start
in seconds): a worker lost and then the server killed during one prompt, which then succeeds on its
third attempt (`--ray-attempts 3`: one rule counts both); SIGTERM leaves nothing marked running and
charges no attempt; worker scratch folders go away."""
import os
import signal
import sqlite3
import time

import aiohttp
import pytest

from tests.ray_harness import assert_loopback, ray_env, local_cluster, stats, wait_workers  # noqa: F401
from tests.server_harness import ServerProc, WsLog, picture_prompt, post_prompt, run, wait_history


@pytest.fixture(scope="module")
def cluster(ray_env):
    with local_cluster(ray_env, num_cpus=1, workers=1) as address:
        yield address


def ray_server(data, cluster) -> ServerProc:
    server = ServerProc(data, "--ray", cluster, "--ray-resource", "loom_worker", "--ray-attempts", "3").start()
    server.wait_ready(timeout=60)
    return server


def rows(data) -> dict[str, tuple]:
    with sqlite3.connect(data / "queue.sqlite3") as db:
        return {r[0]: r[1:] for r in db.execute("SELECT id, state, attempts FROM prompts")}


def scratch(ray_env, pid: int) -> list:
    return list(ray_env.glob(f"loom-actor-{pid}-*"))


def test_worker_lost_then_server_killed_then_success_on_the_third_attempt(cluster, ray_env, tmp_path):
    data = tmp_path / "data"
    first = ray_server(data, cluster)
    try:
        [worker] = wait_workers(first.url, 1, timeout=60)
        assert_loopback(cluster, first.proc.pid)

        async def two_attempts():
            async with aiohttp.ClientSession() as s, WsLog(s, first.url, "f") as ws:
                pid = (await post_prompt(s, first.url, picture_prompt(seed=3, steps=60, delay=0.05), "f"))["prompt_id"]
                await ws.wait_for(lambda m: m["type"] == "progress" and m["data"]["prompt_id"] == pid)
                os.kill(worker["pid"], signal.SIGKILL)  # attempt 1: the worker is lost
                starts = lambda m: m["type"] == "execution_start" and m["data"]["prompt_id"] == pid  # noqa: E731
                second = ws.messages.index(await ws.wait_for(starts)) + 1
                await ws.wait_for(starts, timeout=60, start=second)  # Ray restarted the actor: attempt 2
                await ws.wait_for(lambda m: m["type"] == "progress" and m["data"]["prompt_id"] == pid, start=second)
                return pid
        pid = run(two_attempts())
        assert not scratch(ray_env, worker["pid"])  # the restarted actor swept the killed one's folder
        first.kill()  # attempt 2: the server dies
    finally:
        first.stop()
    assert rows(data)[pid] == ("running", 2)

    second = ray_server(data, cluster)
    try:
        async def third():
            async with aiohttp.ClientSession() as s:
                return await wait_history(s, second.url, pid, timeout=90)
        entry = run(third())
        assert entry["status"]["status_str"] == "success", entry["status"]
        assert rows(data)[pid] == ("done", 3)
        loom = stats(second.url)
        assert loom["queue"]["counters"] == {"lost_attempts": 2, "lost_attempts.ray-0": 1,
                                             "lost_attempts.server_stopped": 1, "lost_attempts.worker_lost": 1}
        [worker] = loom["workers"]
        assert worker["lost_attempts"] == 1  # ray-0's, from before the restart
        [folder] = scratch(ray_env, worker["pid"])
        assert not any((folder / "output").iterdir())  # the prompt's files went with its end
    finally:
        second.stop()
    assert second.proc.returncode == 0
    assert not scratch(ray_env, worker["pid"])  # removed when the server stopped it


def test_sigterm_in_ray_mode_leaves_nothing_running(cluster, tmp_path):
    data = tmp_path / "data"
    server = ray_server(data, cluster)
    try:
        wait_workers(server.url, 1, timeout=60)

        async def start():
            async with aiohttp.ClientSession() as s, WsLog(s, server.url, "t") as ws:
                # a node that checks for interrupts only every 2 s
                slow = (await post_prompt(s, server.url, picture_prompt(seed=1, steps=5, delay=2.0), "t"))["prompt_id"]
                later = (await post_prompt(s, server.url, picture_prompt(seed=2), "t"))["prompt_id"]
                await ws.wait_for(lambda m: m["type"] == "executing" and m["data"]["node"] == "2")
                return slow, later
        slow, later = run(start())
        stopped = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        print(f"stopped in {time.monotonic() - stopped:.1f} s")
    finally:
        server.stop()
    assert "SIGTERM received" not in server.output()  # Ray's C++ handler stayed out of the way
    assert rows(data) == {slow: ("pending", 0), later: ("pending", 0)}
    with sqlite3.connect(data / "queue.sqlite3") as db:
        assert [r[0] for r in db.execute("SELECT id FROM prompts ORDER BY number")] == [slow, later]
        assert db.execute("SELECT COUNT(*) FROM counters").fetchone()[0] == 0

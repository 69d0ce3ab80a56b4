"""The server on a local Ray cluster (`--ray`, loopback only): two workers give the local mode's
images, a worker killed mid-sampling loses nothing; a node removed from a two-node cluster lets the
queue drain (tests/test_ray_cluster.py); crashes and clean stops (tests/test_ray_faults.py). Ray is a
test dependency: without it these tests fail, they do not skip."""
import io
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from PIL import Image

from tests.ray_harness import assert_loopback, ray_env, local_cluster, stats, wait_workers  # noqa: F401
from tests.server_harness import ServerProc, WsLog, post_prompt, run, wait_history

ROOT = Path(__file__).resolve().parent.parent
TXT2IMG = json.loads((ROOT / "workflows" / "txt2img.json").read_text())


def txt2img(seed: int, steps: int = 4, prefix: str = "ray") -> dict:
    prompt = json.loads(json.dumps(TXT2IMG))
    prompt["6"]["inputs"]["steps"] = steps
    prompt["7"]["inputs"]["seed"] = seed
    prompt["10"]["inputs"]["filename_prefix"] = prefix
    return prompt


@pytest.fixture(scope="module")
def cluster(ray_env):
    with local_cluster(ray_env, num_cpus=2, workers=2) as address:
        yield address


@pytest.fixture(scope="module")
def server(cluster, tmp_path_factory):
    # One torch thread per worker: two workers with two threads each on two cores spin for minutes.
    # The local reference runs with one thread too: CPU results depend on the thread count.
    proc = ServerProc(tmp_path_factory.mktemp("raysrv") / "data", "--ray", cluster, "--ray-resource", "loom_worker",
                      "--ray-threads", "1", custom_nodes=False).start()
    try:
        proc.wait_ready(timeout=120)
        wait_workers(proc.url, 2, timeout=120)
        assert_loopback(cluster, proc.proc.pid)  # the server's Ray driver and its workers too
        yield proc
    finally:
        proc.stop()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


async def image_of(session, url: str, entry: dict) -> bytes:
    image = entry["outputs"]["10"]["images"][0]
    async with session.get(url + "/view", params=image) as r:
        assert r.status == 200
        return await r.read()


def local_images(models_dir: Path, out: Path, seeds: list[int], steps: int) -> dict[int, np.ndarray]:
    """The same prompts on the local engine (what the server runs without --ray), with one thread."""
    from graph import Env, Loom
    from nodes.common import torch_threads

    loom = Loom(Env.from_data_dir(out, models_dir=models_dir))
    images = {}
    with torch_threads(1):
        for seed in seeds:
            result = loom.run(txt2img(seed, steps, prefix=f"local{seed}"))
            assert result.ok, result.error
            images[seed] = pixels(loom.image_paths(result)[0].read_bytes())
    return images


def test_two_workers_give_the_local_images(server, tmp_path):
    seeds = [1, 2, 3, 4]

    async def main():
        async with aiohttp.ClientSession() as s, WsLog(s, server.url, "ray") as ws:
            ids = [(await post_prompt(s, server.url, txt2img(seed), "ray", extra_data={"preview_method": "auto"}))["prompt_id"]
                   for seed in seeds]
            entries = [await wait_history(s, server.url, pid, timeout=120) for pid in ids]
            msgs = await ws.until_done(ids[0])
            return entries, [await image_of(s, server.url, e) for e in entries], msgs
    entries, images, msgs = run(main())
    assert all(e["status"]["status_str"] == "success" for e in entries)
    names = [e["outputs"]["10"]["images"][0]["filename"] for e in entries]
    assert sorted(names) == [f"ray_{i:05}_.png" for i in range(1, 5)]  # one folder, no clash across workers
    text = [m for m in msgs if isinstance(m, dict)]
    # (status events are broadcasts: another prompt's may fall in between)
    assert [m["type"] for m in text if m["type"] != "status"][:2] == ["execution_start", "execution_cached"]
    assert [(m["data"]["value"], m["data"]["max"]) for m in text if m["type"] == "progress"] == \
        [(i, 4) for i in range(1, 5)]
    assert any(isinstance(m, bytes) for m in msgs)  # preview frames relayed
    executed = next(m for m in text if m["type"] == "executed" and m["data"]["node"] == "10")  # (text nodes may warn first)
    assert executed["data"]["output"] == entries[0]["outputs"]["10"]  # the event names the server's file

    reference = local_images(server.data_dir / "models", tmp_path / "local", seeds, 4)
    for seed, data in zip(seeds, images):
        assert np.array_equal(pixels(data), reference[seed]), f"seed {seed} differs from the local mode"
    assert not np.array_equal(reference[1], reference[2])

    workers = stats(server.url)["workers"]
    assert len(workers) == 2 and all(w["runs"] >= 1 for w in workers), workers  # both worked
    assert all(w["model_loads"] == 1 and w["models"] == ["LoadCheckpoint(model=tiny-sd)"] for w in workers)
    assert all(w["current_prompt"] is None and w["device"] for w in workers)


def test_a_worker_killed_mid_sampling_loses_nothing(server):
    async def main():
        async with aiohttp.ClientSession() as s, WsLog(s, server.url, "kill") as ws:
            long = (await post_prompt(s, server.url, txt2img(7, steps=60, prefix="kill"), "kill"))["prompt_id"]
            others = [(await post_prompt(s, server.url, txt2img(seed, prefix="after"), "kill"))["prompt_id"]
                      for seed in (8, 9)]
            await ws.wait_for(lambda m: m["type"] == "progress" and m["data"]["prompt_id"] == long, timeout=60)
            victim = next(w for w in stats(server.url)["workers"] if w["current_prompt"] == long)
            os.kill(victim["pid"], signal.SIGKILL)
            entries = [await wait_history(s, server.url, pid, timeout=120) for pid in [long, *others]]
            await ws.until_done(long, timeout=30)
            return victim, entries, ws.of(long)
    victim, entries, msgs = run(main())
    assert [e["status"]["status_str"] for e in entries] == ["success"] * 3
    text = [m for m in msgs if isinstance(m, dict)]
    starts = [i for i, m in enumerate(text) if m["type"] == "execution_start"]
    assert len(starts) == 2  # the retry starts afresh, and clients see it
    retry = [m["data"]["value"] for m in text[starts[1]:] if m["type"] == "progress"]
    assert retry == list(range(1, 61))
    assert entries[0]["outputs"]["10"]["images"][0]["filename"].startswith("kill_")
    workers = wait_workers(server.url, 2, timeout=90, pids_not={victim["pid"]})  # Ray restarted it
    assert sum(w["lost_attempts"] for w in workers) == 1
    with urllib.request.urlopen(server.url + "/queue", timeout=10) as r:
        assert json.load(r) == {"queue_running": [], "queue_pending": []}


def test_interrupt_free_and_workflow_errors(server):
    """/interrupt reaches the worker; /free empties the workers' caches; a failing workflow is an
    error in the history, run once (never retried)."""
    async def main():
        async with aiohttp.ClientSession() as s, WsLog(s, server.url, "ctl") as ws:
            long = (await post_prompt(s, server.url, txt2img(11, steps=400), "ctl"))["prompt_id"]
            await ws.wait_for(lambda m: m["type"] == "progress" and m["data"]["prompt_id"] == long, timeout=60)
            async with s.post(server.url + "/interrupt", json={"prompt_id": long}) as r:
                assert (await r.json()) == {"interrupted": True}
            stopped = await wait_history(s, server.url, long, timeout=60)

            bad = txt2img(12)
            bad["10"]["inputs"]["filename_prefix"] = "../outside"
            failed_id = (await post_prompt(s, server.url, bad, "ctl"))["prompt_id"]
            failed = await wait_history(s, server.url, failed_id, timeout=60)
            async with s.post(server.url + "/free", json={"unload_models": True}) as r:
                assert (await r.json()) == {"scheduled": True}
            return stopped, ws.of(long), failed, ws.of(failed_id)
    before = sum(w["lost_attempts"] for w in stats(server.url)["workers"])
    stopped, long_msgs, failed, failed_msgs = run(main())
    assert stopped["status"]["status_str"] == "error"
    assert [m for m, _ in stopped["status"]["messages"]][-1] == "execution_interrupted"
    steps = [m["data"]["value"] for m in long_msgs if isinstance(m, dict) and m["type"] == "progress"]
    assert steps and max(steps) < 400
    assert failed["status"]["status_str"] == "error"
    error = failed["status"]["messages"][-1][1]
    assert error["node_id"] == "10" and "filename_prefix" in error["exception_message"]
    assert [m["type"] for m in failed_msgs if isinstance(m, dict)].count("execution_start") == 1
    deadline = time.monotonic() + 30
    while any(w["models"] for w in stats(server.url)["workers"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = stats(server.url)["workers"]
    assert all(w["models"] == [] for w in workers), workers
    assert sum(w["lost_attempts"] for w in workers) == before

"""Load on the real server: 50 concurrent clients POST 500 prompts of a cheap workflow while 20
WebSocket clients listen. Prints accepted/completed/lost counts, POST latency p50/p99, WebSocket
delivery, and ratios against baselines measured in the same run:
- throughput: the same prompts run by `Loom.run` in-process (no HTTP, no queue database);
- POST latency: one client posting alone, no listeners.
Also the cold start: launch -> /system_stats, -> nodes loaded, -> first image.

    .venv/bin/python bench/server_load.py [--prompts 500] [--posters 50] [--listeners 20]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server_harness import ServerProc, picture_prompt  # noqa: E402  (the tests' server launcher)

TXT2IMG = ROOT / "workflows" / "txt2img.json"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def cold_start(base: Path) -> dict:
    """Launch with the built-in nodes; time /system_stats, readiness and the first image."""
    server = ServerProc(base / "cold", custom_nodes=False)
    t0 = time.monotonic()
    server.start(timeout=60)
    while True:
        try:
            with urllib.request.urlopen(server.url + "/system_stats", timeout=5) as r:
                json.load(r)
            break
        except OSError:
            time.sleep(0.01)
    stats_s = time.monotonic() - t0
    try:
        server.wait_ready(timeout=300)
        ready_s = time.monotonic() - t0
        first_s = None
        if TXT2IMG.exists():
            workflow = json.loads(TXT2IMG.read_text())
            req = urllib.request.Request(server.url + "/prompt", data=json.dumps({"prompt": workflow}).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                pid = json.load(r)["prompt_id"]
            while first_s is None:
                with urllib.request.urlopen(f"{server.url}/history/{pid}", timeout=5) as r:
                    entry = json.load(r).get(pid)
                if entry:
                    assert entry["status"]["status_str"] == "success", entry["status"]
                    first_s = time.monotonic() - t0
                time.sleep(0.05)
    finally:
        server.stop()
    return {"system_stats_s": stats_s, "ready_s": ready_s, "first_image_s": first_s}


def in_process_baseline(base: Path, n: int) -> float:
    """Prompts per second of Loom.run alone on the same workflows."""
    from graph import Env, Loom

    loom = Loom(Env.from_data_dir(base / "inproc"), packages=(), custom_nodes=ROOT / "tests" / "custom_nodes")
    t0 = time.monotonic()
    for i in range(n):
        assert loom.run(picture_prompt(seed=100_000 + i, steps=2)).ok
    return n / (time.monotonic() - t0)


async def post_all(url: str, prompts: int, posters: int, listeners: int, seed0: int) -> tuple[list, list, float]:
    """(latencies, accepted [(prompt_id, client_id)], seconds). Each poster takes prompts from a shared counter."""
    counter = iter(range(prompts))
    latencies, accepted = [], []

    async def poster(session):
        for i in counter:
            client = f"listener-{i % listeners}" if listeners else None
            body = {"prompt": picture_prompt(seed=seed0 + i, steps=2), "client_id": client}
            t = time.monotonic()
            async with session.post(url + "/prompt", json=body) as r:
                data = await r.json()
            latencies.append(time.monotonic() - t)
            if r.status == 200:
                accepted.append((data["prompt_id"], client))

    t0 = time.monotonic()
    conn = aiohttp.TCPConnector(limit=posters)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*[poster(session) for _ in range(posters)])
    return latencies, accepted, time.monotonic() - t0


async def load(url: str, prompts: int, posters: int, listeners: int) -> dict:
    seen: dict[str, set] = {}  # client -> prompt ids whose end (executing null) it received
    counts = {"messages": 0, "frames": 0}

    async def listen(session, client, ready):
        async with session.ws_connect(f"{url}/ws?clientId={client}") as ws:
            ready.set()
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    counts["frames"] += 1
                    continue
                counts["messages"] += 1
                data = json.loads(msg.data)
                if data["type"] == "executing" and data["data"]["node"] is None:
                    seen.setdefault(client, set()).add(data["data"]["prompt_id"])

    async with aiohttp.ClientSession() as session:
        readies = [asyncio.Event() for _ in range(listeners)]
        tasks = [asyncio.create_task(listen(session, f"listener-{i}", readies[i])) for i in range(listeners)]
        await asyncio.gather(*[r.wait() for r in readies])
        t0 = time.monotonic()
        latencies, accepted, post_s = await post_all(url, prompts, posters, listeners, seed0=0)
        ids = {pid for pid, _ in accepted}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            async with session.get(url + "/prompt") as r:
                if (await r.json())["exec_info"]["queue_remaining"] == 0:
                    break
            await asyncio.sleep(0.2)
        run_s = time.monotonic() - t0
        await asyncio.sleep(0.5)  # the last events are in flight
        async with session.get(url + "/history") as r:
            history = await r.json()
        for t in tasks:
            t.cancel()
    completed = sum(1 for pid in ids if history.get(pid, {}).get("status", {}).get("status_str") == "success")
    delivered = sum(1 for pid, client in accepted if pid in seen.get(client, ()))
    return {"sent": len(latencies), "accepted": len(accepted), "completed": completed,
            "lost": len(ids) - sum(1 for pid in ids if pid in history), "p50": pct(latencies, 50),
            "p99": pct(latencies, 99), "post_s": post_s, "run_s": run_s, "delivered": delivered,
            "ws_messages": counts["messages"], "ws_frames": counts["frames"]}


async def idle_latency(url: str, n: int = 30) -> float:
    latencies, _, _ = await post_all(url, n, 1, 0, seed0=900_000)
    return pct(latencies, 50)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=500)
    p.add_argument("--posters", type=int, default=50)
    p.add_argument("--listeners", type=int, default=20)
    p.add_argument("--skip-cold", action="store_true", help="skip the cold start with the built-in nodes")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    try:
        if not args.skip_cold:
            cold = cold_start(base)
            first = f"{cold['first_image_s']:.2f} s" if cold["first_image_s"] is not None else "n/a (no txt2img.json)"
            print(f"cold start: /system_stats {cold['system_stats_s']:.2f} s, nodes loaded {cold['ready_s']:.2f} s, "
                  f"first image {first}")
        baseline = in_process_baseline(base, 100)
        server = ServerProc(base / "load").start()
        try:
            server.wait_ready()
            idle = asyncio.run(idle_latency(server.url))
            r = asyncio.run(load(server.url, args.prompts, args.posters, args.listeners))
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    throughput = r["completed"] / r["run_s"]
    print(f"{args.posters} posters, {args.prompts} prompts, {args.listeners} ws listeners")
    print(f"accepted {r['accepted']}/{r['sent']}  completed {r['completed']}  lost {r['lost']}")
    print(f"POST latency p50 {r['p50'] * 1000:.1f} ms  p99 {r['p99'] * 1000:.1f} ms  "
          f"(idle single client p50 {idle * 1000:.1f} ms: x{r['p50'] / idle:.1f} under load)")
    print(f"ws delivery: {r['delivered']}/{r['accepted']} prompt ends reached their client "
          f"({100 * r['delivered'] / max(1, r['accepted']):.1f}%), {r['ws_messages']} messages, "
          f"{r['ws_frames']} preview frames")
    print(f"throughput {throughput:.1f} prompts/s through the server vs {baseline:.1f} prompts/s Loom.run "
          f"in-process: ratio {throughput / baseline:.2f}")
    print(f"all 500 POSTs answered in {r['post_s']:.2f} s; queue drained in {r['run_s']:.2f} s")


if __name__ == "__main__":
    main()

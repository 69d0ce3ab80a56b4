"""Loom on a local Ray cluster (`server.py --ray`), the tiny SD model, 4-step txt2img prompts posted
in one burst. Prints prompts/minute, model loads and p50 latency (post -> history), and ratios:
- scaling: 2 workers against 1 worker, every prompt on the same model;
- affinity: 2 workers, prompts over 3 models (copies of the tiny model under other names), each
  worker's cache holding about one model, routing with affinity against plain queue order.
Worker start-up is not timed (the burst is posted once every worker is up).

    .venv/bin/python bench/ray_scaling.py [--prompts 24] [--threads 1]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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

from tests.ray_harness import ray_settings, start_local_cluster  # noqa: E402  (loopback clusters)
from tests.server_harness import ServerProc, WsLog  # noqa: E402  (the tests' server launcher)

TXT2IMG = json.loads((ROOT / "workflows" / "txt2img.json").read_text())


def prompt(seed: int, model: str) -> dict:
    p = json.loads(json.dumps(TXT2IMG))
    p["1"]["inputs"]["model"] = model
    p["6"]["inputs"]["steps"] = 4
    p["7"]["inputs"]["seed"] = seed
    return p


def workers_of(url: str) -> list[dict]:
    with urllib.request.urlopen(url + "/system_stats", timeout=10) as r:
        return json.load(r)["loom"]["workers"]


def wait_workers(url: str, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(w["alive"] for w in workers_of(url)) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError("workers did not start")


async def burst(url: str, prompts: list[dict]) -> dict:
    async with aiohttp.ClientSession() as s, WsLog(s, url, "bench") as ws:
        sent, t0 = {}, time.monotonic()
        for p in prompts:
            async with s.post(url + "/prompt", json={"prompt": p, "client_id": "bench"}) as r:
                sent[(await r.json())["prompt_id"]] = time.monotonic()
        done = {}
        while len(done) < len(sent):
            m = await ws.wait_for(lambda m: m["type"] == "executing" and m["data"]["node"] is None
                                  and m["data"]["prompt_id"] in sent and m["data"]["prompt_id"] not in done,
                                  timeout=600)
            done[m["data"]["prompt_id"]] = time.monotonic()
        async with s.get(url + "/history") as r:
            history = await r.json()
    assert all(history[i]["status"]["status_str"] == "success" for i in sent), "a prompt failed"
    wall = max(done.values()) - t0
    return {"wall_s": wall, "per_min": 60 * len(sent) / wall,
            "p50_s": statistics.median(done[i] - sent[i] for i in sent)}


def scenario(base: Path, address: str, models: Path, prompts: list[dict], workers: int, threads: int,
             extra: tuple = ()) -> dict:
    server = ServerProc(base / f"data{time.monotonic_ns()}", "--models-dir", str(models), "--ray", address,
                        "--ray-resource", "loom_worker", "--ray-workers", str(workers), "--ray-threads", str(threads),
                        *extra, custom_nodes=False).start()
    try:
        server.wait_ready(timeout=300)
        wait_workers(server.url, workers)
        result = asyncio.run(burst(server.url, prompts))
        result["loads"] = sum(w["model_loads"] for w in workers_of(server.url))
        return result
    finally:
        server.stop()


def show(name: str, r: dict) -> None:
    print(f"  {name:<22} {r['per_min']:7.1f} prompts/min  p50 {r['p50_s']:6.2f} s  "
          f"{r['loads']:3d} model loads  ({r['wall_s']:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="loom-ray-bench-"))
    os.environ.update(ray_settings(base / "ray"))  # loopback only, a token of our own, temp files under base
    (base / "ray" / "ray").mkdir(parents=True)
    import ray  # after its settings: Ray reads them at import

    from nodes.loading.tiny import write_tiny_model

    models = base / "models"
    tiny = write_tiny_model(models / "tiny-sd")
    for name in ("tiny-a", "tiny-b", "tiny-c"):
        shutil.copytree(tiny, models / name)
    model_bytes = sum(f.stat().st_size for f in tiny.rglob("*.safetensors"))
    address = start_local_cluster(base / "ray", num_cpus=2, workers=2)  # asserts a loopback address
    try:
        print(f"{args.prompts} prompts, tiny SD model, 4 steps, {args.threads} torch thread(s) per worker, "
              f"{os.cpu_count()} CPUs")
        same = [prompt(seed, "tiny-sd") for seed in range(args.prompts)]
        one = scenario(base, address, models, same, 1, args.threads)
        two = scenario(base, address, models, same, 2, args.threads)
        print("scaling (one model):")
        show("1 worker", one)
        show("2 workers", two)
        print(f"  ratio 2/1: {two['per_min'] / one['per_min']:.2f}x prompts/min, "
              f"p50 {two['p50_s'] / one['p50_s']:.2f}x")

        rng = random.Random(0)
        mixed = [prompt(seed, rng.choice(["tiny-a", "tiny-b", "tiny-c"])) for seed in range(args.prompts)]
        budget = ("--cache-bytes", str(int(model_bytes * 1.5)))  # about one model per worker
        on = scenario(base, address, models, mixed, 2, args.threads, budget)
        off = scenario(base, address, models, mixed, 2, args.threads, (*budget, "--ray-no-affinity"))
        print(f"affinity (3 models, 2 workers, cache of {int(model_bytes * 1.5) >> 20} MiB each):")
        show("affinity on", on)
        show("affinity off (FIFO)", off)
        print(f"  ratio on/off: {on['per_min'] / off['per_min']:.2f}x prompts/min, "
              f"{on['loads']}/{off['loads']} model loads")
    finally:
        ray.shutdown()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

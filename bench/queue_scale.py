"""The queue at scale: does anything grow with the number of pending prompts or saved files?

- routing pass: one `Router.route` (the Ray pool's pass: read the head of the queue, assign, claim)
  with 1k, 10k and 100k pending txt2img prompts, two idle workers; beside it, in the same run, what
  the old pass did first: decode every pending row (`Store.queue()`).
- POST /prompt: latency of 200 submits (4 clients at once) to a real server (test nodes, no torch)
  whose queue holds 1k, 10k or 100k pending prompts behind a running one.
- image save: `SaveImage`'s `save_images` of a 64x64 image into a folder that holds 1k, 10k or 100k
  files of its prefix; beside it the old way of finding the next number (listing the folder).
- listings: GET /queue?max_items=64 (a page), /history?max_items=64, /api/jobs?limit=64 and the
  official frontend's two queue-panel requests, against a server whose store holds 1k, 10k or 100k
  pending and as many finished prompts; the unpaged GET /queue beside them (a few times: it answers
  every pending prompt). The client accepts gzip, as browsers do.

Prints a table and the 100k/1k ratios. These machines are shared and noisy: besides wall times
(median / p95 / p99) each row gives CPU time (the median CPU time of a routing pass or a save in this
process; for POST, the server process's CPU time per request), which other processes disturb little.

    .venv/bin/python bench/queue_scale.py [--sizes 1000 10000 100000] [--old-at-100k]
                                          [--parts routing post save listing]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loomqueue.routing import Idle, Policy, Router  # noqa: E402
from loomqueue.store import Store  # noqa: E402
from tests.server_harness import ServerProc, picture_prompt  # noqa: E402

TXT2IMG = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
MODELS = [f"LoadCheckpoint(model=tiny-{c})" for c in "abc"]


def fill(store: Store, count: int, make, batch: int = 5000) -> None:
    """`count` pending prompts; make(i) gives (workflow, models)."""
    for start in range(0, count, batch):
        rows = []
        for i in range(start, min(count, start + batch)):
            workflow, models = make(i)
            rows.append(dict(prompt_id=f"p{i}", workflow=workflow, prompt=workflow, extra_data={},
                             outputs=["10"], models=models))
        store.add_many(rows)


def ms(values) -> tuple[float, float, float]:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))] * 1000  # noqa: E731
    return statistics.median(values) * 1000, pick(0.95), pick(0.99)


def routing(base: Path, pending: int, old: bool, passes: int = 200) -> dict:
    rng = random.Random(pending)

    def make(i):
        prompt = json.loads(json.dumps(TXT2IMG))
        prompt["7"]["inputs"]["seed"] = i
        return prompt, [rng.choice(MODELS)]
    store = Store(base / f"route{pending}.sqlite3")
    fill(store, pending, make)
    router = Router(store, registry=None, policy=Policy())
    times, cpu = [], []
    for k in range(passes):
        idle = [Idle("w0", frozenset(MODELS[:1]), k), Idle("w1", frozenset(MODELS[1:2]), k + 0.5)]
        t0, c0 = time.perf_counter(), time.thread_time()
        started = router.route(idle)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        assert len(started) == 2
        for _, item in started:  # the workers finish at once: the queue stays about as long
            store.finish(item.id, {"status": {}, "outputs": {}, "meta": {}})
    out = {"pass": ms(times), "cpu": statistics.median(cpu)}
    if old:
        c0 = time.thread_time()
        _, rows = store.queue()
        out["old"] = time.thread_time() - c0
        assert len(rows) == pending - 2 * passes
    store.close()
    return out


async def post_latency(url: str, requests: int = 200, clients: int = 4) -> list[float]:
    import aiohttp

    times = []
    async with aiohttp.ClientSession() as s:
        async def client(c):
            for i in range(requests // clients):
                body = {"prompt": picture_prompt(seed=c * 100000 + i)}
                t0 = time.perf_counter()
                async with s.post(url + "/prompt", json=body) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
                times.append(time.perf_counter() - t0)
        await asyncio.gather(*(client(c) for c in range(clients)))
    return times


def posting(base: Path, pending: int) -> dict:
    data = base / f"post{pending}"
    store = Store(data / "queue.sqlite3")
    blocker = picture_prompt(seed=0, steps=1000, delay=5.0)  # runs for the whole measurement
    store.add("blocker", blocker, blocker, {}, ["4"])
    fill(store, pending, lambda i: (picture_prompt(seed=i), []))
    store.close()
    server = ServerProc(data).start(timeout=120)
    try:
        server.wait_ready(timeout=120)
        import psutil

        asyncio.run(post_latency(server.url, requests=20))  # warm-up
        proc = psutil.Process(server.proc.pid)
        c0 = sum(proc.cpu_times()[:2])
        times = asyncio.run(post_latency(server.url))
        return {"wall": ms(times), "cpu": (sum(proc.cpu_times()[:2]) - c0) / len(times)}
    finally:
        server.kill()


_OLD = re.compile(r"_(\d{5})_\.png$")


def old_next_counter(folder: Path, stem: str) -> int:
    """What SaveImage did before the counter index: list the folder for the highest number."""
    highest = 0
    for path in folder.iterdir():
        if path.name.startswith(stem + "_") and (m := _OLD.search(path.name)) and path.name[:m.start()] == stem:
            highest = max(highest, int(m.group(1)))
    return highest + 1


def saving(base: Path, files: int, saves: int = 50) -> dict:
    import torch

    from graph import Env
    from nodes.image import save_images

    env = Env.from_data_dir(base / f"save{files}")
    for i in range(1, files + 1):
        (env.output_dir / f"bench_{i:05}_.png").touch()

    class Ctx:  # what save_images reads of the executor's context
        prompt, extra_data = {"1": {"class_type": "SaveImage", "inputs": {}}}, {}

    Ctx.env = env
    image = torch.rand(1, 64, 64, 3)
    save_images(Ctx, image, "output", "warmup/bench")  # PNG encoder, index connection
    t0 = time.perf_counter()
    first = save_images(Ctx, image, "output", "bench")[0]["filename"]
    first_s = time.perf_counter() - t0
    assert first == f"bench_{files + 1:05}_.png", first
    times, cpu = [], []
    for _ in range(saves):
        t0, c0 = time.perf_counter(), time.thread_time()
        save_images(Ctx, image, "output", "bench")
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    old = []
    for _ in range(5):
        c0 = time.thread_time()
        old_next_counter(env.output_dir, "bench")
        old.append(time.thread_time() - c0)
    shutil.rmtree(env.data_dir, ignore_errors=True)
    return {"save": ms(times), "cpu": statistics.median(cpu), "first": first_s, "old_scan": statistics.median(old)}


LISTINGS = {  # name: (path, repetitions, Accept-Encoding)
    "queue page": ("/queue?max_items=64", 40, "gzip"),
    "history 64": ("/history?max_items=64", 40, "gzip"),
    "jobs 64": ("/api/jobs?limit=64", 40, "gzip"),
    "panel queue": ("/api/jobs?status=in_progress,pending&limit=200&offset=0", 40, "gzip"),
    "panel history": ("/api/jobs?status=completed,failed,cancelled&limit=64&offset=0", 40, "gzip"),
    "queue (all)": ("/queue", 3, "gzip"),
    "queue (all), plain": ("/queue", 3, "identity"),
}


def finished_result(i: int) -> dict:
    """What a worker stores for a prompt that saved one picture."""
    t = 1_700_000_000_000 + i
    return {"status": {"status_str": "success", "completed": True,
                       "messages": [["execution_start", {"prompt_id": f"h{i}", "timestamp": t}],
                                    ["execution_cached", {"nodes": [], "prompt_id": f"h{i}", "timestamp": t}],
                                    ["execution_success", {"prompt_id": f"h{i}", "timestamp": t + 900}]]},
            "outputs": {"4": {"images": [{"filename": f"loom_{i:05}_.png", "subfolder": "", "type": "output"}]}},
            "meta": {"4": {"node_id": "4", "display_node": "4", "parent_node": None, "real_node_id": "4"}}}


def fill_finished(store: Store, count: int, batch: int = 5000) -> None:
    """`count` finished prompts, written as the worker would leave them (one transaction per batch)."""
    fill(store, count, lambda i: (picture_prompt(seed=i), []), batch)  # ids p0.. are pending now
    def done():
        store._db.executemany("UPDATE prompts SET id=?, state='done', started=created, finished=?, result=? "
                              "WHERE id=?", [(f"h{i}", time.time() + i * 1e-6, json.dumps(finished_result(i)), f"p{i}")
                                             for i in range(count)])
    store._tx(done)


async def get_times(url: str, path: str, reps: int, accept: str = "gzip",
                    budget: float = 30.0) -> tuple[list[float], int, str]:
    """`reps` GETs of `path`, fewer (at least 3) once they took `budget` seconds; (times, the bytes
    on the wire, Content-Encoding). The body is read, not parsed: the times are the server's and
    the transfer's (with gzip also the client's decompression)."""
    import aiohttp

    times, size, encoding = [], 0, ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
        for i in range(reps):
            if i >= 3 and sum(times) > budget:
                break
            t0 = time.perf_counter()
            async with s.get(url + path, headers={"Accept-Encoding": accept}) as r:
                assert r.status == 200, await r.text()
                body = await r.read()
            times.append(time.perf_counter() - t0)
            size = int(r.headers.get("Content-Length", len(body)))
            encoding = r.headers.get("Content-Encoding", "identity")
    return times, size, encoding


def listing(base: Path, count: int) -> dict:
    data = base / f"list{count}"
    # the server keeps the newest 10k finished prompts, but trims only when one finishes: none does here
    store = Store(data / "queue.sqlite3", max_history=10 * count)
    fill_finished(store, count)
    blocker = picture_prompt(seed=0, steps=1000, delay=5.0)  # runs for the whole measurement
    store.add("blocker", blocker, blocker, {}, ["4"])
    fill(store, count, lambda i: (picture_prompt(seed=i), []))
    store.close()
    server = ServerProc(data).start(timeout=120)
    try:
        server.wait_ready(timeout=120)
        import psutil

        proc = psutil.Process(server.proc.pid)
        out = {}
        for name, (path, reps, accept) in LISTINGS.items():
            asyncio.run(get_times(server.url, path, 1, accept))  # warm-up
            c0 = sum(proc.cpu_times()[:2])
            times, size, encoding = asyncio.run(get_times(server.url, path, reps, accept))
            out[name] = {"wall": ms(times), "cpu": (sum(proc.cpu_times()[:2]) - c0) / len(times), "bytes": size,
                         "encoding": encoding}
        return out
    finally:
        server.kill()


def print_listing(count: int, rows: dict) -> None:
    for name, row in rows.items():
        path, _, accept = LISTINGS[name]
        print(f"{count:>7} pending+finished: GET {path:<58} {row['wall'][0]:8.1f} / {row['wall'][1]:8.1f}"
              f" (server cpu {row['cpu'] * 1000:7.1f})  {row['bytes'] / 1e3:8.1f} kB sent ({row['encoding']}; "
              f"accepts {accept})", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--old-at-100k", action="store_true", help="also time the old full decode at 100k (~40 s+)")
    ap.add_argument("--parts", nargs="+", choices=["scale", "listing"], default=["scale", "listing"],
                    help="scale: routing, POST /prompt and image save; listing: the GET listings")
    args = ap.parse_args()
    print(f"queue scale: sizes {args.sizes}, {os.cpu_count()} CPUs (times in ms: median / p95 / p99)")
    base = Path(tempfile.mkdtemp(prefix="loom-queue-bench-"))
    try:
        if "listing" in args.parts:
            for n in args.sizes:
                print_listing(n, listing(base, n))
        if "scale" in args.parts:
            scale(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def scale(args, base: Path) -> None:
    import torch

    torch.set_num_threads(1)
    rows = {}
    for n in args.sizes:
        route = routing(base, n, old=n < 100_000 or args.old_at_100k)
        post = posting(base, n)
        save = saving(base, n)
        rows[n] = (route, post, save)
        old = f"{route['old'] * 1000:10.1f}" if "old" in route else f"{'-':>10}"
        print(f"{n:>7} pending: routing pass {route['pass'][0]:5.2f} / {route['pass'][1]:5.2f} "
              f"(cpu {route['cpu'] * 1000:.2f})   old decode-all (cpu) {old}   POST /prompt {post['wall'][0]:5.1f} / "
              f"{post['wall'][1]:5.1f} / {post['wall'][2]:5.1f} (server cpu {post['cpu'] * 1000:.2f})", flush=True)
        print(f"{n:>7} files:   save {save['save'][0]:5.2f} / {save['save'][1]:5.2f} (cpu {save['cpu'] * 1000:.2f})"
              f"   first save (one-time listing) {save['first'] * 1000:7.1f}   old listing per save (cpu) "
              f"{save['old_scan'] * 1000:7.1f}", flush=True)
    small, large = rows[min(rows)], rows[max(rows)]
    ratio = lambda a, b: f"{a / b:.2f}x"  # noqa: E731
    print(f"ratio {max(rows)}/{min(rows)}: routing pass {ratio(large[0]['pass'][0], small[0]['pass'][0])} "
          f"(cpu {ratio(large[0]['cpu'], small[0]['cpu'])}), POST p99 {ratio(large[1]['wall'][2], small[1]['wall'][2])} "
          f"(cpu {ratio(large[1]['cpu'], small[1]['cpu'])}), save {ratio(large[2]['save'][0], small[2]['save'][0])} "
          f"(cpu {ratio(large[2]['cpu'], small[2]['cpu'])}); old listing {ratio(large[2]['old_scan'], small[2]['old_scan'])}")


if __name__ == "__main__":
    sys.exit(main())

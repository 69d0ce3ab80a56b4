"""The timeline of one prompt on the real server: where its wall time goes between the POST and the
history entry, and how much of it is idle (neither a node running nor anything the client waits for
that computes).

Starts a server on 127.0.0.1 with the built-in nodes (as tests/server_harness.py does), loads the model
with one warm-up prompt, then runs `--runs` prompts one after another, each with a new seed (the text
encoding stays cached, the sampling, decode and save run). One WebSocket client records when each
event arrives; the marks are:

    submit -> POST answered -> execution_start -> executing <node> ... -> execution_success
           -> executing null -> GET /history/<id> answered

A stretch from `executing X` to the next executing/execution_success is node X's (its compute, plus its
own file writes); everything else is overhead: validation and the queue commit, the hand-off to the
worker, the history commit, the relay of events, the history read. "idle share" = overhead / wall.
The server's CPU-seconds per prompt (from /proc) are printed beside the wall time.

    .venv/bin/python bench/prompt_timeline.py [--model shapes64|sd15] [--runs 5] [--steps 20] [--size 64]
                                              [--env NAME=VALUE,... --env ...]

`--model sd15` uses the SD 1.5-shaped checkpoint of bench/sd15_shaped.py (made on first use, 572 MB).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server_harness import ServerProc  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU-seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def schedstats(pid: int) -> dict[str, tuple[float, float, int]]:
    """Per thread: (seconds on a CPU, seconds runnable but waiting for a CPU, times it went to sleep
    (voluntary context switches: a lock, a futex, I/O)), from the scheduler."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            on_cpu, waiting, _ = (int(x) for x in (task / "schedstat").read_text().split())
            status = (task / "status").read_text()
        except (OSError, ValueError):
            continue
        sleeps = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        out[task.name] = (on_cpu / 1e9, waiting / 1e9, sleeps)
    return out


def busiest_thread(before: dict, after: dict, wall: float) -> tuple[float, float, float, int]:
    """(on a CPU, waiting for a CPU, blocked) shares of the wall time of the thread that computed most,
    and how often all threads went to sleep: blocked is time asleep (waiting on a lock, a futex, I/O),
    what a busy machine does not explain."""
    deltas = [tuple(a[i] - before.get(t, (0, 0, 0))[i] for i in range(3)) for t, a in after.items()]
    on_cpu, waiting, _ = max(deltas)
    return (on_cpu / wall, waiting / wall, max(0.0, wall - on_cpu - waiting) / wall, sum(d[2] for d in deltas))


def workflow(model: str, steps: int, size: int) -> dict:
    if model == "shapes64":
        wf = json.loads((ROOT / "workflows" / "shapes.json").read_text())
    else:
        wf = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
        wf["1"]["inputs"]["model"] = model
    wf["6"]["inputs"]["steps"] = steps
    wf["7"]["inputs"].update(width=size, height=size)
    return wf


async def one_prompt(session, url: str, client_id: str, wf: dict, pid: int) -> tuple[list, float, tuple]:
    """[(mark, seconds since submit)] of one prompt, the server's CPU-seconds for it and the shares of
    its busiest thread (see busiest_thread)."""
    marks: list[tuple[str, float]] = []
    done = asyncio.Event()
    async with session.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
        await ws.receive()  # the greeting status
        prompt_id = None

        async def listen():
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                now = time.perf_counter()
                m = json.loads(msg.data)
                kind, data = m["type"], m["data"]
                if kind == "status" or (prompt_id and data.get("prompt_id") not in (None, prompt_id)):
                    continue
                if kind == "executing":
                    marks.append(("executing " + (data["node"] or "null"), now))
                    if data["node"] is None:
                        done.set()
                elif kind in ("execution_start", "execution_success", "execution_error", "execution_cached"):
                    marks.append((kind, now))

        task = asyncio.create_task(listen())
        cpu0, sched0 = cpu_seconds(pid), schedstats(pid)
        t0 = time.perf_counter()
        async with session.post(url + "/prompt", json={"prompt": wf, "client_id": client_id}) as r:
            body = await r.json()
            assert r.status == 200, body
        marks.append(("POST answered", time.perf_counter()))
        prompt_id = body["prompt_id"]
        await asyncio.wait_for(done.wait(), 600)
        async with session.get(f"{url}/history/{prompt_id}") as r:
            entry = (await r.json()).get(prompt_id)
        marks.append(("history read", time.perf_counter()))
        cpu, sched = cpu_seconds(pid) - cpu0, schedstats(pid)
        assert entry and entry["status"]["completed"], entry
        task.cancel()
    marks = sorted(((name, t - t0) for name, t in marks), key=lambda m: m[1])
    return marks, cpu, busiest_thread(sched0, sched, marks[-1][1])


def phases(marks: list[tuple[str, float]]) -> list[tuple[str, float, bool]]:
    """(name, seconds, is a node) for each stretch between consecutive marks."""
    out, prev_name, prev_t = [], "submit", 0.0
    for name, t in marks:
        node = prev_name.startswith("executing ") and prev_name != "executing null"
        label = f"node {prev_name.split()[1]}" if node else f"{prev_name} -> {name}"
        out.append((label, t - prev_t, node))
        prev_name, prev_t = name, t
    return out


def start(data: Path, extra: list[str], env: dict[str, str]) -> ServerProc:
    """A server whose process gets `env` on top of this one's environment."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return ServerProc(data, *extra, custom_nodes=False).start()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


async def bench(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="loom-timeline-"))
    extra = []
    model = "shapes64"
    if args.model == "sd15":
        from bench.sd15_shaped import ensure_checkpoint

        single, _ = ensure_checkpoint()
        extra, model = ["--models-dir", str(single.parent)], single.name
    variants = {v: dict(kv.split("=", 1) for kv in v.split(",") if kv) for v in (args.env or [""])}
    servers = {}
    try:
        for i, name in enumerate(variants):
            servers[name] = start(tmp / f"data{i}", extra, variants[name])
        runs: dict[str, list] = {name: [] for name in variants}
        async with aiohttp.ClientSession() as session:
            wf = workflow(model, args.steps, args.size)
            for server in servers.values():
                server.wait_ready(600)
                await one_prompt(session, server.url, "timeline", wf, server.proc.pid)  # loads the model
            for i in range(args.runs):  # the variants in turn, so that they share the machine's moods
                wf["7"]["inputs"]["seed"] = 1000 + i
                for name, server in servers.items():
                    runs[name].append(await one_prompt(session, server.url, "timeline", wf, server.proc.pid))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for name in variants:
        if len(variants) > 1:
            print(f"== environment: {name or '(as given)'}")
        report(args, runs[name])


def report(args, runs) -> None:
    table: dict[str, list[float]] = {}
    idle, walls, cpus = [], [], []
    for marks, cpu, _ in runs:
        ph = phases(marks)
        for label, seconds, _ in ph:
            table.setdefault(label, []).append(seconds)
        wall = marks[-1][1]
        walls.append(wall)
        cpus.append(cpu)
        idle.append(sum(s for _, s, node in ph if not node) / wall)
    print(f"{args.model} at {args.size}x{args.size}, {args.steps} steps: median of {len(runs)} prompts (ms)")
    for label, values in table.items():
        print(f"  {label:42s} {1000 * statistics.median(values):9.1f}")
    print(f"  {'wall: submit -> history read':42s} {1000 * statistics.median(walls):9.1f}")
    print(f"server CPU-s per prompt {statistics.median(cpus):.3f}, CPU-s / wall {statistics.median(cpus) / statistics.median(walls):.2f}")
    shares = [statistics.median(r[2][i] for r in runs) for i in range(3)]
    print(f"busiest server thread: on a CPU {100 * shares[0]:.0f}%, waiting for a CPU (the machine's load) "
          f"{100 * shares[1]:.0f}%, blocked {100 * shares[2]:.0f}% of the wall time; threads went to sleep "
          f"{statistics.median(r[2][3] for r in runs):.0f} times")
    print(f"idle share (not in a node) median {100 * statistics.median(idle):.1f}%, "
          f"max {100 * max(idle):.1f}% (each run: {', '.join(f'{100 * x:.1f}' for x in idle)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("shapes64", "sd15"), default="shapes64")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--env", action="append", metavar="NAME=VALUE[,NAME=VALUE]",
                        help="run a server with these environment variables too (repeatable; '' = as given), "
                             "its prompts alternating with the others', e.g. --env '' --env GOMP_SPINCOUNT=3000")
    asyncio.run(bench(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

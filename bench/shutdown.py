"""How long the server takes to exit after SIGTERM, idle and after runs, and the CPU-seconds the exit costs.

Each round starts the server with the built-in nodes (torch loaded), waits until the nodes are loaded,
then either sends SIGTERM at once ("idle") or first runs `--prompts` prompts of the shapes64 example
("after runs"), and times SIGTERM -> the process reaped. The exit's CPU-seconds are the process's
total (from wait4) minus what it had used before the signal (from /proc). With `--baseline DIR` (another
checkout, e.g. `git worktree add /tmp/old HEAD~3`), its server runs in alternation with this one and
both are printed; medians of `--rounds` rounds.

    .venv/bin/python bench/shutdown.py [--rounds 3] [--prompts 3] [--baseline DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def start(root: Path, data: Path) -> tuple[subprocess.Popen, str]:
    log = data.with_suffix(".log")
    with open(log, "ab") as out:
        offset = out.tell()
        proc = subprocess.Popen([sys.executable, str(root / "server.py"), "--port", "0", "--data-dir", str(data)],
                                cwd=root, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for line in log.read_bytes()[offset:].decode(errors="replace").splitlines():
            if line.startswith("Loom listening on "):
                url = line.split()[-1]
                while not get(url + "/system_stats")["loom"]["ready"]:
                    time.sleep(0.1)
                return proc, url
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: see {log}")
        time.sleep(0.05)
    raise TimeoutError(f"the server did not start: see {log}")


def run_prompts(url: str, count: int) -> None:
    wf = json.loads((ROOT / "workflows" / "shapes.json").read_text())
    wf["6"]["inputs"]["steps"] = 4
    for seed in range(count):
        wf["7"]["inputs"]["seed"] = seed
        req = urllib.request.Request(url + "/prompt", data=json.dumps({"prompt": wf}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            prompt_id = json.load(r)["prompt_id"]
        while not get(f"{url}/history/{prompt_id}"):
            time.sleep(0.05)


def exit_time(root: Path, data: Path, prompts: int) -> tuple[float, float, int]:
    """(seconds from SIGTERM to the process reaped, CPU-seconds spent in that time, exit status)."""
    proc, url = start(root, data)
    run_prompts(url, prompts)
    time.sleep(0.5)  # let the last prompt's events settle: the exit alone is timed
    before = cpu_seconds(proc.pid)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - t0, usage.ru_utime + usage.ru_stime - before, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout to compare with")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="loom-shutdown-"))
    sides = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    results: dict[tuple[str, str], list] = {}
    try:
        for _ in range(args.rounds):
            for case, prompts in (("idle", 0), ("after runs", args.prompts)):
                for name, root in sides.items():
                    wall, cpu, status = exit_time(root, tmp / name, prompts)
                    assert status == 0, f"{name} exited with {status}"
                    results.setdefault((name, case), []).append((wall, cpu))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"SIGTERM -> exit, medians of {args.rounds} rounds ({args.prompts} shapes64 prompts before 'after runs')")
    for (name, case), values in results.items():
        walls, cpus = [v[0] for v in values], [v[1] for v in values]
        print(f"  {name:8s} {case:10s} wall {statistics.median(walls):5.2f} s (max {max(walls):.2f})  "
              f"CPU {statistics.median(cpus):5.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

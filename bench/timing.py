"""Timing a whole process, as the cold-path benches do: wall seconds and CPU-seconds (user + system,
the process and its threads), so results on a shared machine can also be read as CPU cost."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measured(cmd: list[str], env: dict) -> tuple[float, float, float]:
    """Wall seconds, CPU-seconds and peak resident memory (bytes) of one process run to its end (in
    the checkout's root). The peak is the process's own (wait4), not the largest of all children."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed:\n{stderr[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024  # Linux reports kilobytes


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and CPU-seconds of one process run to its end (in the checkout's root)."""
    wall, cpu, _ = measured(cmd, env)
    return wall, cpu

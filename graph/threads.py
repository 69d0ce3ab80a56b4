"""CPU threads for torch, chosen before torch is imported (this module imports no torch).

torch's OpenMP threads spin while they wait for work. On a machine whose cores are busy with
anything else (a browser, a second process, the tests) a spinning wait steals the time the other
threads need: one UNet step measured 1.5-2.4 s with the default and 0.14-0.21 s with
`OMP_WAIT_POLICY=PASSIVE` on a busy 2-core machine. Loom therefore defaults to passive waiting and
to one thread per physical core (hyper-threads share the core's arithmetic units).

An environment variable set by the user always wins over these defaults; an explicit `threads`
(the `--threads` option) wins over `OMP_NUM_THREADS`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def physical_cores() -> int:
    """Physical cores this process may run on (its CPU affinity), hyper-threads counted once."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return max(1, (os.cpu_count() or 2) // 2) if (os.cpu_count() or 1) > 1 else 1
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology.joinpath("physical_package_id").read_text().strip(),
                       topology.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))  # no topology: count the logical CPU
    return max(1, len(cores))


def configure_threads(threads: int | None = None) -> int:
    """Set Loom's CPU defaults and return the number of torch threads. Call it before torch is
    imported; if torch is already loaded, its thread count is still set (the wait policy then
    only applies to OpenMP pools not started yet)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        os.environ["OMP_NUM_THREADS"] = str(threads)
    else:
        threads = _env_threads() or physical_cores()
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(threads)
    return threads


def _env_threads() -> int | None:
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def threads_argument(argv: list[str]) -> int | None:
    """The value of `--threads N` in a command line, read before the command's own parser runs (which
    may only be after torch is imported): for scripts that call `configure_threads` first."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--threads", type=int, default=None)
    threads = parser.parse_known_args(argv)[0].threads
    return threads if threads and threads > 0 else None

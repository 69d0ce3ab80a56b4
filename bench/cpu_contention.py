"""txt2img through `loom run` while two other processes keep the CPU busy.

Three settings, run in turn (--rounds times each, medians printed):
  default      `loom run` as it is: Loom sets passive OpenMP waits and one thread per physical core
  by hand      `OMP_WAIT_POLICY=PASSIVE loom run`: the fix a user would apply by hand
  no settings  the same engine with torch's own defaults, as `server.py run` ran before Loom set any
               (graph.Loom in a plain process; no OMP_* variables, torch's thread count)
Each run is a fresh process from start to the saved image (imports, model load, 20 steps, PNG).
Goals: default / by hand <= 1.1 (the default is as good as the hand fix); the speed-up of the
default over no settings is printed. Wall seconds and the run's own CPU-seconds are both shown.

    python bench/cpu_contention.py [--rounds 3] [--busy 2] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import timed  # noqa: E402

BUSY = "while True: pass"
NO_SETTINGS = """
import sys
from graph import Loom
loom = Loom(sys.argv[1])
result = loom.run_file(sys.argv[2])
assert result.ok, result.error
print(*loom.image_paths(result))
"""


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "LOOM_"))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--busy", type=int, default=2, help="competing busy processes")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="loom-contention-"))
    data = tmp / "data"
    wf = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    wf["6"]["inputs"]["steps"] = args.steps
    wf_path = tmp / "txt2img.json"
    wf_path.write_text(json.dumps(wf))
    loom_run = [sys.executable, "-m", "loomserver", "run", str(wf_path), "--data-dir", str(data)]
    settings = {
        "default": (loom_run, clean_env()),
        "by hand": (loom_run, {**clean_env(), "OMP_WAIT_POLICY": "PASSIVE"}),
        "no settings": ([sys.executable, "-c", NO_SETTINGS, str(data), str(wf_path)], clean_env()),
    }
    timed(loom_run, clean_env())  # writes the demo model into the fresh data folder, warms the file cache

    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    try:
        for _ in range(args.rounds):
            for name, (cmd, env) in settings.items():
                results[name].append(timed(cmd, env))
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()

    print(f"txt2img (tiny model, 64x64, {args.steps} steps) through a fresh process, {args.busy} busy processes "
          f"on {os.cpu_count()} CPUs, {args.rounds} rounds; median wall s / CPU-s")
    med = {name: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for name, r in results.items()}
    for name, (wall, cpu) in med.items():
        print(f"  {name:12s} {wall:7.2f} s  {cpu:7.2f} CPU-s   (runs: {', '.join(f'{w:.1f}' for w, _ in results[name])})")
    ratio = med["default"][0] / med["by hand"][0]
    print(f"default / by hand:      {ratio:.2f}  (goal <= 1.1)")
    print(f"speed-up of the default over no settings: {med['no settings'][0] / med['default'][0]:.2f}x wall, "
          f"{med['no settings'][1] / med['default'][1]:.2f}x CPU-s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

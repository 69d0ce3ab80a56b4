"""txt2img through Loom vs the bare diffusers pipeline on the same weights: warm runs at several sizes
and batch sizes, then the cold path (process start to the first image, from a single file).

Warm: both sides load the model once, then alternate runs; each run has a new seed and prompt, so
everything but the model is recomputed (text encoding, noise, sampling with CFG, decode, PNG save).
Loom runs its whole workflow (validation, planning, cache, progress events, saving with metadata).
Goal: Loom / pipeline <= 1.0 at every size. Then a seed-only re-run (text encoding cached) against a
cold run (fresh executor, model load).

Cold: a fresh process from start to the saved image, alternating `loom run WORKFLOW` (the workflow
names the single file) and a script doing `StableDiffusionPipeline.from_single_file(file, config=the
diffusers folder)` + the pipeline + save. Both with the same threads and passive OpenMP waits.
Wall seconds, CPU-seconds and each process's peak resident memory are printed; goals for Loom /
diffusers: 0.7 of the CPU-seconds, peak memory at most 1.1 of the pipeline's. Then the peak memory
alone at every size (`--memory-steps` steps: the peak does not grow with the steps).

Times are CPU-seconds (user + system) where the machine is shared: they stay steady under load
where wall seconds do not. `--profile` prints the top of a cProfile of one Loom run and one pipeline
run at the first size and batch (CPU time, by cumulative and by own time).

The model is SD 1.5-shaped (bench/sd15_shaped.py: 320-channel blocks, 572 MB, made locally on first
use into bench/out/cache/); `--model tiny` uses the tiny demo model instead (warm part only).

    python bench/sd_overhead.py [--runs 3] [--steps 20] [--sizes 64,256] [--batches 1,4] [--threads 1]
                                [--cold-runs 5] [--memory-runs 1] [--memory-steps 2] [--model sd15|tiny] [--profile]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import measured  # noqa: E402

PIPELINE_COLD = """
import sys, torch
torch.set_num_threads(int(sys.argv[4]))
size = int(sys.argv[6])
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_single_file(sys.argv[1], config=sys.argv[2], local_files_only=True,
                                                safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
image = pipe("a photo of a cat riding a horse, highly detailed", negative_prompt="blurry, low quality, watermark",
             num_inference_steps=int(sys.argv[5]), guidance_scale=7.5, height=size, width=size,
             generator=torch.Generator("cpu").manual_seed(42)).images[0]
image.save(sys.argv[3])
"""


def txt2img(model: str, steps: int, size: int = 64) -> dict:
    wf = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    wf["1"]["inputs"]["model"] = model
    wf["6"]["inputs"].update(kind="dpmpp_2m", steps=steps)
    wf["7"]["inputs"].update(width=size, height=size)
    return wf


def cpu_timed(run, i: int, size: int, batch: int) -> tuple[float, float]:
    """(wall seconds, CPU-seconds of this process) of one run."""
    wall, cpu = time.perf_counter(), time.process_time()
    run(i, size, batch)
    return time.perf_counter() - wall, time.process_time() - cpu


def profile(run, size: int, batch: int, top: int = 25) -> None:
    """cProfile of one run in CPU time: the top entries by cumulative and by own time."""
    import cProfile
    import pstats

    profiler = cProfile.Profile(time.process_time)
    profiler.runcall(run, 10**6, size, batch)
    stats = pstats.Stats(profiler)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


def warm(args, models: Path, model: str, folder: Path, tmp: Path) -> None:
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from graph import Env, Loom
    from nodes.common import device_of, dtype_of

    env = Env.from_data_dir(tmp / "data", models_dir=models, device=args.device)
    device = device_of(env)
    dtype = dtype_of(env, device)
    wf = txt2img(model, args.steps)
    negative = wf["3"]["inputs"]["text"]
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    base_config = pipe.scheduler.config
    out = tmp / "pipeline"
    out.mkdir()
    loom = Loom(env)

    def run_pipeline(i: int, size: int, batch: int) -> None:
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(base_config, algorithm_type="dpmsolver++",
                                                                 solver_order=2)
        images = pipe(f"a photo of a cat number {i}", negative_prompt=negative, num_inference_steps=args.steps,
                      guidance_scale=7.5, height=size, width=size, num_images_per_prompt=batch,
                      generator=[torch.Generator("cpu").manual_seed(i + k) for k in range(batch)]).images
        for k, image in enumerate(images):
            image.save(out / f"p_{i:05}_{k}.png", compress_level=4)

    def run_loom(i: int, size: int, batch: int) -> None:
        wf["2"]["inputs"]["text"] = f"a photo of a cat number {i}"
        wf["7"]["inputs"].update(seed=i, width=size, height=size, batch_size=batch)
        result = loom.run(wf)
        assert result.ok, result.error

    print(f"warm: device {device}, dtype {dtype}, {args.threads} thread(s), {args.steps} steps, "
          f"{args.runs} alternating runs per size (medians; CPU-seconds, then wall seconds)")
    print(f"  {'size':>9s} {'batch':>5s} {'pipe CPU-s':>10s} {'Loom CPU-s':>10s} {'Loom/pipe':>9s} "
          f"{'pipe s':>8s} {'Loom s':>8s} {'wall':>6s}")
    worst = 0.0
    for size in args.sizes:
        for batch in args.batches:
            run_pipeline(0, size, batch), run_loom(0, size, batch)  # warm-up: first-call allocations
            pipeline_times, loom_times = [], []
            for i in range(1, args.runs + 1):
                if i % 2:
                    pipeline_times.append(cpu_timed(run_pipeline, i, size, batch))
                    loom_times.append(cpu_timed(run_loom, i, size, batch))
                else:
                    loom_times.append(cpu_timed(run_loom, i, size, batch))
                    pipeline_times.append(cpu_timed(run_pipeline, i, size, batch))
            (p_wall, p_cpu), (l_wall, l_cpu) = ([statistics.median(t[k] for t in times) for k in (0, 1)]
                                                for times in (pipeline_times, loom_times))
            worst = max(worst, l_cpu / p_cpu)
            ratios = " ".join(f"{l[1] / p[1]:.3f}" for p, l in zip(pipeline_times, loom_times))
            print(f"  {f'{size}x{size}':>9s} {batch:5d} {p_cpu:10.2f} {l_cpu:10.2f} {l_cpu / p_cpu:9.3f} "
                  f"{p_wall:8.2f} {l_wall:8.2f} {l_wall / p_wall:6.3f}   (each run's CPU ratio: {ratios})", flush=True)
    print(f"  worst Loom / pipeline (CPU-s): {worst:.3f}  (goal <= 1.02)")
    if args.profile:
        size, batch = args.sizes[0], args.batches[0]
        for name, run in (("Loom", run_loom), ("pipeline", run_pipeline)):
            print(f"--- profile of one {name} run, {size}x{size}, batch {batch} (CPU seconds)")
            profile(run, size, batch)

    size = args.sizes[0]
    wf["7"]["inputs"].update(width=size, height=size, batch_size=1)
    cold_loom = Loom(env)
    start = time.perf_counter()
    assert cold_loom.run(wf).ok
    cold = time.perf_counter() - start
    reruns = []
    for i in range(3):
        wf["7"]["inputs"]["seed"] = 1000 + i
        start = time.perf_counter()
        result = cold_loom.run(wf)
        reruns.append(time.perf_counter() - start)
        assert result.ok and "1" in result.cached and "4" in result.cached
    rerun = statistics.median(reruns)
    print(f"  {size}x{size}: cold run (fresh executor, model load) {cold * 1000:8.1f} ms; "
          f"seed-only re-run (model, text cached) {rerun * 1000:8.1f} ms ({rerun / cold:.2f} of cold)")


def alternate(args, single: Path, folder: Path, tmp: Path, size: int, steps: int, runs: int) -> dict:
    """`loom run` and from_single_file + pipeline as fresh processes, alternating: name -> [(wall s,
    CPU-s, peak RSS bytes)] per run."""
    wf_path = tmp / f"cold-{size}-{steps}.json"
    wf_path.write_text(json.dumps(txt2img(single.name, steps, size)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "LOOM_"))}
    env.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(args.threads))
    loom = [sys.executable, "-m", "loomserver", "run", str(wf_path), "--data-dir", str(tmp / "cold-data"),
            "--models-dir", str(single.parent), "--threads", str(args.threads)]
    pipeline = [sys.executable, "-c", PIPELINE_COLD, str(single), str(folder), str(tmp / "cold.png"),
                str(args.threads), str(steps), str(size)]
    times: dict[str, list[tuple[float, float, float]]] = {"loom run": [], "from_single_file": []}
    for i in range(runs):
        order = [("loom run", loom), ("from_single_file", pipeline)]
        for name, cmd in order if i % 2 == 0 else order[::-1]:
            times[name].append(measured(cmd, env))
    return times


def cold(args, single: Path, folder: Path, tmp: Path) -> None:
    size = args.sizes[0]
    times = alternate(args, single, folder, tmp, size, args.steps, args.cold_runs)
    print(f"cold path: process start to the first image, {single.name} ({single.stat().st_size / 1e6:.0f} MB), "
          f"{size}x{size}, {args.steps} steps, {args.threads} thread(s), {args.cold_runs} alternating runs (median)")
    med = {}
    for name, runs in times.items():
        med[name] = [statistics.median(r[k] for r in runs) for k in range(3)]
        print(f"  {name:17s} {med[name][0]:7.2f} s {med[name][1]:7.2f} CPU-s {med[name][2] / 2**20:7.0f} MiB peak   "
              f"(CPU-s: {', '.join(f'{c:.2f}' for _, c, _ in runs)})")
    loom, pipe = med["loom run"], med["from_single_file"]
    print(f"  Loom / from_single_file + pipeline: {loom[1] / pipe[1]:.2f} CPU-s (goal 0.7), {loom[0] / pipe[0]:.2f} "
          f"wall, {loom[2] / pipe[2]:.2f} peak memory (goal <= 1.1)")
    print(f"peak resident memory of a whole txt2img process ({args.memory_steps} steps, {args.memory_runs} run(s), "
          f"median)")
    for size in args.sizes:
        times = alternate(args, single, folder, tmp, size, args.memory_steps, args.memory_runs)
        loom, pipe = (statistics.median(r[2] for r in times[name]) for name in ("loom run", "from_single_file"))
        print(f"  {f'{size}x{size}':>9s}: Loom {loom / 2**20:6.0f} MiB, pipeline {pipe / 2**20:6.0f} MiB: "
              f"{loom / pipe:.3f} (goal <= 1.1)", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="warm runs per size and batch; 0 skips the warm part")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sizes", default="64,256", help="comma-separated image sizes")
    p.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the same for both sides)")
    p.add_argument("--cold-runs", type=int, default=5, help="0 skips the cold path and the memory peaks")
    p.add_argument("--memory-runs", type=int, default=1, help="processes per side for the memory peak")
    p.add_argument("--memory-steps", type=int, default=2, help="steps of the memory-peak processes")
    p.add_argument("--profile", action="store_true", help="cProfile one run of each (first size and batch)")
    p.add_argument("--model", choices=("sd15", "tiny"), default="sd15")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.batches = [int(b) for b in args.batches.split(",")]

    from graph.threads import configure_threads

    configure_threads(args.threads)  # before torch loads, as the server does
    tmp = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    if args.model == "tiny":
        from nodes.loading.tiny import TINY_NAME, ensure_tiny_model

        models = tmp / "models"
        ensure_tiny_model(models)
        warm(args, models, TINY_NAME, models / TINY_NAME, tmp)
        return 0
    from bench.sd15_shaped import ensure_checkpoint

    single, folder = ensure_checkpoint()
    if args.runs:
        warm(args, single.parent, single.name, folder, tmp)
    if args.cold_runs:
        cold(args, single, folder, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

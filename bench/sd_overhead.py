"""txt2img through the executor vs the bare diffusers pipeline on the same weights.

Both sides load the model once, then alternate runs; each run has a new seed and a new prompt, so
everything but the model is recomputed (text encoding, noise, 20 sampling steps with CFG, decode,
PNG save). Prints the median times and their ratio (goal <= 1.03), then the time of a seed-only
re-run (text encoding served from the cache) against a cold run (fresh executor: model load too).

    python bench/sd_overhead.py [--runs 7] [--steps 20] [--size 64] [--threads 1] [--models-dir DIR]

Without --models-dir the tiny demo model is written into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the same for both sides)")
    p.add_argument("--models-dir", default=None, help="a models folder holding --model")
    p.add_argument("--model", default="tiny-sd")
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from graph import Env, Loom
    from nodes.common import device_of, dtype_of
    from nodes.tiny_model import ensure_tiny_model

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    models = Path(args.models_dir) if args.models_dir else tmp / "models"
    if not args.models_dir:
        ensure_tiny_model(models)
    env = Env.from_data_dir(tmp / "data", models_dir=models, device=args.device)
    device = device_of(env)
    dtype = dtype_of(env, device)
    wf = json.loads((Path(__file__).resolve().parent.parent / "workflows" / "txt2img.json").read_text())
    wf["1"]["inputs"]["model"] = args.model
    wf["6"]["inputs"].update(kind="dpmpp_2m", steps=args.steps)
    wf["7"]["inputs"].update(width=args.size, height=args.size)
    negative = wf["3"]["inputs"]["text"]

    pipe = StableDiffusionPipeline.from_pretrained(models / args.model, safety_checker=None, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    base_config = pipe.scheduler.config
    out = tmp / "pipeline"
    out.mkdir()

    def run_pipeline(i: int) -> float:
        start = time.perf_counter()
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(base_config, algorithm_type="dpmsolver++",
                                                                 solver_order=2)
        image = pipe(f"a photo of a cat number {i}", negative_prompt=negative, num_inference_steps=args.steps,
                     guidance_scale=7.5, height=args.size, width=args.size,
                     generator=torch.Generator("cpu").manual_seed(i)).images[0]
        image.save(out / f"p_{i:05}.png", compress_level=4)
        return time.perf_counter() - start

    loom = Loom(env)

    def run_loom(i: int, prompt: str | None = None) -> float:
        wf["2"]["inputs"]["text"] = prompt or f"a photo of a cat number {i}"
        wf["7"]["inputs"]["seed"] = i
        start = time.perf_counter()
        result = loom.run(wf)
        elapsed = time.perf_counter() - start
        assert result.ok, result.error
        return elapsed

    run_pipeline(0), run_loom(0)  # warm-up: model load, first-call allocations
    pipeline_times, loom_times = [], []
    for i in range(1, args.runs + 1):
        if i % 2:
            pipeline_times.append(run_pipeline(i))
            loom_times.append(run_loom(i))
        else:
            loom_times.append(run_loom(i))
            pipeline_times.append(run_pipeline(i))
    p_med, l_med = statistics.median(pipeline_times), statistics.median(loom_times)
    print(f"device {device}, dtype {dtype}, {args.threads} thread(s), {args.size}x{args.size}, {args.steps} steps, "
          f"{args.runs} alternating runs")
    print(f"diffusers pipeline : median {p_med * 1000:8.1f} ms")
    print(f"Loom executor      : median {l_med * 1000:8.1f} ms")
    print(f"ratio executor / pipeline: {l_med / p_med:.3f}  (goal <= 1.03)")

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
    print(f"cold run (fresh executor, model load) : {cold * 1000:8.1f} ms")
    print(f"seed-only re-run (model, text cached) : {rerun * 1000:8.1f} ms  ({rerun / cold:.2f} of cold)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Loom on a GPU against diffusers' StableDiffusionPipeline on the same weights: a full-size SD
1.5-shaped model with random weights, made here from the published configs (no download).

Prints, in one run, each section as soon as it is measured:
  model     the model written to a temporary models folder (parameters, seconds)
  pipeline  diffusers' default (float16, SDPA): it/s of the denoising loop at SIZE, STEPS, batch 1
            and 4, seconds per image batch, peak VRAM
  loom      Loom's graph, the same workflow, with each speed option: plain, +channels_last,
            +cudnn_benchmark, default (both); ratio to the pipeline (goal >= 1.3)
  rerun     a seed-change re-run against the first run of a fresh engine (model load included)
  parity    Loom vs pipeline, max abs difference of pixels and latents: float32 (goal 0) and float16
  memory    two models under a VRAM budget that holds one: moves to RAM and back, peak VRAM, times
  cold      cold start to the first image: `server.py run` and a pipeline script, fresh processes
  compile   Loom default + torch.compile of the UNet (last: its first runs compile for minutes)

    python bench/gpu.py                  # CUDA: 512x512, 50 steps (about 5 minutes on an H100-class GPU)
    python bench/gpu.py --tiny           # smoke test anywhere: tiny model, 64x64, 4 steps
    python bench/gpu.py --sections loom,parity --runs 5

it/s counts denoising steps (one UNet call on the uncond+cond batch) per second between the end of
the first step and the end of the last (synchronised), on both sides alike.
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Stable Diffusion 1.5's published configs (unet/, vae/ and text_encoder/config.json of the v1-5
# release). The text encoder keeps the demo tokenizer's vocabulary (1,000 rows of its embedding
# table instead of 49,408): a lookup table, no difference in compute.
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
                 flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, mid_block_scale_factor=1)
SD15_VAE = dict(sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, act_fn="silu", scaling_factor=0.18215)
SD15_CLIP = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768)

PROMPT, NEGATIVE, CFG = "a photo of a cat riding a horse, highly detailed", "blurry, low quality, watermark", 7.5
SECTIONS = ("pipeline", "loom", "rerun", "parity", "memory", "cold", "compile")
GOAL = 1.3  # Loom's it/s over the pipeline's
PIPELINE = "diffusers default"


@dataclass
class Timing:
    its: float  # denoising steps per second
    seconds: float  # the whole call


def log(line: str = "") -> None:
    print(line, flush=True)


class Bench:
    def __init__(self, args):
        import torch

        self.args, self.torch = args, torch
        self.cuda = torch.cuda.is_available() and args.device != "cpu"
        self.device = "cuda" if self.cuda else "cpu"
        self.work = Path(tempfile.mkdtemp(prefix="loom-gpu-bench-"))
        self.models = self.work / "models"
        self.name = "tiny-sd" if args.tiny else "sd15"
        self.half = torch.float16 if self.cuda else torch.float32  # "diffusers default" dtype here
        self.its: dict[str, dict[int, float]] = {}  # setting -> batch -> it/s

    # --- helpers ---------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> str:
        return f"{self.torch.cuda.max_memory_allocated() / 2**30:6.2f} GiB" if self.cuda else "   n/a"

    def generators(self, batch: int, seed: int):
        return [self.torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]

    def workflow(self, batch: int = 1, seed: int = 0, model: str | None = None) -> dict:
        wf = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
        wf["1"]["inputs"]["model"] = model or self.name
        wf["2"]["inputs"]["text"], wf["3"]["inputs"]["text"] = PROMPT, NEGATIVE
        wf["6"]["inputs"].update(kind="euler", steps=self.args.steps)
        wf["7"]["inputs"].update(width=self.args.size, height=self.args.size, batch_size=batch, seed=seed)
        wf["8"]["inputs"]["guidance_scale"] = CFG
        return wf

    def loom(self, dtype: str, speed=None, data: str = "data", vram_bytes: int | None = None):
        from graph import Env, Loom
        from graph.env import Speed
        from nodes.loading.placement import placement_for

        env = Env.from_data_dir(self.work / data, models_dir=self.models, device=self.device, dtype=dtype,
                                speed=speed or Speed())
        return Loom(env, placement=placement_for(env), vram_bytes=vram_bytes)

    def run_loom(self, loom, batch: int, seed: int, model: str | None = None, outputs=("9",), emit=None):
        """One run up to the decoded image; returns (Timing, result)."""
        stamps: list[float] = []

        def on_event(event: str, data: dict) -> None:
            if event == "progress" and data.get("node") == "8":
                if data["value"] == data["max"]:
                    self.sync()
                stamps.append(time.perf_counter())
            if emit is not None:
                emit(event, data)

        validation = loom.validate(self.workflow(batch, seed, model), outputs=list(outputs))
        assert validation.ok, validation.error
        start = time.perf_counter()
        result = loom.run(validation, emit=on_event)
        self.sync()
        seconds = time.perf_counter() - start
        assert result.ok, result.error
        return Timing(_rate(stamps), seconds), result

    def pipeline(self, dtype):
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(self.models / self.name, safety_checker=None, dtype=dtype)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self.device)

    def run_pipeline(self, pipe, batch: int, seed: int, output_type: str = "pt"):
        """One pipeline call; returns (Timing, images, final latents)."""
        stamps: list[float] = []
        latents = {}

        def on_step(p, i, t, kwargs):
            if i == self.args.steps - 1:
                self.sync()
                latents["final"] = kwargs["latents"]
            stamps.append(time.perf_counter())
            return kwargs

        start = time.perf_counter()
        images = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=self.args.steps, guidance_scale=CFG,
                      height=self.args.size, width=self.args.size, num_images_per_prompt=batch,
                      generator=self.generators(batch, seed), output_type=output_type,
                      callback_on_step_end=on_step).images
        self.sync()
        return Timing(_rate(stamps), time.perf_counter() - start), images, latents["final"]

    # --- sections ---------------------------------------------------------------------------------
    def model(self) -> None:
        from nodes.loading.tiny import write_tiny_model

        overrides = {} if self.args.tiny else {"unet": SD15_UNET, "vae": SD15_VAE, "clip": SD15_CLIP}
        start = time.perf_counter()
        write_tiny_model(self.models / self.name, **overrides)  # seeded random weights, float32
        seconds = time.perf_counter() - start
        sizes = {}
        for part in ("unet", "vae", "text_encoder"):
            sizes[part] = sum(f.stat().st_size for f in (self.models / self.name / part).glob("*.safetensors")) // 4
        log(f"model {self.name}: UNet {sizes['unet'] / 1e6:.1f}M, VAE {sizes['vae'] / 1e6:.1f}M, text encoder "
            f"{sizes['text_encoder'] / 1e6:.1f}M parameters (float32 on disk), written in {seconds:.1f} s")

    def section_pipeline(self) -> None:
        from nodes.loading.speed import attention_processors

        self.torch.backends.cudnn.benchmark = False  # diffusers' default
        self.reset_peak()
        pipe = self.pipeline(self.half)
        log(f"pipeline: {self.half}, attention {sorted(attention_processors(pipe.unet))}")
        for batch in self.args.batches:
            self.run_pipeline(pipe, batch, 0)  # warm-up
            runs = [self.run_pipeline(pipe, batch, 1 + r)[0] for r in range(self.args.runs)]
            its = statistics.median(r.its for r in runs)
            self.its.setdefault(PIPELINE, {})[batch] = its
            log(f"  diffusers default        batch {batch}: {its:7.2f} it/s  "
                f"{statistics.median(r.seconds for r in runs):7.3f} s/image batch  peak {self.peak()}")
        del pipe

    def section_loom(self) -> None:
        from graph.env import Speed

        self.loom_settings([("plain", Speed(channels_last=False, cudnn_benchmark=False)),
                            ("+channels_last", Speed(channels_last=True, cudnn_benchmark=False)),
                            ("+cudnn_benchmark", Speed(channels_last=False, cudnn_benchmark=True)),
                            ("default", Speed())])

    def section_compile(self) -> None:
        from graph.env import Speed

        self.loom_settings([("default+compile", Speed(compile=True))])

    def loom_settings(self, configs: list) -> None:
        from nodes.loading.speed import attention_processors

        dtype = "float16" if self.cuda else "float32"
        for label, speed in configs:
            self.reset_peak()
            loom = self.loom(dtype, speed, data=f"data-{label}")
            first, result = self.run_loom(loom, 1, 0, outputs=("1", "9"))
            if label == "plain":
                log(f"loom: {dtype}, attention {sorted(attention_processors(result.values['1'][2]))}")
            applied = ", ".join(f"{k} {'on' if v else 'off'}" for k, v in vars(result.values["1"][2].loom_speed).items())
            log(f"  loom {label:<20} {applied}; first run (load{', compile' if speed.compile else ''}) "
                f"{first.seconds:.1f} s")
            for batch in self.args.batches:
                if batch != 1:
                    self.run_loom(loom, batch, 0)  # warm-up (and compile) for this shape
                runs = [self.run_loom(loom, batch, 1 + r)[0] for r in range(self.args.runs)]
                its = statistics.median(r.its for r in runs)
                self.its.setdefault(f"loom {label}", {})[batch] = its
                base = self.its.get(PIPELINE, {}).get(batch)
                ratio = f"{its / base:5.2f}x diffusers" if base else ""
                log(f"  loom {label:<20} batch {batch}: {its:7.2f} it/s  "
                    f"{statistics.median(r.seconds for r in runs):7.3f} s/image batch  peak {self.peak()}  {ratio}")
            del loom, result

    def section_rerun(self) -> None:
        self.reset_peak()
        loom = self.loom("auto", data="data-rerun")
        first, _ = self.run_loom(loom, 1, 0)
        again, result = self.run_loom(loom, 1, 1)
        log(f"rerun: first run of a fresh engine {first.seconds:.2f} s (model load included); seed-change "
            f"re-run {again.seconds:.3f} s ({again.seconds / first.seconds:.2f} of it): ran nodes "
            f"{sorted(result.executed, key=int)}, cached {sorted(result.cached, key=int)}")

    def section_parity(self) -> None:
        import numpy as np

        from graph.env import Speed

        checks = [("float32", Speed(), "default")]
        if self.cuda:
            checks += [("float32", Speed(channels_last=True, cudnn_benchmark=True), "forced speed options"),
                       ("float16", Speed(channels_last=False, cudnn_benchmark=False), "plain"),
                       ("float16", Speed(), "default")]
        pipes = {}
        for dtype, speed, label in checks:
            self.reset_peak()
            if dtype not in pipes:
                pipes.clear()
                gc.collect()
                self.torch.backends.cudnn.benchmark = False
                pipe = self.pipeline(getattr(self.torch, dtype))
                _, images, latents = self.run_pipeline(pipe, 1, 42, output_type="np")
                pipes[dtype] = (pipe, images, latents.float().cpu().numpy())
            _, images, latents = pipes[dtype]
            loom = self.loom(dtype, speed, data=f"data-parity-{dtype}-{label.replace(' ', '-')}")
            _, result = self.run_loom(loom, 1, 42, outputs=("8", "9"))
            mine = result.values["9"][0].cpu().numpy()
            my_latents = result.values["8"][0]["samples"].float().cpu().numpy()
            saturated = float(np.mean((images <= 0.0) | (images >= 1.0)))
            log(f"parity {dtype} Loom {label:<22} vs pipeline: pixels max abs {np.abs(mine - images).max():.3g}, "
                f"latents max abs {np.abs(my_latents - latents).max():.3g} (latent std {latents.std():.3g}; "
                f"{saturated:.0%} of the pipeline's pixels at 0 or 1)")
            del loom, result
        pipes.clear()

    def section_cold(self) -> None:
        out = self.work / "cold"
        out.mkdir()
        wf = self.workflow(1, 5)
        (out / "workflow.json").write_text(json.dumps(wf))
        loom_cmd = [sys.executable, str(ROOT / "server.py"), "--data-dir", str(self.work / "data-cold"),
                    "--models-dir", str(self.models), "--device", self.device,
                    "run", str(out / "workflow.json"), "--out", str(out / "loom")]
        script = (f"import torch; from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline as P; "
                  f"p = P.from_pretrained({str(self.models / self.name)!r}, safety_checker=None, "
                  f"dtype=torch.{str(self.half).split('.')[-1]}).to({self.device!r}); "
                  f"p.scheduler = EulerDiscreteScheduler.from_config(p.scheduler.config); "
                  f"p.set_progress_bar_config(disable=True); "
                  f"p({PROMPT!r}, negative_prompt={NEGATIVE!r}, num_inference_steps={self.args.steps}, "
                  f"guidance_scale={CFG}, height={self.args.size}, width={self.args.size}, "
                  f"generator=torch.Generator('cpu').manual_seed(5)).images[0].save({str(out / 'pipe.png')!r})")
        for label, cmd in (("loom server.py run", loom_cmd), ("diffusers script", [sys.executable, "-c", script])):
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            seconds = time.perf_counter() - start
            if done.returncode:
                raise RuntimeError(f"{label} failed: {done.stderr[-2000:]}")
            log(f"cold start to first image, {label:<18}: {seconds:6.1f} s (fresh process: imports, load, run, PNG)")

    def section_memory(self) -> None:
        if not self.cuda:
            log("memory: needs CUDA (tests/test_device_memory.py covers the policy on a simulated device)")
            return
        other = self.models / f"{self.name}-b"  # the same files under a second name: a second model
        if not other.exists():
            other.symlink_to(self.models / self.name, target_is_directory=True)
        self.reset_peak()
        loom = self.loom("float16", data="data-memory")
        memory = loom.executor.memory
        held = []

        def watch(event: str, data: dict) -> None:
            if event in ("executing", "progress"):
                held.append(memory.bytes)

        first, _ = self.run_loom(loom, 1, 0, emit=watch)
        one_model = memory.bytes
        memory.budget = int(one_model * 1.25)  # room for one model and its tensors, not two
        held.clear()
        log(f"memory: one model holds {one_model / 2**30:.2f} GiB on the device; budget set to "
            f"{memory.budget / 2**30:.2f} GiB")
        log(f"  {self.name}   load + run       {first.seconds:6.2f} s")
        self.torch.cuda.reset_peak_memory_stats()
        for label, model, seed in ((f"{other.name} load + run", other.name, 0),
                                   (f"{self.name}   back from RAM", self.name, 1),
                                   (f"{other.name} back from RAM", other.name, 1),
                                   (f"{other.name} warm", other.name, 2)):
            timing, _ = self.run_loom(loom, 1, seed, model=model, emit=watch)
            log(f"  {label:<22} {timing.seconds:6.2f} s  cache on device {memory.bytes / 2**30:.2f} GiB")
        stats = memory.stats()
        log(f"  offloads {stats['offloads']}, reloads {stats['reloads']}, tensor evictions {stats['evictions']}, "
            f"out-of-memory retries {stats['retries']}")
        log(f"  the most the cache held on the device: {max(held) / 2**30:.2f} GiB (budget "
            f"{memory.budget / 2**30:.2f} GiB); peak allocated {self.peak()} (activations included)")


    def summary(self) -> None:
        if not self.its:
            return
        base = self.its.get(PIPELINE, {})
        log(f"summary: it/s at {self.args.size}x{self.args.size}, {self.args.steps} steps (ratio to {PIPELINE}; "
            f"goal >= {GOAL}x; published anchors: diffusers SDPA 31 it/s A100, 54.5 it/s H100)")
        log(f"  {'setting':<26}" + "".join(f"{'batch ' + str(b):>20}" for b in self.args.batches))
        for label, by_batch in self.its.items():
            cells = []
            for b in self.args.batches:
                its = by_batch.get(b)
                ratio = f" ({its / base[b]:.2f}x)" if its and base.get(b) and label != PIPELINE else ""
                cells.append(f"{its:.2f}{ratio}" if its else "-")
            log(f"  {label:<26}" + "".join(f"{c:>20}" for c in cells))


def _rate(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else float("nan")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny model, 64x64, 4 steps, one run: a smoke test")
    p.add_argument("--size", type=int, default=None, help="image side (default 512; 64 with --tiny)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default 50; 4 with --tiny)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per setting (default 3; 1 with --tiny)")
    p.add_argument("--batches", default="1,4", help="batch sizes (default 1,4)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"which to run, of {','.join(SECTIONS)}")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    p.add_argument("--keep", action="store_true", help="keep the work folder (the model, the images)")
    args = p.parse_args(argv)
    args.size = args.size or (64 if args.tiny else 512)
    args.steps = args.steps or (4 if args.tiny else 50)
    args.runs = args.runs or (1 if args.tiny else 3)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from graph.threads import configure_threads

    configure_threads()  # before torch: passive OpenMP waits on a shared CPU
    import diffusers
    import torch
    import transformers

    import nodes.loading.speed

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    bench = Bench(args)
    if not bench.cuda and not args.tiny:
        log("no CUDA device: the full-size model on the CPU would take hours; use --tiny for a smoke test")
        return 2
    if args.tiny and not bench.cuda:
        nodes.loading.speed.COMPILE_OPTIONS = {"backend": "eager"}  # inductor on a CPU takes minutes
    name = torch.cuda.get_device_name() if bench.cuda else "CPU"
    log(f"device {name}; torch {torch.__version__}, diffusers {diffusers.__version__}; {args.size}x{args.size}, "
        f"{args.steps} steps, euler, guidance {CFG}, batches {args.batches}, {args.runs} timed run(s) each; "
        f"work folder {bench.work}")
    failed = []
    try:
        bench.model()
        for section in args.sections:
            try:
                getattr(bench, f"section_{section}")()
            except Exception:  # one broken section must not cost the others their figures
                failed.append(section)
                log(f"{section}: FAILED\n{traceback.format_exc()}")
    finally:
        if not args.keep:
            shutil.rmtree(bench.work, ignore_errors=True)
    bench.summary()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

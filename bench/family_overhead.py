"""Per-step cost of Loom's graph against the bare diffusers pipeline, per transformer family.

For each family with a runtime and stage functions (Z-Image, Flux.1 dev, ...), on random weights of the
family's tiny configs (text encoders and VAE tiny; the transformer tiny for "small", widened and
deepened for "large", where the transformer's work dominates a step on the CPU), both written as a
diffusers folder that Loom loads:

- Loom, ComfyUI's graph: CheckpointLoaderSimple, CLIPTextEncode, EmptySD3LatentImage, KSampler (euler,
  simple, cfg 1), VAEDecode; and Loom's stage graph: LoadCheckpoint, Tokenize, EncodeText(SDXL),
  MakeNoiseLatents, SetScheduler (euler), Sample (guidance 1), VAEDecode. The loaders and encoders run
  once and stay cached; each run changes the seed, so the sampler and the decode run again.
- the pipeline: the family's pipeline from the same folder, given the text features (prompt_embeds),
  with its own scheduler, output as numpy.

For the families without stage functions (SD 3.5, Qwen-Image, Flux.2 Dev and Klein, HiDream, Chroma)
only ComfyUI's graph, built as each family's template builds it (COMFY: its CFG on both sides, with the
negative prompt "" where cfg > 1; ModelSamplingAuraFlow / ModelSamplingSD3; EmptyFlux2LatentImage and
FluxGuidance for Flux.2; KSampler euler/simple throughout), against the family's pipeline given Loom's
own text features of the same prompts.

Per-step cost = (CPU-seconds of a run with `--steps-hi` steps - one with `--steps-lo`) / the step
difference: what is paid once per run (the decode, the graph walk) cancels. Runs alternate, medians
are printed, and ratios are Loom / pipeline measured in the same run (goal <= 1.05).

    .venv/bin/python bench/family_overhead.py [--families zimage,flux,sd3,qwen_image,flux2,flux2_klein,hidream,chroma]
                                              [--sizes small,large] [--runs 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

PROMPT = "a red cat"
NEGATIVE = ""
# (side in pixels, transformer config changes) per size; "large": the transformer dominates a step
SIZES = {
    "zimage": {"small": (32, {}),
               "large": (256, dict(dim=512, n_layers=6, n_refiner_layers=1, n_heads=8, n_kv_heads=8,
                                   axes_dims=[16, 24, 24]))},
    "flux": {"small": (32, {}),
             "large": (256, dict(num_layers=3, num_single_layers=6, attention_head_dim=64, num_attention_heads=8,
                                 axes_dims_rope=[16, 24, 24]))},
    "sd3": {"small": (32, {}),
            "large": (256, dict(num_layers=6, attention_head_dim=64, num_attention_heads=8, caption_projection_dim=512))},
    "qwen_image": {"small": (32, {}),
                   "large": (256, dict(num_layers=6, attention_head_dim=64, num_attention_heads=8,
                                       axes_dims_rope=(16, 24, 24)))},
    "flux2": {"small": (32, {}),
              "large": (256, dict(num_layers=2, num_single_layers=6, attention_head_dim=64, num_attention_heads=8,
                                  axes_dims_rope=[16, 16, 16, 16]))},
    "hidream": {"small": (32, {}),
                "large": (256, dict(num_layers=2, num_single_layers=4, attention_head_dim=64, num_attention_heads=8,
                                    axes_dims_rope=[32, 16, 16], llama_layers=[0, 1] * 3))},  # one per block
    "chroma": {"small": (32, {}),
               "large": (256, dict(num_layers=3, num_single_layers=6, attention_head_dim=64, num_attention_heads=8,
                                   axes_dims_rope=[16, 24, 24]))},
}
SIZES["flux2_klein"] = SIZES["flux2"]


def zimage_pipeline(changes: dict):
    import diffusers

    from nodes.families.zimage import FAMILY
    from nodes.families.zimage.tiny import build_pipeline
    from nodes.loading.tiny import randomise_zeros

    pipe = build_pipeline(0)
    if changes:
        torch.manual_seed(3)
        transformer = diffusers.ZImageTransformer2DModel(**{**FAMILY.tiny.denoiser, **changes})
        randomise_zeros(transformer, 4)
        pipe.register_modules(transformer=transformer)
    return pipe


def flux_pipeline(changes: dict):
    import diffusers

    from nodes.families.flux import FAMILY
    from nodes.families.flux.tiny import build_pipeline
    from nodes.loading.tiny import randomise_zeros

    pipe = build_pipeline(0, guidance=True)
    if changes:
        torch.manual_seed(3)
        transformer = diffusers.FluxTransformer2DModel(**{**FAMILY.tiny.denoiser, **changes, "guidance_embeds": True})
        randomise_zeros(transformer, 4)
        pipe.register_modules(transformer=transformer)
    return pipe


def family_pipeline(name: str, build):
    """A family's tiny pipeline (tiny.py's own builder); for "large" its transformer rebuilt wider and deeper."""
    def make(changes: dict):
        from nodes.families import family
        from nodes.loading.tiny import randomise_zeros

        pipe = build()
        if changes:
            torch.manual_seed(3)
            transformer = type(pipe.transformer)(**{**family(name).tiny.denoiser, **changes}).eval()
            randomise_zeros(transformer, 4)
            pipe.register_modules(transformer=transformer)
        return pipe
    return make


def _tiny(module: str, *args, **kwargs):
    import importlib

    return lambda: importlib.import_module(f"nodes.families.{module}.tiny").build_pipeline(*args, **kwargs)


BUILDERS = {"zimage": zimage_pipeline, "flux": flux_pipeline,
            "sd3": family_pipeline("sd3", _tiny("sd3", 0)),
            "qwen_image": family_pipeline("qwen_image", _tiny("qwen_image", 0)),
            "flux2": family_pipeline("flux2", _tiny("flux2", "dev", 0)),
            "flux2_klein": family_pipeline("flux2_klein", _tiny("flux2", "klein", 0)),
            "hidream": family_pipeline("hidream", _tiny("hidream", 0)),
            "chroma": family_pipeline("chroma", _tiny("chroma", 0))}

# The families without stage functions: ComfyUI's graph as their templates build it (CFG, model sampling,
# latent node), the pipeline at the same CFG. cfg > 1: the negative prompt "" on both sides.
COMFY = {  # family: (KSampler cfg, model-sampling node and shift or None, latent node, FluxGuidance or None)
    "sd3": (4.0, None, "EmptySD3LatentImage", None),  # sd3.5_simple_example: cfg 4, euler
    "qwen_image": (1.0, ("ModelSamplingAuraFlow", 3.1), "EmptySD3LatentImage", None),  # image_qwen_image
    "flux2": (1.0, None, "EmptyFlux2LatentImage", 4.0),  # image_flux2_text_to_image: FluxGuidance 4
    "flux2_klein": (1.0, None, "EmptyFlux2LatentImage", None),  # the distilled templates: CFGGuider 1
    "hidream": (5.0, ("ModelSamplingSD3", 3.0), "EmptySD3LatentImage", None),  # hidream_i1_full: cfg 5, shift 3
    "chroma": (3.5, ("ModelSamplingAuraFlow", 1.0), "EmptySD3LatentImage", None),  # image_chroma: CFGGuider 3.5
}


def comfy_graph(model: str, side: int, steps: int, seed: int, family: str = "") -> dict:
    if family in COMFY:
        return template_graph(model, family, side, steps, seed)
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": model}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": PROMPT}},
        "3": {"class_type": "EmptySD3LatentImage", "inputs": {"width": side, "height": side, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0],
                                                   "latent_image": ["3", 0], "seed": seed, "steps": steps, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
    }


def template_graph(model: str, family: str, side: int, steps: int, seed: int) -> dict:
    cfg, sampling, latent, guidance = COMFY[family]
    wf = comfy_graph(model, side, steps, seed)
    wf["3"]["class_type"] = latent
    k = wf["4"]["inputs"]
    k["cfg"] = cfg
    if sampling:
        wf["m"] = {"class_type": sampling[0], "inputs": {"model": ["1", 0], "shift": sampling[1]}}
        k["model"] = ["m", 0]
    if guidance:
        wf["g"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["2", 0], "guidance": guidance}}
        k["positive"] = ["g", 0]
    if cfg > 1:
        wf["6"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": NEGATIVE}}
        k["negative"] = ["6", 0]
    return wf


def template_features(loom, graph: dict, family: str) -> dict:
    """Loom's text features of PROMPT (and of NEGATIVE under CFG), from the graph's CLIPTextEncode nodes, as
    the pipeline's arguments, with the guidance matching COMFY's. (The pipelines' own encode_prompt pads
    differently: T5 to 256 tokens in SD 3.5's, 512 in Chroma's, which would make their steps dearer.)"""
    cfg, _, _, guidance = COMFY[family]
    sides = ["2", "6"] if "6" in graph else ["2"]
    values = loom.run(loom.validate(graph, outputs=sides)).values
    (c,), (n,) = values["2"][0], values[sides[-1]][0]

    def ones(cond, dtype=torch.long):
        return torch.ones(cond.embeds.shape[:2], dtype=dtype)

    if family == "sd3":
        return dict(prompt_embeds=c.embeds, negative_prompt_embeds=n.embeds, pooled_prompt_embeds=c.pooled,
                    negative_pooled_prompt_embeds=n.pooled, guidance_scale=cfg)
    if family == "qwen_image":
        return dict(prompt_embeds=c.embeds, prompt_embeds_mask=ones(c), true_cfg_scale=cfg)
    if family in ("flux2", "flux2_klein"):
        return dict(prompt_embeds=c.embeds, guidance_scale=guidance or cfg)
    if family == "hidream":  # Loom keeps the Llama states batch-first, the pipeline layer-first
        def llama(cond):
            return cond.extra["conditioning_llama3"].movedim(1, 0)
        return dict(prompt_embeds_t5=c.embeds, negative_prompt_embeds_t5=n.embeds, prompt_embeds_llama3=llama(c),
                    negative_prompt_embeds_llama3=llama(n), pooled_prompt_embeds=c.pooled,
                    negative_pooled_prompt_embeds=n.pooled, guidance_scale=cfg)
    return dict(prompt_embeds=c.embeds, prompt_attention_mask=ones(c, c.embeds.dtype), negative_prompt_embeds=n.embeds,
                negative_prompt_attention_mask=ones(n, n.embeds.dtype), guidance_scale=cfg)  # Chroma: float masks


def stage_graph(model: str, family: str, side: int, steps: int, seed: int) -> dict:
    wf = {
        "1": {"class_type": "LoadCheckpoint", "inputs": {"model": model}},
        "2": {"class_type": "Tokenize", "inputs": {"tokenizer": ["1", 0], "text": PROMPT}},
        "3": {"class_type": "EncodeText", "inputs": {"text_encoder": ["1", 1], "tokens": ["2", 0]}},
        "4": {"class_type": "MakeNoiseLatents", "inputs": {"unet": ["1", 2], "width": side, "height": side,
                                                           "batch_size": 1, "seed": seed}},
        "5": {"class_type": "SetScheduler", "inputs": {"scheduler": ["1", 4], "kind": "euler", "steps": steps}},
        "6": {"class_type": "Sample", "inputs": {"unet": ["1", 2], "scheduler": ["5", 0], "latents": ["4", 0],
                                                 "positive": ["3", 0], "negative": ["3", 0], "guidance_scale": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 3]}},
    }
    if family == "flux":  # two encoders: CLIP-L and T5
        wf["2t5"] = {"class_type": "Tokenize", "inputs": {"tokenizer": ["1", 5], "text": PROMPT}}
        wf["3"] = {"class_type": "EncodeTextSDXL", "inputs": {"text_encoder": ["1", 1], "tokens": ["2", 0],
                                                              "text_encoder_2": ["1", 6], "tokens_2": ["2t5", 0]}}
    return wf


def loom_run(loom, graph: dict, output: str):
    def run():
        result = loom.run(loom.validate(graph, outputs=[output]))
        assert result.ok, result.error
    return run


def pipeline_run(pipe, family: str, features: dict, side: int, steps: int, seed: int):
    extra = {"guidance_scale": 0.0} if family == "zimage" else {}
    if family in COMFY:  # the guidance arguments come with the features
        extra = {}
    return lambda: pipe(**features, height=side, width=side, num_inference_steps=steps, output_type="np",
                        generator=torch.Generator().manual_seed(seed), **extra)


def cpu_seconds(run) -> float:
    start = time.process_time()
    with torch.no_grad():
        run()
    return time.process_time() - start


def measure(family: str, size: str, runs: int, lo: int, hi: int, root: Path) -> dict:
    from diffusers import DiffusionPipeline

    from graph import Env, Loom

    side, changes = SIZES[family][size]
    folder = root / "models" / f"bench-{family}-{size}"
    pipe = BUILDERS[family](changes)
    params = sum(p.numel() for p in pipe.transformer.parameters())
    pipe.save_pretrained(folder, safe_serialization=True)
    pipe = DiffusionPipeline.from_pretrained(folder)  # as Loom loads it
    pipe.set_progress_bar_config(disable=True)
    if family == "hidream":  # its pipeline rescales any size to default_sample_size's area: ask for `side`
        pipe.default_sample_size = side // pipe.vae_scale_factor
    loom = Loom(Env.from_data_dir(root / f"data-{family}-{size}", models_dir=root / "models", device="cpu",
                                  dtype="float32"))
    name = folder.name
    staged = family not in COMFY
    if staged:
        (cond,) = loom.run(loom.validate(stage_graph(name, family, side, 1, 0), outputs=["3"])).values["3"][0]
        features = {"prompt_embeds": [cond.embeds[0]]} if family == "zimage" else \
            {"prompt_embeds": cond.embeds, "pooled_prompt_embeds": cond.pooled}
    else:
        features = template_features(loom, comfy_graph(name, side, 1, 0, family), family)
    timings = {"comfy": [], "stage": [], "pipeline": []} if staged else {"comfy": [], "pipeline": []}
    seed = 0
    for i in range(runs + 1):  # the first round warms up (loads, caches) and is not counted
        per = {}
        for what in timings:
            cost = {}
            for steps in (lo, hi):
                seed += 1
                if what == "comfy":
                    run = loom_run(loom, comfy_graph(name, side, steps, seed, family), "5")
                elif what == "stage":
                    run = loom_run(loom, stage_graph(name, family, side, steps, seed), "7")
                else:
                    run = pipeline_run(pipe, family, features, side, steps, seed)
                cost[steps] = cpu_seconds(run)
            per[what] = (cost[hi] - cost[lo]) / (hi - lo)
        if i:
            for what in timings:
                timings[what].append(per[what])
    medians = {"stage": None, **{what: statistics.median(v) for what, v in timings.items()}}
    return {"family": family, "size": size, "side": side, "params": params, **medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="zimage,flux,sd3,qwen_image,flux2,flux2_klein,hidream,chroma")
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps-lo", type=int, default=2)
    parser.add_argument("--steps-hi", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    from nodes.families import REGISTRY

    print("family  size   px   transformer  pipeline s/step  Loom KSampler s/step (ratio)  Loom stage s/step (ratio)")
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            if family not in REGISTRY:
                print(f"{family}: not in this checkout's registry, skipped")
                continue
            for size in args.sizes.split(","):
                r = measure(family, size, args.runs, args.steps_lo, args.steps_hi, Path(tmp))
                p = r["pipeline"]
                print(f"{family:7} {size:6} {r['side']:4} {r['params'] / 1e6:9.2f}M  {p:14.4f}  "
                      f"{r['comfy']:14.4f} ({r['comfy'] / p:.3f})        " +
                      (f"{r['stage']:10.4f} ({r['stage'] / p:.3f})" if r["stage"] is not None else "no stage functions"),
                      flush=True)


if __name__ == "__main__":
    main()

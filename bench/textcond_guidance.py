"""Where classifier-free guidance makes the text-to-image model's pictures blotchy, and by how much.

Part 1, per timestep t: fresh pictures' latents are noised to t, and the UNet predicts the clean
latent with the picture's prompt (c) and with the empty prompt (u). Printed: the RMS error of c and
of u, the RMS of c - u, and the error of guidance's combination u + w (c - u), all in units of the
latents' std. As t goes to 0 the noisy latent alone fixes the picture, so an exact denoiser's c and
u agree there: what differs is the UNet's error, and guidance multiplies it by w.

Part 2: the foreground spread (textcond_quality.foreground_spread) of generated pictures against
real ones of the same prompts, with guidance w all the way, with guidance w but switched off (the
conditional prediction alone) for the last k steps, and with a milder guidance all the way. If
switching guidance off only at the end brings the spread down to the mild guidance's, the blotches
are made in the last, nearly clean steps, by the c - u error of part 1.

Diffusers' StableDiffusionPipeline samples (DPM-Solver++ 2M, as the quality bench's default; Loom
gives its pixels exactly); guidance is switched off with its step-end callback, as diffusers
documents it.

    python bench/textcond_guidance.py [--model FOLDER] [--guidance 7.5] [--seeds 2] [--last 5 10]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graph.threads import configure_threads  # noqa: E402

TIMESTEPS = (20, 50, 100, 200, 300, 500, 700, 900)


def load(folder):
    """StableDiffusionPipeline of `folder` in float32 with DPM-Solver++ (2M) and no progress bar."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def denoising_errors(pipe, guidance: float, count: int = 96, timesteps=TIMESTEPS, seed: int = 5) -> list[dict]:
    """Part 1: per timestep, RMS errors of the predicted clean latent (see the module docstring)."""
    import torch

    from nodes.textcond.data import make_batch

    gen = torch.Generator().manual_seed(seed)
    images, captions, _, _ = make_batch(count, gen)
    alphas = pipe.scheduler.alphas_cumprod
    rms = lambda x: float(x.pow(2).mean().sqrt())
    rows = []
    with torch.no_grad():
        clean = pipe.vae.encode(images * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
        # the embeddings the pipeline guides with: the prompts', and the empty prompt's
        with_prompt, empty = pipe.encode_prompt(list(captions), pipe.device, 1, True)
        for t in timesteps:
            a = alphas[t]
            noisy = a.sqrt() * clean + (1 - a).sqrt() * torch.randn(clean.shape, generator=gen)
            c, u = ((noisy - (1 - a).sqrt() * pipe.unet(noisy, torch.full((count,), t), encoder_hidden_states=h).sample)
                    / a.sqrt() for h in (with_prompt, empty))
            rows.append(dict(t=t, cond=rms(c - clean), uncond=rms(u - clean), differ=rms(c - u),
                             guided=rms(u + guidance * (c - u) - clean)))
    return rows


def guidance_off_after(step: int):
    """A step-end callback that switches guidance off once `step` steps are done: from then on the
    conditional prediction alone (diffusers' documented way: guidance 0 and the prompt's half of
    the embeddings)."""
    def callback(pipe, i, t, kwargs):
        if i + 1 == step:
            pipe._guidance_scale = 0.0
            kwargs["prompt_embeds"] = kwargs["prompt_embeds"].chunk(2)[-1]
        return kwargs
    return callback


def generated(pipe, guidance: float, seeds: int, steps: int, off_for_last: int = 0, colours=None, shapes=None):
    """Pictures (N, H, W, 3) for each (colour, shape) prompt and seed, with guidance switched off for
    the last `off_for_last` steps; and the colour and shape index of each."""
    import torch

    from nodes.textcond.data import COLOUR_NAMES, SHAPES, TEMPLATES, caption

    colours = range(len(COLOUR_NAMES)) if colours is None else colours
    shapes = range(len(SHAPES)) if shapes is None else shapes
    pairs = [(c, s) for c in colours for s in shapes]
    prompts = [caption(c, s, TEMPLATES[0]) for c, s in pairs]
    pictures = []
    for seed in range(seeds):
        extra = dict(callback_on_step_end=guidance_off_after(steps - off_for_last),
                     callback_on_step_end_tensor_inputs=["prompt_embeds"]) if off_for_last else {}
        pictures.append(pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
                             output_type="pt", generator=torch.Generator().manual_seed(seed), **extra).images)
    index = torch.tensor(pairs).repeat(seeds, 1)
    return torch.cat(pictures).permute(0, 2, 3, 1), index[:, 0], index[:, 1]


def spread_ratios(images, colours, shapes) -> tuple[float, list[float]]:
    """Foreground spread of `images` over real pictures' of the same prompts: overall and per colour."""
    from nodes.textcond.data import COLOUR_NAMES
    from textcond_quality import foreground_spread, real_like

    made, real = foreground_spread(images), foreground_spread(real_like(colours, shapes))
    ratio = lambda mine: float(made[mine].nanmean() / real[mine].nanmean())
    return ratio(colours >= 0), [ratio(colours == c) for c in range(len(COLOUR_NAMES))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a diffusers folder (default: the shipped model)")
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--mild", type=float, default=3.0, help="the milder guidance of part 2")
    p.add_argument("--seeds", type=int, default=2, help="pictures per prompt in part 2")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--last", type=int, nargs="+", default=[5, 10], help="guidance off for this many last steps")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    configure_threads(args.threads)

    from nodes.textcond.data import COLOUR_NAMES
    from nodes.textcond.model import shipped_folder

    folder = Path(args.model) if args.model else shipped_folder()
    pipe = load(folder)
    w = args.guidance
    print(f"model: {folder}")
    print(f"part 1: RMS error of the predicted clean latent (latent std units), guidance w = {w:g}")
    print(f"{'t':>5}  {'c':>6}  {'u':>6}  {'c - u':>6}  {'u + w(c - u)':>12}")
    for r in denoising_errors(pipe, w):
        print(f"{r['t']:>5}  {r['cond']:6.3f}  {r['uncond']:6.3f}  {r['differ']:6.3f}  {r['guided']:12.3f}")
    print(f"part 2: foreground spread / real pictures' ({args.seeds} seeds x 60 prompts, {args.steps} steps); "
          "per colour: " + " ".join(COLOUR_NAMES))
    runs = [(f"guidance {w:g}", w, 0)] + [(f"guidance {w:g}, off for the last {k}", w, k) for k in args.last]
    for name, guidance, last in runs + [(f"guidance {args.mild:g}", args.mild, 0)]:
        overall, per_colour = spread_ratios(*generated(pipe, guidance, args.seeds, args.steps, last))
        print(f"  {name:<32} {overall:5.2f}x   " + " ".join(f"{v:.2f}" for v in per_colour))


if __name__ == "__main__":
    main()

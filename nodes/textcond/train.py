"""Train the text-to-image model in two stages, as Stable Diffusion was: first the VAE, then the UNet
and the text encoder on the VAE's latents.

    python -m nodes.textcond vae  --out data/textcond-run --minutes 40
    python -m nodes.textcond unet --out data/textcond-run --minutes 120
    python -m nodes.textcond export data/textcond-run/pipeline assets/textcond/shapes64

Stage 1 (`vae`): AutoencoderKL, reconstruction MSE plus a tiny KL term (SD's weight, 1e-6), on fresh
procedural images every step. Saved to OUT/vae.
Stage 2 (`unet`): the VAE is frozen; its latents' standard deviation gives the scaling factor (as SD
got 0.18215), which is folded into the VAE's (post-)quant convolutions so that the shipped VAE uses
SD 1.x's own 0.18215 (single-file loaders assume it). The UNet (cross-attention) and the CLIP text
encoder are then trained together from scratch on noise-prediction MSE, with 10% of the captions
replaced by the empty prompt so that classifier-free guidance has an unconditional prediction. The
latents come from a pool of encoded images of which a slice is replaced by fresh ones every step.
Saved to OUT/pipeline, a diffusers folder.

Both stages: AdamW with warm-up and cosine decay, gradient clipping, an EMA of the weights (what gets
saved), stop at --steps or after --minutes (whichever comes first; the learning-rate schedule follows
whichever is further along), a checkpoint every --save-every steps, and --resume continues from it.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from nodes.classcond.train import Ema, estimated_total, lr_factor

from . import model as tm
from .data import make_batch

StepHook = Callable[[int, int, float], None]
SD_SCALING_FACTOR = 0.18215
# Initial shift of the posterior's log-variance. With SD's tiny KL weight nothing pulls the posterior
# noise up, but the reconstruction loss pulls it down only slowly: from the default init it stayed at
# a third of the latents' spread, and the decoder learned to blur. The first model's run got this
# shift by hand (-4.6 at step 1000, -3 at step 1500); a run starts with it (the shipped model's did).
LOGVAR_SHIFT = -7.6
DECODER_DIR = "decoder"  # where the decoder stage saves its VAE (the UNet stage reads OUT/vae meanwhile)
ROBUST_DIR = "robust"  # where the robust stage saves its VAE: the decoder stage's, fine-tuned on noisy latents
# VAE stages: (weights they start from: a checkpoint's EMA, or None for fresh ones; checkpoint; saved to)
VAE_STAGES = {"vae": (None, "vae_state.pt", "vae"),
              "decoder": ("vae_state.pt", "decoder_state.pt", DECODER_DIR),
              "robust": ("decoder_state.pt", "robust_state.pt", ROBUST_DIR)}
UNET_STATE = "unet_state.pt"
GUIDED_DIR = "guided"  # where the guided stage saves its pipeline
# UNet stages, as VAE_STAGES: the guided stage fine-tunes the UNet stage's EMA, the text encoder frozen
UNET_STAGES = {"unet": (None, UNET_STATE, "pipeline"), "guided": (UNET_STATE, "guided_state.pt", GUIDED_DIR)}
RECON_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}
CHECKPOINTS = {stage: spec[1] for stage, spec in (VAE_STAGES | UNET_STAGES).items()}  # stage -> its state file
# Model construction draws from torch's global generator after seeding it; the decoder and the UNet
# stages may run side by side in threads (retrain.py), so they take turns there.
SEEDING = threading.Lock()


@dataclass
class StageConfig:
    steps: int
    batch: int
    lr: float
    minutes: float | None = None
    warmup: int = 100
    ema_decay: float = 0.999
    save_every: int = 250
    seed: int = 0
    crop: int | None = None  # VAE stages: train on random crops of this size (cheaper; a multiple of 4)
    # VAE stage: weight of the colour probe loss (0: off). The plain VAE packs colour and brightness
    # into one latent channel, on which green lies close to the dark background (and blue between
    # them), so small UNet errors on green pictures land on background or blue. The probe, a learned
    # linear map with unit-norm rows from the latent means to each latent cell's mean RGB, makes the
    # latent carry the cell's colour linearly at full amplitude: colours then lie apart as far as
    # they do in RGB (green from the background by 0.7 in its green channel), not on one axis.
    colour_probe: float = 0.0
    # Decoder stages: each picture's latent gets Gaussian noise, its std drawn uniformly from 0 to this
    # times the latents' std, and the decoder must still give the clean picture. The UNet's latents
    # miss the encoder's (rms, re-encoding what they decode to) by a quarter of the latents' std, and
    # the plain decoder drew that as blotches: generated circles, squares and triangles had 3.0-3.4x
    # the foreground spread of real ones; with the robust stage's decoder, 0.9-1.2x.
    latent_noise: float = 0.0
    # Reconstruction loss: "mse" or "l1". Where noisy latents leave an edge's place uncertain, the
    # MSE-best picture is the average of the places (a blurred edge), the L1-best their median (a
    # sharp one).
    recon_loss: str = "mse"

    def __post_init__(self):
        if self.recon_loss not in RECON_LOSSES:
            raise ValueError(f"recon_loss {self.recon_loss!r}: expected one of {', '.join(map(repr, RECON_LOSSES))}")


@dataclass
class UNetConfig(StageConfig):
    uncond_prob: float = 0.1  # share of captions replaced by "" (classifier-free guidance)
    snr_gamma: float | None = 5.0  # min-SNR loss weighting (Hang et al. 2023); None: plain MSE
    # Offset noise: a per-image, per-channel constant added to the noise, with this std. At SD's last
    # timestep some signal survives (SNR 0.005), and over 16x16 latents the mean colour is easy to
    # read from it: trained without this, the UNet took each image's colour from the noisy latent
    # rather than from the prompt, and from pure noise (mean 0) it drew every shape yellow or white.
    offset_noise: float = 0.3
    # The noise-prediction loss weighs an error in the predicted image by SNR: at the first sampling
    # steps (SNR 0.005) it hardly counts, yet that is where the picture's colour is decided, so the
    # prompt's colour went unlearned. Weighting it by (1 + SNR) / SNR, as v-prediction's loss does,
    # capped here, makes those errors count.
    x0_weight_cap: float | None = 50.0
    # Guided stage: the guided prediction u + scale (c - u) (c: the caption's, u: the empty prompt's)
    # in the nearly clean steps (t < guided_t_max), on guided_batch more latents a step, is pulled to
    # the noise with this weight. There an exact denoiser gives c = u, but the UNet stage's two
    # predictions differ a little, guidance multiplied that by 6.5 and outlines came out lumpy.
    guided_weight: float = 0.0
    guided_scale: float = 7.5
    guided_t_max: int = 400
    guided_batch: int = 12
    pool: int = 4096  # encoded images kept for training
    refresh: int = 2  # pool entries replaced by fresh ones every step
    preview_every: int = 500


class _Clock:
    """Progress of a run that stops at `steps` or after `minutes` of training time (kept across resumes)."""

    def __init__(self, cfg: StageConfig, spent: float = 0.0):
        self.cfg, self.start = cfg, time.monotonic() - spent

    def spent(self) -> float:
        return time.monotonic() - self.start

    def progress(self, step: int) -> float:
        by_time = self.spent() / (60 * self.cfg.minutes) if self.cfg.minutes else 0.0
        return max(step / self.cfg.steps, by_time)


def _optimise(opt, params, loss, cfg: StageConfig, clock: _Clock, step: int) -> None:
    for group in opt.param_groups:
        group["lr"] = cfg.lr * lr_factor(clock.progress(step), step, cfg.warmup)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def _load_state(file: Path, device):
    return torch.load(file, map_location=device, weights_only=False) if file.is_file() else None


# --- stage 1: the VAE ---------------------------------------------------------------------------

def train_vae(cfg: StageConfig, out: str | Path, device="cpu", on_step: StepHook | None = None,
              resume: bool = False, stage: str = "vae"):
    """Train the AutoencoderKL; returns its EMA (float32), also saved under out (VAE_STAGES).

    The `decoder` stage continues the `vae` stage's EMA with the encoder frozen, saved to
    out/decoder: the latent space stays what it is, so the UNet stage can train on out/vae meanwhile
    and export puts the better decoder in its place. The `robust` stage continues the decoder
    stage's the same way, on noisy latents (StageConfig.latent_noise)."""
    device, out = torch.device(device), Path(out)
    start_from, state_name, saved_to = VAE_STAGES[stage]
    decoder_only = start_from is not None
    with SEEDING:
        torch.manual_seed(cfg.seed)
        vae = tm.new_vae().to(device).train()
    with torch.no_grad():  # small posterior noise from the start (see LOGVAR_SHIFT)
        vae.quant_conv.bias[vae.config.latent_channels:] += LOGVAR_SHIFT
    state_file = out / state_name
    state = _load_state(state_file, device) if resume else None
    if decoder_only and state is None:
        base = _load_state(out / start_from, device)
        if base is None:
            raise FileNotFoundError(f"{out / start_from}: train the stage that writes it first")
        vae.load_state_dict(base["ema"])
    if decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    probe = ColourProbe(vae.config.latent_channels).to(device) if cfg.colour_probe and not decoder_only else None
    params = [p for p in vae.parameters() if p.requires_grad] + (list(probe.parameters()) if probe else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    ema = Ema(vae, cfg.ema_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    noise_std = cfg.latent_noise * latent_std(vae) if cfg.latent_noise else 0.0  # the frozen encoder's
    step, spent = 0, 0.0
    if state:
        if probe and state.get("probe"):  # a run begun without the probe starts one afresh
            probe.load_state_dict(state["probe"])
        vae.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, spent, ema.updates = state["step"], state["spent"], state["ema_updates"]
        gen.set_state(state["gen"])
    clock = _Clock(cfg, spent)

    def save() -> None:
        out.mkdir(parents=True, exist_ok=True)
        ema.model.save_pretrained(out / saved_to)
        torch.save({"model": vae.state_dict(), "ema": ema.model.state_dict(), "opt": opt.state_dict(),
                    "step": step, "spent": clock.spent(), "ema_updates": ema.updates, "gen": gen.get_state(),
                    "probe": probe.state_dict() if probe else None, "config": asdict(cfg)}, state_file)

    while clock.progress(step) < 1.0:
        images = _crops(make_batch(cfg.batch, gen)[0], cfg.crop, gen).to(device) * 2 - 1
        with torch.set_grad_enabled(not decoder_only):
            posterior = vae.encode(images).latent_dist
        latents = posterior.sample(generator=gen)
        if noise_std:
            stds = torch.rand(len(latents), 1, 1, 1, generator=gen) * noise_std
            latents = latents + stds.to(device) * torch.randn(latents.shape, generator=gen).to(device)
        recon = vae.decode(latents).sample
        loss = RECON_LOSSES[cfg.recon_loss](recon, images) + (0 if decoder_only else 1e-6 * posterior.kl().mean())
        if probe:
            cells = F.avg_pool2d(images, images.shape[-1] // posterior.mean.shape[-1])
            loss = loss + cfg.colour_probe * F.mse_loss(probe(posterior.mean), cells)
        _optimise(opt, params, loss, cfg, clock, step)
        ema.update(vae)
        step += 1
        if on_step:
            on_step(step, estimated_total(cfg.steps, step, clock.progress(step)), loss.item())
        if cfg.save_every and step % cfg.save_every == 0:
            save()
    save()
    return ema.model.eval()


class ColourProbe(torch.nn.Module):
    """A linear map (unit-norm rows, so the latent cannot shrink the colour away) from latent cells to
    RGB (see StageConfig.colour_probe)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, channels))
        self.bias = torch.nn.Parameter(torch.zeros(3))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        w = self.weight / self.weight.norm(dim=1, keepdim=True)
        return torch.einsum("oc,nchw->nohw", w, latents) + self.bias[:, None, None]


def _crops(images: torch.Tensor, size: int | None, gen: torch.Generator) -> torch.Tensor:
    """A random size x size crop of each image, on the latent grid (offsets in steps of 4 pixels, so
    the encoder's downsampling sees the same pixel phases as on whole images)."""
    if not size or size >= images.shape[-1]:
        return images
    steps = (images.shape[-1] - size) // 4 + 1
    ys, xs = (torch.randint(0, steps, (len(images),), generator=gen) * 4 for _ in range(2))
    return torch.stack([im[:, y:y + size, x:x + size] for im, y, x in zip(images, ys.tolist(), xs.tolist())])


@torch.no_grad()
def psnr(vae, count: int = 256, seed: int = 12345, batch: int = 32) -> float:
    """Round-trip PSNR (dB, images in 0..1) of the VAE on `count` fresh images (latent means)."""
    gen = torch.Generator().manual_seed(seed)
    errors = []
    for start in range(0, count, batch):
        images = make_batch(min(batch, count - start), gen)[0].to(vae.device, vae.dtype)
        recon = vae.decode(vae.encode(images * 2 - 1).latent_dist.mode()).sample
        errors.append(((recon / 2 + 0.5).clamp(0, 1) - images).float().pow(2).flatten(1).mean(1))
    return float(-10 * torch.log10(torch.cat(errors).mean()))


# --- stage 2: the UNet and the text encoder -----------------------------------------------------

@torch.no_grad()
def latent_std(vae, count: int = 1024, seed: int = 4321, batch: int = 64) -> float:
    """Standard deviation of the VAE's (sampled) latents over fresh images."""
    gen = torch.Generator().manual_seed(seed)
    latents = [vae.encode(make_batch(batch, gen)[0].to(vae.device) * 2 - 1).latent_dist.sample()
               for _ in range(max(1, count // batch))]
    return float(torch.cat(latents).std())


@torch.no_grad()
def fold_scaling(vae, factor: float, target: float = SD_SCALING_FACTOR) -> None:
    """Rescale the latent space by k = factor / target, exactly, in the 1x1 quant convolutions: the
    encoder's mean (and std) are multiplied by k and the decoder divides by k, so `target` becomes
    the scaling factor that gives latents of unit standard deviation."""
    k = factor / target
    channels = vae.config.latent_channels
    vae.quant_conv.weight[:channels] *= k
    vae.quant_conv.bias[:channels] *= k
    vae.quant_conv.bias[channels:] += 2 * math.log(k)  # log-variance
    vae.post_quant_conv.weight /= k
    vae.register_to_config(scaling_factor=target)


class _LatentPool:
    """Encoded images (posterior mean and std) with their tokenised captions."""

    def __init__(self, vae, tokenizer, gen: torch.Generator):
        self.vae, self.tokenizer, self.gen = vae, tokenizer, gen
        self.mean = self.std = self.ids = None
        self.next = 0

    def fill(self, size: int, batch: int = 64) -> None:
        parts = [self._encode(min(batch, size - i)) for i in range(0, size, batch)]
        self.mean, self.std, self.ids = (torch.cat(p) for p in zip(*parts))

    @torch.no_grad()
    def _encode(self, n: int):
        images, captions, _, _ = make_batch(n, self.gen)
        dist = self.vae.encode(images.to(self.vae.device) * 2 - 1).latent_dist
        ids = self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return dist.mean.cpu(), dist.std.cpu(), ids

    def sample(self, index: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Latents drawn from the posteriors of these entries (unscaled)."""
        mean, std = self.mean[index], self.std[index]
        return mean + std * torch.randn(mean.shape, generator=gen)

    def refresh(self, n: int) -> None:
        if n:
            index = (self.next + torch.arange(n)) % len(self.ids)
            self.mean[index], self.std[index], self.ids[index] = self._encode(n)
            self.next = int(index[-1] + 1) % len(self.ids)

    def state(self) -> dict:
        return {"mean": self.mean, "std": self.std, "ids": self.ids, "next": self.next}

    def load(self, state: dict) -> None:
        self.mean, self.std, self.ids, self.next = state["mean"], state["std"], state["ids"], state["next"]


def train_unet(cfg: UNetConfig, out: str | Path, device="cpu", on_step: StepHook | None = None,
               resume: bool = False, vae=None, init: str | Path | None = None, stage: str = "unet"):
    """Train the UNet and the text encoder on the frozen VAE of out/vae (or `vae`); the EMA pipeline
    is saved to out/pipeline. Returns (vae, text_encoder, unet), the last two the EMA copies.
    `init`: another run's UNet-stage state file to start from (its EMA weights and its folded VAE);
    the optimiser, the schedule and the latent pool start afresh (a fine-tuning run).
    The `guided` stage is such a run from out's own UNet-stage state, the text encoder frozen, saved
    to out/guided (UNET_STAGES; UNetConfig.guided_weight)."""
    from diffusers import AutoencoderKL, DDPMScheduler

    device, out = torch.device(device), Path(out)
    start_from, state_name, saved_to = UNET_STAGES[stage]
    init = out / start_from if start_from else init
    with SEEDING:  # the construction and the scaling's sampled latents draw from the global generator
        torch.manual_seed(cfg.seed)
        state_file = out / state_name
        state = _load_state(state_file, device) if resume else None
        start = _load_state(Path(init), device) if init and not state else None
        if init and not state and start is None:
            raise FileNotFoundError(f"{init}: no UNet-stage state to start from")
        if vae is None:
            vae = AutoencoderKL.from_pretrained(out / "vae")
        vae = vae.to(device).eval().requires_grad_(False)
        if state or start:
            vae.load_state_dict((state or start)["vae"])  # the folded VAE the run started with
        else:
            factor = 1 / latent_std(vae, count=min(1024, max(64, cfg.steps * cfg.batch)))
            fold_scaling(vae, factor)
            print(f"latent scaling factor {factor:.5f}, folded into the VAE (scaling_factor {SD_SCALING_FACTOR})")
        tokenizer = tm.tokenizer()
        text_encoder = tm.new_text_encoder(tokenizer).to(device).train()
        unet = tm.new_unet().to(device).train()
    text_frozen = stage == "guided"  # the captions' meaning is settled; only how c and u combine changes
    text_encoder.requires_grad_(not text_frozen)
    params = [*unet.parameters(), *([] if text_frozen else text_encoder.parameters())]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    ema_unet, ema_text = Ema(unet, cfg.ema_decay), Ema(text_encoder, cfg.ema_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    alphas = DDPMScheduler.from_config(tm.SCHEDULER).alphas_cumprod.to(device)
    empty = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length,
                      return_tensors="pt").input_ids
    step, spent = 0, 0.0
    if state:
        gen.set_state(state["gen"])
    pool = _LatentPool(vae, tokenizer, gen)
    if state:
        pool.load(state["pool"])
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        ema_unet.model.load_state_dict(state["ema_unet"])
        ema_text.model.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["opt"])
        step, spent, ema_unet.updates = state["step"], state["spent"], state["ema_updates"]
        ema_text.updates = ema_unet.updates
    else:
        pool.fill(min(cfg.pool, cfg.steps * cfg.batch))  # no more images than the run can see
        if start:
            for model, ema, key in ((unet, ema_unet, "ema_unet"), (text_encoder, ema_text, "ema_text")):
                model.load_state_dict(start[key])
                ema.model.load_state_dict(start[key])
    clock = _Clock(cfg, spent)

    def save() -> None:
        tm.save_pipeline(out / saved_to, vae, ema_text.model, ema_unet.model)
        torch.save({"vae": vae.state_dict(), "unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
                    "ema_unet": ema_unet.model.state_dict(), "ema_text": ema_text.model.state_dict(),
                    "opt": opt.state_dict(), "step": step, "spent": clock.spent(), "ema_updates": ema_unet.updates,
                    "gen": gen.get_state(), "pool": pool.state(), "config": asdict(cfg)}, state_file)

    while clock.progress(step) < 1.0:
        index = torch.randint(0, len(pool.ids), (cfg.batch,), generator=gen)
        latents = pool.sample(index, gen).to(device) * vae.config.scaling_factor
        ids = pool.ids[index]
        drop = torch.rand(cfg.batch, generator=gen) < cfg.uncond_prob
        ids = torch.where(drop[:, None], empty, ids).to(device)
        noise = torch.randn(latents.shape, generator=gen)
        if cfg.offset_noise:
            noise = noise + cfg.offset_noise * torch.randn(*latents.shape[:2], 1, 1, generator=gen)
        noise = noise.to(device)
        t = torch.randint(0, len(alphas), (cfg.batch,), generator=gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise  # scheduler.add_noise
        hidden = text_encoder(ids)[0]
        error = (unet(noisy, t, encoder_hidden_states=hidden).sample - noise).pow(2).mean((1, 2, 3))
        snr = alphas[t] / (1 - alphas[t])
        if cfg.snr_gamma:  # less weight on the nearly clean steps, where the noise is easy to see
            error = error * snr.clamp(max=cfg.snr_gamma) / snr
        if cfg.x0_weight_cap:  # more on the noisiest ones (see UNetConfig)
            error = error * ((1 + snr) / snr).clamp(max=cfg.x0_weight_cap)
        loss = error.mean()
        if cfg.guided_weight:
            loss = loss + cfg.guided_weight * _guided_error(unet, text_encoder, pool, alphas, empty, cfg, gen,
                                                            vae.config.scaling_factor)
        _optimise(opt, params, loss, cfg, clock, step)
        ema_unet.update(unet)
        ema_text.update(text_encoder)
        pool.refresh(cfg.refresh)
        step += 1
        if on_step:
            on_step(step, estimated_total(cfg.steps, step, clock.progress(step)), loss.item())
        if cfg.save_every and step % cfg.save_every == 0:
            save()
        if cfg.preview_every and step % cfg.preview_every == 0:
            preview(out / saved_to, out / f"preview_{stage}_{step:06d}.png")
    save()
    return vae, ema_text.model.eval(), ema_unet.model.eval()


def _guided_error(unet, text_encoder, pool: _LatentPool, alphas, empty, cfg: UNetConfig, gen, scale: float):
    """MSE of the guided noise prediction on cfg.guided_batch nearly clean latents (UNetConfig)."""
    n, device = cfg.guided_batch, alphas.device
    index = torch.randint(0, len(pool.ids), (n,), generator=gen)
    latents = pool.sample(index, gen).to(device) * scale
    t = torch.randint(0, cfg.guided_t_max, (n,), generator=gen).to(device)
    noise = torch.randn(latents.shape, generator=gen).to(device)
    a = alphas[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    with torch.set_grad_enabled(any(p.requires_grad for p in text_encoder.parameters())):
        hidden = text_encoder(torch.cat([pool.ids[index], empty.expand(n, -1)]).to(device))[0]
    c, u = unet(torch.cat([noisy, noisy]), torch.cat([t, t]), encoder_hidden_states=hidden).sample.chunk(2)
    return (u + cfg.guided_scale * (c - u) - noise).pow(2).mean()


PREVIEW_PROMPTS = ("a red circle", "a blue square", "a green triangle", "a yellow ring", "white checkerboard",
                   "purple horizontal stripes", "a blue cross", "a red diagonal bar")


@torch.no_grad()
def preview(folder: Path, file: Path, prompts=PREVIEW_PROMPTS, steps: int = 20, guidance: float = 7.5) -> None:
    """One image per prompt with StableDiffusionPipeline on the saved folder, side by side."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(list(prompts), num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
                  generator=torch.Generator().manual_seed(0), output_type="pt").images
    from nodes.common import image_to_pil

    strip = images.permute(2, 0, 3, 1).reshape(64, -1, 3)  # the images side by side
    image_to_pil(strip[None])[0].resize((strip.shape[1] * 2, 128), 0).save(file)

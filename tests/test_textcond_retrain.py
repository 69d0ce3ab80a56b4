"""`python -m nodes.textcond retrain`: the stages chained, each skipped once done, an unfinished one
resumed from its checkpoint. The chaining is checked with stand-in stages (no training); one slow
test runs the real stages for 2 steps each."""
import json
import threading

import pytest
import torch

from nodes.textcond import retrain as rt
from nodes.textcond.__main__ import parse
from nodes.textcond.data import render, render_with_masks
from nodes.textcond.train import CHECKPOINTS

TINY = {"vae": dict(steps=2, batch=2, lr=1e-3, crop=32), "decoder": dict(steps=2, batch=2, lr=1e-3),
        "unet": dict(steps=2, batch=2, lr=1e-3, pool=4, preview_every=0),
        "robust": dict(steps=2, batch=2, lr=1e-3, latent_noise=0.5, recon_loss="l1"),
        "guided": dict(steps=2, batch=2, lr=1e-3, pool=4, preview_every=0, guided_weight=0.1, guided_batch=2)}


def fake_stages(calls, fail=None):
    """Stand-ins that record (stage, resume), write the stage's checkpoint and fail at `fail`."""
    def stage(name):
        def run(cfg, out, device, hook, resume):
            calls.append((name, resume))
            if name in CHECKPOINTS:
                (out / CHECKPOINTS[name]).write_text("state")
            if name == fail:
                raise RuntimeError(f"{name} interrupted")
        return run
    return {name: stage(name) for name in rt.STAGES}


def test_stages_run_in_order_skip_when_done_and_resume_when_interrupted(tmp_path):
    calls = []
    with pytest.raises(RuntimeError, match="unet interrupted"):
        rt.retrain(tmp_path, recipe=TINY, stages=fake_stages(calls, fail="unet"))
    assert calls[0] == ("vae", False) and sorted(calls[1:]) == [("decoder", False), ("unet", False)]
    assert rt.plan(tmp_path) == [("vae", "skip"), ("decoder", "skip"), ("unet", "resume"), ("robust", "start"),
                                 ("guided", "start"), ("export", "start")]
    record = json.loads(rt.done_file(tmp_path, "decoder").read_text())
    assert record["config"]["steps"] == 2 and record["resumed"] is False

    calls.clear()
    rt.retrain(tmp_path, recipe=TINY, stages=fake_stages(calls))
    assert calls == [("unet", True), ("robust", False), ("guided", False), ("export", False)]
    assert [action for _, action in rt.plan(tmp_path)] == ["skip"] * 6
    calls.clear()
    rt.retrain(tmp_path, recipe=TINY, stages=fake_stages(calls))
    assert calls == []


def test_decoder_and_unet_run_side_by_side_on_half_the_threads(tmp_path):
    """Both stages wait on one barrier, so it passes only if they run at the same time; each sees
    half of torch's threads (at least one), and the count is restored after."""
    meet, seen = threading.Barrier(2, timeout=20), {}

    def side(name):
        def run(cfg, out, device, hook, resume):
            seen[name] = torch.get_num_threads()
            meet.wait()
        return run

    before = torch.get_num_threads()
    rt.retrain(tmp_path, recipe=TINY, stages={**fake_stages([]), "decoder": side("decoder"), "unet": side("unet")})
    assert seen == {"decoder": max(1, before // 2), "unet": max(1, before // 2)}
    assert torch.get_num_threads() == before
    assert [a for _, a in rt.plan(tmp_path)] == ["skip"] * 6


def test_progress_hook_per_training_stage_and_cli(tmp_path):
    seen = []
    rt.retrain(tmp_path, recipe=TINY, stages=fake_stages([]), progress=lambda stage, steps: seen.append(stage))
    assert seen[0] == "vae" and sorted(seen[1:3]) == ["decoder", "unet"] and seen[3:] == ["robust", "guided"]  # export: no steps
    args = parse(["retrain", "--out", str(tmp_path), "--colour-probe", "0.5"])
    assert (args.command, args.colour_probe) == ("retrain", 0.5)
    assert rt.configs(rt.RECIPE)["unet"].steps == rt.RECIPE["unet"]["steps"]
    # today's default: the colour probe on in the VAE stage only (the decoder stage keeps the latent space)
    made = rt.configs(rt.RECIPE)
    assert (made["vae"].colour_probe, made["decoder"].colour_probe) == (1.0, 0.0)
    assert parse(["vae", "--out", str(tmp_path)]).colour_probe == 1.0
    # noisy latents in the robust stage only
    assert [made[s].latent_noise for s in ("vae", "decoder", "robust")] == [0.0, 0.0, 1.2]
    assert [made[s].recon_loss for s in ("vae", "decoder", "robust")] == ["mse", "mse", "l1"]
    assert parse(["robust", "--out", str(tmp_path), "--latent-noise", "0.3"]).latent_noise == 0.3
    assert parse(["robust", "--out", str(tmp_path)]).recon_loss == "l1"
    # the guided loss in the guided stage only
    assert (made["unet"].guided_weight, made["guided"].guided_weight) == (0.0, 0.1)
    assert parse(["guided", "--out", str(tmp_path)]).guided_weight == 0.1
    with pytest.raises(ValueError, match="recon_loss 'l2'.*'mse', 'l1'"):
        rt.configs({"robust": dict(steps=1, batch=1, lr=1e-3, recon_loss="l2")})


@pytest.mark.slow  # a few real UNet steps: ~10 s
def test_guided_stage_fine_tunes_the_unet_stage_s_unet_with_the_text_encoder_frozen(tmp_path):
    """The guided stage starts from the UNet stage's EMA in the same run folder, keeps the text encoder
    and saves RUN/guided; its guided loss really changes what the UNet learns."""
    import shutil

    from nodes.textcond import train

    cfg = rt.configs(TINY, save_every=0)
    train.train_vae(cfg["vae"], tmp_path, stage="vae")
    _, text, unet = train.train_unet(cfg["unet"], tmp_path)
    made = {}
    for weight in (0.1, 0.0):  # each from a copy of the UNet stage's checkpoint
        run = tmp_path / f"weight{weight}"
        shutil.copytree(tmp_path / "vae", run / "vae")
        shutil.copy(tmp_path / train.UNET_STATE, run / train.UNET_STATE)
        cfg["guided"].guided_weight = weight
        made[weight] = train.train_unet(cfg["guided"], run, stage="guided")
    _, guided_text, guided_unet = made[0.1]
    assert (tmp_path / "weight0.1" / train.GUIDED_DIR / "model_index.json").is_file()
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert same(guided_text, text) and not same(guided_unet, unet)
    assert not same(guided_unet, made[0.0][2])  # the same steps and seed without the guided loss learn otherwise


@pytest.mark.slow  # real training steps of all three models: ~20 s alone, minutes on a busy machine
def test_tiny_real_chain_resumes_from_checkpoints_and_exports(tmp_path):
    """The real stage functions, 2 steps each, with the colour probe on: a loadable float16 folder;
    then the VAE stage, undone, resumes from its checkpoint (probe state included)."""
    folder = rt.retrain(tmp_path, recipe=TINY, colour_probe=1.0, save_every=1)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    state = torch.load(tmp_path / "vae_state.pt", weights_only=False)
    assert state["step"] == 2 and state["probe"] is not None and state["config"]["colour_probe"] == 1.0
    for stage in rt.STAGES:  # undo everything: each stage resumes at its last step
        rt.done_file(tmp_path, stage).unlink()
    assert [a for _, a in rt.plan(tmp_path)] == ["resume"] * 5 + ["start"]
    rt.retrain(tmp_path, recipe=TINY, colour_probe=1.0, save_every=1)
    records = [json.loads(rt.done_file(tmp_path, s).read_text()) for s in rt.STAGES[:5]]
    assert all(r["resumed"] for r in records)
    assert torch.load(tmp_path / "unet_state.pt", weights_only=False)["step"] == 2  # nothing trained twice


def test_render_with_masks_is_render_plus_the_coverage():
    colours, shapes = torch.arange(6), torch.arange(6)
    images = render(colours, shapes, torch.Generator().manual_seed(3))
    again, mask = render_with_masks(colours, shapes, torch.Generator().manual_seed(3))
    assert torch.equal(images, again) and mask.shape == (6, 1, 64, 64)
    assert bool((mask.amax((1, 2, 3)) == 1).all())  # every picture has a fully covered pixel
    # where the mask is 1, the pixels are the shape's colour: far brighter than the background
    bright = images.amax(1, keepdim=True)
    assert bool((bright[mask == 1].mean() > bright[mask == 0].mean() + 0.4))


def test_colour_probe_rows_have_unit_norm_so_the_latent_cannot_shrink_the_colour():
    from nodes.textcond.train import ColourProbe

    probe = ColourProbe(4)
    latents = torch.randn(2, 4, 5, 5)
    before = probe(latents)
    with torch.no_grad():
        probe.weight *= 7.0  # a larger weight maps the same: only the rows' directions count
    assert torch.allclose(probe(latents), before, atol=1e-5)  # float32 rounding of the normalisation
    # so to map colours apart by d, the latent cells must lie at least d apart
    shift = torch.zeros(1, 4, 1, 1)
    shift[0, 0] = 1.0
    assert (probe(latents + shift) - probe(latents)).abs().max() <= 1.0 + 1e-5


@pytest.mark.slow  # a few real VAE steps: ~10 s
def test_robust_stage_trains_the_decoder_on_noisy_latents_and_keeps_the_encoder(tmp_path):
    """The robust stage starts from the decoder stage's EMA with the encoder frozen (the UNet's latent
    space stays valid); its latent noise really changes what the decoder learns."""
    from nodes.textcond import train

    cfg = rt.configs(TINY, save_every=0)
    train.train_vae(cfg["vae"], tmp_path, stage="vae")
    decoder = train.train_vae(cfg["decoder"], tmp_path, stage="decoder")
    made = {}
    for noise in (0.5, 0.0):  # each from a copy of the decoder stage's checkpoint
        run = tmp_path / f"noise{noise}"
        run.mkdir()
        (run / "decoder_state.pt").write_bytes((tmp_path / "decoder_state.pt").read_bytes())
        cfg["robust"].latent_noise = noise
        made[noise] = train.train_vae(cfg["robust"], run, stage="robust")
    robust = made[0.5]
    assert (tmp_path / "noise0.5" / train.ROBUST_DIR / "config.json").is_file()
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert same(robust.encoder, decoder.encoder) and same(robust.quant_conv, decoder.quant_conv)
    assert not same(robust.decoder, decoder.decoder)
    assert not same(robust.decoder, made[0.0].decoder)  # the same steps and seed without noise learn otherwise

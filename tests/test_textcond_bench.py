"""The text-to-image quality benches' measures (bench/textcond_quality.py, bench/textcond_latents.py):
foreground spread, per-colour goals, contact sheet layout, latent statistics per colour."""
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import textcond_latents as latents_bench  # noqa: E402
import textcond_quality as quality  # noqa: E402

from nodes.common import torch_threads  # noqa: E402
from nodes.textcond import model as tm  # noqa: E402
from nodes.textcond.data import COLOURS, COLOUR_NAMES, SHAPES  # noqa: E402


def squares(colour: str, n: int = 4):
    """Real data-set squares of one colour, (N, H, W, 3)."""
    c = COLOUR_NAMES.index(colour)
    return quality.real_like(torch.full((n,), c), torch.full((n,), SHAPES.index("square")))


def test_foreground_spread_is_the_data_noise_on_real_pictures_and_grows_with_blotches():
    real = squares("green")
    spread = quality.foreground_spread(real)
    assert ((spread > 0.005) & (spread < 0.015)).all()  # the data's noise (std 0.01), edges eroded away
    blotched = real.clone()
    inside = real.amax(-1) > quality.FOREGROUND
    for image, mask in zip(blotched, inside):  # a blue patch in the middle of each green square
        ys, xs = mask.nonzero(as_tuple=True)
        cy, cx = int(ys.float().mean()), int(xs.float().mean())
        image[cy - 2:cy + 2, cx - 2:cx + 2] = torch.tensor(COLOURS["blue"])
    assert (quality.foreground_spread(blotched) > 3 * spread).all()
    dark = torch.zeros(1, 64, 64, 3)
    dark[0, 10:12, 10:12] = 1.0  # under 8 inner foreground pixels: no figure
    assert math.isnan(quality.foreground_spread(dark)[0])


def test_missed_goals_names_the_colour_the_measure_and_the_goal():
    good = dict(name="red", colour=1.0, shape=0.975, p_shape=0.95, spread=0.014, spread_real=0.010)
    assert quality.missed_goals([good]) == []
    bad = dict(good, name="green", shape=0.85, p_shape=0.769, spread=0.059, spread_real=0.011)
    missed = quality.missed_goals([good, bad])
    assert missed == ["green: shape 0.850 (goal >= 0.95)", "green: p_shape 0.769 (goal >= 0.9)",
                      "green: spread_ratio 5.364 (goal <= 1.5)"]


def test_contact_sheet_puts_the_first_seed_of_each_prompt_in_its_row_and_column():
    colours, shapes, seeds = 2, 3, 2
    images = torch.arange(colours * shapes * seeds, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 4, 4, 3) / 100
    sheet = quality.contact_sheet(images, colours, shapes, seeds, scale=2)
    assert sheet.shape == (colours * 10 + 2, shapes * 10 + 2, 3)  # 8 px cells, 2 px gaps
    for c in range(colours):
        for s in range(shapes):
            cell = sheet[2 + c * 10:2 + c * 10 + 8, 2 + s * 10:2 + s * 10 + 8]
            assert torch.equal(cell, torch.full_like(cell, ((c * shapes + s) * seeds) / 100))


def test_classifier_is_the_same_whatever_the_thread_count():
    """Trained on one thread: the bench's verdict on the same pictures cannot move with --threads
    (on two threads, 3 steps already change the weights by ~1e-2)."""
    def weights(threads):
        with torch_threads(threads):
            net, _ = quality.train_classifier(3, seed=7)
        return torch.cat([t.flatten() for t in net.state_dict().values() if t.dtype.is_floating_point])

    assert torch.equal(weights(1), weights(2))


def test_score_averages_the_classifiers_probabilities_and_keeps_each_ones_shape_call():
    class Fixed(torch.nn.Module):
        def __init__(self, colour, shape):
            super().__init__()
            self.logits = torch.tensor(colour), torch.tensor(shape)

        def forward(self, images):
            return tuple(t.expand(len(images), -1) for t in self.logits)

    # two picture-independent classifiers: the first sure of shape 0, the second hesitating towards 1
    nets = [Fixed([0.0, 0.0], [4.0, 0.0]), Fixed([2.0, 0.0], [0.0, 0.5])]
    p_colour, p_shape, members = quality.score(nets, torch.zeros(3, 3, 8, 8))
    expected = (torch.tensor([4.0, 0.0]).softmax(0) + torch.tensor([0.0, 0.5]).softmax(0)) / 2
    assert torch.allclose(p_shape, expected.expand(3, -1))
    assert torch.allclose(p_colour.sum(1), torch.ones(3))
    assert p_shape.argmax(1).tolist() == [0, 0, 0]  # the confident one wins the average
    assert members.tolist() == [[0, 0, 0], [1, 1, 1]]


@pytest.fixture(scope="module")
def random_vae():
    torch.manual_seed(0)
    return tm.new_vae().eval()


def test_latents_bench_reports_every_colour_and_the_background(random_vae, capsys):
    result = latents_bench.measure(random_vae, count=10, batch=10)
    assert set(result) == {*COLOUR_NAMES, "background"}
    channels = random_vae.config.latent_channels
    for name in COLOUR_NAMES:
        r = result[name]
        assert r["fg"].shape == r["fg_std"].shape == (channels,)
        assert math.isfinite(r["psnr"]) and r["psnr"] < 20  # an untrained VAE reconstructs nothing
        assert r["spread_real"] < 0.015 and r["spread"] != r["spread_real"]
        assert r["spread_noisy"] != r["spread"]  # the noise reaches the decoder
    mse = sum(10 ** (-result[n]["psnr"] / 10) for n in COLOUR_NAMES) / len(COLOUR_NAMES)
    assert latents_bench.overall_psnr(result) == pytest.approx(-10 * math.log10(mse))
    latents_bench.report(result)
    out = capsys.readouterr().out
    assert "missed: red, green, blue, yellow, white, purple under 27" in out and "fg spread round trip" in out
    assert "noisy / real" in out


# --- bench/textcond_guidance.py ---------------------------------------------------------------------

import textcond_guidance as guidance_bench  # noqa: E402


@pytest.fixture(scope="module")
def shipped_pipe():
    from nodes.textcond.model import shipped_folder

    return guidance_bench.load(shipped_folder())


def test_guided_error_is_the_combination_of_the_two_predictions(shipped_pipe):
    """u + w (c - u) is u at w = 0 and c at w = 1, so its error row must equal theirs there."""
    for w, same_as in ((0.0, "uncond"), (1.0, "cond")):
        for row in guidance_bench.denoising_errors(shipped_pipe, w, count=4, timesteps=(20, 500)):
            assert row["guided"] == pytest.approx(row[same_as], rel=1e-5)
            assert row["differ"] > 0  # the prompt changes the prediction
    rows = guidance_bench.denoising_errors(shipped_pipe, 7.5, count=4, timesteps=(20, 500))
    assert rows[0]["cond"] < rows[1]["cond"]  # less noise, a better guess of the clean latent


def test_guidance_off_callback_switches_at_its_step_to_the_prompts_half():
    class Pipe:
        _guidance_scale = 7.5

    pipe, embeds = Pipe(), torch.arange(6.0).view(2, 3, 1)  # (empty prompt, prompt)
    callback = guidance_bench.guidance_off_after(3)
    assert torch.equal(callback(pipe, 1, None, {"prompt_embeds": embeds})["prompt_embeds"], embeds)
    assert pipe._guidance_scale == 7.5
    out = callback(pipe, 2, None, {"prompt_embeds": embeds})  # the third step has ended
    assert pipe._guidance_scale == 0.0 and torch.equal(out["prompt_embeds"], embeds[1:])


def test_switching_guidance_off_for_the_last_steps_changes_the_pictures(shipped_pipe):
    """The pipeline really takes the callback's switch: the pictures lie between full guidance and none."""
    run = lambda w, last: guidance_bench.generated(shipped_pipe, w, 1, 4, last, colours=[1], shapes=[0, 6])[0]
    full, switched, unguided = run(7.5, 0), run(7.5, 2), run(1.0, 0)
    assert switched.shape == full.shape == (2, 64, 64, 3)
    assert (switched - full).abs().max() > 0.05 and (switched - unguided).abs().max() > 0.05


def test_spread_ratio_is_against_real_pictures_of_the_same_prompts():
    colours, shapes = torch.tensor([0, 0, 3, 3]), torch.tensor([0, 5, 2, 9])
    overall, per_colour = guidance_bench.spread_ratios(quality.real_like(colours, shapes), colours, shapes)
    assert overall == pytest.approx(1.0) and per_colour[0] == pytest.approx(1.0) and per_colour[3] == pytest.approx(1.0)
    assert math.isnan(per_colour[1])  # no green prompt


def test_spread_ratio_interval_holds_the_ratio_and_narrows_with_more_pictures():
    real = quality.foreground_spread(squares("blue", 8))
    low, high = quality.ratio_interval(1.5 * real, real)  # every resample's ratio is 1.5
    assert low == pytest.approx(1.5) and high == pytest.approx(1.5)
    gen = torch.Generator().manual_seed(0)
    made = lambda n: 0.015 * (1 + torch.rand(n, generator=gen))  # spreads 0.015-0.03 against 0.01
    few, many = (quality.ratio_interval(made(n), torch.full((n,), 0.01)) for n in (10, 160))
    for low, high in (few, many):
        assert 1.0 < low < 2.25 < high < 3.0  # around the true ratio, 2.25
    assert many[1] - many[0] < (few[1] - few[0]) / 2  # 16x the pictures: about a quarter as wide
    # a picture without a figure (NaN) leaves out its pair, the real picture's spread too
    made_nan = torch.cat([torch.tensor([float("nan")]), 1.5 * real])
    low, high = quality.ratio_interval(made_nan, torch.cat([torch.tensor([1.0]), real]))
    assert low == pytest.approx(1.5) and high == pytest.approx(1.5)

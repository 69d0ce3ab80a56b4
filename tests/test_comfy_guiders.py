"""ComfyUI's DualCFGGuider (nodes.comfy.sampling, nodes.comfy.ksampling.dual): its two scales over
three conditionings, checked against the one-scale guiders they reduce to, on a tiny SD model."""
import numpy as np
import pytest
import torch

from nodes.comfy.ksampling.dual import Dual, DualGuide
from nodes.comfy.sampling import BasicGuider, BasicScheduler, CFGGuider, DualCFGGuider
from nodes.common import call
from tests._sd_families import context, sd
from tests.test_sd_families import NEGATIVE, PROMPT, encode
from tests.test_conditioning import custom


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.set_num_threads(1)
    return context(tmp_path_factory.mktemp("guiders"))


@pytest.fixture(scope="module")
def model():
    return sd(seed=91)


def run(ctx, model, guider):
    sigmas = call(BasicScheduler, ctx, model=model["model"], scheduler="normal", steps=3, denoise=1.0)
    return custom(ctx, model, "euler", sigmas, guider=guider)[0]


def conds(ctx, model):
    return (encode(ctx, model["clip"], PROMPT), encode(ctx, model["clip"], "a red house"),
            encode(ctx, model["clip"], NEGATIVE))


def test_both_scales_one_is_the_first_conditioning_alone(ctx, model):
    """Regular style at cfg 1 and 1 skips the middle and negative passes, as ComfyUI: BasicGuider's image."""
    pos, mid, neg = conds(ctx, model)
    dual = call(DualCFGGuider, ctx, model=model["model"], cond1=pos, cond2=mid, negative=neg, cfg_conds=1.0,
                cfg_cond2_negative=1.0, style="regular")
    np.testing.assert_array_equal(run(ctx, model, dual),
                                  run(ctx, model, call(BasicGuider, ctx, model=model["model"], conditioning=pos)))


@pytest.mark.parametrize("style", ["regular", "nested"])
def test_a_middle_equal_to_the_negative_is_plain_cfg(ctx, model, style):
    """cond2 = negative: regular gives n + cfg1 (p - n); nested at cfg2 = 1 gives the same, so CFGGuider's
    image. Three model calls against CFGGuider's one batched call round differently: measured 6.3e-5
    apart in the latents on this model, the same 8-bit pixels; allowed one pixel level."""
    pos, _, neg = conds(ctx, model)
    dual = call(DualCFGGuider, ctx, model=model["model"], cond1=pos, cond2=neg, negative=neg, cfg_conds=4.0,
                cfg_cond2_negative=3.0 if style == "regular" else 1.0, style=style)
    ours = run(ctx, model, dual).astype(np.float32)
    plain = run(ctx, model, call(CFGGuider, ctx, model=model["model"], positive=pos, negative=neg, cfg=4.0))
    assert np.abs(ours - plain.astype(np.float32)).max() <= 1  # 8-bit pixels: at most one level apart


class Constant:
    """A guide predicting a constant per conditioning (its first embedding value), counting calls."""

    def __init__(self, value, calls):
        self.value, self.calls = value, calls

    def __call__(self, x, t, step, total):
        self.calls.append(self.value)
        return torch.full_like(x, self.value)


@pytest.mark.parametrize("nested, cfg1, cfg2, expected, passes", [
    (False, 3.0, 2.0, 1.0 + 2.0 * (5.0 - 1.0) + 3.0 * (9.0 - 5.0), 3),  # n + cfg2 (m - n) + cfg1 (p - m)
    (True, 3.0, 2.0, 1.0 + 2.0 * ((5.0 + 3.0 * (9.0 - 5.0)) - 1.0), 3),  # n + cfg2 (m + cfg1 (p - m) - n)
    (False, 3.0, 1.0, 5.0 + 3.0 * (9.0 - 5.0), 2),  # cfg2 1: the negative pass skipped
    (False, 1.0, 1.0, 9.0, 1),  # both 1: the positive alone
    (True, 1.0, 1.0, 9.0, 3),  # nested never skips
])
def test_the_combination_and_the_skipped_passes(nested, cfg1, cfg2, expected, passes):
    calls = []
    guide = DualGuide(lambda value: Constant(value, calls), 9.0, Dual(5.0, cfg2, nested), 1.0, cfg1)
    out = guide(torch.zeros(1, 4, 2, 2), torch.tensor(1.0), 0, 1)
    assert torch.allclose(out, torch.tensor(expected)) and len(calls) == passes

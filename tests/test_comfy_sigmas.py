"""ComfyUI's sigma-list nodes (nodes.comfy.sigmas): the lists ComfyUI's own rules give, worked out by
hand on a short schedule."""
import pytest
import torch

from nodes.common import call
from nodes.comfy.sampling import Sigmas
from nodes.comfy.sigmas import FlipSigmas, ManualSigmas, SetFirstSigma, SplitSigmas, SplitSigmasDenoise

LEVELS = Sigmas(torch.tensor([14.6, 7.0, 3.5, 1.0, 0.0]))


def values(*outs):
    return [o.values.tolist() for o in outs]


def test_manual_sigmas_reads_every_number_of_the_text():
    (out,) = call(ManualSigmas, None, sigmas="14.6, 7 3.5,1e0 .5 -0.25 +2")
    # ComfyUI's number pattern has no exponent: "1e0" reads as 1 and 0
    assert values(out) == [pytest.approx([14.6, 7.0, 3.5, 1.0, 0.0, 0.5, -0.25, 2.0])]
    assert out.values.dtype == torch.float32 and out.scheduler is None
    assert values(*call(ManualSigmas, None)) == [[1.0, 0.5]]  # the default "1, 0.5"
    with pytest.raises(ValueError, match="ManualSigmas: input 'sigmas': '1..5'"):
        call(ManualSigmas, None, sigmas="1..5")


def test_set_first_sigma_replaces_only_the_first_level():
    (out,) = call(SetFirstSigma, None, sigmas=LEVELS, sigma=20.0)
    assert values(out) == [pytest.approx([20.0, 7.0, 3.5, 1.0, 0.0])]
    assert LEVELS.values[0].item() == pytest.approx(14.6)  # the input is left as it was
    with pytest.raises(ValueError, match="empty"):
        call(SetFirstSigma, None, sigmas=Sigmas(torch.tensor([])))


def test_split_sigmas_share_the_level_at_the_step():
    assert values(*call(SplitSigmas, None, sigmas=LEVELS, step=2)) == \
        [pytest.approx([14.6, 7.0, 3.5]), pytest.approx([3.5, 1.0, 0.0])]
    assert values(*call(SplitSigmas, None, sigmas=LEVELS, step=0)) == \
        [pytest.approx([14.6]), pytest.approx([14.6, 7.0, 3.5, 1.0, 0.0])]


@pytest.mark.parametrize("denoise, high, low", [
    (0.5, [14.6, 7.0, 3.5], [3.5, 1.0, 0.0]),  # round(4 * 0.5) = 2 steps
    (0.7, [14.6, 7.0], [7.0, 3.5, 1.0, 0.0]),  # round(2.8) = 3
    (0.625, [14.6, 7.0, 3.5], [3.5, 1.0, 0.0]),  # round(2.5) = 2: Python's round, half to even
    (1.0, [14.6], [14.6, 7.0, 3.5, 1.0, 0.0]),
    (0.0, [], [0.0]),  # 0 steps: ComfyUI's slices give an empty high part and the last level
])
def test_split_sigmas_denoise_keeps_the_last_steps(denoise, high, low):
    assert values(*call(SplitSigmasDenoise, None, sigmas=LEVELS, denoise=denoise)) == \
        [pytest.approx(high), pytest.approx(low)]


def test_flip_sigmas_reverses_and_lifts_a_first_zero():
    (out,) = call(FlipSigmas, None, sigmas=LEVELS)
    assert values(out) == [pytest.approx([0.0001, 1.0, 3.5, 7.0, 14.6])]
    (out,) = call(FlipSigmas, None, sigmas=Sigmas(torch.tensor([3.0, 1.0])))
    assert values(out) == [pytest.approx([1.0, 3.0])]
    assert LEVELS.values[-1].item() == 0.0  # not changed in place

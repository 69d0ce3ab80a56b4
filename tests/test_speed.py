"""Speed options (nodes.loading.speed) on the tiny model, on the CPU: each leaves the pixels as they were (or
within a stated tolerance where the operation order legitimately changes), SDPA is what runs, and
the defaults change nothing off CUDA."""
import numpy as np
import pytest
import torch

import nodes.loading.speed as speed
from graph import Env, Loom
from graph.env import Speed
from nodes.common import dtype_of
from nodes.loading.speed import SDPA, attention_processors, prepare_unet, resolve
from tests._sd import as_array, pin_threads, run_node, workflow

STEPS = 8
# channels_last reorders the CPU convolutions' sums: measured 1.1e-6 on these pixels (0..1).
LAYOUT_TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def keep_cudnn_flag():
    flag = torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.benchmark = flag


def loom_with(tmp_path_factory, tiny_sd, dtype="float32", **options) -> Loom:
    pin_threads()
    env = Env.from_data_dir(tmp_path_factory.mktemp("data"), models_dir=tiny_sd.parent, device="cpu", dtype=dtype,
                            speed=Speed(**options))
    return Loom(env)


def image(loom: Loom, seed: int = 42) -> np.ndarray:
    return as_array(run_node(loom, workflow("txt2img", **{"6": {"steps": STEPS}, "7": {"seed": seed}})))


def unet_of(loom: Loom):
    validation = loom.validate(workflow("txt2img"), outputs=["1"])
    return loom.run(validation).values["1"][2]


@pytest.fixture(scope="module")
def baseline(tiny_sd, tmp_path_factory):
    loom = loom_with(tmp_path_factory, tiny_sd)
    return loom, image(loom)


def test_defaults_are_on_for_cuda_half_precision_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve(Speed(), cpu, torch.float32) == speed.Applied(False, False, False)
    assert resolve(Speed(), cuda, torch.float32) == speed.Applied(False, False, False)  # exact diffusers pixels
    assert resolve(Speed(), cuda, torch.float16) == speed.Applied(True, True, False)
    assert resolve(Speed(), cuda, torch.bfloat16) == speed.Applied(True, True, False)
    assert resolve(Speed(compile=True, channels_last=False), cuda, torch.float16) == speed.Applied(False, True, True)


def test_defaults_on_the_cpu_leave_the_unet_as_loaded(baseline):
    loom, _ = baseline
    unet = unet_of(loom)
    assert unet.loom_speed == speed.Applied(False, False, False)
    assert unet.conv_in.weight.is_contiguous()
    assert getattr(unet, "_compiled_call_impl", None) is None


def test_dtype_auto_is_float32_on_the_cpu_and_float16_on_cuda(baseline, tiny_sd, tmp_path_factory):
    env = Env.from_data_dir(tmp_path_factory.mktemp("auto"), device="cpu")
    assert dtype_of(env) == torch.float32
    assert dtype_of(env, torch.device("cuda")) == torch.float16
    _, expected = baseline
    assert np.abs(image(loom_with(tmp_path_factory, tiny_sd, dtype="auto")) - expected).max() == 0.0


def test_sdpa_is_what_runs(baseline):
    """Every attention layer of the UNet and the VAE calls torch's scaled_dot_product_attention once
    per forward: counted through a sampling run."""
    from diffusers.models.attention_processor import Attention

    loom, _ = baseline
    unet = unet_of(loom)
    vae = loom.run(loom.validate(workflow("txt2img"), outputs=["1"])).values["1"][3]
    assert attention_processors(unet) == attention_processors(vae) == {SDPA}
    layers = sum(isinstance(m, Attention) for m in unet.modules())
    vae_layers = sum(isinstance(m, Attention) for m in vae.decoder.modules())
    assert layers > 0 and vae_layers > 0

    sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
        image(loom, seed=7)  # text encodings come from the cache: only the UNet and the VAE run
    assert len(calls) == STEPS * layers + vae_layers


@pytest.mark.parametrize("option, tolerance", [
    ({"channels_last": True}, LAYOUT_TOLERANCE),
    ({"cudnn_benchmark": True}, 0.0),  # no cuDNN on the CPU: nothing changes
    ({"compile": True}, 0.0),  # dynamo's graph run eagerly: the same operations
])
def test_each_option_leaves_the_pixels(baseline, tiny_sd, tmp_path_factory, monkeypatch, option, tolerance):
    monkeypatch.setattr(speed, "COMPILE_OPTIONS", {"backend": "eager"})  # inductor: see the slow test
    _, expected = baseline
    loom = loom_with(tmp_path_factory, tiny_sd, **option)
    unet = unet_of(loom)
    for name, on in option.items():
        assert getattr(unet.loom_speed, name) is on
    if option.get("channels_last"):
        assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    if option.get("compile"):
        assert unet._compiled_call_impl is not None
    assert np.abs(image(loom) - expected).max() <= tolerance


def test_a_unet_is_prepared_once(baseline, monkeypatch):
    monkeypatch.setattr(speed, "COMPILE_OPTIONS", {"backend": "eager"})
    loom, _ = baseline
    env = Env.from_data_dir(loom.env.data_dir, device="cpu", speed=Speed(compile=True))
    from copy import deepcopy

    unet = deepcopy(unet_of(loom))
    prepare_unet(unet, env)
    compiled = unet._compiled_call_impl
    prepare_unet(unet, env)
    assert unet._compiled_call_impl is compiled


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_inductor_compile_stays_within_tolerance(baseline, tiny_sd, tmp_path_factory):
    """The real torch.compile (inductor, C++ kernels on the CPU; about 2 minutes on one thread):
    fused kernels reorder sums, measured 1.1e-6."""
    _, expected = baseline
    assert np.abs(image(loom_with(tmp_path_factory, tiny_sd, compile=True)) - expected).max() <= LAYOUT_TOLERANCE


def test_cli_options_reach_the_engine(tiny_sd, tmp_path, monkeypatch):
    import nodes.loading.placement
    from loomserver.cli import parse_args
    from loomserver.engine import make_loom

    argv = ["--data-dir", str(tmp_path), "--models-dir", str(tiny_sd.parent), "--vram-bytes", "123456", "--compile"]
    loom = make_loom(parse_args([*argv, "--device", "cpu"]))
    assert loom.env.speed == Speed(compile=True)
    assert loom.executor.memory is None  # on the CPU the cache's own budget covers everything

    class Placement:  # what placement_for gives on a GPU
        device, host = "cuda:0", "cpu"

    monkeypatch.setattr(nodes.loading.placement, "placement_for", lambda env: Placement())
    memory = make_loom(parse_args(argv)).executor.memory
    assert memory.budget == 123456 and memory.device == "cuda:0"


def test_ray_workers_get_the_speed_options(tiny_sd, monkeypatch):
    """The Ray actor builds its engine from the options the pool sends (no Ray needed to check that)."""
    from loomserver.ray_actor import LoomActor

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    actor = LoomActor({"models_dir": str(tiny_sd.parent), "device": "cpu", "dtype": "float32", "threads": 1,
                       "compile": True, "vram_bytes": 123456})
    try:
        assert actor.loom.env.speed == Speed(compile=True)
    finally:
        actor.close_sync()

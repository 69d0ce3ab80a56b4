"""Loading a checkpoint initialises no weight at random first: every tensor comes from the file
(diffusers folders through accelerate's empty-weight loading, single files on the meta device)."""
import functools

import pytest
import torch

from tests.test_sd_single_file import write_ldm

INITS = ("normal_", "uniform_", "kaiming_uniform_", "kaiming_normal_", "trunc_normal_", "xavier_uniform_",
         "xavier_normal_", "constant_", "zeros_", "ones_")


@pytest.fixture
def real_inits(monkeypatch):
    """The torch.nn.init calls that touched a real (not meta) tensor, by function name."""
    calls = []

    def spy(name, original):
        @functools.wraps(original)
        def init(tensor, *args, **kwargs):
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                calls.append(name)
            return original(tensor, *args, **kwargs)
        return init

    for name in INITS:
        monkeypatch.setattr(torch.nn.init, name, spy(name, getattr(torch.nn.init, name)))
    return calls


@pytest.mark.parametrize("kind", ["folder", "single file"])
def test_loading_draws_no_random_weights(kind, tiny_sd, tmp_path, real_inits):
    from nodes.loading.checkpoints import load_diffusers_folder
    from nodes.loading.single_file import load_single_file

    if kind == "folder":
        parts = vars(load_diffusers_folder(tiny_sd, torch.device("cpu"), torch.float32))
    else:
        path = tmp_path / "tiny.safetensors"
        write_ldm(tiny_sd, path)
        real_inits.clear()  # writing the file is not loading it
        parts = load_single_file(path, torch.device("cpu"), torch.float32)
    assert real_inits == []
    for model in (parts["text_encoder"], parts["unet"], parts["vae"]):  # nothing left on the meta device
        assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])

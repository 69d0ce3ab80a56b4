"""Scaling and utility nodes: ComfyUI's image/latent resizes (sizes, aspect rules, methods), upscale models
through spandrel (a tiny ESRGAN-shaped model in Real-ESRGAN's file layout, made here), latent batches
and primitives."""
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from safetensors.torch import save_file

from graph import Env, Loom
from tests._tiny_assets import tiny_esrgan_state
from nodes.latent_value import Latent


@pytest.fixture(scope="module")
def loom(tmp_path_factory):
    torch.set_num_threads(1)
    models = tmp_path_factory.mktemp("scaling_models")
    (models / "upscale_models").mkdir()
    torch.save({"params_ema": tiny_esrgan_state(seed=0)}, models / "upscale_models" / "tiny_x4.pth")
    save_file(tiny_esrgan_state(seed=0, identity=True), str(models / "upscale_models" / "nearest_x4.safetensors"))
    env = Env.from_data_dir(tmp_path_factory.mktemp("scaling_data"), models_dir=models, device="cpu", dtype="float32")
    return Loom(env)


def run(loom, prompt: dict, node: str):
    validation = loom.validate(prompt, outputs=[node])
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    return result.values[node]


def test_spandrel_loads_without_torchvision():
    from nodes.scaling import import_spandrel

    spandrel = import_spandrel()
    assert hasattr(spandrel, "ModelLoader")
    if "torchvision" not in sys.modules:  # the stand-in was only visible to spandrel's import
        with pytest.raises(ImportError):
            import torchvision  # noqa: F401


def test_upscale_model_runs_the_esrgan_file(loom):
    """UpscaleModelLoader detects the ESRGAN architecture and scale from the weights; ImageUpscaleWithModel
    gives the model's own output, 4x the size."""
    from nodes.scaling import import_spandrel

    from nodes import scaling

    image = torch.rand(2, 24, 20, 3, generator=torch.Generator().manual_seed(1))
    model = run(loom, {"1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "tiny_x4.pth"}}}, "1")[0]
    assert model.architecture.id == "ESRGAN" and model.scale == 4
    upscaled = scaling.upscale_images(model, image)
    assert upscaled.shape == (2, 96, 80, 3)
    spandrel = import_spandrel()
    direct = spandrel.ModelLoader().load_from_state_dict(tiny_esrgan_state(seed=0)).eval()
    with torch.no_grad():
        expected = direct(image[1].movedim(-1, 0)[None])[0].movedim(0, -1)
    assert torch.equal(upscaled[1], expected.clamp(0, 1))


def test_identity_esrgan_upscales_by_nearest_neighbour(loom):
    """An ESRGAN whose main path is identity kernels is nearest-neighbour 4x: the node gives exactly that."""
    from nodes.comfy.core import call
    from nodes.comfy.scaling import ImageUpscaleWithModel

    model = run(loom, {"1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "nearest_x4.safetensors"}}}, "1")[0]
    image = torch.rand(1, 10, 14, 3, generator=torch.Generator().manual_seed(2))
    steps = []
    out = call(ImageUpscaleWithModel, SimpleNamespace(progress=lambda k, n: steps.append((k, n))),
               upscale_model=model, image=image)
    assert steps == [(1, 1)]
    expected = F.interpolate(image.movedim(-1, 1), scale_factor=4, mode="nearest").movedim(1, -1)
    assert out.shape == (1, 40, 56, 3) and torch.allclose(out, expected, atol=1e-6)


def test_image_upscale_with_model_in_a_workflow(loom):
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((16, 12, 3)) * 255).astype(np.uint8)).save(
        loom.env.input_dir / "small.png")
    prompt = {"1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "tiny_x4.pth"}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "small.png"}},
              "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["1", 0], "image": ["2", 0]}},
              "4": {"class_type": "ImageScaleBy", "inputs": {"image": ["3", 0], "upscale_method": "lanczos",
                                                             "scale_by": 0.5}}}
    image = run(loom, prompt, "4")[0]
    assert image.shape == (1, 32, 24, 3) and 0 <= image.min() and image.max() <= 1


@pytest.mark.parametrize("inputs, size", [
    ({"width": 40, "height": 30, "crop": "disabled"}, (30, 40)),
    ({"width": 0, "height": 30, "crop": "disabled"}, (30, 45)),  # 0: follows the other side (20x30 input)
    ({"width": 40, "height": 0, "crop": "disabled"}, (27, 40)),
    ({"width": 0, "height": 0, "crop": "disabled"}, (20, 30)),
    ({"width": 10, "height": 10, "crop": "center"}, (10, 10)),
])
def test_image_scale_sizes(loom, inputs, size):
    from nodes.comfy.scaling import ImageScale
    from nodes.comfy.core import call

    image = torch.rand(1, 20, 30, 3)
    out = call(ImageScale, None, image=image, upscale_method="bilinear", **inputs)
    assert tuple(out.shape[1:3]) == size


def test_methods_are_torchs_and_center_crop_cuts_the_middle():
    from nodes.scaling import resize

    x = torch.rand(1, 3, 20, 30)
    for method in ("nearest-exact", "bilinear", "area", "bicubic"):
        assert torch.equal(resize(x, 15, 10, method), F.interpolate(x, size=(10, 15), mode=method))
    cropped = resize(x, 10, 10, "nearest-exact", "center")  # 30 wide -> the middle 20 columns
    assert torch.equal(cropped, F.interpolate(x[..., :, 5:25], size=(10, 10), mode="nearest-exact"))


def test_bislerp_keeps_directions_and_lengths():
    from nodes.scaling import bislerp

    x = torch.randn(1, 4, 6, 8)
    assert torch.allclose(bislerp(x, 8, 6), x, atol=1e-5)  # same size: the same latents
    up = bislerp(x, 16, 12)
    assert up.shape == (1, 4, 12, 16)
    norms = x.norm(dim=1)
    assert up.norm(dim=1).min() >= norms.min() - 1e-4 and up.norm(dim=1).max() <= norms.max() + 1e-4


def test_total_pixels_and_latent_sizes(loom):
    from nodes.comfy.core import call
    from nodes.comfy.scaling import ImageScaleToTotalPixels, LatentUpscale, LatentUpscaleBy

    image = torch.rand(1, 300, 400, 3)
    out = call(ImageScaleToTotalPixels, None, image=image, upscale_method="area", megapixels=0.25, resolution_steps=1)
    assert tuple(out.shape[1:3]) == (443, 591)  # 400x300 * sqrt(0.25 MiB / 120000 px)
    out = call(ImageScaleToTotalPixels, None, image=image, upscale_method="area", megapixels=0.25, resolution_steps=64)
    assert tuple(out.shape[1:3]) == (448, 576)
    latent = Latent(torch.randn(2, 4, 8, 12), noise=torch.randn(2, 4, 8, 12), seeds=[5, 6])
    up = call(LatentUpscale, None, samples=latent, upscale_method="bislerp", width=192, height=128, crop="disabled")
    assert up["samples"].shape == (2, 4, 16, 24) and up.noise is None and up.seeds == [5, 6]
    by = call(LatentUpscaleBy, None, samples=latent, upscale_method="nearest-exact", scale_by=1.5)
    assert by["samples"].shape == (2, 4, 12, 18)
    aspect = call(LatentUpscale, None, samples=latent, upscale_method="bilinear", width=0, height=128, crop="disabled")
    assert aspect["samples"].shape == (2, 4, 16, 24)


def test_latent_batches():
    from nodes.comfy.core import call
    from nodes.comfy.scaling import LatentFromBatch, RepeatLatentBatch

    samples = torch.arange(3.0)[:, None, None, None].expand(3, 4, 2, 2)
    latent = Latent(samples, seeds=[1, 2, 3], generator=["a", "b", "c"], empty=True)
    rep = call(RepeatLatentBatch, None, samples=latent, amount=2)
    assert rep["samples"][:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2] and rep.seeds == [1, 2, 3, 1, 2, 3]
    one = call(LatentFromBatch, None, samples=latent, batch_index=1, length=5)
    assert one["samples"][:, 0, 0, 0].tolist() == [1, 2] and one.seeds == [2, 3] and one["batch_index"] == [1, 2]
    assert one.generator == ["b", "c"] and latent.seeds == [1, 2, 3]  # the input is not changed
    again = call(RepeatLatentBatch, None, samples=one, amount=2)
    assert again["batch_index"] == [1, 2, 3, 4]


def test_primitives_have_comfyuis_signatures_and_pass_their_value(loom):
    info = loom.registry.object_info(loom.env)
    assert info["PrimitiveInt"]["input"]["required"]["value"][1]["control_after_generate"] is True
    assert info["PrimitiveStringMultiline"]["input"]["required"]["value"][1]["multiline"] is True
    assert info["PrimitiveFloat"]["output"] == ["FLOAT"] and info["PrimitiveBoolean"]["output"] == ["BOOLEAN"]
    for node, value in (("PrimitiveInt", -7), ("PrimitiveFloat", 2.5), ("PrimitiveString", "x"),
                        ("PrimitiveStringMultiline", "a\nb"), ("PrimitiveBoolean", True)):
        prompt = {"1": {"class_type": node, "inputs": {"value": value}},
                  "2": {"class_type": "PrimitiveString", "inputs": {"value": "end"}}}
        assert run(loom, prompt, "1") == (value,)

"""Small ComfyUI habits: VAEEncode crops sides that are not multiples of the VAE's scale (centred,
as ComfyUI does), SaveImage's default prefix is "ComfyUI" and its PNGs truncate as ComfyUI's do."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from graph import Env
from nodes.common import call, image_to_pil
from nodes.image import SaveImage
from nodes.latent import VAEEncode, crop_to_vae

from ._sd_families import sd


def vae_of_scale(scale: int):
    return SimpleNamespace(config=SimpleNamespace(block_out_channels=[1] * (scale.bit_length())))


def test_crop_to_vae_is_centred_as_comfyuis():
    """ComfyUI: each side cut to size // 8 * 8, starting at (size % 8) // 2."""
    pixels = torch.arange(1 * 67 * 70 * 3, dtype=torch.float32).reshape(1, 67, 70, 3)
    cropped = crop_to_vae(pixels, vae_of_scale(8))
    assert torch.equal(cropped, pixels[:, 1:65, 3:67])  # 67 % 8 = 3 -> from 1; 70 % 8 = 6 -> from 3
    whole = pixels[:, :64, :64]
    assert crop_to_vae(whole, vae_of_scale(8)) is whole


def test_vae_encode_crops_instead_of_refusing():
    vae = sd()["vae"]
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    torch.manual_seed(0)
    pixels = torch.rand(1, 8 * scale + scale - 1, 8 * scale + 1, 3)
    ctx = SimpleNamespace(env=None)
    got = call(VAEEncode, ctx, pixels=pixels, vae=vae)["samples"]
    off = (scale - 1) // 2
    expected = call(VAEEncode, ctx, pixels=pixels[:, off:off + 8 * scale, :8 * scale].contiguous(), vae=vae)["samples"]
    assert got.shape == expected.shape == (1, 4, 8, 8)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)  # a view or a copy: same values


@pytest.fixture
def ctx(tmp_path):
    env = Env.from_data_dir(tmp_path, models_dir=tmp_path / "models", device="cpu", dtype="float32")
    shown = {}
    return SimpleNamespace(env=env, prompt=None, extra_data=None, show=lambda **ui: shown.update(ui), shown=shown)


def test_save_image_default_prefix_and_truncation(ctx):
    """ComfyUI's SaveImage writes uint8(clip(255 * x)): the fraction is cut off. Loom's other
    conversions round, as diffusers' numpy_to_pil does."""
    values = torch.tensor([0.0, 0.999, 0.5, 0.2, 1.3, -0.1, 127.6 / 255])
    image = values.reshape(1, 1, -1, 1).expand(1, 1, len(values), 3).contiguous()
    call(SaveImage, ctx, images=image)
    (entry,) = ctx.shown["images"]
    assert entry["filename"].startswith("ComfyUI_") and entry["type"] == "output"
    saved = np.asarray(Image.open(ctx.env.folder("output") / entry["filename"]))[0, :, 0]
    by_hand = [int(min(max(255 * float(v), 0), 255)) for v in values]  # truncation toward 0 of 255x
    assert saved.tolist() == by_hand == [0, 254, 127, 51, 255, 0, 127]
    rounded = np.asarray(image_to_pil(image)[0])[0, :, 0]
    assert rounded.tolist() == [0, 255, 128, 51, 255, 0, 128]


def test_inpaint_encoders_crop_the_mask_with_the_image():
    """VAEEncodeForInpaint: image and mask cropped alike (ComfyUI crops both), so the noise mask has
    the encoded image's size; the result is that of the image and mask cropped by hand."""
    from nodes.inpaint import VAEEncodeForInpaint

    vae = sd()["vae"]
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    torch.manual_seed(0)
    side = 8 * scale
    pixels, mask = torch.rand(1, side + scale - 1, side + 1, 3), (torch.rand(1, side + scale - 1, side + 1) > 0.5).float()
    ctx = SimpleNamespace(env=None)
    got = call(VAEEncodeForInpaint, ctx, pixels=pixels, vae=vae, mask=mask, grow_mask_by=0)
    off = (scale - 1) // 2
    by_hand = call(VAEEncodeForInpaint, ctx, pixels=pixels[:, off:off + side, :side].contiguous(), vae=vae,
                   mask=mask[:, off:off + side, :side].contiguous(), grow_mask_by=0)
    assert got["noise_mask"].shape[-2:] == (side, side)
    assert torch.equal(got["noise_mask"], by_hand["noise_mask"])
    torch.testing.assert_close(got["samples"], by_hand["samples"], atol=1e-6, rtol=0)


def test_preview_image_truncates_and_loom_previews_round(ctx):
    """PreviewImage is ComfyUI's node: its PNG truncates like SaveImage's; Loom's own preview nodes
    (save_images without truncate) keep diffusers' rounding."""
    from nodes.image import PreviewImage, save_images

    image = torch.full((1, 1, 2, 3), 0.999)
    call(PreviewImage, ctx, images=image)
    (entry,) = ctx.shown["images"]
    assert np.asarray(Image.open(ctx.env.folder("temp") / entry["filename"]))[0, 0, 0] == 254
    (entry,) = save_images(ctx, image, "temp", "loom_own")
    assert np.asarray(Image.open(ctx.env.folder("temp") / entry["filename"]))[0, 0, 0] == 255

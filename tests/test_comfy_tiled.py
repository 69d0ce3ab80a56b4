"""ComfyUI's VAEDecodeTiled and VAEEncodeTiled (nodes.comfy.tiled) on a tiny SD model's 8x VAE."""
import pytest
import torch

from nodes.comfy.tiled import VAEDecodeTiled, VAEEncodeTiled, _starts, tiled
from nodes.common import call
from nodes.latent import VAEDecode, VAEEncode
from tests._sd_families import as_image, context, picture, sd


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.set_num_threads(1)
    return context(tmp_path_factory.mktemp("tiled"))


@pytest.fixture(scope="module")
def vae():
    return sd("sdxl", seed=7)["vae"]  # four levels: 8 pixels per latent pixel


def test_tiles_cover_the_side_with_the_overlap():
    assert _starts(10, 16, 4) == [0]
    assert _starts(40, 16, 4) == [0, 12, 24]  # the last flush with the end
    assert _starts(30, 16, 4) == [0, 12, 14]


def test_blending_identical_tiles_gives_the_whole():
    """Tiles of an identity 'model' blend back to the input exactly where they overlap."""
    x = torch.rand(2, 40, 30, 3)
    assert torch.allclose(tiled(x, 16, 4, 1, lambda part: part), x, atol=1e-6)
    up = tiled(x, 16, 4, 2, lambda part: part.repeat_interleave(2, 1).repeat_interleave(2, 2))
    assert torch.allclose(up, x.repeat_interleave(2, 1).repeat_interleave(2, 2), atol=1e-6)


def test_one_tile_is_the_plain_decode_and_encode(ctx, vae):
    image = as_image(picture(64))
    latent = call(VAEEncode, ctx, pixels=image, vae=vae)
    assert torch.equal(call(VAEEncodeTiled, ctx, pixels=image, vae=vae, tile_size=64, overlap=0)["samples"],
                       latent["samples"])
    assert torch.equal(call(VAEDecodeTiled, ctx, samples=latent, vae=vae, tile_size=64, overlap=0),
                       call(VAEDecode, ctx, samples=latent, vae=vae))


def test_tiles_give_the_whole_images_size_and_stay_close(ctx, vae):
    """128 px in 64 px tiles: same shapes as the plain nodes, and near them: a tile's VAE sees less
    context (its group norms see one tile), which on this random tiny VAE measured a mean difference
    of 0.14 decoded (pixels 0..1) and 0.018 encoded (latents of mean size 0.034); allowed 0.25 and 0.03."""
    image = as_image(picture(128))
    latent = call(VAEEncode, ctx, pixels=image, vae=vae)
    tiled_latent = call(VAEEncodeTiled, ctx, pixels=image, vae=vae, tile_size=64, overlap=32)["samples"]
    assert tiled_latent.shape == latent["samples"].shape == (1, 4, 16, 16)
    assert 0 < (tiled_latent - latent["samples"]).abs().mean() < 0.03
    decoded = call(VAEDecodeTiled, ctx, samples=latent, vae=vae, tile_size=64, overlap=32)
    whole = call(VAEDecode, ctx, samples=latent, vae=vae)
    assert decoded.shape == whole.shape == (1, 128, 128, 3)
    assert 0 < (decoded - whole).abs().mean() < 0.25

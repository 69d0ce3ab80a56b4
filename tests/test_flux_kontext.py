"""Flux.1 editing: Kontext's reference tokens and position ids, Fill's mask channels (nodes.families.flux.edit)
against diffusers' packing (FluxKontextPipeline, FluxFillPipeline) and ComfyUI's placement rules."""
import pytest
import torch

from nodes.families.flux.edit import fill_mask_channels, patchify, reference_tokens, unpatchify


def test_patchify_is_diffusers_packing_and_comes_back():
    from diffusers import FluxKontextPipeline

    x = torch.randn(2, 16, 6, 10)
    tokens, ids = patchify(x)
    assert torch.equal(tokens, FluxKontextPipeline._pack_latents(x, 2, 16, 6, 10))
    assert torch.equal(ids, FluxKontextPipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32))
    assert torch.equal(unpatchify(tokens, 6, 10), x)


def test_one_reference_is_kontexts_image_tokens():
    """FluxKontextPipeline: the image latents packed, their ids with the first coordinate 1."""
    from diffusers import FluxKontextPipeline

    ref = torch.randn(1, 16, 8, 4)
    tokens, ids = reference_tokens([ref], None, 6, 10, batch=2)
    expected_ids = FluxKontextPipeline._prepare_latent_image_ids(1, 4, 2, "cpu", torch.float32)
    expected_ids[..., 0] = 1
    assert torch.equal(tokens, FluxKontextPipeline._pack_latents(ref, 1, 16, 8, 4).repeat(2, 1, 1))
    assert torch.equal(ids, expected_ids)


def comfy_ids(h_len, w_len, index, h_offset, w_offset):
    """ComfyUI's process_img ids, written out: offsets in latent pixels rounded to patches."""
    rows = torch.arange(h_len)[:, None].expand(h_len, w_len) + (h_offset + 1) // 2
    cols = torch.arange(w_len)[None, :].expand(h_len, w_len) + (w_offset + 1) // 2
    return torch.stack([torch.full((h_len, w_len), index), rows, cols], -1).reshape(-1, 3).float()


@pytest.mark.parametrize("method", ["offset", "index", "uxo"])
def test_several_references_are_placed_as_comfyui_places_them(method):
    refs = [torch.randn(1, 16, 4, 6), torch.randn(1, 16, 8, 2), torch.randn(1, 16, 2, 2)]
    _, ids = reference_tokens(refs, method, 6, 10, batch=1)
    if method == "offset":  # index 1; (4x6) at 0; (8x2): 8 + 0 > 2 + 6, beside (w 6); (2x2): 2 + 8 <= 2 + 8, below (h 8)
        expected = [comfy_ids(2, 3, 1, 0, 0), comfy_ids(4, 1, 1, 0, 6), comfy_ids(1, 1, 1, 8, 0)]
    elif method == "index":
        expected = [comfy_ids(2, 3, 1, 0, 0), comfy_ids(4, 1, 2, 0, 0), comfy_ids(1, 1, 3, 0, 0)]
    else:  # index 0, past the image's corner (6 x 10 latent pixels) and the references before
        expected = [comfy_ids(2, 3, 0, 6, 10), comfy_ids(4, 1, 0, 10, 16), comfy_ids(1, 1, 0, 18, 18)]
    assert torch.equal(ids, torch.cat(expected))


def test_fill_mask_channels_are_fluxfills():
    """FluxFillPipeline.prepare_mask_latents: each s x s pixel block of the mask unshuffled into channels."""
    mask = (torch.rand(2, 1, 24, 32) > 0.5).float()
    s = 4
    expected = mask[:, 0].view(2, 6, s, 8, s).permute(0, 2, 4, 1, 3).reshape(2, s * s, 6, 8)
    assert torch.equal(fill_mask_channels(mask, 6, 8, s), expected)

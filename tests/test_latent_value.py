"""The LATENT value (nodes.latent_value.Latent): each field's rule for sampling, resizing and batching,
ComfyUI's dict keys read-only, latent spaces, and the cache's byte count."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from graph.cache import inventory
from nodes.latent_value import DROP, KEEP, ROWS, Dist, Latent, Space, space_of_family


def full(batch: int = 2) -> Latent:
    t = lambda: torch.randn(batch, 4, 3, 3)  # noqa: E731
    return Latent(t(), space=Space(0.5, 0.1), noise=t(), empty=True, width=24, height=24, seeds=[7, 8],
                  generator=["g0", "g1"], dist=Dist(t(), t(), 0.5), sampler=object(), noise_mask=torch.ones(1, 1, 24, 24),
                  mask_source=(t(), t()), inpaint_latents=torch.randn(batch, 5, 3, 3), batch_index=[3, 4], denoised=t())


def test_every_field_has_a_rule_for_each_operation():
    for f in dataclasses.fields(Latent):
        assert {"sampled", "resized", "batched"} <= set(f.metadata), f.name


@pytest.mark.parametrize("operation", ["sampled", "resized"])
def test_sampling_and_resizing_keep_exactly_the_fields_their_rule_keeps(operation):
    latent = full()
    new = torch.zeros(2, 4, 6, 6)
    out = getattr(latent, operation)(new)
    assert out.samples is new
    defaults = Latent(new)
    for f in dataclasses.fields(Latent)[1:]:
        rule = f.metadata[operation]
        expected = getattr(latent, f.name) if rule == KEEP else getattr(defaults, f.name)
        assert getattr(out, f.name) is expected, (operation, f.name, rule)


def test_a_sampler_sets_what_it_made_over_the_rule():
    out = full().sampled(torch.zeros(2, 4, 3, 3), generator=["n0", "n1"], seeds=[1, 2])
    assert out.generator == ["n0", "n1"] and out.seeds == [1, 2] and out.noise is None and not out.empty


def test_batch_rows_slice_every_per_image_field():
    latent = full()
    one = latent.rows(lambda t: t[1:2], lambda items: items[1:2], batch_index=[4])
    assert torch.equal(one.samples, latent.samples[1:2]) and torch.equal(one.noise, latent.noise[1:2])
    assert torch.equal(one.dist.mean, latent.dist.mean[1:2]) and one.dist.scaling_factor == 0.5
    assert all(torch.equal(a, b[1:2]) for a, b in zip(one.mask_source, latent.mask_source))
    assert one.seeds == [8] and one.generator == ["g1"] and one.batch_index == [4]
    assert one.noise_mask is latent.noise_mask  # one mask for the batch fits every slice
    assert one.sampler is None  # a scheduler state of the whole batch
    assert one.empty and one.width == 24 and one.space == latent.space
    rules = {f.name: f.metadata["batched"] for f in dataclasses.fields(Latent)}
    assert rules["sampler"] == DROP and rules["noise"] == ROWS


def test_comfy_keys_read_and_nothing_writes():
    latent = Latent(torch.zeros(1, 4, 2, 2), batch_index=[0])
    assert latent["samples"] is latent.samples and latent["batch_index"] == [0]
    assert "noise_mask" not in latent and latent.get("noise_mask") is None and "samples" in latent
    with pytest.raises(KeyError, match="latent.noise"):
        latent["noise"]
    with pytest.raises(TypeError):
        latent["samples"] = torch.ones(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        latent.samples = torch.ones(1)
    mask = torch.ones(1, 1, 16, 16)
    assert Latent.of({"samples": latent.samples, "noise_mask": mask}).noise_mask is mask
    with pytest.raises(TypeError, match="expected a LATENT"):
        Latent.of({"images": 1})


def test_in_space_re_expresses_the_vae_latents():
    raw = torch.randn(1, 16, 2, 2, dtype=torch.float64)
    flux, sd3 = Space(0.3611, 0.1159), Space(1.5305, 0.0609)
    latent = Latent((raw - flux.shift) * flux.scale, space=flux)
    # float64: the two affine maps round to within a few ulps of the direct expression
    torch.testing.assert_close(latent.in_space(sd3), (raw - sd3.shift) * sd3.scale, rtol=1e-12, atol=1e-12)
    assert latent.in_space(flux) is latent.samples and latent.in_space(None) is latent.samples
    assert space_of_family("zimage") == flux and space_of_family("no such family") is None


def test_the_cache_counts_every_tensor_of_a_latent():
    latent = full()
    storages, _ = inventory([latent])
    tensors = [latent.samples, latent.noise, latent.dist.mean, latent.dist.std, latent.noise_mask,
               *latent.mask_source, latent.inpaint_latents, latent.denoised]
    assert sum(storages.values()) == sum(t.untyped_storage().nbytes() for t in tensors)


def test_vae_decode_reads_the_latents_space_before_the_vae_config():
    """A 16-channel VAE file serves SD3 (1.5305, 0.0609) and Flux/Z-Image (0.3611, 0.1159); its config
    holds one of them. SD3-space latents decode as the same VAE latents given in the config's space."""
    from diffusers import AutoencoderKL

    from nodes.common import call
    from nodes.families import family
    from nodes.latent import VAEDecode

    torch.manual_seed(0)
    vae = AutoencoderKL(**family("zimage").tiny.vae).eval()
    raw = torch.randn(1, 16, 4, 4)
    sd3 = Space(1.5305, 0.0609)
    theirs = Latent((raw - sd3.shift) * sd3.scale, space=sd3)
    ours = Latent(theirs.in_space(Space(vae.config.scaling_factor, vae.config.shift_factor)))
    # the two decodes differ by float32 rounding of the affine maps (about 1e-7 relative) before the VAE
    torch.testing.assert_close(call(VAEDecode, None, samples=theirs, vae=vae),
                               call(VAEDecode, None, samples=ours, vae=vae), rtol=0, atol=1e-5)
    unspaced = Latent(theirs.samples)  # read in the VAE config's space: another picture
    assert (call(VAEDecode, None, samples=unspaced, vae=vae) - call(VAEDecode, None, samples=theirs, vae=vae)).abs().max() > 1e-3

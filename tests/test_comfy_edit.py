"""ComfyUI's flux and edit-model conditioning nodes (nodes.comfy.edit): the values they set, as
ComfyUI's conditioning_set_values sets them, and Kontext's resolution choice."""
import torch

from nodes.comfy.edit import (FluxDisableGuidance, FluxGuidance, FluxKontextImageScale,
                              FluxKontextMultiReferenceLatentMethod, ReferenceLatent, kontext_size)
from nodes.common import call
from nodes.conditioning import Cond
from nodes.latent_value import Latent


def run(cls, **inputs):
    return call(cls, None, **inputs)


def test_guidance_is_set_on_every_entry_and_the_input_is_left_alone():
    cond = (Cond(torch.zeros(1, 2, 4)), Cond(torch.ones(1, 2, 4), extra={"other": 1}))
    out = run(FluxGuidance, conditioning=cond, guidance=2.5)
    assert [c.extra for c in out] == [{"guidance": 2.5}, {"other": 1, "guidance": 2.5}]
    assert [c.extra for c in cond] == [{}, {"other": 1}]
    assert run(FluxDisableGuidance, conditioning=out)[0].extra == {"guidance": None}


def test_reference_latents_append_in_order_and_none_changes_nothing():
    cond = (Cond(torch.zeros(1, 2, 4)),)
    a, b = torch.zeros(1, 16, 4, 4), torch.ones(1, 16, 2, 2)
    once = run(ReferenceLatent, conditioning=cond, latent=Latent(a))
    twice = run(ReferenceLatent, conditioning=once, latent=Latent(b))
    refs = twice[0].extra["reference_latents"]
    assert len(refs) == 2 and refs[0] is a and refs[1] is b
    assert len(once[0].extra["reference_latents"]) == 1
    assert run(ReferenceLatent, conditioning=cond, latent=None)[0] is cond[0]


def test_the_multi_reference_method_uses_comfyuis_value_names():
    cond = (Cond(torch.zeros(1, 2, 4)),)
    assert run(FluxKontextMultiReferenceLatentMethod, conditioning=cond,
               reference_latents_method="uxo/uno")[0].extra == {"reference_latents_method": "uxo"}
    assert run(FluxKontextMultiReferenceLatentMethod, conditioning=cond,
               reference_latents_method="index")[0].extra == {"reference_latents_method": "index"}


def test_kontext_scale_picks_the_nearest_aspect_ratio():
    assert kontext_size(512, 512) == (1024, 1024)
    assert kontext_size(1920, 1080) == (1392, 752)  # 1.78: 1.851 is nearer than 1.684
    assert kontext_size(600, 1000) == (800, 1328)
    image = torch.rand(1, 60, 100, 3)  # 1.67: 1328 x 800 (1.66)
    out = run(FluxKontextImageScale, image=image)
    assert out.shape == (1, 800, 1328, 3) and 0 <= float(out.min()) and float(out.max()) <= 1

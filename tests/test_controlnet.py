"""ControlNet: loading (diffusers folder, single files in both key layouts) and sampling with it,
against StableDiffusionControlNetPipeline on the same tiny random models."""
import numpy as np
import pytest
import torch
from PIL import Image

from nodes.common import call
from nodes.loading.ldm_layout import controlnet_to_ldm
from tests._sd_families import as_image, context, picture, sd
from tests._tiny_assets import controlnet
from tests.test_sd_families import CFG, NEGATIVE, PROMPT, SEED, STEPS, encode, ksampler, report


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.set_num_threads(1)
    ctx = context(tmp_path_factory.mktemp("controlnet"))
    (ctx.env.models_dir / "controlnet").mkdir(parents=True)
    return ctx


@pytest.fixture(scope="module")
def model():
    return sd(seed=30)


@pytest.fixture(scope="module")
def folder(ctx, model):
    """models/controlnet/tiny-cn: a diffusers folder."""
    path = ctx.env.models_dir / "controlnet" / "tiny-cn"
    controlnet(model["model"].unet, seed=31).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hint():
    """A hint picture: its own edges-like pattern, unlike the prompt."""
    return np.ascontiguousarray(picture()[::-1, :, ::-1])


def pipeline(m, net):
    """The pipeline with ComfyUI's euler + normal (tests/_comfy_euler.py): KSampler samples as ComfyUI."""
    from diffusers import StableDiffusionControlNetPipeline

    from tests._comfy_euler import ComfyEulerScheduler

    pipe = StableDiffusionControlNetPipeline(
        vae=m["vae"], text_encoder=m["clip"].text_encoder, tokenizer=m["tokenizer"], unet=m["model"].unet,
        controlnet=net, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        scheduler=m["scheduler"])
    pipe.scheduler = ComfyEulerScheduler(m["scheduler"].config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_pipeline(pipe, image, **kwargs):
    return pipe(PROMPT, negative_prompt=NEGATIVE, image=image, num_inference_steps=STEPS, guidance_scale=CFG,
                height=64, width=64, generator=torch.Generator().manual_seed(SEED), output_type="np", **kwargs).images


def applied(ctx, m, net, hint_array, **settings):
    from nodes.comfy.core import ControlNetApplyAdvanced

    return call(ControlNetApplyAdvanced, ctx, positive=encode(ctx, m["clip"], PROMPT),
                negative=encode(ctx, m["clip"], NEGATIVE), control_net=net, image=as_image(hint_array), **settings)


def test_loader_lists_and_loads_a_diffusers_folder(ctx, folder):
    from diffusers import ControlNetModel

    from nodes.comfy.core import ControlNetLoader
    from nodes.loading.model_files import list_kind

    assert "tiny-cn" in list_kind(ctx.env.models_dir, "controlnet")
    net = call(ControlNetLoader, ctx, control_net_name="tiny-cn")
    reference = ControlNetModel.from_pretrained(folder)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), reference.state_dict().values()))


@pytest.mark.parametrize("settings, pipeline_args", [
    ({"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}, {}),
    ({"strength": 0.7, "start_percent": 0.2, "end_percent": 0.6},
     {"controlnet_conditioning_scale": 0.7, "control_guidance_start": 0.2, "control_guidance_end": 0.6}),
])
def test_controlnet_matches_pipeline(ctx, model, folder, hint, settings, pipeline_args):
    """ControlNetLoader + ControlNetApplyAdvanced + KSampler (euler, normal) vs
    StableDiffusionControlNetPipeline: strength, start/end as the pipeline's scale and guidance range."""
    from nodes.comfy.core import ControlNetLoader

    net = call(ControlNetLoader, ctx, control_net_name="tiny-cn")
    positive, negative = applied(ctx, model, net, hint, **settings)
    ours = ksampler(ctx, model, positive, negative)
    expected = run_pipeline(pipeline(model, net), Image.fromarray(hint), **pipeline_args)
    label = "full" if not pipeline_args else "strength 0.7, 0.2-0.6"
    assert report(f"ControlNet ({label}) vs StableDiffusionControlNetPipeline", ours, expected) == 0.0
    plain = ksampler(ctx, model, encode(ctx, model["clip"], PROMPT), encode(ctx, model["clip"], NEGATIVE))
    assert np.abs(plain - ours).max() > 1e-3  # the ControlNet does act


def test_two_controlnets_add_up_as_multicontrolnet(ctx, model, hint):
    """Two ControlNets applied in a row equal the pipeline's MultiControlNetModel (residuals summed)."""
    unet = model["model"].unet
    first, second = controlnet(unet, seed=40), controlnet(unet, seed=41)
    positive, negative = applied(ctx, model, first, hint, strength=0.8)
    from nodes.comfy.core import ControlNetApplyAdvanced

    positive, negative = call(ControlNetApplyAdvanced, ctx, positive=positive, negative=negative, control_net=second,
                              image=as_image(picture()), strength=0.5)
    ours = ksampler(ctx, model, positive, negative)
    expected = run_pipeline(pipeline(model, [first, second]), [Image.fromarray(hint), Image.fromarray(picture())],
                            controlnet_conditioning_scale=[0.8, 0.5])
    assert report("two ControlNets vs MultiControlNetModel", ours, expected) == 0.0


def test_controlnet_apply_on_the_positive_reaches_the_negative_pass(ctx, model, hint):
    """ComfyUI's old ControlNetApply (positive only) acts on both passes, as its apply-to-uncond rule
    says: the same image as ControlNetApplyAdvanced on both conditionings."""
    from nodes.comfy.core import ControlNetApply

    net = controlnet(model["model"].unet, seed=31)
    positive = call(ControlNetApply, ctx, conditioning=encode(ctx, model["clip"], PROMPT), control_net=net,
                    image=as_image(hint), strength=1.0)
    old = ksampler(ctx, model, positive, encode(ctx, model["clip"], NEGATIVE))
    new = ksampler(ctx, model, *applied(ctx, model, net, hint, strength=1.0))
    np.testing.assert_array_equal(old, new)


def test_hint_of_another_size_is_fitted(ctx, model, hint):
    """A hint of another size and aspect is centre-cropped and resized to the image (nearest-exact)."""
    from nodes.denoiser import fit_image

    wide = torch.arange(2 * 3 * 4 * 8, dtype=torch.float32).reshape(2, 3, 4, 8)
    fitted = fit_image(wide, 2, 2)
    assert fitted.shape == (2, 3, 2, 2)
    assert torch.equal(fitted, torch.nn.functional.interpolate(wide[..., 2:6], size=(2, 2), mode="nearest-exact"))
    big = np.asarray(Image.fromarray(hint).resize((128, 96)))
    out = ksampler(ctx, model, *applied(ctx, model, controlnet(model["model"].unet, seed=31), big, strength=1.0), steps=2)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
def test_single_file_controlnet_loads_offline(ctx, model, layout):
    """One .safetensors file, no config: the config is read from the shapes and the weights equal
    the model they were written from (SD 1.5-style hint encoder, 16-32-96-256 channels)."""
    from safetensors.torch import save_file

    from nodes.comfy.core import ControlNetLoader

    source = controlnet(model["model"].unet, seed=50, latent_scale=8)
    state = source.state_dict()
    if layout == "ldm":
        state = controlnet_to_ldm(state, source.config)
        assert "control_model.input_hint_block.14.weight" in state and "control_model.zero_convs.5.0.weight" in state
    name = f"single_{layout}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, ctx.env.models_dir / "controlnet" / name)
    net = call(ControlNetLoader, ctx, control_net_name=name)
    for key in ("block_out_channels", "layers_per_block", "down_block_types", "cross_attention_dim",
                "conditioning_embedding_out_channels", "use_linear_projection", "attention_head_dim"):
        assert tuple(np.atleast_1d(net.config[key])) == tuple(np.atleast_1d(source.config[key])), key
    reference = source.state_dict()
    assert net.state_dict().keys() == reference.keys()
    assert all(torch.equal(net.state_dict()[k], reference[k]) for k in reference)


def test_not_a_controlnet_is_refused_by_name(ctx):
    from safetensors.torch import save_file

    from nodes.comfy.core import ControlNetLoader

    save_file({"weight": torch.zeros(2)}, ctx.env.models_dir / "controlnet" / "notes.safetensors")
    with pytest.raises(ValueError, match="notes.safetensors is not a ControlNet"):
        call(ControlNetLoader, ctx, control_net_name="notes.safetensors")


def test_sdxl_controlnet_matches_pipeline(ctx, hint):
    """An SDXL ControlNet gets SDXL's added conditioning too: vs StableDiffusionXLControlNetPipeline."""
    from diffusers import StableDiffusionXLControlNetPipeline

    from tests._comfy_euler import ComfyEulerScheduler

    from tests._sd_families import sdxl

    m = sdxl()
    net = controlnet(m["model"].unet, seed=32, latent_scale=8)
    assert net.config.addition_embed_type == "text_time"
    positive, negative = applied(ctx, m, net, hint, strength=0.9)
    ours = ksampler(ctx, m, positive, negative)
    clip = m["clip"]
    pipe = StableDiffusionXLControlNetPipeline(
        vae=m["vae"], text_encoder=clip.text_encoder, text_encoder_2=clip.text_encoder_2, tokenizer=clip.tokenizer,
        tokenizer_2=clip.tokenizer_2, unet=m["model"].unet, controlnet=net, add_watermarker=False,
        scheduler=m["scheduler"])
    pipe.scheduler = ComfyEulerScheduler(m["scheduler"].config)  # KSampler samples as ComfyUI
    pipe.set_progress_bar_config(disable=True)
    expected = run_pipeline(pipe, Image.fromarray(hint), controlnet_conditioning_scale=0.9)
    assert report("SDXL ControlNet vs StableDiffusionXLControlNetPipeline", ours, expected) == 0.0

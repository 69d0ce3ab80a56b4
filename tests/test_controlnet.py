"""ControlNet: loading (diffusers folder, single files in both key layouts) and sampling with it,
against StableDiffusionControlNetPipeline on the same tiny random models."""
import numpy as np
import pytest
import torch
from PIL import Image

from nodes.common import call
from tests._ldm_layout import RESNET, _rename
from tests._sd_families import as_image, context, controlnet, picture, sd
from tests.test_sd_families import CFG, NEGATIVE, PROMPT, SEED, STEPS, encode, ksampler, report


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.set_num_threads(1)
    ctx = context(tmp_path_factory.mktemp("controlnet"))
    (ctx.env.models_dir / "controlnet").mkdir(parents=True)
    return ctx


@pytest.fixture(scope="module")
def model(tiny_sd):
    return sd(tiny_sd, seed=30)


@pytest.fixture(scope="module")
def folder(ctx):
    """models/controlnet/tiny-cn: a diffusers folder."""
    path = ctx.env.models_dir / "controlnet" / "tiny-cn"
    controlnet(seed=31).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hint():
    """A hint picture: its own edges-like pattern, unlike the prompt."""
    return np.ascontiguousarray(picture()[::-1, :, ::-1])


def pipeline(m, net):
    from diffusers import EulerDiscreteScheduler, StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(
        vae=m["vae"], text_encoder=m["clip"].text_encoder, tokenizer=m["tokenizer"], unet=m["model"].unet,
        controlnet=net, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        scheduler=EulerDiscreteScheduler.from_config(m["scheduler"].config, timestep_spacing="linspace"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_pipeline(pipe, image, **kwargs):
    return pipe(PROMPT, negative_prompt=NEGATIVE, image=image, num_inference_steps=STEPS, guidance_scale=CFG,
                height=64, width=64, generator=torch.Generator().manual_seed(SEED), output_type="np", **kwargs).images


def applied(ctx, m, net, hint_array, **settings):
    from nodes.comfy import ControlNetApplyAdvanced

    return call(ControlNetApplyAdvanced, ctx, positive=encode(ctx, m["clip"], PROMPT),
                negative=encode(ctx, m["clip"], NEGATIVE), control_net=net, image=as_image(hint_array), **settings)


def test_loader_lists_and_loads_a_diffusers_folder(ctx, folder):
    from diffusers import ControlNetModel

    from nodes.comfy import ControlNetLoader
    from nodes.model_files import list_kind

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
    from nodes.comfy import ControlNetLoader

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
    first, second = controlnet(seed=40), controlnet(seed=41)
    positive, negative = applied(ctx, model, first, hint, strength=0.8)
    from nodes.comfy import ControlNetApplyAdvanced

    positive, negative = call(ControlNetApplyAdvanced, ctx, positive=positive, negative=negative, control_net=second,
                              image=as_image(picture()), strength=0.5)
    ours = ksampler(ctx, model, positive, negative)
    expected = run_pipeline(pipeline(model, [first, second]), [Image.fromarray(hint), Image.fromarray(picture())],
                            controlnet_conditioning_scale=[0.8, 0.5])
    assert report("two ControlNets vs MultiControlNetModel", ours, expected) == 0.0


def test_controlnet_apply_on_the_positive_reaches_the_negative_pass(ctx, model, hint):
    """ComfyUI's old ControlNetApply (positive only) acts on both passes, as its apply-to-uncond rule
    says: the same image as ControlNetApplyAdvanced on both conditionings."""
    from nodes.comfy import ControlNetApply

    net = controlnet(seed=31)
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
    out = ksampler(ctx, model, *applied(ctx, model, controlnet(seed=31), big, strength=1.0), steps=2)
    assert np.isfinite(out).all()


def controlnet_to_ldm(state: dict, config) -> dict:
    """A diffusers ControlNet's weights in the LDM key layout (lllyasviel's files), for the loader test."""
    n, levels = config["layers_per_block"], len(config["block_out_channels"])
    p = {"time_embedding.linear_1": ("time_embed.0", None), "time_embedding.linear_2": ("time_embed.2", None),
         "conv_in": ("input_blocks.0.0", None), "mid_block.resnets.0": ("middle_block.0", "resnet"),
         "mid_block.attentions.0": ("middle_block.1", None), "mid_block.resnets.1": ("middle_block.2", "resnet"),
         "controlnet_mid_block": ("middle_block_out.0", None),
         "controlnet_cond_embedding.conv_in": ("input_hint_block.0", None),
         "controlnet_cond_embedding.conv_out": ("input_hint_block.14", None)}
    for k in range(2 * (len(config["conditioning_embedding_out_channels"]) - 1)):
        p[f"controlnet_cond_embedding.blocks.{k}"] = (f"input_hint_block.{2 * (k + 1)}", None)
    for i in range(1 + levels * (n + 1) - 1):
        p[f"controlnet_down_blocks.{i}"] = (f"zero_convs.{i}.0", None)
    for level in range(levels):
        for j in range(n):
            block = 1 + level * (n + 1) + j
            p[f"down_blocks.{level}.resnets.{j}"] = (f"input_blocks.{block}.0", "resnet")
            p[f"down_blocks.{level}.attentions.{j}"] = (f"input_blocks.{block}.1", None)
        if level < levels - 1:
            p[f"down_blocks.{level}.downsamplers.0.conv"] = (f"input_blocks.{(level + 1) * (n + 1)}.0.op", None)
    return {"control_model." + k: v.contiguous() for k, v in _rename(state, p, {"resnet": RESNET}).items()}


@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
def test_single_file_controlnet_loads_offline(ctx, layout):
    """One .safetensors file, no config: the config is read from the shapes and the weights equal
    the model they were written from (SD 1.5-style hint encoder, 16-32-96-256 channels)."""
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    from nodes.comfy import ControlNetLoader

    torch.manual_seed(50)
    source = ControlNetModel(block_out_channels=(32, 64), layers_per_block=2, in_channels=4,
                             down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), cross_attention_dim=32,
                             attention_head_dim=8, conditioning_embedding_out_channels=(16, 32, 96, 256)).eval()
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

    from nodes.comfy import ControlNetLoader

    save_file({"weight": torch.zeros(2)}, ctx.env.models_dir / "controlnet" / "notes.safetensors")
    with pytest.raises(ValueError, match="notes.safetensors is not a ControlNet"):
        call(ControlNetLoader, ctx, control_net_name="notes.safetensors")


def test_sdxl_controlnet_matches_pipeline(ctx, tiny_sd, hint):
    """An SDXL ControlNet gets SDXL's added conditioning too: vs StableDiffusionXLControlNetPipeline."""
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline

    from tests._sd_families import sdxl

    m = sdxl(tiny_sd)
    torch.manual_seed(32)
    net = ControlNetModel(block_out_channels=(32, 64), layers_per_block=2, in_channels=4,
                          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), attention_head_dim=(2, 4),
                          use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                          transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
                          cross_attention_dim=64, conditioning_embedding_out_channels=(16, 32)).eval()
    with torch.no_grad():
        for p in [*net.controlnet_down_blocks.parameters(), *net.controlnet_mid_block.parameters()]:
            p.normal_(0, 0.3)
    positive, negative = applied(ctx, m, net, hint, strength=0.9)
    ours = ksampler(ctx, m, positive, negative)
    clip = m["clip"]
    pipe = StableDiffusionXLControlNetPipeline(
        vae=m["vae"], text_encoder=clip.text_encoder, text_encoder_2=clip.text_encoder_2, tokenizer=clip.tokenizer,
        tokenizer_2=clip.tokenizer_2, unet=m["model"].unet, controlnet=net, add_watermarker=False,
        scheduler=EulerDiscreteScheduler.from_config(m["scheduler"].config, timestep_spacing="linspace"))
    pipe.set_progress_bar_config(disable=True)
    expected = run_pipeline(pipe, Image.fromarray(hint), controlnet_conditioning_scale=0.9)
    assert report("SDXL ControlNet vs StableDiffusionXLControlNetPipeline", ours, expected) == 0.0

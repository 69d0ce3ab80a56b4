"""Flux.1 editing: Kontext's reference tokens and position ids, Fill's mask channels (nodes.families.flux.edit)
against diffusers' packing (FluxKontextPipeline, FluxFillPipeline) and ComfyUI's placement rules."""
import pytest
import torch

from nodes.families.flux.edit import fill_mask_channels, inputs, patchify, reference_tokens, unpatchify


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


def transformer_inputs(x, cond, in_channels):
    """The sequence the guide gives the transformer (nodes.families.flux.guide.velocity): the latents
    with their channels patchified, then the reference tokens; and the image's token count."""
    model_x, extra = inputs(x, cond, in_channels)
    tokens, ids = patchify(model_x)
    count = tokens.shape[1]
    for more, more_ids in extra:
        tokens, ids = torch.cat([tokens, more], dim=1), torch.cat([ids, more_ids])
    return tokens, ids, count


def tiny_transformer(in_channels: int = 64, seed: int = 0):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=in_channels, out_channels=64, num_layers=1,
                                  num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                                  joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
                                  axes_dims_rope=(4, 6, 6)).eval()


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                         latent_channels=16, norm_num_groups=8, use_quant_conv=False, use_post_quant_conv=False,
                         shift_factor=0.1159, scaling_factor=0.3611).eval()


def first_call(pipe_cls, transformer, **call):
    """The transformer's inputs at the pipeline's first step (hidden_states, img_ids)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    seen = {}

    def hook(module, args, kwargs):
        seen.setdefault("in", (kwargs["hidden_states"].clone(), kwargs["img_ids"].clone()))

    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    pipe = pipe_cls(scheduler=FlowMatchEulerDiscreteScheduler(), vae=tiny_vae(), text_encoder=None, tokenizer=None,
                    text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(0)
    with torch.no_grad():
        pipe(prompt_embeds=torch.randn(2, 5, 32), pooled_prompt_embeds=torch.randn(2, 32), num_inference_steps=1,
             generator=torch.Generator().manual_seed(3), output_type="latent", **call)
    handle.remove()
    return pipe, seen["in"]


def test_kontext_transformer_input_is_the_pipelines():
    """FluxKontextPipeline's first transformer call (batch 2, a 32 x 32 image, a 48 x 32 output) against
    transformer_inputs on its noise with the image's scaled latents as the reference (ReferenceLatent)."""
    from diffusers import FluxKontextPipeline
    from PIL import Image

    from nodes.conditioning import Cond

    image = Image.fromarray((torch.rand(32, 32, 3) * 255).byte().numpy())
    pipe, (hidden, img_ids) = first_call(FluxKontextPipeline, tiny_transformer(), image=image, height=48, width=32,
                                         _auto_resize=False, max_area=48 * 32)
    pixels = pipe.image_processor.preprocess(image, 32, 32)
    with torch.no_grad():
        ref = (pipe.vae.encode(pixels).latent_dist.mean - 0.1159) * 0.3611
    x = unpatchify(hidden[:, :12 * 8], 24, 16)
    cond = Cond(embeds=torch.zeros(1, 5, 32), extra={"reference_latents": [ref]})
    tokens, ids, count = transformer_inputs(x, cond, 64 // 4)
    assert count == 12 * 8 and torch.equal(ids, img_ids)
    assert torch.equal(tokens, hidden)


def test_fill_transformer_input_is_the_pipelines(monkeypatch):
    """FluxFillPipeline's first transformer call (batch 2): the latents, the masked image's latents and
    the mask's 2 x 2 pixel blocks (the tiny VAE's scale). The pipeline samples the masked image's latent
    distribution, ComfyUI takes its mean: here the pipeline takes the mean too."""
    import diffusers.pipelines.flux.pipeline_flux_fill as fill
    from diffusers import FluxFillPipeline

    from nodes.conditioning import Cond

    monkeypatch.setattr(fill, "retrieve_latents", lambda out, generator=None: out.latent_dist.mean)
    image = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 4:20] = 1
    pipe, (hidden, img_ids) = first_call(FluxFillPipeline, tiny_transformer(16 * 4 * 2 + 4 * 4), image=image,
                                         mask_image=mask, height=32, width=32)
    with torch.no_grad():
        mean = pipe.vae.encode(pipe.image_processor.preprocess(image) * (1 - mask)).latent_dist.mean
    x = unpatchify(hidden[..., :64], 16, 16)
    # what InpaintModelConditioning gives: the blanked image's latents as VAEEncode makes them, the mask
    cond = Cond(embeds=torch.zeros(1, 5, 32),
                extra={"concat_latent_image": (mean - 0.1159) * 0.3611, "concat_mask": mask})
    tokens, ids, count = transformer_inputs(x, cond, (16 * 4 * 2 + 16) // 4)
    assert count == 64 and torch.equal(ids, img_ids)
    assert torch.equal(tokens, hidden)


# --- Kontext: ComfyUI's graph from the single files against FluxKontextPipeline -----------------

KONTEXT_PROMPT = "make the cat wear a hat"


@pytest.fixture(scope="module")
def kontext(tmp_path_factory):
    """Loom on the tiny Flux.1 files (Kontext dev has dev's architecture: the dev transformer stands in)
    with an input picture, and FluxKontextPipeline of the same weights."""
    from diffusers import FluxKontextPipeline
    from PIL import Image

    from graph import Env, Loom
    from nodes.families.flux.tiny import build_pipeline, write_comfy_files
    from tests._sd_families import picture

    torch.set_num_threads(1)
    dev = build_pipeline(0, guidance=True)
    models = tmp_path_factory.mktemp("kontext_models")
    write_comfy_files(models, dev=dev, schnell=build_pipeline(0, guidance=False))
    loom = Loom(Env.from_data_dir(tmp_path_factory.mktemp("kontext_data"), models_dir=models, device="cpu",
                                  dtype="float32"))
    loom.env.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture(32)).save(loom.env.input_dir / "kontext_input.png")
    pipe = saved(FluxKontextPipeline, dev, tmp_path_factory.mktemp("kontext_folder"))
    return loom, pipe


def saved(pipeline_cls, pipe, folder, transformer=None):
    """`pipeline_cls` of the pipeline's parts (and another transformer) loaded from a saved folder, as
    Loom loads its parts from files: tensors made in memory can lie in another layout and round differently."""
    from diffusers import FluxTransformer2DModel

    pipe.save_pretrained(folder / "pipe", safe_serialization=True)
    parts = {}
    if transformer is not None:
        transformer.save_pretrained(folder / "transformer", safe_serialization=True)
        parts["transformer"] = FluxTransformer2DModel.from_pretrained(folder / "transformer")
    loaded = pipeline_cls.from_pretrained(folder / "pipe", **parts)
    loaded.set_progress_bar_config(disable=True)
    return loaded


def kontext_graph(scheduler: str, guidance: float, seed: int, steps: int = 3) -> dict:
    """flux_kontext_dev_basic's chain at 32 px, batch 2: LoadImage -> VAEEncode -> ReferenceLatent on the
    prompt -> FluxGuidance -> KSampler (euler, cfg 1, the encoded image as its latent; ConditioningZeroOut
    negative) -> VAEDecode."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                         "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "kontext_input.png"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": KONTEXT_PROMPT, "clip": ["2", 0]}},
        "6": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["5", 0]}},
        "10": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["3", 0]}},
        "11": {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["10", 0], "amount": 2}},
        "12": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["5", 0], "latent": ["10", 0]}},
        "8": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["12", 0], "guidance": guidance}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["8", 0], "negative": ["6", 0], "latent_image": ["11", 0], "seed": seed,
            "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": scheduler, "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["3", 0]}},
    }


@pytest.mark.parametrize("scheduler,guidance", [("simple", 2.5), ("beta", 3.5)])
def test_kontext_graph_matches_the_pipeline(kontext, scheduler, guidance):
    """Image editing, batch 2, from ComfyUI's files, against FluxKontextPipeline given ComfyUI's noise and
    sigmas (tests.test_flux.ComfyFlowEuler). Exact (test_flux.PIXELS: the same operations in the same order;
    the pipeline's time (1000 sigma) / 1000 is sigma exactly for these sigmas)."""
    import numpy as np
    from PIL import Image

    from nodes.comfy.ksampling.denoiser import FluxSchedule
    from nodes.comfy.ksampling.noise import prepare_noise
    from nodes.comfy.ksampling.schedules import ksampler_sigmas
    from tests._sd import run_node
    from tests.test_flux import PIXELS, ComfyFlowEuler

    loom, pipe = kontext
    ours = run_node(loom, kontext_graph(scheduler, guidance, 7), "9").numpy()
    sigmas = ksampler_sigmas(FluxSchedule(1.15), "euler", scheduler, 3)
    noise = prepare_noise((2, 16, 4, 4), 7)
    pipe.scheduler = ComfyFlowEuler()
    image = Image.open(loom.env.input_dir / "kontext_input.png")
    theirs = pipe(image=image, prompt=KONTEXT_PROMPT, num_images_per_prompt=2, guidance_scale=guidance,
                  latents=pipe._pack_latents(noise * sigmas[0], 2, 16, 4, 4), height=32, width=32,
                  num_inference_steps=3, sigmas=sigmas[:-1].tolist(), max_sequence_length=256,
                  _auto_resize=False, max_area=32 * 32, output_type="np").images
    difference = float(np.abs(ours - theirs).max())
    print(f"\nKontext ({scheduler}, guidance {guidance}) vs FluxKontextPipeline: max abs difference {difference}")
    assert ours.shape == (2, 32, 32, 3) and difference <= PIXELS, difference
    assert float(np.abs(ours[0] - ours[1]).max()) > 1e-3
    # The reference changes the result: without ReferenceLatent the prediction differs.
    plain = kontext_graph(scheduler, guidance, 7)
    plain["8"]["inputs"]["conditioning"] = ["5", 0]
    assert float(np.abs(run_node(loom, plain, "9").numpy() - ours).max()) > 1e-3


# --- ComfyUI's Flux editing templates, end to end on the tiny models under their file names --------

# flux_kontext_dev_basic samples at 1024 px whatever the input (FluxKontextImageScale): ~40 s on tiny models.
EDIT_TEMPLATES = [pytest.param("flux_kontext_dev_basic", marks=pytest.mark.slow), "flux_fill_inpaint_example",
                  "flux_fill_outpaint_example", "flux_canny_model_example", "image_flux.1_fill_dev_OneReward"]


@pytest.fixture(scope="module")
def template_loom(tmp_path_factory):
    from graph import Env, Loom
    from nodes.families import runtime_of

    torch.set_num_threads(1)
    models = tmp_path_factory.mktemp("flux_edit_models")
    runtime_of("flux").write_tiny_files(models, seed=0)
    return Loom(Env.from_data_dir(tmp_path_factory.mktemp("flux_edit_data"), models_dir=models, device="cpu",
                                  dtype="float32"))


def template_prompt(loom, name: str) -> dict:
    """The template as an API prompt: 2 steps, outpainting pads / 8, a 64 px RGBA input (its alpha: a mask)."""
    import json
    from pathlib import Path

    import comfyui_workflow_templates_json as templates
    import numpy as np
    from PIL import Image

    from graph.formats import to_api

    workflow = json.loads((Path(templates.__file__).parent / "templates" / f"{name}.json").read_text())
    prompt = to_api(workflow, loom.registry)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "KSampler":
            inputs["steps"] = 2
        elif kind == "ImagePadForOutpaint":
            for key in ("left", "top", "right", "bottom", "feathering"):
                inputs[key] = inputs[key] // 64 * 8
        elif kind == "LoadImage":
            path = loom.env.input_dir / inputs["image"]
            path.parent.mkdir(parents=True, exist_ok=True)
            rgba = np.random.default_rng(0).integers(0, 256, (64, 64, 4), dtype=np.uint8)
            rgba[..., 3] = np.where(np.arange(64)[None, :] < 40, 255, 0)  # the right part transparent: the mask
            picture = Image.fromarray(rgba, "RGBA")
            (picture if path.suffix == ".png" else picture.convert("RGB")).save(path)
    return prompt


@pytest.mark.parametrize("name", EDIT_TEMPLATES)
def test_flux_edit_templates_run_on_tiny_models(template_loom, name):
    loom = template_loom
    validation = loom.validate(template_prompt(loom, name))
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    assert loom.image_paths(result)


# --- Fill: ComfyUI's inpainting graph against FluxFillPipeline -----------------------------------

def fill_graph(scheduler: str, guidance: float, seed: int, steps: int = 3) -> dict:
    """flux_fill_inpaint_example's chain at 32 px, batch 2, without its noise mask (the pipeline has
    none): LoadImage (its alpha: the mask) -> InpaintModelConditioning -> KSampler (euler, cfg 1)."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-fill-dev.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                         "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "fill_input.png"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": KONTEXT_PROMPT, "clip": ["2", 0]}},
        "6": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["5", 0]}},
        "8": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["5", 0], "guidance": guidance}},
        "10": {"class_type": "InpaintModelConditioning", "inputs": {
            "positive": ["8", 0], "negative": ["6", 0], "vae": ["3", 0], "pixels": ["4", 0], "mask": ["4", 1],
            "noise_mask": False}},
        "11": {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["10", 2], "amount": 2}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["10", 0], "negative": ["10", 1], "latent_image": ["11", 0],
            "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": scheduler,
            "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["3", 0]}},
    }


@pytest.mark.parametrize("scheduler,guidance", [("simple", 30.0), ("beta", 3.5)])
def test_fill_graph_matches_the_pipeline(template_loom, monkeypatch, tmp_path, scheduler, guidance):
    """Inpainting with the Fill model, batch 2, from ComfyUI's files, against FluxFillPipeline given
    ComfyUI's noise and sigmas. The pipeline samples the masked image's latent distribution where
    ComfyUI takes its mean: here it takes the mean. Exact (test_flux.PIXELS)."""
    import diffusers.pipelines.flux.pipeline_flux_fill as fill
    import numpy as np
    from diffusers import FluxFillPipeline
    from PIL import Image

    from nodes.comfy.ksampling.denoiser import FluxSchedule
    from nodes.comfy.ksampling.noise import prepare_noise
    from nodes.comfy.ksampling.schedules import ksampler_sigmas
    from nodes.families.flux.tiny import build_pipeline
    from nodes.families.flux.tiny_edit import edit_transformer
    from tests._sd import run_node
    from tests.test_flux import PIXELS, ComfyFlowEuler

    loom = template_loom
    rgba = np.random.default_rng(1).integers(0, 256, (32, 32, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[8:24, 16:, 3] = 0  # transparent: LoadImage's mask 1, repaint
    loom.env.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(loom.env.input_dir / "fill_input.png")
    ours = run_node(loom, fill_graph(scheduler, guidance, 7), "9").numpy()

    monkeypatch.setattr(fill, "retrieve_latents", lambda out, generator=None: out.latent_dist.mean)
    pipe = saved(FluxFillPipeline, build_pipeline(0, guidance=True), tmp_path, edit_transformer(96, 0))
    pipe.scheduler = ComfyFlowEuler()
    sigmas = ksampler_sigmas(FluxSchedule(1.15), "euler", scheduler, 3)
    noise = prepare_noise((2, 16, 4, 4), 7)
    theirs = pipe(image=Image.fromarray(rgba[..., :3]), mask_image=Image.fromarray(255 - rgba[..., 3]),
                  prompt=KONTEXT_PROMPT, num_images_per_prompt=2, guidance_scale=guidance,
                  latents=pipe._pack_latents(noise * sigmas[0], 2, 16, 4, 4), height=32, width=32,
                  num_inference_steps=3, sigmas=sigmas[:-1].tolist(), max_sequence_length=256,
                  output_type="np").images
    difference = float(np.abs(ours - theirs).max())
    print(f"\nFill ({scheduler}, guidance {guidance}) vs FluxFillPipeline: max abs difference {difference}")
    assert ours.shape == (2, 32, 32, 3) and difference <= PIXELS, difference
    assert float(np.abs(ours[0] - ours[1]).max()) > 1e-3



# --- Canny / Depth: InstructPixToPixConditioning on a Flux model against FluxControlPipeline -------

@pytest.mark.parametrize("scheduler,guidance", [("simple", 30.0), ("beta", 10.0)])
def test_control_graph_matches_the_pipeline(template_loom, monkeypatch, tmp_path, scheduler, guidance):
    """flux_canny_model_example's chain at 32 px, batch 2 (its control image given directly):
    LoadImage -> InstructPixToPixConditioning -> KSampler (euler, cfg 1) on flux1-canny-dev.safetensors,
    against FluxControlPipeline given ComfyUI's noise and sigmas. The pipeline samples the control image's
    latent distribution where ComfyUI takes its mean: here it takes the mean. Tolerance 1e-5 on pixels: the
    pipeline encodes the control image as a batch of 2 (the image repeated), Loom once; the VAE's
    convolutions round differently by batch size (1.3e-6 on the latents; measured 2.0e-6 / 1.9e-6 here)."""
    import numpy as np
    from diffusers import FluxControlPipeline
    from diffusers.models.autoencoders import vae as vae_module
    from PIL import Image

    from nodes.comfy.ksampling.denoiser import FluxSchedule
    from nodes.comfy.ksampling.noise import prepare_noise
    from nodes.comfy.ksampling.schedules import ksampler_sigmas
    from nodes.families.flux.tiny import build_pipeline
    from nodes.families.flux.tiny_edit import edit_transformer
    from tests._sd import run_node
    from tests.test_flux import ComfyFlowEuler

    loom = template_loom
    rgb = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    loom.env.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(loom.env.input_dir / "control_input.png")
    g = fill_graph(scheduler, guidance, 7)
    g["1"]["inputs"]["unet_name"] = "flux1-canny-dev.safetensors"
    g["4"]["inputs"]["image"] = "control_input.png"
    g["10"] = {"class_type": "InstructPixToPixConditioning", "inputs": {
        "positive": ["8", 0], "negative": ["6", 0], "vae": ["3", 0], "pixels": ["4", 0]}}
    ours = run_node(loom, g, "9").numpy()

    monkeypatch.setattr(vae_module.DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)
    pipe = saved(FluxControlPipeline, build_pipeline(0, guidance=True), tmp_path, edit_transformer(32, 0))
    pipe.scheduler = ComfyFlowEuler()
    sigmas = ksampler_sigmas(FluxSchedule(1.15), "euler", scheduler, 3)
    noise = prepare_noise((2, 16, 4, 4), 7)
    theirs = pipe(control_image=Image.fromarray(rgb), prompt=KONTEXT_PROMPT, num_images_per_prompt=2,
                  guidance_scale=guidance, latents=pipe._pack_latents(noise * sigmas[0], 2, 16, 4, 4), height=32,
                  width=32, num_inference_steps=3, sigmas=sigmas[:-1].tolist(), max_sequence_length=256,
                  output_type="np").images
    difference = float(np.abs(ours - theirs).max())
    print(f"\nCanny/Depth ({scheduler}, guidance {guidance}) vs FluxControlPipeline: max abs difference {difference}")
    assert ours.shape == (2, 32, 32, 3) and difference < 1e-5, difference


# --- LoRA on a Flux transformer (LoraLoaderModelOnly), against FluxPipeline.load_lora_weights ------

def test_lora_on_flux_matches_the_pipeline(template_loom, tmp_path):
    """LoraLoaderModelOnly (strength 0.7) on flux1-dev.safetensors with the tiny LoRA in diffusers'
    layout, txt2img at 32 px, batch 2, against FluxPipeline with load_lora_weights and the adapter at
    0.7: the same PEFT layers on both sides. Without the LoRA the image differs."""
    import numpy as np
    from diffusers import FluxPipeline

    from nodes.comfy.ksampling.denoiser import FluxSchedule
    from nodes.comfy.ksampling.noise import prepare_noise
    from nodes.comfy.ksampling.schedules import ksampler_sigmas
    from nodes.families.flux.tiny import build_pipeline
    from nodes.families.flux.tiny_edit import LORA
    from tests._sd import run_node
    from tests.test_flux import PROMPT, ComfyFlowEuler, graph

    loom = template_loom
    g = graph("dev", "simple", guidance=3.5)
    g["20"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": LORA,
                                                               "strength_model": 0.7}}
    g["7"]["inputs"]["model"] = ["20", 0]
    ours = run_node(loom, g, "9").numpy()
    plain = run_node(loom, graph("dev", "simple", guidance=3.5), "9").numpy()
    assert float(np.abs(ours - plain).max()) > 1e-3

    pipe = saved(FluxPipeline, build_pipeline(0, guidance=True), tmp_path)
    pipe.load_lora_weights(str(loom.env.models_dir / "loras" / LORA), adapter_name="tiny")
    pipe.set_adapters(["tiny"], [0.7])
    pipe.scheduler = ComfyFlowEuler()
    sigmas = ksampler_sigmas(FluxSchedule(1.15), "euler", "simple", 3)
    noise = prepare_noise((2, 16, 4, 4), 7)
    theirs = pipe(PROMPT, num_images_per_prompt=2, guidance_scale=3.5, height=32, width=32,
                  latents=pipe._pack_latents(noise * sigmas[0], 2, 16, 4, 4), num_inference_steps=3,
                  sigmas=sigmas[:-1].tolist(), max_sequence_length=256, output_type="np").images
    difference = float(np.abs(ours - theirs).max())
    print(f"\nLoRA on Flux vs FluxPipeline.load_lora_weights: max abs difference {difference}")
    assert difference == 0.0

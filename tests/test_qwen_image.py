"""Qwen-Image (issue 22): the family declaration, the tiny models in ComfyUI's single files, and
Loom's ComfyUI graphs from those files against diffusers' QwenImagePipeline (txt2img, CFG with a
negative prompt) and QwenImageEditPlusPipeline (two reference images), batch 2, given ComfyUI's noise
and sigmas. Tiny: 32-64 px, 3 steps."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

import nodes.families as families
from nodes.families.qwen_image import FAMILY, TEMPLATE
from nodes.families.qwen_image import tiny
from tests.test_zimage import ComfyFlowEuler


@pytest.fixture(scope="module")
def parts():
    return tiny.build_parts(0)


@pytest.fixture(scope="module")
def loaded(parts, tmp_path_factory):
    from graph import Env, Loom

    models = tmp_path_factory.mktemp("qwen_models")
    written = tiny.write_comfy_files(models, parts=parts)
    loom = Loom(Env.from_data_dir(tmp_path_factory.mktemp("qwen_data"), models_dir=models, device="cpu",
                                  dtype="float32"))
    return loom, models, written


def test_the_declaration():
    assert (FAMILY.latent.channels, FAMILY.latent.scale, FAMILY.latent.packed) == (16, 1.0, 2)
    assert (FAMILY.sampling.prediction, FAMILY.sampling.shift, FAMILY.sampling.multiplier) == ("flow", 1.15, 1.0)
    assert families.family_of_clip_kinds(["qwen25_7b"], "qwen_image") == "qwen_image"
    assert families.family_of_clip_kinds(["qwen25_7b"], "lumina2") is None


def test_comfyuis_single_files_hold_the_same_weights(parts, loaded):
    """Each file loads back (Loom's loaders) to the exact weights of the diffusers models; the VAE file is
    in the original Wan layout that diffusers' own converter reads; -Edit-2511's marker sets zero_cond_t."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from nodes.loading.checkpoints import load_text_encoder, load_unet, load_vae

    _, models, written = loaded
    files = tiny.comfy_files(parts)
    assert "decoder.upsamples.4.shortcut.weight" in files["vae"] and "encoder.middle.1.to_qkv.weight" in files["vae"]
    vae_back = convert_wan_vae_to_diffusers(files["vae"])
    expected = parts["vae"].state_dict()
    assert vae_back.keys() == expected.keys() and all(torch.equal(vae_back[k], expected[k]) for k in expected)
    assert "visual.blocks.0.attn.qkv.weight" in files["text_encoder"] and "model.layers.0.self_attn.q_proj.bias" in files["text_encoder"]

    unet, name, scheduler = load_unet(written["transformer"], "cpu", torch.float32)
    reference = parts["transformer"].state_dict()
    assert name == "qwen_image" and scheduler["shift"] == 1.15 and not unet.config.zero_cond_t
    assert all(torch.equal(unet.state_dict()[k], reference[k]) for k in reference)
    assert dict(unet.config)["axes_dims_rope"] == tuple(FAMILY.tiny.denoiser["axes_dims_rope"])
    assert load_unet(written[tiny.EDIT_2511_FILE], "cpu", torch.float32)[0].config.zero_cond_t
    vae = load_vae(written["vae"], "cpu", torch.float32)
    assert all(torch.equal(vae.vae.state_dict()[k], expected[k]) for k in expected)
    kind, tokenizer, encoder = load_text_encoder(written["text_encoder"], "cpu", torch.float32)
    reference = parts["text_encoder"].model.state_dict()
    assert kind == "qwen25_7b" and all(torch.equal(encoder.state_dict()[k], reference[k]) for k in reference)


def test_a_scaled_fp8_text_encoder_file_is_dequantised(parts):
    """ComfyUI's scaled fp8 (`scale_weight` beside each float8 weight): weight * scale at load."""
    from nodes.loading.encoders import qwen25vl
    from nodes.loading.fp8 import dequantize

    state = tiny.comfy_files(parts)["text_encoder"]
    key = "model.layers.0.mlp.up_proj.weight"
    scale = state[key].abs().max() / 448
    quantised = {**state, key: (state[key] / scale).to(torch.float8_e4m3fn), key[:-len("weight")] + "scale_weight": scale,
                 "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    assert qwen25vl.is_qwen25vl(quantised)
    back = dequantize(quantised)
    assert set(back) == set(state) and back[key].dtype == torch.float32
    assert float((back[key] - state[key]).abs().max()) <= float(state[key].abs().max()) / 8  # e4m3: 3 mantissa bits


def test_the_prompt_head_dropped_is_the_pipelines(parts):
    """ComfyUI's rule (second <|im_start|>, then "user\\n") drops as many tokens as the pipelines'
    fixed count does with the published tokenizer (34); with the tiny byte tokenizer it is the
    system turn's bytes."""
    from nodes.families.qwen_image.files import template_end

    tok = parts["tokenizer"]
    ids = tok(TEMPLATE.format("a cat")).input_ids
    head = TEMPLATE[:TEMPLATE.index("{}")]
    assert template_end(tok, ids) == len(tok(head).input_ids)
    assert tok.decode(ids[template_end(tok, ids):]).startswith("a cat<|im_end|>")


def txt2img_graph(steps=3, cfg=2.5, size=32, batch=2) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "qwen_image_fp8_e4m3fn.safetensors",
                                                      "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                                                      "type": "qwen_image", "device": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "qwen_image_vae.safetensors"}},
        "4": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["1", 0], "shift": 3.1}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a red fox in snow"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "blurry"}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["5", 0], "negative": ["6", 0],
                                                   "latent_image": ["7", 0], "seed": 42, "steps": steps, "cfg": cfg,
                                                   "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
    }


def without_norm_rescale(monkeypatch, module):
    """The pipelines rescale true CFG to the positive prediction's norm per token; ComfyUI's CFG does not
    (its CFGNorm node is another rule, on denoised latents per pixel). For the comparison the
    pipeline's torch.norm answers ones, so its rescale is exactly * 1."""
    proxy = types.ModuleType("torch_without_norm")
    proxy.__dict__.update(torch.__dict__)
    proxy.norm = lambda x, dim=None, keepdim=False: torch.ones_like(x.sum(dim=dim, keepdim=keepdim))
    monkeypatch.setattr(module, "torch", proxy)


def reference_pipeline(parts, edit_plus=False):
    pipe = tiny.build_pipeline(edit_plus=edit_plus, parts=parts)
    pipe.scheduler = ComfyFlowEuler()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def comfy_noise_and_sigmas(graph, shape):
    from nodes.comfy.ksampling.denoiser import FlowSchedule
    from nodes.comfy.ksampling.noise import prepare_noise
    from nodes.comfy.ksampling.schedules import ksampler_sigmas

    k = graph["8"]["inputs"]
    sigmas = ksampler_sigmas(FlowSchedule(graph["4"]["inputs"]["shift"], 1.0), k["sampler_name"], k["scheduler"],
                             k["steps"])
    return prepare_noise(shape, k["seed"]), sigmas


def test_txt2img_graph_matches_the_pipeline_with_cfg(parts, loaded, monkeypatch):
    """UNETLoader + CLIPLoader (qwen_image) + VAELoader on ComfyUI's file names, ModelSamplingAuraFlow 3.1,
    two CLIPTextEncode (positive, negative), EmptySD3LatentImage (32 px, batch 2), KSampler (euler,
    simple, 3 steps, cfg 2.5), VAEDecode, against QwenImagePipeline (true_cfg_scale 2.5, the negative
    prompt, its norm rescale off) on the same weights, given ComfyUI's noise and sigmas. The prompt head
    dropped: the pipeline's fixed count set to the tiny tokenizer's (the published one's is 34).
    Measured: 0.0. Tolerance 1e-5 on pixels in 0..1 all the same: the pipeline feeds the transformer
    (1000 sigma) / 1000 where ComfyUI feeds sigma, equal here but not for every sigma in float32."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage

    from nodes.families.qwen_image.files import template_end
    from nodes.families.qwen_image.guide import pack
    from tests._sd import run_node

    loom, _, _ = loaded
    graph = txt2img_graph()
    ours = run_node(loom, graph, "9").numpy()
    noise, sigmas = comfy_noise_and_sigmas(graph, (2, 16, 4, 4))
    pipe = reference_pipeline(parts)
    tok = parts["tokenizer"]
    pipe.prompt_template_encode_start_idx = template_end(tok, tok(TEMPLATE.format("x")).input_ids)
    without_norm_rescale(monkeypatch, pipeline_qwenimage)
    theirs = pipe(graph["5"]["inputs"]["text"], negative_prompt=graph["6"]["inputs"]["text"], true_cfg_scale=2.5,
                  num_images_per_prompt=2, height=32, width=32, latents=pack(noise),
                  num_inference_steps=3, sigmas=sigmas[:-1].tolist(), output_type="np").images
    difference = float(np.abs(ours - theirs).max())
    print("txt2img max abs pixel difference", difference)
    assert ours.shape == (2, 32, 32, 3) and difference < 1e-5, difference
    assert float(np.abs(ours[0] - ours[1]).max()) > 1e-3  # two different images


def edit_plus_graph(steps=3, cfg=2.5, size=32, batch=2) -> dict:
    """ComfyUI's Qwen-Image-Edit-2509 template's path: two images through TextEncodeQwenImageEditPlus
    (vision tower and VAE) on both sides, the positive with the instruction, the negative empty."""
    graph = txt2img_graph(steps, cfg, size, batch)
    graph["1"]["inputs"]["unet_name"] = "qwen_image_edit_2509_fp8_e4m3fn.safetensors"
    graph["4"]["inputs"]["shift"] = 3.0
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": "first.png"}}
    graph["11"] = {"class_type": "LoadImage", "inputs": {"image": "second.png"}}
    for node, text in (("5", "put the cat on the sofa"), ("6", "")):
        graph[node] = {"class_type": "TextEncodeQwenImageEditPlus", "inputs": {
            "clip": ["2", 0], "prompt": text, "vae": ["3", 0], "image1": ["10", 0], "image2": ["11", 0]}}
    return graph


def reference_images(folder):
    """Two images already at the sizes both sides resize them to (see the test), so the resizing is the
    identity on both: 64 x 64 and 128 x 32, 4096 pixels each, sides multiples of 32."""
    from PIL import Image

    rng = np.random.default_rng(5)
    images = {}
    for name, (w, h) in (("first.png", (64, 64)), ("second.png", (128, 32))):
        images[name] = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images[name].save(folder / name)
    return images


@pytest.mark.parametrize("model", ["2509", "2511"])
def test_edit_plus_graph_matches_the_pipeline_with_two_reference_images(parts, loaded, monkeypatch, model):
    """TextEncodeQwenImageEditPlus with two images (vision tower and reference latents) on both sides,
    ModelSamplingAuraFlow 3, EmptySD3LatentImage (32 px, batch 2), KSampler (euler, simple, 3 steps, cfg
    2.5), VAEDecode, against QwenImageEditPlusPipeline (the two images, the negative prompt "",
    true_cfg_scale 2.5, its norm rescale off as above), the same weights, ComfyUI's noise and sigmas.

    The sizes: ComfyUI sizes the vision images to about 384^2 pixels (sides rounded) and the VAE's to
    about 1024^2 (multiples of 8) with box averaging; the pipeline to the same areas with sides multiples
    of 32, resampling with Lanczos. For tiny runs both areas are set to 64^2 on both sides and the images
    are made at sizes that need no resizing, so both read the same pixels; the vision processor
    (Qwen2-VL's, the same code on both sides) then resizes them to multiples of 28.
    2511: its file's marker makes the transformer give the reference tokens time 0 (zero_cond_t; the
    pipeline's transformer configured so), the references placed by index_timestep_zero as the
    template's FluxKontextMultiReferenceLatentMethod says.
    Measured: 0.0 (tolerance 1e-5: the time rounding of the txt2img test)."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as edit_plus

    from nodes.comfy import qwen_image as nodes_qwen
    from nodes.families.qwen_image import EDIT_TEMPLATE
    from nodes.families.qwen_image.files import template_end
    from nodes.families.qwen_image.guide import pack
    from tests._sd import run_node

    loom, _, _ = loaded
    images = reference_images(loom.env.input_dir)
    for module, names in ((nodes_qwen, ("VISION_AREA", "VAE_AREA")), (edit_plus, ("CONDITION_IMAGE_SIZE", "VAE_IMAGE_SIZE"))):
        for name in names:
            monkeypatch.setattr(module, name, 64 * 64)
    graph = edit_plus_graph()
    pipe_parts = parts
    if model == "2511":
        from diffusers import QwenImageTransformer2DModel

        graph["1"]["inputs"]["unet_name"] = tiny.EDIT_2511_FILE
        for node, source in (("14", "5"), ("15", "6")):
            graph[node] = {"class_type": "FluxKontextMultiReferenceLatentMethod",
                           "inputs": {"conditioning": [source, 0], "reference_latents_method": "index_timestep_zero"}}
        graph["8"]["inputs"].update(positive=["14", 0], negative=["15", 0])
        config = {k: v for k, v in parts["transformer"].config.items() if not k.startswith("_")}
        transformer = QwenImageTransformer2DModel(**{**config, "zero_cond_t": True})
        transformer.load_state_dict(parts["transformer"].state_dict())
        pipe_parts = {**parts, "transformer": transformer.eval()}
    ours = run_node(loom, graph, "9").numpy()
    noise, sigmas = comfy_noise_and_sigmas(graph, (2, 16, 4, 4))
    pipe = reference_pipeline(pipe_parts, edit_plus=True)
    tok = parts["tokenizer"]
    pipe.prompt_template_encode_start_idx = template_end(tok, tok(EDIT_TEMPLATE.format("x")).input_ids)
    without_norm_rescale(monkeypatch, edit_plus)
    theirs = pipe(image=[images["first.png"], images["second.png"]], prompt=graph["5"]["inputs"]["prompt"],
                  negative_prompt="", true_cfg_scale=2.5, num_images_per_prompt=2, height=32, width=32,
                  latents=pack(noise), num_inference_steps=3, sigmas=sigmas[:-1].tolist(), output_type="np").images
    difference = float(np.abs(ours - theirs).max())
    print(f"edit plus {model} max abs pixel difference", difference)
    assert ours.shape == (2, 32, 32, 3) and difference < 1e-5, difference


def test_edit_graph_matches_the_edit_pipeline(parts, loaded, monkeypatch):
    """TextEncodeQwenImageEdit (one image: vision tower and reference latent) on both sides against
    QwenImageEditPipeline, as the Edit Plus test (cfg 2.5, batch 2, norm rescale off), the image area
    (1024^2 on both sides) set to 64^2 on both and a 64 x 64 image, so neither resizes it.
    Measured: 0.0 (tolerance 1e-5 as above)."""
    from diffusers import QwenImageEditPipeline
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as edit

    from nodes.comfy import qwen_image as nodes_qwen
    from nodes.families.qwen_image import IMAGE_TEMPLATE
    from nodes.families.qwen_image.files import template_end
    from nodes.families.qwen_image.guide import pack
    from tests._sd import run_node

    loom, _, _ = loaded
    images = reference_images(loom.env.input_dir)
    monkeypatch.setattr(nodes_qwen, "EDIT_AREA", 64 * 64)
    dimensions = edit.calculate_dimensions
    monkeypatch.setattr(edit, "calculate_dimensions", lambda area, ratio: dimensions(64 * 64, ratio))
    graph = edit_plus_graph()
    graph["1"]["inputs"]["unet_name"] = "qwen_image_edit_fp8_e4m3fn.safetensors"
    for node, text in (("5", "make it night"), ("6", "")):
        graph[node] = {"class_type": "TextEncodeQwenImageEdit", "inputs": {
            "clip": ["2", 0], "prompt": text, "vae": ["3", 0], "image": ["10", 0]}}
    del graph["11"]
    ours = run_node(loom, graph, "9").numpy()
    noise, sigmas = comfy_noise_and_sigmas(graph, (2, 16, 4, 4))
    pipe = QwenImageEditPipeline(**parts)
    pipe.scheduler = ComfyFlowEuler()
    pipe.set_progress_bar_config(disable=True)
    tok = parts["tokenizer"]
    pipe.prompt_template_encode_start_idx = template_end(tok, tok(IMAGE_TEMPLATE.format("x")).input_ids)
    without_norm_rescale(monkeypatch, edit)
    theirs = pipe(image=images["first.png"], prompt="make it night", negative_prompt="", true_cfg_scale=2.5,
                  num_images_per_prompt=2, height=32, width=32, latents=pack(noise), num_inference_steps=3,
                  sigmas=sigmas[:-1].tolist(), output_type="np").images
    difference = float(np.abs(ours - theirs).max())
    print("edit max abs pixel difference", difference)
    assert ours.shape == (2, 32, 32, 3) and difference < 1e-5, difference


def test_the_references_change_the_result(loaded, monkeypatch):
    """Without the reference latents (no VAE given) the edit is another image: they are used."""
    from nodes.comfy import qwen_image as nodes_qwen
    from tests._sd import run_node

    loom, _, _ = loaded
    reference_images(loom.env.input_dir)
    for name in ("VISION_AREA", "VAE_AREA"):
        monkeypatch.setattr(nodes_qwen, name, 64 * 64)
    graph = edit_plus_graph(steps=2, batch=1)
    with_refs = run_node(loom, graph, "9")
    for node in ("5", "6"):
        del graph[node]["inputs"]["vae"]
    without = run_node(loom, graph, "9")
    assert float((with_refs - without).abs().max()) > 1e-3


# Run end to end below, LoRAs included (tiny ones under the templates' names).
# image-qwen_image_edit_2511_lora_inflation fails conversion (a prompt text lands in the LoRA's strength).
# templates-1_click_multiple_scene_angles-v1.0 runs too but takes minutes here (its images are scaled to a
# megapixel), so it is left out of the list.
TEMPLATES = ("image_qwen_image", "image_qwen_Image_2512", "image_qwen_image_2512_with_2steps_lora",
             "image_qwen_image_edit", "image_qwen_image_edit_2509", "image_qwen_image_edit_2511",
             "image_qwen_image_edit_2509_relight", "templates-image_to_real", "template_qwen_image_illustration_lora",
             "template_qwen_Image_2512_360_lora", "image_firered_image_edit1_1", "image_qwen_image_union_control_lora",
             "template_qwen_image_edit_2511_systms_action", "templates-1_click_multiple_character_angles-v1.0",
             "templates-portrait_light_migration",
             "templates_rob_portrait_light_migration.app", "template_sugar_coated_gummy_style_qwen")


def template_prompt(loom, name: str, transformer) -> dict:
    """ComfyUI's template as an API prompt on the tiny files (its own file names), small and short: empty
    latents 32 px, 2 steps, input images 64 x 48 px; tiny LoRAs under the LoRA names."""
    import json
    from pathlib import Path

    import comfyui_workflow_templates_json
    from PIL import Image

    from graph.formats import to_api

    folder = Path(comfyui_workflow_templates_json.__file__).parent / "templates"
    template = json.loads(next(folder.rglob(f"{name}.json")).read_text())
    prompt = to_api(template, loom.registry)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in ("EmptySD3LatentImage", "EmptyLatentImage"):
            inputs.update(width=32, height=32)
        elif kind in ("KSampler", "KSamplerAdvanced"):
            inputs["steps"] = 2
        elif kind == "LoadImage":
            path = loom.env.input_dir / inputs["image"]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(path)
        if "lora_name" in inputs:
            path = loom.env.models_dir / "loras" / inputs["lora_name"]
            if not path.exists():
                write_comfy_lora(transformer, path)
    return prompt


@pytest.mark.slow
def test_the_qwen_templates_run_on_tiny_models(parts, loaded, monkeypatch):
    """Each named template, as ComfyUI ships it, runs to an image on the tiny files under its file
    names. Sizes for tiny runs: ComfyUI's image areas (1024^2, 384^2) and Kontext resolutions scaled
    down to 64^2 (the graph is the template's)."""
    from nodes.comfy import edit, qwen_image as nodes_qwen

    loom = loaded[0]
    for attr in ("EDIT_AREA", "VISION_AREA", "VAE_AREA"):
        monkeypatch.setattr(nodes_qwen, attr, 64 * 64)
    monkeypatch.setattr(edit, "KONTEXT_RESOLUTIONS", [(max(16, round(w / 256) * 16), max(16, round(h / 256) * 16))
                                                      for w, h in edit.KONTEXT_RESOLUTIONS])
    failed = {}
    for name in TEMPLATES:
        validation = loom.validate(template_prompt(loom, name, parts["transformer"]))
        if not validation.ok:
            failed[name] = str(validation.response())[:300]
            continue
        result = loom.run(validation)
        if not result.ok:
            failed[name] = f"{result.error.get('node_type')}: {result.error.get('exception_message')}"[:300]
        elif not loom.image_paths(result):
            failed[name] = "no image"
    assert not failed, failed


def test_cfgnorm_keeps_the_guided_prediction_within_the_positive_norm():
    """ComfyUI's CFGNorm: after CFG, each latent pixel's norm over the channels is at most the positive
    prediction's (strength 1); with pre_cfg the combined noise prediction gets the positive one's norm."""
    from nodes.comfy.cfg_norm import CFGNormPatch

    g = torch.Generator().manual_seed(0)
    x, cond, uncond = (torch.randn(2, 16, 4, 4, generator=g) for _ in range(3))
    denoised = uncond + 4.0 * (cond - uncond)
    out = CFGNormPatch(1.0)(cond_denoised=cond, uncond_denoised=uncond, denoised=denoised, cond_scale=4.0, input=x,
                            sigma=torch.tensor(0.5))
    assert (out.norm(dim=1) <= cond.norm(dim=1) * (1 + 1e-6)).all()
    assert torch.allclose(out / denoised, (out / denoised)[:, :1].expand_as(out), atol=1e-5)  # a scale per pixel
    pre = CFGNormPatch(1.0, pre_cfg=True)(cond_denoised=cond, uncond_denoised=uncond, denoised=denoised,
                                          cond_scale=4.0, input=x, sigma=torch.tensor(0.5))
    assert torch.allclose((x - pre).norm(dim=1), (x - cond).norm(dim=1), rtol=1e-5)


def test_cfgnorm_in_a_graph_changes_the_guided_result(loaded):
    from tests._sd import run_node

    loom = loaded[0]
    graph = txt2img_graph(steps=2, batch=1)
    plain = run_node(loom, graph, "9")
    graph["12"] = {"class_type": "CFGNorm", "inputs": {"model": ["4", 0], "strength": 1.0}}
    graph["8"]["inputs"]["model"] = ["12", 0]
    normed = run_node(loom, graph, "9")
    assert normed.shape == plain.shape and float((normed - plain).abs().max()) > 1e-4


def write_comfy_lora(transformer, path, seed=7, rank=2):
    """A LoRA in the layout ComfyUI's Qwen-Image LoRAs use (`diffusion_model.<module>.lora_down/lora_up`,
    `alpha`) on the attention projections of the tiny transformer."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if name.endswith(("attn.to_q", "attn.to_v", "attn.add_k_proj")):
            state[f"diffusion_model.{name}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.3
            state[f"diffusion_model.{name}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.3
            state[f"diffusion_model.{name}.alpha"] = torch.tensor(float(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def test_a_lora_on_the_transformer_matches_the_pipelines(parts, loaded):
    """LoraLoaderModelOnly on Qwen-Image's transformer reads the file with diffusers' own Qwen-Image LoRA
    loader (the pipeline's load_lora_weights does the same): the graph at strength 0.8 against the
    pipeline with the LoRA at weight 0.8 (cfg 1, one image). Tolerance 1e-5 as above (measured 0.0)."""
    from nodes.families.qwen_image.files import template_end
    from nodes.families.qwen_image.guide import pack
    from tests._sd import run_node

    loom, models, _ = loaded
    lora = models / "loras" / "tiny-qwen-lora.safetensors"
    write_comfy_lora(parts["transformer"], lora)
    graph = txt2img_graph(steps=2, cfg=1.0, batch=1)
    plain = run_node(loom, graph, "9").numpy()
    graph["13"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": lora.name,
                                                                   "strength_model": 0.8}}
    graph["4"]["inputs"]["model"] = ["13", 0]
    ours = run_node(loom, graph, "9").numpy()
    noise, sigmas = comfy_noise_and_sigmas(graph, (1, 16, 4, 4))
    import copy

    pipe = reference_pipeline({**parts, "transformer": copy.deepcopy(parts["transformer"])})  # the shared one stays plain
    tok = parts["tokenizer"]
    pipe.prompt_template_encode_start_idx = template_end(tok, tok(TEMPLATE.format("x")).input_ids)
    pipe.load_lora_weights(str(lora), adapter_name="test")
    pipe.set_adapters(["test"], adapter_weights=[0.8])
    theirs = pipe(graph["5"]["inputs"]["text"], true_cfg_scale=1.0, height=32, width=32, latents=pack(noise),
                  num_inference_steps=2, sigmas=sigmas[:-1].tolist(), output_type="np").images
    difference = float(np.abs(ours - theirs).max())
    print("lora max abs pixel difference", difference)
    assert difference < 1e-5, difference
    assert float(np.abs(ours - plain).max()) > 1e-3  # the LoRA changes the image


def test_the_text_encoder_is_dropped_under_memory_pressure_and_loaded_again(parts, loaded):
    """The Qwen2.5-VL encoder is an ordinary cached model: with a host budget that holds the transformer
    and the VAE but not the text encoder too, it is dropped once the prompts are encoded (it is the least
    recently used), the image is the same, and a new prompt loads it again."""
    from graph import Env, Loom
    from graph.cache import models as models_in

    from nodes.loading.checkpoints import load_text_encoder, load_unet, load_vae
    from tests._sd import run_node

    loom, models, written = loaded
    sizes = {part: sum(p.numel() * 4 for p in model.parameters()) for part, model in (
        ("transformer", load_unet(written["transformer"], "cpu", torch.float32)[0]),
        ("vae", load_vae(written["vae"], "cpu", torch.float32)),
        ("text_encoder", load_text_encoder(written["text_encoder"], "cpu", torch.float32)[2]))}
    budget = sizes["transformer"] + sizes["vae"] + sizes["text_encoder"] // 2
    tight = Loom(Env.from_data_dir(loom.env.data_dir, models_dir=models, device="cpu", dtype="float32"),
                 cache_bytes=budget)
    graph = txt2img_graph(steps=2, batch=1)
    image = run_node(tight, graph, "9")
    held = {type(m).__name__ for _, entry in tight.executor.cache.items() for m in models_in(entry.outputs)}
    assert "Qwen2_5_VLModel" not in held and "QwenImageTransformer2DModel" in held, held
    assert torch.equal(image, run_node(loom, graph, "9"))
    roomy = {type(m).__name__ for _, entry in loom.executor.cache.items() for m in models_in(entry.outputs)}
    assert "Qwen2_5_VLModel" in roomy  # without the pressure it stays
    graph["5"]["inputs"]["text"] = "a blue fox"
    assert run_node(tight, graph, "9").shape == image.shape


def test_the_diffusers_folder_loads_with_the_same_models(parts, tmp_path):
    """A QwenImagePipeline folder: recognised, its VAE given Loom's face, its encoder giving the same
    features as the ComfyUI file's."""
    from nodes.families.qwen_image.files import encode
    from nodes.families.qwen_image.vae import LatentImageVAE
    from nodes.loading.checkpoints import load_checkpoint, load_vae

    folder = tmp_path / "tiny-qwen-image"
    tiny.build_pipeline(parts=parts).save_pretrained(folder, safe_serialization=True)
    assert families.family_of_folder(folder) == "qwen_image"
    loaded = load_checkpoint(folder, "cpu", torch.float32)
    assert loaded.family == "qwen_image" and isinstance(loaded.vae, LatentImageVAE)
    assert isinstance(load_vae(folder, "cpu", torch.float32), LatentImageVAE)
    features = encode(loaded.tokenizer, loaded.text_encoder, "a cat")
    assert torch.equal(features, encode(parts["tokenizer"], parts["text_encoder"], "a cat"))

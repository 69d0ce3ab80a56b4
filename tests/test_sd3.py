"""SD 3.5 (issue 21): the family declaration, tiny models (large and medium) in ComfyUI's files, and
Loom's ComfyUI graph from those files against StableDiffusion3Pipeline on the same weights, given
ComfyUI's noise and sigmas. Tiny: 32 px, 3 steps, batch 2."""
import numpy as np
import pytest
import torch

import nodes.families as families
from nodes.families.sd3 import FAMILY, TINY_LARGE, TINY_MEDIUM
from nodes.families.sd3.tiny import (CHECKPOINTS, TRANSFORMERS, build_pipeline, comfy_files, write_comfy_files)
from tests.test_zimage import ComfyFlowEuler

VARIANTS = ("large", "medium")
POSITIVE, NEGATIVE = "a red cat on a wooden table", "blurry dog"


@pytest.fixture(scope="module")
def pipes():
    return {v: build_pipeline(0, v) for v in VARIANTS}


@pytest.fixture(scope="module")
def loaded(pipes, tmp_path_factory):
    from graph import Env, Loom

    models = tmp_path_factory.mktemp("sd3_models")
    written = write_comfy_files(models, pipes=pipes)
    loom = Loom(Env.from_data_dir(tmp_path_factory.mktemp("sd3_data"), models_dir=models, device="cpu",
                                  dtype="float32"))
    return loom, models, written


def test_the_declaration_is_the_published_models():
    assert FAMILY.latent.channels == 16 and (FAMILY.latent.scale, FAMILY.latent.shift) == (1.5305, 0.0609)
    assert (FAMILY.sampling.prediction, FAMILY.sampling.shift, FAMILY.sampling.multiplier) == ("flow", 3.0, 1000)
    config = families.scheduler_for("sd3")
    assert config["_class_name"] == "FlowMatchEulerDiscreteScheduler" and config["shift"] == 3.0
    assert TINY_LARGE["dual_attention_layers"] == () and TINY_MEDIUM["dual_attention_layers"] == (0,)


def test_comfyuis_loader_types_pick_sd3_for_any_part_of_its_encoders():
    for kinds in (["clip_l", "clip_g", "t5xxl"], ["t5xxl", "clip_l"], ["clip_g", "clip_l"], ["t5xxl"]):
        assert families.family_of_clip_kinds(kinds, "sd3") == "sd3"
    assert families.family_of_clip_kinds(["clip_l", "clip_l"], "sd3") is None
    assert families.family_of_clip_kinds(["clip_g"]) == "sdxl_refiner"  # an exact family first
    assert families.family_of_clip_kinds(["clip_g", "clip_l"], "sdxl") == "sdxl"


@pytest.mark.parametrize("variant", VARIANTS)
def test_comfyuis_transformer_file_holds_the_same_weights(pipes, variant):
    """The original MMDiT keys convert back (diffusers' own converter) to the exact diffusers weights;
    the config read off the shapes is the pipeline's; the registry calls it SD3."""
    from diffusers.loaders import single_file_utils

    from nodes.families.sd3.files import transformer_config

    pipe = pipes[variant]
    original = comfy_files(pipe)["transformer"]
    assert ("joint_blocks.0.x_block.attn2.qkv.weight" in original) == (variant == "medium")
    back = getattr(single_file_utils, FAMILY.denoiser_converter)(dict(original))
    expected = pipe.transformer.state_dict()
    assert back.keys() == expected.keys() and all(torch.equal(back[k], expected[k]) for k in expected)
    config = transformer_config(original)
    assert {k: v for k, v in config.items() if k != "sample_size"} == \
        {k: v for k, v in {**pipe.transformer.config, "dual_attention_layers": tuple(
            pipe.transformer.config.dual_attention_layers)}.items() if k in config and k != "sample_size"}
    assert families.family_of_unet_state_dict(original, "") == "sd3"
    whole = {"model.diffusion_model." + k: v for k, v in original.items()}
    assert families.family_of_unet_state_dict(whole) == "sd3"


def test_a_whole_checkpoint_loads_every_part(loaded, pipes):
    from nodes.loading.checkpoints import load_checkpoint

    _, models, _ = loaded
    parts = load_checkpoint(models / CHECKPOINTS["large"], "cpu", torch.float32)
    assert parts.family == "sd3" and type(parts.unet).__name__ == "SD3Transformer2DModel"
    assert (parts.vae.config.scaling_factor, parts.vae.config.shift_factor) == (1.5305, 0.0609)
    pipe = pipes["large"]
    for ours, theirs in ((parts.unet, pipe.transformer), (parts.vae, pipe.vae)):
        expected = theirs.state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in ours.state_dict().items())
    ids = pipe.tokenizer_2("a cat", return_tensors="pt").input_ids
    assert torch.equal(parts.text_encoder_2(ids).text_embeds, pipe.text_encoder_2(ids).text_embeds)


def sd3_graph(ckpt: str, seed: int, cfg: float, scheduler: str, steps: int = 3, batch: int = 2, size: int = 32,
              separate: str | None = None) -> dict:
    """sd3.5_simple_example's graph (CheckpointLoaderSimple, two CLIPTextEncode, EmptySD3LatentImage,
    KSampler, VAEDecode) at a tiny size; `separate`: the transformer file with UNETLoader and the CLIPs
    with TripleCLIPLoader instead (what ComfyUI's SD3 examples also do)."""
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler",
            "scheduler": scheduler, "denoise": 1.0, "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    }
    if separate:
        graph["10"] = {"class_type": "UNETLoader", "inputs": {"unet_name": separate, "weight_dtype": "default"}}
        graph["11"] = {"class_type": "TripleCLIPLoader", "inputs": {
            "clip_name1": "t5xxl_fp16.safetensors", "clip_name2": "clip_g.safetensors",
            "clip_name3": "clip_l.safetensors"}}
        graph["3"]["inputs"]["model"] = ["10", 0]
        graph["6"]["inputs"]["clip"] = graph["7"]["inputs"]["clip"] = ["11", 0]
    return graph


def reference_images(pipe, seed: int, cfg: float, scheduler: str, steps: int = 3, batch: int = 2, size: int = 32):
    """StableDiffusion3Pipeline with ComfyUI's euler, sigmas and noise. Without T5 the pipeline would put
    zeros of max_sequence_length tokens after the CLIP tokens, ComfyUI nothing: max_sequence_length 0."""
    from diffusers import StableDiffusion3Pipeline

    from nodes.comfy.ksampling.denoiser import FlowSchedule
    from nodes.comfy.ksampling.noise import prepare_noise
    from nodes.comfy.ksampling.schedules import ksampler_sigmas

    sigmas = ksampler_sigmas(FlowSchedule(3.0, 1000), "euler", scheduler, steps)
    noise = prepare_noise((batch, 16, size // 8, size // 8), seed)
    reference = StableDiffusion3Pipeline(**{**pipe.components, "scheduler": ComfyFlowEuler()})
    reference.set_progress_bar_config(disable=True)
    return reference(POSITIVE, negative_prompt=NEGATIVE, num_images_per_prompt=batch, guidance_scale=cfg,
                     latents=noise, height=size, width=size, num_inference_steps=steps, sigmas=sigmas[:-1].tolist(),
                     max_sequence_length=0 if pipe.text_encoder_3 is None else 77, output_type="np").images


@pytest.mark.parametrize("variant,scheduler", [("large", "simple"), ("large", "sgm_uniform"),
                                               ("medium", "simple"), ("medium", "beta")])
def test_the_simple_examples_graph_matches_the_pipeline(loaded, pipes, variant, scheduler):
    """Loom's graph from ComfyUI's whole checkpoint (seed 7, 3 steps, cfg 4 with a negative prompt,
    batch 2) against StableDiffusion3Pipeline on the same weights: max abs pixel difference 0. The same
    encoders (all three, T5 at 77 tokens), one transformer call on cat([negative, positive]) at timestep
    sigma * 1000, u + g(c - u), ComfyUI's Euler on both sides, the same decode."""
    from tests._sd import run_node

    loom = loaded[0]
    ours = run_node(loom, sd3_graph(CHECKPOINTS[variant].split("/")[1], 7, 4.0, scheduler), "8").numpy()
    theirs = reference_images(pipes[variant], 7, 4.0, scheduler)
    difference = float(np.abs(ours - theirs).max())
    assert ours.shape == (2, 32, 32, 3) and difference == 0.0, difference
    assert float(np.abs(ours[0] - ours[1]).max()) > 1e-3  # two different images


def test_the_separate_files_give_the_checkpoints_pixels(loaded):
    """UNETLoader (diffusion_models/sd3.5_large.safetensors) + TripleCLIPLoader (T5, bigG, CLIP-L: any
    order) give exactly the whole checkpoint's pixels."""
    from tests._sd import run_node

    loom = loaded[0]
    whole = run_node(loom, sd3_graph(CHECKPOINTS["large"].split("/")[1], 3, 3.0, "simple"), "8")
    apart = run_node(loom, sd3_graph(CHECKPOINTS["large"].split("/")[1], 3, 3.0, "simple",
                                     separate=TRANSFORMERS["large"].split("/")[1]), "8")
    assert torch.equal(whole, apart)


def test_dual_clip_loader_sd3_without_t5_encodes_the_clip_tokens_alone(loaded):
    """DualCLIPLoader type sd3 with CLIP-L and bigG: 77 CLIP tokens, no T5 tokens (ComfyUI's), and the
    sampler pads them to the transformer's joint width; CLIPTextEncodeSD3 with empty_padding none and
    an empty t5xxl text gives the same; CLIPLoader refuses a type no family loads."""
    from tests._sd import run_node

    loom = loaded[0]
    graph = {"1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                              "clip_name2": "clip_g.safetensors", "type": "sd3"}},
             "2": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["1", 0]}},
             "3": {"class_type": "CLIPTextEncodeSD3", "inputs": {
                 "clip": ["1", 0], "clip_l": POSITIVE, "clip_g": POSITIVE, "t5xxl": "", "empty_padding": "none"}}}
    plain, per_encoder = run_node(loom, graph, "2")[0], run_node(loom, graph, "3")[0]
    assert plain.embeds.shape == (1, 77, 64) and plain.pooled.shape == (1, 64)
    assert torch.equal(plain.embeds, per_encoder.embeds) and torch.equal(plain.pooled, per_encoder.pooled)
    bad = {"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "wan"}}}
    assert not loom.validate(bad, outputs=["1"]).ok


def test_skip_layer_guidance_changes_the_negative_pass_only_in_its_range(loaded):
    """SkipLayerGuidanceDiTSimple on block 1: a different image when the range covers the steps, the
    plain image when the range is empty (start == end), as ComfyUI's sigma test says."""
    from tests._sd import run_node

    loom = loaded[0]
    ckpt = CHECKPOINTS["large"].split("/")[1]
    plain = run_node(loom, sd3_graph(ckpt, 5, 3.0, "simple", batch=1), "8")

    def with_slg(start, end):
        graph = sd3_graph(ckpt, 5, 3.0, "simple", batch=1)
        graph["20"] = {"class_type": "SkipLayerGuidanceDiTSimple", "inputs": {
            "model": ["4", 0], "double_layers": "1", "single_layers": "", "start_percent": start, "end_percent": end}}
        graph["3"]["inputs"]["model"] = ["20", 0]
        return run_node(loom, graph, "8")

    assert float((with_slg(0.0, 1.0) - plain).abs().max()) > 1e-3
    assert torch.equal(with_slg(0.5, 0.5), plain)


def template(name: str) -> dict:
    import json
    from pathlib import Path

    import comfyui_workflow_templates_json

    folder = Path(comfyui_workflow_templates_json.__file__).parent / "templates"
    return json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))


def test_the_sd35_simple_example_template_runs_unchanged_but_for_its_size(loaded):
    """comfyui-workflow-templates' sd3.5_simple_example (CheckpointLoaderSimple with
    sd3.5_large_fp8_scaled.safetensors, euler + sgm_uniform, cfg 4.01, empty negative prompt) through
    Loom's editor-format loader, at 32 px and 2 steps: an image, saved."""
    from graph.formats import to_api
    from tests._sd import run_node

    loom = loaded[0]
    prompt = to_api(template("sd3.5_simple_example"), loom.registry)
    by_type = {n["class_type"]: key for key, n in prompt.items()}
    assert prompt[by_type["CheckpointLoaderSimple"]]["inputs"]["ckpt_name"] == "sd3.5_large_fp8_scaled.safetensors"
    prompt[by_type["EmptySD3LatentImage"]]["inputs"].update(width=32, height=32)
    prompt[by_type["KSampler"]]["inputs"]["steps"] = 2
    image = run_node(loom, prompt, by_type["VAEDecode"])
    assert image.shape == (1, 32, 32, 3) and float(image.std()) > 0.01
    validation = loom.validate(prompt)
    assert validation.ok, validation.response()
    assert loom.run(validation).ok


def test_the_diffusers_folder_loads_as_sd3(pipes, tmp_path):
    from nodes.loading.checkpoints import load_checkpoint

    pipes["medium"].save_pretrained(tmp_path / "tiny-sd3", safe_serialization=True)
    assert families.family_of_folder(tmp_path / "tiny-sd3") == "sd3"
    parts = load_checkpoint(tmp_path / "tiny-sd3", "cpu", torch.float32)
    assert parts.family == "sd3" and tuple(parts.unet.config.dual_attention_layers) == (0,)
    assert type(parts.more["text_encoder_3"][1]).__name__ == "T5EncoderModel"


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_custom_sampling_gives_ksamplers_pixels(loaded, sampler):
    """SamplerCustomAdvanced (RandomNoise, CFGGuider, KSamplerSelect, BasicScheduler) on SD3 runs the same
    sampling as KSampler: exactly its pixels, for euler and a second-order multistep sampler."""
    from tests._sd import run_node

    loom = loaded[0]
    graph = sd3_graph(CHECKPOINTS["medium"].split("/")[1], 11, 4.0, "sgm_uniform")
    graph["3"]["inputs"]["sampler_name"] = sampler
    plain = run_node(loom, graph, "8")
    k = graph["3"]["inputs"]
    graph.update({
        "20": {"class_type": "RandomNoise", "inputs": {"noise_seed": k["seed"]}},
        "21": {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                     "cfg": k["cfg"]}},
        "22": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}},
        "23": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": k["scheduler"],
                                                          "steps": k["steps"], "denoise": 1.0}},
        "24": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["20", 0], "guider": ["21", 0],
                                                                 "sampler": ["22", 0], "sigmas": ["23", 0],
                                                                 "latent_image": ["5", 0]}},
    })
    graph["8"]["inputs"]["samples"] = ["24", 0]
    assert torch.equal(run_node(loom, graph, "8"), plain)


def test_a_scaled_fp8_transformer_is_multiplied_back(pipes):
    """ComfyUI's *_fp8_scaled files: fp8 weights with a `scale_weight` per layer and a `scaled_fp8` marker;
    the loaded weight is exactly fp8 * scale (in float32), the rest as stored."""
    from nodes.families.sd3.files import transformer_from_file

    original = comfy_files(pipes["large"])["transformer"]
    stored, expected = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}, {}
    for key, value in original.items():
        if key.endswith(".weight") and value.ndim == 2:
            scale = value.abs().max() / 448.0
            stored[key] = (value / scale).to(torch.float8_e4m3fn)
            stored[key[:-len("weight")] + "scale_weight"] = scale.reshape(1)
            expected[key] = stored[key].float() * scale
        else:
            stored[key] = value
    model = transformer_from_file({"model.diffusion_model." + k: v for k, v in stored.items()}, "model.diffusion_model.")
    qkv = torch.cat([model.transformer_blocks[0].attn.to_q.weight, model.transformer_blocks[0].attn.to_k.weight,
                     model.transformer_blocks[0].attn.to_v.weight])
    assert torch.equal(qkv, expected["joint_blocks.0.x_block.attn.qkv.weight"])
    assert torch.equal(model.context_embedder.bias, original["context_embedder.bias"])


def test_a_checkpoint_without_t5_loads_and_encodes_the_clip_tokens(pipes, tmp_path):
    """ComfyUI's sd3_medium_incl_clips.safetensors style: no `text_encoders.t5xxl.*` keys; the CLIP
    holds CLIP-L and bigG only and a prompt is their 77 tokens."""
    from safetensors.torch import save_file

    from nodes.families.sd3.runtime import encode
    from nodes.families.sd3.tiny import checkpoint
    from nodes.loading.checkpoints import load_checkpoint
    from nodes.loading.loaders import bundles

    files = {k: v for k, v in comfy_files(pipes["medium"]).items() if k != "text_encoder_3"}
    path = tmp_path / "sd3_medium_incl_clips.safetensors"
    save_file({k: v.contiguous() for k, v in checkpoint(files).items()}, str(path))
    parts = load_checkpoint(path, "cpu", torch.float32)
    assert parts.family == "sd3" and "text_encoder_3" not in parts.more
    (cond,) = encode(bundles(parts)[1], POSITIVE)
    assert cond.embeds.shape == (1, 77, 64) and cond.pooled.shape == (1, 64)

"""Z-Image (issue 21): its family declaration, the tiny random models (diffusers folder and ComfyUI's
single files) and how the registry recognises them. Tiny: 32 px, 2 steps."""
import json
from pathlib import Path

import numpy as np

import pytest
import torch

import nodes.families as families
from nodes.families.zimage import FAMILY, TEMPLATE
from nodes.families.zimage.tiny import FILES, build_pipeline, comfy_files, tiny_tokenizer, write_comfy_files
from nodes.latent_value import Latent


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline(0)


def test_the_declaration_is_the_published_models():
    assert FAMILY.latent.channels == 16 and (FAMILY.latent.scale, FAMILY.latent.shift) == (0.3611, 0.1159)
    assert (FAMILY.sampling.prediction, FAMILY.sampling.shift, FAMILY.sampling.multiplier) == ("flow", 3.0, 1.0)
    assert families.family_of_clip_kinds(["qwen3_4b"], "lumina2") == "zimage"  # Flux.2 Klein takes Qwen3 too
    config = families.scheduler_for("zimage")
    assert config["_class_name"] == "FlowMatchEulerDiscreteScheduler" and config["shift"] == 3.0
    assert not config["use_dynamic_shifting"]


def test_the_tiny_tokenizer_writes_the_prompt_as_the_pipeline_and_comfyui_do():
    """diffusers' chat template with thinking enabled and ComfyUI's template give the same text."""
    tok = tiny_tokenizer()
    text = tok.apply_chat_template([{"role": "user", "content": "a cat"}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=True)
    assert text == TEMPLATE.format("a cat")
    ids = tok(text).input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and len(ids) == len(text.encode()) - 2 * 12 - 10 + 3  # bytes, 3 specials


def test_the_tiny_folder_is_recognised_and_runs(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "tiny-zimage", safe_serialization=True)
    assert families.family_of_folder(tmp_path / "tiny-zimage") == "zimage"
    config = json.loads((tmp_path / "tiny-zimage" / "transformer" / "config.json").read_text())
    assert families.family_of_unet_config(config) == "zimage"
    image = pipe("a cat", height=32, width=32, num_inference_steps=2, guidance_scale=0.0, output_type="np",
                 generator=torch.Generator().manual_seed(0), max_sequence_length=64).images
    assert image.shape == (1, 32, 32, 3) and image.std() > 0.01  # the randomised norms make it no flat grey


def test_comfyuis_single_files_hold_the_same_weights(pipe, tmp_path):
    """The transformer file converts back (diffusers' own converter) to the exact diffusers weights;
    the registry recognises it as Z-Image and no SD family claims it."""
    from diffusers.loaders import single_file_utils

    files = comfy_files(pipe)
    original = files["transformer"]
    assert "layers.0.attention.qkv.weight" in original and "x_embedder.weight" in original
    assert families.family_of_unet_state_dict(original, "") == "zimage"
    prefixed = {"model.diffusion_model." + k: v for k, v in original.items()}
    assert families.family_of_unet_state_dict(prefixed) == "zimage"
    converter = getattr(single_file_utils, FAMILY.denoiser_converter)
    back = converter(dict(original))
    expected = pipe.transformer.state_dict()
    assert back.keys() == expected.keys() and all(torch.equal(back[k], expected[k]) for k in expected)
    assert "model.embed_tokens.weight" in files["text_encoder"]
    assert "encoder.down.0.block.0.conv1.weight" in files["vae"] and "quant_conv.weight" not in files["vae"]
    written = write_comfy_files(tmp_path, pipe=pipe)
    assert {p.relative_to(tmp_path).as_posix() for p in written.values()} == set(FILES.values())
    assert FILES["transformer"] == "diffusion_models/z_image_turbo_bf16.safetensors"


class ComfyFlowEuler:
    """ComfyUI's euler on a flow model, as a diffusers scheduler, from ComfyUI's rules (not Loom's code):
    the given sigmas then 0; the pipeline's prediction (minus the transformer's output) is the
    velocity v, denoised = x - sigma * v; an Euler step on (x - denoised) / sigma."""
    order = 1

    def __init__(self):
        self.config = {}

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
        self.sigmas = torch.cat([torch.tensor(sigmas, dtype=torch.float32), torch.zeros(1)])
        self.timesteps = self.sigmas[:-1] * 1000  # the pipeline feeds the transformer (1000 - t) / 1000
        self.index = 0

    def set_begin_index(self, index=0):
        self.index = index

    def step(self, velocity, timestep, sample, return_dict=False):
        s, s_next = self.sigmas[self.index], self.sigmas[self.index + 1]
        denoised = sample - velocity * s
        self.index += 1
        return (sample + (sample - denoised) / s * (s_next - s),)


def test_ksampler_on_the_tiny_model_matches_the_pipeline_with_comfyuis_euler(pipe):
    """Loom's KSampler path (ComfyUI's noise for seed 42, batch 2, ModelSamplingAuraFlow shift 3, euler +
    simple, 4 steps, cfg 1) against ZImagePipeline given the same noise, sigmas and text features.
    Tolerance 1e-5: ComfyUI feeds the transformer 1 - sigma, the pipeline (1000 - 1000 sigma) / 1000 (float32
    rounding of the time), and ComfyUI steps through denoised latents where the scheduler above could
    use v directly; both are ~1e-7 per step."""
    from diffusers import ZImagePipeline

    from nodes.loading.bundles import Model
    from nodes.conditioning import Cond
    from nodes.comfy.ksampling.denoiser import FlowSchedule
    from nodes.comfy.ksampling.ksampler import SamplerChoice, sample, starting_noise
    from nodes.comfy.ksampling.schedules import ksampler_sigmas

    (caption,), _ = pipe.encode_prompt("a cat", do_classifier_free_guidance=False, max_sequence_length=64)
    model = Model(unet=pipe.transformer, scheduler=None, family="zimage", sampling=FlowSchedule(3.0, 1.0))
    latent = Latent(torch.zeros(2, 16, 4, 4), empty=True, width=32, height=32)
    noise = starting_noise(model, latent, 42)
    sigmas = ksampler_sigmas(model.sampling, "euler", "simple", 4)
    ours, _ = sample(None, model, (Cond(embeds=caption[None]),), None, 1.0, SamplerChoice("euler"), sigmas,
                     latent, noise, 42)
    reference = ZImagePipeline(scheduler=ComfyFlowEuler(), vae=pipe.vae, text_encoder=pipe.text_encoder,
                               tokenizer=pipe.tokenizer, transformer=pipe.transformer)
    theirs = reference(prompt_embeds=[caption, caption], guidance_scale=0.0, latents=noise.clone(), height=32,
                       width=32, num_inference_steps=4, sigmas=sigmas[:-1].tolist(), output_type="latent").images
    difference = float((ours["samples"] - theirs).abs().max())
    assert difference < 1e-5, difference
    assert float((ours["samples"][0] - ours["samples"][1]).abs().max()) > 1e-3  # two different images


FRONTEND_REQUEST = Path(__file__).resolve().parent / "fixtures" / "comfy" / "frontend_default_request.json"


def frontend_graph(size: int = 32, batch: int = 2, sampler: str | None = None) -> dict:
    """The official frontend's default Z-Image-Turbo workflow (the prompt it posts), with the two nodes
    it could not name (it did not know their types then) given theirs: EmptySD3LatentImage (size, batch)
    and ModelSamplingAuraFlow (shift 3, its widget value)."""
    prompt = json.loads(FRONTEND_REQUEST.read_text())["prompt"]
    prompt["68"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}}
    prompt["69"] = {"class_type": "ModelSamplingAuraFlow",
                    "inputs": {"model": ["66", 0], "shift": prompt["69"]["inputs"]["UNKNOWN"]}}
    if sampler:
        prompt["70"]["inputs"]["sampler_name"] = sampler
    del prompt["9"]  # the decoded image is what is compared
    return prompt


@pytest.fixture(scope="module")
def loaded(pipe, tmp_path_factory):
    from graph import Env, Loom

    models = tmp_path_factory.mktemp("zimage_models")
    write_comfy_files(models, pipe=pipe)
    pipe.save_pretrained(models / "tiny-zimage", safe_serialization=True)
    loom = Loom(Env.from_data_dir(tmp_path_factory.mktemp("zimage_data"), models_dir=models, device="cpu",
                                  dtype="float32"))
    return loom, models


def test_the_default_workflows_graph_matches_the_pipeline(loaded):
    """UNETLoader + CLIPLoader (lumina2) + VAELoader on ComfyUI's file names, EmptySD3LatentImage,
    ModelSamplingAuraFlow, CLIPTextEncode, KSampler (seed 42, 8 steps, cfg 1, simple; euler here) and
    VAEDecode, against ZImagePipeline from the same weights (its folder) given ComfyUI's noise and sigmas
    and ComfyFlowEuler, batch 2 at 32 px. Tolerance 1e-4 on pixels in 0..1: the pipeline pads the prompt to
    512 tokens with an attention mask (Loom, as ComfyUI, does not pad), and the time rounding of the
    sampler test above; both are float32 rounding."""
    from diffusers import ZImagePipeline

    from nodes.comfy.ksampling.denoiser import FlowSchedule
    from nodes.comfy.ksampling.noise import prepare_noise
    from nodes.comfy.ksampling.schedules import ksampler_sigmas
    from tests._sd import run_node

    loom, models = loaded
    graph = frontend_graph(sampler="euler")
    ours = run_node(loom, graph, "65").numpy()
    k = graph["70"]["inputs"]
    sigmas = ksampler_sigmas(FlowSchedule(3.0, 1.0), "euler", k["scheduler"], k["steps"])
    noise = prepare_noise((2, 16, 4, 4), k["seed"])
    folder = models / "tiny-zimage"
    reference = ZImagePipeline.from_pretrained(folder)
    reference.scheduler = ComfyFlowEuler()
    reference.set_progress_bar_config(disable=True)
    theirs = reference(graph["67"]["inputs"]["text"], num_images_per_prompt=2, guidance_scale=0.0, latents=noise,
                       height=32, width=32, num_inference_steps=k["steps"], sigmas=sigmas[:-1].tolist(),
                       max_sequence_length=512, output_type="np").images
    difference = float(np.abs(ours - theirs).max())
    assert ours.shape == (2, 32, 32, 3) and difference < 1e-4, difference


def test_the_default_workflow_runs_unchanged_settings(loaded):
    """res_multistep + simple, 8 steps, as the frontend posts it: an image per latent."""
    from tests._sd import run_node

    image = run_node(loaded[0], frontend_graph(batch=1), "65")
    assert image.shape == (1, 32, 32, 3) and float(image.std()) > 0.01


def test_a_loaded_model_samples_as_comfyuis_z_image_without_a_patch(loaded):
    """UNETLoader's MODEL alone: ComfyUI's Z-Image sampling settings (shift 3, multiplier 1)."""
    from nodes.comfy.ksampling.denoiser import FlowSchedule
    from nodes.comfy.ksampling.ksampler import model_sampling
    from tests._sd import run_node

    model = run_node(loaded[0], {"1": {"class_type": "UNETLoader", "inputs": {
        "unet_name": "z_image_turbo_bf16.safetensors", "weight_dtype": "default"}}}, "1")
    ms = model_sampling(model)
    assert model.family == "zimage" and isinstance(ms, FlowSchedule) and (ms.shift, ms.multiplier) == (3.0, 1.0)

"""Flux.1 (issue 21): its family declaration, the tiny random models (diffusers folders and ComfyUI's
single files), ComfyUI's Flux sampling, and Loom's ComfyUI graph from the single files against
diffusers' FluxPipeline from the same weights. Tiny: 32 px, 3 steps."""
import json
import math

import numpy as np
import pytest
import torch

import nodes.families as families
from nodes.families.flux import FAMILY
from nodes.families.flux.tiny import FILES, build_pipeline, comfy_files, write_comfy_files

PROMPT = "a red cat on a mat"


@pytest.fixture(scope="module")
def pipes():
    return {"dev": build_pipeline(0, guidance=True), "schnell": build_pipeline(0, guidance=False)}


def test_the_declaration_is_the_published_models():
    assert FAMILY.latent.channels == 16 and (FAMILY.latent.scale, FAMILY.latent.shift) == (0.3611, 0.1159)
    assert FAMILY.latent.packed == 2 and FAMILY.sampling.prediction == "flow"
    assert families.family_of_clip_kinds(["t5xxl", "clip_l"], "flux") == "flux"
    assert families.family_of_clip_kinds(["t5xxl", "clip_l"], "lumina2") is None
    config = families.scheduler_for("flux")
    assert config["_class_name"] == "FlowMatchEulerDiscreteScheduler" and config["use_dynamic_shifting"]


def test_comfyuis_single_files_hold_the_same_weights(pipes):
    """The transformer files convert back (diffusers' converter, its fused split redone at the tiny
    width) to the exact diffusers weights; the registry recognises them, dev by its guidance embedding."""
    from nodes.families.flux.files import transformer_config, transformer_from_file

    files = comfy_files(pipes["dev"], pipes["schnell"])
    for name in ("dev", "schnell"):
        original = files[name]
        assert "double_blocks.0.img_attn.qkv.weight" in original and "single_blocks.1.linear1.weight" in original
        assert families.family_of_unet_state_dict(original, "") == "flux"
        assert families.family_of_unet_state_dict({"model.diffusion_model." + k: v for k, v in original.items()}) == "flux"
        config = transformer_config(original)
        assert config["guidance_embeds"] == (name == "dev") and (config["num_layers"], config["num_single_layers"]) == (1, 2)
        loaded = transformer_from_file(dict(original))
        expected = pipes[name].transformer.state_dict()
        got = loaded.state_dict()
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
    assert families.family_of_state_dict(files["checkpoint_dev"]) == "flux"
    krea = transformer_from_file(dict(files["krea"])).state_dict()  # scaled fp8: close, not equal
    q = "transformer_blocks.0.attn.to_q.weight"
    expected = pipes["dev"].transformer.state_dict()[q]
    assert 0 < float((krea[q] - expected).abs().max()) < 0.1 * float(expected.abs().max())


def comfy_flux_sigmas(shift: float, steps: int) -> torch.Tensor:
    """ComfyUI's ModelSamplingFlux table (10000 entries, e^shift / (e^shift + 1/t - 1)) and its 'simple'
    scheduler (every len/steps-th entry from the top, then 0), written out from ComfyUI's rules."""
    t = torch.arange(1, 10001, 1) / 10000
    table = math.exp(shift) / (math.exp(shift) + (1 / t - 1) ** 1.0)
    stride = len(table) / steps
    return torch.tensor([float(table[-(1 + int(i * stride))]) for i in range(steps)] + [0.0])


def test_flux_sampling_is_comfyuis():
    from nodes.comfy.flow import flux_shift
    from nodes.comfy.ksampling.denoiser import FluxSchedule
    from nodes.comfy.ksampling.schedules import ksampler_sigmas

    ms = FluxSchedule(1.15)
    assert torch.equal(ksampler_sigmas(ms, "euler", "simple", 5), comfy_flux_sigmas(1.15, 5))
    assert float(ms.timestep(torch.tensor(0.25))) == 0.25 and float(ms.sigma_max) == 1.0
    assert math.isclose(ms.percent_to_sigma(0.5), float(ms.sigma(torch.tensor(0.5))), rel_tol=1e-6)
    # the shift of ComfyUI's ModelSamplingFlux node: base_shift at 256 tokens, max_shift at 4096 (1024 px)
    assert math.isclose(flux_shift(1.15, 0.5, 1024, 1024), 1.15) and math.isclose(flux_shift(1.15, 0.5, 256, 256), 0.5)


class ComfyFlowEuler:
    """ComfyUI's euler on a flow model as a diffusers scheduler, from ComfyUI's rules (not Loom's
    code): the given sigmas then 0; the transformer's output is the velocity v, denoised = x - sigma * v;
    an Euler step on (x - denoised) / sigma."""
    order = 1

    def __init__(self):
        self.config = {"base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
        self.sigmas = torch.cat([torch.tensor(sigmas, dtype=torch.float32), torch.zeros(1)])
        self.timesteps = self.sigmas[:-1] * 1000  # FluxPipeline feeds the transformer timestep / 1000
        self.index = 0

    def set_begin_index(self, index=0):
        self.index = index

    def step(self, velocity, timestep, sample, return_dict=False):
        s, s_next = self.sigmas[self.index], self.sigmas[self.index + 1]
        denoised = sample - velocity * s
        self.index += 1
        return (sample + (sample - denoised) / s * (s_next - s),)


@pytest.fixture(scope="module")
def loaded(pipes, tmp_path_factory):
    from graph import Env, Loom

    models = tmp_path_factory.mktemp("flux_models")
    write_comfy_files(models, dev=pipes["dev"], schnell=pipes["schnell"])
    for name, pipe in pipes.items():
        pipe.save_pretrained(models / f"tiny-flux-{name}", safe_serialization=True)
    loom = Loom(Env.from_data_dir(tmp_path_factory.mktemp("flux_data"), models_dir=models, device="cpu",
                                  dtype="float32"))
    return loom, models


def graph(variant: str, scheduler: str, steps: int = 3, guidance: float | None = None, checkpoint: bool = False,
          seed: int = 7) -> dict:
    """ComfyUI's Flux text-to-image graph (as the templates build it) at 32 px, batch 2, cfg 1."""
    g = {"4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 2}},
         "5": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["2", 0]}},
         "6": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["5", 0]}},
         "7": {"class_type": "KSampler", "inputs": {
             "model": ["1", 0], "positive": ["8", 0] if guidance is not None else ["5", 0], "negative": ["6", 0],
             "latent_image": ["4", 0], "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler",
             "scheduler": scheduler, "denoise": 1.0}},
         "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["3", 0]}}}
    if checkpoint:
        g["1"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": FILES[f"checkpoint_{variant}"].split("/")[1]}}
        g["2"], g["3"] = ["1", 1], ["1", 2]
        g["5"]["inputs"]["clip"] = ["1", 1]
        g["9"]["inputs"]["vae"] = ["1", 2]
    else:
        g["1"] = {"class_type": "UNETLoader", "inputs": {"unet_name": FILES[variant].split("/")[1],
                                                         "weight_dtype": "default"}}
        g["2"] = {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                             "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}}
        g["3"] = {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}}
    if guidance is not None:
        g["8"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["5", 0], "guidance": guidance}}
    return {k: v for k, v in g.items() if isinstance(v, dict)}


def reference(models, variant: str, scheduler: str, steps: int, guidance: float, seed: int):
    """FluxPipeline from the diffusers folder of the same weights, given ComfyUI's noise (seed, batch 2,
    packed as the pipeline packs) and sigmas, with ComfyFlowEuler; T5 padded to 256 as ComfyUI pads."""
    from diffusers import FluxPipeline

    from nodes.comfy.ksampling.denoiser import FlowSchedule, FluxSchedule
    from nodes.comfy.ksampling.noise import prepare_noise
    from nodes.comfy.ksampling.schedules import ksampler_sigmas

    ms = FluxSchedule(1.15) if variant == "dev" else FlowSchedule(1.0, 1.0)
    sigmas = ksampler_sigmas(ms, "euler", scheduler, steps)
    noise = prepare_noise((2, 16, 4, 4), seed)
    pipe = FluxPipeline.from_pretrained(models / f"tiny-flux-{variant}")
    pipe.scheduler = ComfyFlowEuler()
    pipe.set_progress_bar_config(disable=True)
    latents = FluxPipeline._pack_latents(noise * sigmas[0], 2, 16, 4, 4)
    return pipe(PROMPT, num_images_per_prompt=2, guidance_scale=guidance, latents=latents, height=32, width=32,
                num_inference_steps=steps, sigmas=sigmas[:-1].tolist(), max_sequence_length=256,
                output_type="np").images


# Exact: the same operations in the same order, but for the time: FluxPipeline gives the transformer
# (1000 sigma) / 1000 where ComfyUI (and Loom) give sigma; for these schedules' sigmas that float32
# round trip is exact (measured: max abs difference 0.0 in all four cases). Another schedule could
# differ there by a float32 rounding of the time (~1e-7).
PIXELS = 0.0


@pytest.mark.parametrize("variant,scheduler,guidance", [("dev", "simple", 3.5), ("dev", "beta", 2.0),
                                                        ("schnell", "simple", None), ("schnell", "beta", None)])
def test_comfyuis_graph_from_the_single_files_matches_the_pipeline(loaded, variant, scheduler, guidance):
    """UNETLoader + DualCLIPLoader (flux) + VAELoader on ComfyUI's file names, EmptySD3LatentImage,
    CLIPTextEncode (+ FluxGuidance on dev), KSampler (euler, cfg 1, 3 steps, ConditioningZeroOut as the
    negative as in the templates) and VAEDecode, batch 2 at 32 px, against FluxPipeline."""
    from tests._sd import run_node

    loom, models = loaded
    ours = run_node(loom, graph(variant, scheduler, guidance=guidance), "9").numpy()
    theirs = reference(models, variant, scheduler, 3, 3.5 if guidance is None else guidance, 7)
    difference = float(np.abs(ours - theirs).max())
    assert ours.shape == (2, 32, 32, 3) and difference <= PIXELS, difference
    assert float(np.abs(ours[0] - ours[1]).max()) > 1e-3  # two different images


def test_a_whole_checkpoint_matches_the_pipeline(loaded):
    """CheckpointLoaderSimple with flux1-schnell-fp8.safetensors (as the flux_schnell template) and with
    flux1-dev-fp8.safetensors: the same pixels as the split files' graph."""
    from tests._sd import run_node

    loom, models = loaded
    for variant in ("schnell", "dev"):
        ours = run_node(loom, graph(variant, "simple", checkpoint=True), "9").numpy()
        split = run_node(loom, graph(variant, "simple"), "9").numpy()
        assert float(np.abs(ours - split).max()) == 0.0


def test_the_guidance_defaults_to_comfyuis_and_changes_dev_only(loaded):
    """dev without FluxGuidance samples with 3.5 (ComfyUI's default); another guidance changes dev's
    image; schnell ignores it. ModelSamplingFlux with its defaults at 1024 px is dev's default sampling."""
    from nodes.comfy.ksampling.denoiser import FlowSchedule, FluxSchedule
    from nodes.comfy.ksampling.ksampler import model_sampling
    from tests._sd import run_node

    loom, _ = loaded
    default = run_node(loom, graph("dev", "simple", steps=2), "9").numpy()
    assert np.array_equal(default, run_node(loom, graph("dev", "simple", steps=2, guidance=3.5), "9").numpy())
    assert not np.array_equal(default, run_node(loom, graph("dev", "simple", steps=2, guidance=6.0), "9").numpy())
    schnell = run_node(loom, graph("schnell", "simple", steps=2), "9").numpy()
    assert np.array_equal(schnell, run_node(loom, graph("schnell", "simple", steps=2, guidance=6.0), "9").numpy())
    dev = run_node(loom, {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors",
                                                                        "weight_dtype": "default"}}}, "1")
    ms = model_sampling(dev)
    assert dev.family == "flux" and isinstance(ms, FluxSchedule) and ms.shift == 1.15
    patched = run_node(loom, {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors",
                                                                            "weight_dtype": "default"}},
                              "2": {"class_type": "ModelSamplingFlux", "inputs": {
                                  "model": ["1", 0], "max_shift": 1.15, "base_shift": 0.5, "width": 1024,
                                  "height": 1024}}}, "2")
    assert torch.equal(model_sampling(patched).sigmas, ms.sigmas)
    schnell_model = run_node(loom, {"1": {"class_type": "UNETLoader", "inputs": {
        "unet_name": "flux1-schnell.safetensors", "weight_dtype": "default"}}}, "1")
    ms = model_sampling(schnell_model)
    assert type(ms) is FlowSchedule and (ms.shift, ms.multiplier) == (1.0, 1.0)


def test_clip_text_encode_flux_sets_its_prompts_and_guidance(loaded):
    """CLIPTextEncodeFlux: CLIP-L's pooled output of `clip_l`, T5's tokens of `t5xxl`, the guidance in
    the conditioning; the same prompt twice encodes as CLIPTextEncode."""
    from tests._sd import run_node

    loom, _ = loaded
    clip = {"2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5xxl_fp16.safetensors",
                                                             "clip_name2": "clip_l.safetensors", "type": "flux"}}}
    both = run_node(loom, {**clip, "5": {"class_type": "CLIPTextEncodeFlux", "inputs": {
        "clip": ["2", 0], "clip_l": "a dog", "t5xxl": PROMPT, "guidance": 2.5}}}, "5")
    plain = run_node(loom, {**clip, "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": PROMPT}}}, "5")
    dog = run_node(loom, {**clip, "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a dog"}}}, "5")
    assert both[0].extra == {"guidance": 2.5} and not plain[0].extra
    assert torch.equal(both[0].embeds, plain[0].embeds) and torch.equal(both[0].pooled, dog[0].pooled)
    assert plain[0].embeds.shape == (1, 256, 32) and plain[0].pooled.shape == (1, 32)
    # ComfyUI's prompt syntax: weights move T5's tokens, CLIP-L's pooled output reads the words alone
    weighted = run_node(loom, {**clip, "5": {"class_type": "CLIPTextEncode", "inputs": {
        "clip": ["2", 0], "text": "(a dog:1.3)"}}}, "5")
    assert torch.equal(weighted[0].pooled, dog[0].pooled) and not torch.equal(weighted[0].embeds, dog[0].embeds)


def test_the_folders_are_recognised(loaded):
    _, models = loaded
    assert families.family_of_folder(models / "tiny-flux-dev") == "flux"
    config = json.loads((models / "tiny-flux-schnell" / "transformer" / "config.json").read_text())
    assert families.family_of_unet_config(config) == "flux" and not config["guidance_embeds"]


def test_custom_sampling_gives_the_ksamplers_pixels(loaded):
    """RandomNoise + BasicGuider + KSamplerSelect + BasicScheduler + SamplerCustomAdvanced on dev with
    FluxGuidance (the flux_dev full templates' custom-sampling graph shape) equals KSampler exactly."""
    from tests._sd import run_node

    loom, _ = loaded
    g = graph("dev", "beta", guidance=2.0)
    ksampler = run_node(loom, g, "9").numpy()
    g.update({"10": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
              "11": {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["8", 0]}},
              "12": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
              "13": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "beta", "steps": 3,
                                                                "denoise": 1.0}},
              "14": {"class_type": "SamplerCustomAdvanced", "inputs": {
                  "noise": ["10", 0], "guider": ["11", 0], "sampler": ["12", 0], "sigmas": ["13", 0],
                  "latent_image": ["4", 0]}}})
    g["9"]["inputs"]["samples"] = ["14", 0]
    assert np.array_equal(run_node(loom, g, "9").numpy(), ksampler)


TEMPLATES = ["flux_dev_checkpoint_example", "flux_dev_full_text_to_image", "flux_schnell",
             "flux_schnell_full_text_to_image", "flux1_krea_dev"]


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_flux_templates_run_on_the_tiny_files(loaded, name):
    """Each Flux.1 template of comfyui-workflow-templates (its JSON as the package ships it, subgraphs
    expanded) runs end to end on the tiny files written under the names it asks for; only the image
    size (32 px) and the steps (2) are made small."""
    pytest.importorskip("comfyui_workflow_templates_json")
    from importlib import resources

    from graph import Registry
    from graph.formats import to_api

    loom, _ = loaded
    template = json.loads((resources.files("comfyui_workflow_templates_json") / "templates" / f"{name}.json").read_text())
    registry = Registry()
    registry.add_package("nodes")
    prompt = to_api(template, registry)
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptySD3LatentImage":
            inputs.update(width=32, height=32)
        if node["class_type"] == "KSampler":
            inputs["steps"] = 2
    validation = loom.validate(prompt)
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    saves = [k for k, v in prompt.items() if v["class_type"] == "SaveImage"]
    images = [image for k in saves for image in result.outputs[k]["images"]]
    assert len(saves) == 1 and len(images) == 1 and images[0]["filename"].endswith(".png")


def test_packing_and_ids_are_the_pipelines_and_odd_sizes_are_padded(pipes):
    """pack / image_ids equal FluxPipeline's _pack_latents / _prepare_latent_image_ids; unpack inverts
    pack; an odd latent side is padded as ComfyUI pads it and the prediction cropped back."""
    import copy

    from diffusers import FluxPipeline

    from nodes.families.flux.guide import image_ids, pack, unpack, velocity

    x = torch.randn(2, 16, 6, 4)
    assert torch.equal(pack(x), FluxPipeline._pack_latents(x, 2, 16, 6, 4))
    assert torch.equal(unpack(pack(x), 6, 4), x)
    assert torch.equal(image_ids(6, 4), FluxPipeline._prepare_latent_image_ids(2, 3, 2, "cpu", torch.float32))
    dev = pipes["dev"].transformer
    embeds, pooled = torch.randn(1, 5, 32), torch.randn(1, 32)
    odd = torch.randn(1, 16, 5, 7)
    with torch.no_grad():
        assert velocity(dev, odd, 0.5, embeds, pooled, 3.5).shape == (1, 16, 5, 7)
        # FluxDisableGuidance (guidance None) on dev: no guidance term, as a model whose guidance
        # embedding gives zeros
        silent = copy.deepcopy(dev)
        silent.time_text_embed.guidance_embedder.linear_2.weight.zero_()
        silent.time_text_embed.guidance_embedder.linear_2.bias.zero_()
        off = velocity(dev, x, 0.5, embeds, pooled, None)
        assert torch.equal(off, velocity(silent, x, 0.5, embeds, pooled, 7.0))
        assert not torch.equal(off, velocity(dev, x, 0.5, embeds, pooled, 0.0))
        assert dev.time_text_embed is not silent.time_text_embed and "Without" not in type(dev.time_text_embed).__name__


def test_cfg_above_one_runs_the_negative(loaded):
    """cfg 2 with ConditioningZeroOut as the negative (templates' wiring): a different image than cfg 1."""
    from tests._sd import run_node

    loom, _ = loaded
    g = graph("schnell", "simple", steps=2)
    one = run_node(loom, g, "9").numpy()
    g["7"]["inputs"]["cfg"] = 2.0
    assert not np.array_equal(one, run_node(loom, g, "9").numpy())


def test_ksampler_advanced_over_all_steps_is_ksampler(loaded):
    from tests._sd import run_node

    loom, _ = loaded
    g = graph("dev", "simple", steps=2)
    plain = run_node(loom, g, "9").numpy()
    k = g["7"]["inputs"]
    g["7"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": k["model"], "positive": k["positive"], "negative": k["negative"], "latent_image": k["latent_image"],
        "add_noise": "enable", "noise_seed": k["seed"], "steps": 2, "cfg": 1.0, "sampler_name": "euler",
        "scheduler": "simple", "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    assert np.array_equal(run_node(loom, g, "9").numpy(), plain)


def test_comfyuis_clip_l_file_with_its_projection_loads_as_clip_l(tmp_path):
    """ComfyUI's clip_l.safetensors keeps CLIP-L's (unused) text projection and logit scale: still CLIP-L,
    those tensors left out. (768 wide, one layer: the width is what says CLIP-L.)"""
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.loading.checkpoints import load_text_encoder

    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=64, num_attention_heads=12,
                                         num_hidden_layers=1, vocab_size=1000, max_position_embeddings=77))
    state = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in model.state_dict().items()
             if "position_ids" not in k}
    save_file({**state, "text_projection.weight": torch.randn(768, 768), "logit_scale": torch.tensor(4.6)},
              tmp_path / "clip_l.safetensors")
    kind, _, loaded = load_text_encoder(tmp_path / "clip_l.safetensors", torch.device("cpu"), torch.float32)
    assert kind == "clip_l" and type(loaded).__name__ == "CLIPTextModel"
    ids = torch.tensor([[0, 5, 6, 999]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, model(ids).last_hidden_state)


@pytest.mark.parametrize("guidance", [True, False])
def test_the_published_shapes_give_the_published_config(guidance):
    """FLUX.1 dev's / schnell's full-size transformer (on the meta device: shapes only) written in BFL's
    layout reads back as the published config, and converts to exactly its keys and shapes."""
    from diffusers import FluxTransformer2DModel

    from nodes.families.flux import TRANSFORMER
    from nodes.families.flux.files import convert, transformer_config
    from nodes.families.flux.tiny import transformer_to_original

    published = {**TRANSFORMER, "guidance_embeds": guidance}
    with torch.device("meta"):
        model = FluxTransformer2DModel(**published)
    state = model.state_dict()
    original = transformer_to_original(state)
    # weights and biases: q, k, v fused twice per double block (-8), with the MLP input per single block (-6)
    assert len(original) == len(state) - 19 * 8 - 38 * 6
    config = transformer_config(original)
    assert config == {**published, "out_channels": None}
    back = convert(dict(original), families.family("flux").denoiser_converter)
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in state.items()}

"""Flux.2 Dev and Klein (issue 22): declarations, ComfyUI's single files (round trip through diffusers'
own converter), the Mistral and Qwen3 prompt encodings, Flux2Scheduler, and ComfyUI graphs from the
single files against Flux2Pipeline / Flux2KleinPipeline on the same tiny weights given ComfyUI's noise
and sigmas. Tiny: 32 px (2 x 2 tokens), 3 steps, batch 2."""
import numpy as np
import pytest
import torch

import nodes.families as families
from nodes.families.flux2 import DEV_TEMPLATE, SYSTEM_MESSAGE
from nodes.families.flux2.tiny import build_pipeline, comfy_files, write_comfy_files

SIZE, STEPS, SEED = 32, 3, 42


@pytest.fixture(scope="module")
def dev():
    return build_pipeline("dev", 0)


@pytest.fixture(scope="module")
def klein():
    return build_pipeline("klein", 0)


def test_the_declarations_and_the_loader_types():
    assert families.family_of_clip_kinds(["mistral3_24b"], "flux2") == "flux2"
    assert families.family_of_clip_kinds(["qwen3_4b"], "flux2") == "flux2_klein"
    assert families.family_of_clip_kinds(["qwen3_4b"], "lumina2") == "zimage"  # Z-Image keeps its Qwen3
    assert families.family_of_clip_kinds(["qwen3_8b"], "flux2") == "flux2_klein9b"  # Klein 9B's Qwen3-8B


def test_qwen3_files_are_told_apart_by_size():
    """ComfyUI's kinds: Qwen3-8B (width 4096) is "qwen3_8b", the 4B (2560) "qwen3_4b"; shapes only (meta)."""
    from nodes.loading.encoders import encoder_file

    def qwen3(width):
        return {"model.embed_tokens.weight": torch.empty(151936, width, device="meta"),
                "model.layers.0.self_attn.q_norm.weight": torch.empty(128, device="meta")}

    assert encoder_file(qwen3(2560)).kind == "qwen3_4b" and encoder_file(qwen3(4096)).kind == "qwen3_8b"
    for name in ("flux2", "flux2_klein"):
        declared = families.family(name)
        assert (declared.latent.channels, declared.latent.downscale, declared.latent.scale) == (128, 16, 1.0)
        assert declared.sampling.multiplier == 1.0 and abs(np.log(declared.sampling.shift) - 2.02) < 1e-12


@pytest.mark.parametrize("variant", ["dev", "klein"])
def test_comfyuis_single_files_hold_the_same_weights(variant, dev, klein, tmp_path):
    """The BFL-layout transformer converts back (diffusers' converter) to the exact diffusers weights;
    the registry tells Dev (guidance embedding) from Klein; Loom's file readers rebuild every part."""
    from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers

    from nodes.families.flux2.files import transformer_from_file
    from nodes.families.flux2.vae import vae_from_file
    from nodes.loading.checkpoints import load_text_encoder

    pipe = dev if variant == "dev" else klein
    files = comfy_files(pipe)
    original = files["transformer"]
    assert "double_blocks.0.img_attn.qkv.weight" in original and "single_blocks.0.linear1.weight" in original
    back = convert_flux2_transformer_checkpoint_to_diffusers(dict(original))
    expected = pipe.transformer.state_dict()
    assert back.keys() == expected.keys() and all(torch.equal(back[k], expected[k]) for k in expected)
    name = "flux2" if variant == "dev" else "flux2_klein"
    assert families.family_of_unet_state_dict({"model.diffusion_model." + k: v for k, v in original.items()}) == name
    assert dict(transformer_from_file(original).config) == dict(pipe.transformer.config)
    vae = vae_from_file(files["vae"])
    assert all(torch.equal(v, pipe.vae.state_dict()[k]) for k, v in vae.state_dict().items())
    written = write_comfy_files(tmp_path, pipe=pipe, variant=variant)
    kind, tokenizer, encoder = load_text_encoder(written[next(n for n in written if "text_encoders" in n)], "cpu",
                                                 torch.float32)
    assert kind == ("mistral3_24b" if variant == "dev" else "qwen3_4b")
    text = DEV_TEMPLATE.format("a red cat, é")  # Dev: the tokenizer is the file's own tekken.json (as ComfyUI's)
    assert tokenizer(text, add_special_tokens=False).input_ids == pipe.tokenizer(text, add_special_tokens=False).input_ids
    assert all(torch.equal(v, pipe.text_encoder.state_dict()[k]) for k, v in encoder.state_dict().items())


def test_devs_prompt_is_the_pipelines_unpadded_then_zeros_in_front(dev):
    """Mistral: Loom's tokens (ComfyUI's template after <s>) and stacked layers 10/20/30 equal the
    pipeline's encoding of the same prompt when it needs no padding; ComfyUI's model then pads the
    conditioning with zeros in front to 512 tokens."""
    from diffusers import Flux2Pipeline

    from nodes.families.flux2.files import encode_dev

    assert SYSTEM_MESSAGE == __import__("diffusers.pipelines.flux2.system_messages", fromlist=["x"]).SYSTEM_MESSAGE
    ours = encode_dev(dev.tokenizer, dev.text_encoder, "a red cat")
    count = 1 + len(dev.tokenizer(DEV_TEMPLATE.format("a red cat"), add_special_tokens=False).input_ids)
    theirs = Flux2Pipeline._get_mistral_3_small_prompt_embeds(dev.text_encoder, dev.tokenizer, "a red cat",
                                                              max_sequence_length=count)
    assert ours.shape == (1, 512, 48) and torch.equal(ours[:, -count:], theirs)
    assert not ours[:, :-count].any()


def test_flux2_scheduler_uses_the_pipelines_mu():
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    from nodes.comfy.flux2 import empirical_mu, flux2_sigmas

    for tokens, steps in ((4, 3), (4096, 20), (5000, 8)):
        assert empirical_mu(tokens, steps) == compute_empirical_mu(tokens, steps)
    sigmas = flux2_sigmas(4, 1024, 1024)
    assert sigmas.shape == (5,) and float(sigmas[0]) == 1.0 and float(sigmas[-1]) == 0.0
    assert bool((sigmas[:-1] > sigmas[1:]).all())


class ComfyFlowEuler:
    """ComfyUI's euler on a flow model as a diffusers scheduler (from ComfyUI's rules, not Loom's code):
    the given sigmas then 0; denoised = x - sigma * v; an Euler step on (x - denoised) / sigma."""
    order = 1
    config = {}

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
        self.sigmas = torch.cat([torch.tensor(sigmas, dtype=torch.float32), torch.zeros(1)])
        self.timesteps = self.sigmas[:-1] * 1000  # the pipeline feeds the transformer timesteps / 1000
        self.index = 0

    def set_begin_index(self, index=0):
        self.index = index

    def step(self, velocity, timestep, sample, return_dict=False):
        s, s_next = self.sigmas[self.index], self.sigmas[self.index + 1]
        denoised = sample - velocity * s
        self.index += 1
        return (sample + (sample - denoised) / s * (s_next - s),)


def _loom(tmp_path_factory, pipe, variant):
    from graph import Env, Loom

    models = tmp_path_factory.mktemp(f"flux2_{variant}_models")
    write_comfy_files(models, pipe=pipe, variant=variant)
    data = tmp_path_factory.mktemp(f"flux2_{variant}_data")
    loom = Loom(Env.from_data_dir(data, models_dir=models, device="cpu", dtype="float32"))
    return loom, data


@pytest.fixture(scope="module")
def dev_loom(dev, tmp_path_factory):
    return _loom(tmp_path_factory, dev, "dev")


@pytest.fixture(scope="module")
def klein_loom(klein, tmp_path_factory):
    return _loom(tmp_path_factory, klein, "klein")


def graph(unet: str, clip: str, prompt: str, guider: dict, reference: str | None = None) -> dict:
    """ComfyUI's Flux.2 template graph (image_flux2 / image_flux2_klein_*): loaders on the templates' file
    names, EmptyFlux2LatentImage, Flux2Scheduler, RandomNoise, KSamplerSelect euler, SamplerCustomAdvanced,
    VAEDecode; optionally a reference image through VAEEncode + ReferenceLatent on both sides."""
    g = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": clip, "type": "flux2", "device": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "flux2-vae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": prompt}},
        "6": {"class_type": "EmptyFlux2LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 2}},
        "7": {"class_type": "Flux2Scheduler", "inputs": {"steps": STEPS, "width": SIZE, "height": SIZE}},
        "8": {"class_type": "RandomNoise", "inputs": {"noise_seed": SEED}},
        "9": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "11": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["8", 0], "guider": ["10", 0],
               "sampler": ["9", 0], "sigmas": ["7", 0], "latent_image": ["6", 0]}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["3", 0]}},
    }
    g["10"] = guider
    if reference:
        g["20"] = {"class_type": "LoadImage", "inputs": {"image": reference}}
        g["21"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["3", 0]}}
        for side in [k for k in ("positive", "negative", "conditioning") if k in guider["inputs"]]:
            node = "22" if side != "negative" else "23"
            g[node] = {"class_type": "ReferenceLatent", "inputs": {"conditioning": guider["inputs"][side],
                                                                    "latent": ["21", 0]}}
            guider["inputs"][side] = [node, 0]
    return g


def _reference_image(data) -> str:
    from PIL import Image

    rng = np.random.default_rng(3)
    side = 64  # the pipeline refuses references under 64 px
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(data / "input" / "ref.png")
    return "ref.png"


def _comfy_start():
    from nodes.comfy.flux2 import flux2_sigmas
    from nodes.comfy.ksampling.noise import prepare_noise

    return prepare_noise((2, 128, SIZE // 16, SIZE // 16), SEED), flux2_sigmas(STEPS, SIZE, SIZE)


def _reference_pipeline(cls, pipe, **options):
    reference = cls(scheduler=ComfyFlowEuler(), vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                    transformer=pipe.transformer, **options)
    reference.set_progress_bar_config(disable=True)
    return reference


# Tolerance 1e-5 on pixels in 0..1, measured 0 in all four tests: ComfyUI feeds the transformer sigma, the
# pipeline (1000 sigma) / 1000, which float32 may round by an ulp for other sigmas; the rest runs the same ops.
TOLERANCE = 1e-5
OUTPUTS = {}  # txt2img images by variant: an edit must differ from them (the reference is used)


@pytest.mark.parametrize("edit", [False, True], ids=["txt2img", "edit"])
def test_klein_graph_matches_flux2_klein_pipeline(klein, klein_loom, edit):
    """Klein base: CFGGuider (cfg 4, negative ""), prompts padded to 512 tokens on both sides."""
    from diffusers import Flux2KleinPipeline
    from PIL import Image

    from tests._sd import run_node

    loom, data = klein_loom
    reference = _reference_image(data) if edit else None
    guider = {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0],
                                                     "cfg": 4.0}}
    g = graph("flux-2-klein-base-4b.safetensors", "qwen_3_4b.safetensors", "a red cat", guider, reference)
    g["5"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": ""}}
    ours = run_node(loom, g, "12").numpy()
    noise, sigmas = _comfy_start()
    options = {"image": Image.open(data / "input" / reference)} if edit else {}
    theirs = _reference_pipeline(Flux2KleinPipeline, klein)(
        prompt="a red cat", num_images_per_prompt=2, guidance_scale=4.0, latents=noise, height=SIZE, width=SIZE,
        num_inference_steps=STEPS, sigmas=sigmas[:-1].tolist(), max_sequence_length=512, output_type="np",
        **options).images
    difference = float(np.abs(ours - theirs).max())
    print(f"klein {'edit' if edit else 'txt2img'}: max abs pixel difference {difference:.3g}")
    assert ours.shape == (2, SIZE, SIZE, 3) and difference < TOLERANCE, difference
    if not edit:
        OUTPUTS["klein"] = ours
    elif "klein" in OUTPUTS:  # after the txt2img case (parametrize order): the reference changed the images
        assert float(np.abs(ours - OUTPUTS["klein"]).max()) > 1e-3
    assert float(np.abs(ours[0] - ours[1]).max()) > 1e-3  # two images, not one twice


@pytest.mark.parametrize("edit", [False, True], ids=["txt2img", "edit"])
def test_dev_graph_matches_flux2_pipeline(dev, dev_loom, edit):
    """Dev: BasicGuider with FluxGuidance 4 (embedded guidance). The pipeline is given Loom's prompt
    embeddings (ComfyUI pads Mistral's with zeros, the pipeline with pad tokens: the encoding itself is
    compared above)."""
    from diffusers import Flux2Pipeline
    from PIL import Image

    from nodes.families.flux2.files import encode_dev
    from tests._sd import run_node

    loom, data = dev_loom
    reference = _reference_image(data) if edit else None
    guider = {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["5", 0]}}
    g = graph("flux2_dev_fp8mixed.safetensors", "mistral_3_small_flux2_bf16.safetensors", "a red cat", guider,
              reference)
    g["5"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": 4.0}}
    if edit:  # the template's order: FluxGuidance, then ReferenceLatent
        g["22"]["inputs"]["conditioning"], g["10"]["inputs"]["conditioning"] = ["5", 0], ["22", 0]
    ours = run_node(loom, g, "12").numpy()
    noise, sigmas = _comfy_start()
    embeds = encode_dev(dev.tokenizer, dev.text_encoder, "a red cat")
    options = {"image": Image.open(data / "input" / reference)} if edit else {}
    theirs = _reference_pipeline(Flux2Pipeline, dev)(
        prompt_embeds=embeds, num_images_per_prompt=2, guidance_scale=4.0, latents=noise, height=SIZE, width=SIZE,
        num_inference_steps=STEPS, sigmas=sigmas[:-1].tolist(), output_type="np", **options).images
    difference = float(np.abs(ours - theirs).max())
    print(f"dev {'edit' if edit else 'txt2img'}: max abs pixel difference {difference:.3g}")
    assert ours.shape == (2, SIZE, SIZE, 3) and difference < TOLERANCE, difference
    if not edit:
        OUTPUTS["dev"] = ours
    elif "dev" in OUTPUTS:  # after the txt2img case (parametrize order): the reference changed the images
        assert float(np.abs(ours - OUTPUTS["dev"]).max()) > 1e-3
    assert float(np.abs(ours[0] - ours[1]).max()) > 1e-3


@pytest.mark.parametrize("variant", ["dev", "klein"])
def test_a_diffusers_folder_loads_and_encodes_as_the_single_files(variant, dev, klein, tmp_path):
    """The pipeline's save_pretrained folder: recognised, its VAE in Loom's latent convention, its text
    encoder (AutoModel / AutoTokenizer, as published folders hold them) encoding as the files do."""
    from nodes.families import family_of_folder, runtime_of
    from nodes.families.flux2.files import encode_dev, encode_klein
    from nodes.loading.bundles import Clip
    from nodes.loading.checkpoints import load_checkpoint

    pipe = dev if variant == "dev" else klein
    pipe.save_pretrained(tmp_path / variant, safe_serialization=True)
    name = "flux2" if variant == "dev" else "flux2_klein"
    assert family_of_folder(tmp_path / variant) == name
    parts = load_checkpoint(tmp_path / variant, "cpu", torch.float32)
    assert parts.family == name and type(parts.vae).__name__ == "Flux2VAE"
    (cond,) = runtime_of(name).encode(Clip(parts.tokenizer, parts.text_encoder, None, None, name), "a red cat")
    encode = encode_dev if variant == "dev" else encode_klein
    assert torch.equal(cond.embeds, encode(pipe.tokenizer, pipe.text_encoder, "a red cat"))


def test_a_diffusers_folder_samples_at_the_asked_size(klein, tmp_path):
    """A folder through CheckpointLoaderSimple: the LATENT's scale is the VAE's times Flux.2's 2x2
    patching (it was the VAE's alone, so KSampler remade an empty 32 px latent at 64 px)."""
    from graph import Env, Loom

    klein.save_pretrained(tmp_path / "models" / "klein-folder", safe_serialization=True)
    loom = Loom(Env.from_data_dir(tmp_path / "data", models_dir=tmp_path / "models", device="cpu", dtype="float32"))
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "klein-folder"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red cat"}},
        "3": {"class_type": "EmptyFlux2LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0],
                                                   "latent_image": ["3", 0], "seed": SEED, "steps": 1, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
    }
    result = loom.run(loom.validate(graph, outputs=["4", "5"]))
    assert result.ok, result.error
    assert tuple(result.values["4"][0].samples.shape) == (1, 128, SIZE // 16, SIZE // 16)
    assert tuple(result.values["5"][0].shape) == (1, SIZE, SIZE, 3)


def test_a_loaded_model_samples_as_comfyuis_flux2_without_a_patch(klein_loom):
    """UNETLoader's MODEL alone: ComfyUI's Flux2 sampling (ModelSamplingFlux shift 2.02 = flow shift
    e^2.02, timestep = sigma), so KSampler runs on it."""
    from nodes.comfy.ksampling.denoiser import FlowSchedule
    from nodes.comfy.ksampling.ksampler import model_sampling
    from tests._sd import run_node

    loom, _ = klein_loom
    model = run_node(loom, {"1": {"class_type": "UNETLoader", "inputs": {
        "unet_name": "flux-2-klein-4b.safetensors", "weight_dtype": "default"}}}, "1")
    ms = model_sampling(model)
    assert model.family == "flux2_klein" and isinstance(ms, FlowSchedule) and ms.multiplier == 1.0
    assert abs(ms.shift - np.exp(2.02)) < 1e-9
    g = graph("flux-2-klein-4b.safetensors", "qwen_3_4b.safetensors", "a red cat", {})
    for key in ("7", "8", "9", "10", "11"):
        del g[key]
    g["5"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": ""}}
    g["11"] = {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": SEED, "steps": 2, "cfg": 1.0,
               "sampler_name": "euler", "scheduler": "simple", "positive": ["4", 0], "negative": ["5", 0],
               "latent_image": ["6", 0], "denoise": 1.0}}
    image = run_node(loom, g, "12")
    assert image.shape == (2, SIZE, SIZE, 3) and float(image.std()) > 0.01


def test_empty_flux2_latent_floors_its_sides_as_comfyui(klein_loom):
    """(B, 128, H // 16, W // 16) zeros, also for sides an edit template takes from a scaled image."""
    from tests._sd import run_node

    latent = run_node(klein_loom[0], {"1": {"class_type": "EmptyFlux2LatentImage",
                                            "inputs": {"width": 102, "height": 70, "batch_size": 2}}}, "1")
    assert latent["samples"].shape == (2, 128, 4, 6) and not latent["samples"].any()
    assert (latent.width, latent.height) == (96, 64)

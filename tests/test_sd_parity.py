"""The SD nodes against diffusers' own pipelines on the tiny model: the same pixels, exactly."""
import numpy as np
import pytest
import torch
from PIL import Image

from tests._sd import CFG, SEED, STEPS, as_array, make_loom, pin_threads, pipeline_scheduler, prompts, run_node, workflow


@pytest.fixture(scope="module")
def loom(tiny_sd, tmp_path_factory):
    pin_threads()
    return make_loom(tmp_path_factory.mktemp("data"), tiny_sd.parent)


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.base_config = pipe.scheduler.config
    return pipe


def reference(pipe, kind, wf, **kwargs):
    pipe.scheduler = pipeline_scheduler(pipe.base_config, kind)
    prompt, negative = prompts(wf)
    kwargs.setdefault("generator", torch.manual_seed(SEED))
    return pipe(prompt, negative_prompt=negative, num_inference_steps=STEPS, guidance_scale=CFG,
                output_type="np", **kwargs).images


@pytest.mark.parametrize("kind", ["ddim", "pndm", "euler", "euler_ancestral", "dpmpp_2m"])
def test_txt2img_matches_pipeline(loom, pipe, kind):
    wf = workflow("txt2img", **{"6": {"kind": kind}})
    image = as_array(run_node(loom, wf))
    expected = reference(pipe, kind, wf)
    assert image.shape == expected.shape == (1, 64, 64, 3)
    assert np.abs(image - expected).max() == 0.0


@pytest.fixture(scope="module")
def input_image(loom):
    """A 64x64 RGB picture with some structure, in the input folder."""
    y, x = np.mgrid[0:64, 0:64]
    array = np.stack([x * 4, y * 4, ((x // 8 + y // 8) % 2) * 200 + 30], -1).astype(np.uint8)
    Image.fromarray(array).save(loom.env.input_dir / "example.png")
    return Image.open(loom.env.input_dir / "example.png").convert("RGB")


@pytest.mark.parametrize("kind, batch", [("ddim", 1), ("euler_ancestral", 1), ("dpmpp_2m", 1), ("ddim", 2),
                                         ("dpmpp_2m_karras", 2), ("euler_ancestral", 2), ("lms", 2)])
def test_img2img_matches_pipeline(loom, pipe, input_image, kind, batch):
    """Batch 2 from one input image too: the repeated latents keep the VAE output's memory layout
    (channels-last), as the pipeline's, so the UNet rounds the same way and the pixels are equal."""
    from diffusers import StableDiffusionImg2ImgPipeline

    steps = STEPS if batch == 1 else 8
    wf = workflow("img2img", **{"6": {"kind": kind, "strength": 0.6, "steps": steps}, "7": {"batch_size": batch}})
    image = as_array(run_node(loom, wf))
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    img2img.scheduler = pipeline_scheduler(pipe.base_config, kind)
    prompt, negative = prompts(wf)
    generator = torch.manual_seed(SEED) if batch == 1 else [torch.Generator().manual_seed(SEED + i) for i in range(batch)]
    expected = img2img(prompt, image=input_image, strength=0.6, negative_prompt=negative, num_inference_steps=steps,
                       guidance_scale=CFG, num_images_per_prompt=batch, generator=generator, output_type="np").images
    assert image.shape == expected.shape == (batch, 64, 64, 3)
    assert np.abs(image - expected).max() == 0.0


def test_guidance_follows_u_plus_g_times_c_minus_u_for_every_g(loom, pipe):
    """g = 1 is the prompt alone (one UNet pass, the pipeline's pixels); g = 0 is the negative
    prompt's own image (u + 0 * (c - u)), where the pipeline, which skips guidance for every g <= 1,
    would give the prompt's image instead."""
    steps = 6

    def image(guidance, positive="4"):
        return as_array(run_node(loom, workflow("txt2img", **{"6": {"kind": "euler", "steps": steps},
                                                              "8": {"guidance_scale": guidance,
                                                                    "positive": [positive, 0]}})))

    one = image(1.0)
    pipe.scheduler = pipeline_scheduler(pipe.base_config, "euler")
    prompt, negative = prompts(workflow("txt2img"))
    expected = pipe(prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=1.0,
                    generator=torch.manual_seed(SEED), output_type="np").images
    assert np.abs(one - expected).max() == 0.0
    zero = image(0.0)
    negative_alone = image(1.0, positive="5")
    # The same prediction, from a batch-2 UNet call instead of a batch-1 call: the last bits only.
    assert np.abs(zero - negative_alone).max() < 1e-4
    assert np.abs(zero - one).max() > 0.01
    half = image(0.5)
    assert np.abs(half - zero).max() > 1e-3 and np.abs(half - one).max() > 1e-3  # in between


@pytest.mark.parametrize("kind", ["dpmpp_2m", "euler_ancestral"])
def test_unet_step_chain_equals_sample(loom, kind):
    """20 UNetStep nodes carry the multistep history and the generator stream between them."""
    chained = as_array(run_node(loom, workflow("step_by_step", **{"6": {"kind": kind}})))
    looped = as_array(run_node(loom, workflow("txt2img", **{"6": {"kind": kind}})))
    assert np.abs(chained - looped).max() == 0.0


def test_prompt_switch_matches_pipeline_callback(loom, pipe):
    """Two chained Sample nodes (steps 0-9 prompt A, 10-19 prompt B) equal the pipeline whose
    prompt embeddings are swapped by a step-end callback after step 9."""
    wf = workflow("prompt_switch")
    image = as_array(run_node(loom, wf))
    second = wf["20"]["inputs"]["text"]
    _, negative = prompts(wf)
    switched, _ = pipe.encode_prompt(second, "cpu", 1, True, negative)
    negative_embeds = pipe.encode_prompt(second, "cpu", 1, True, negative)[1]

    def swap(pipeline, i, t, tensors):
        if i == 9:
            return {"prompt_embeds": torch.cat([negative_embeds, switched])}
        return {}

    expected = reference(pipe, "dpmpp_2m", wf, callback_on_step_end=swap,
                         callback_on_step_end_tensor_inputs=["prompt_embeds"])
    assert np.abs(image - expected).max() == 0.0
    # The same prompt on both halves is one uninterrupted Sample; the switch did change the picture.
    unswitched = as_array(run_node(loom, workflow("txt2img", **{"6": {"kind": "dpmpp_2m"}})))
    same = workflow("prompt_switch", **{"20": {"text": prompts(wf)[0]}})
    assert np.abs(as_array(run_node(loom, same)) - unswitched).max() == 0.0
    assert np.abs(image - unswitched).max() > 0.0


def test_clip_skip(loom, pipe, tiny_sd):
    """clip_skip 1 equals the same encoder cut one layer short (its last layer then the final norm),
    and the image equals the pipeline given those embeddings."""
    from transformers import CLIPTextModel

    wf = workflow("txt2img", **{"4": {"clip_skip": 1}, "5": {"clip_skip": 1}, "6": {"kind": "euler"}})
    cond = run_node(loom, wf, "4")[0].embeds
    full = pipe.text_encoder
    short = CLIPTextModel.from_pretrained(tiny_sd / "text_encoder",
                                          num_hidden_layers=full.config.num_hidden_layers - 1).eval()
    ids = pipe.tokenizer(prompts(wf)[0], padding="max_length", max_length=77, truncation=True,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        expected = short(ids)[0]
        plain = full(ids)[0]
    assert torch.equal(cond, expected)
    assert not torch.allclose(cond, plain)
    negative = run_node(loom, wf, "5")[0].embeds
    image = as_array(run_node(loom, wf))
    pipe.scheduler = pipeline_scheduler(pipe.base_config, "euler")
    reference_image = pipe(prompt_embeds=cond, negative_prompt_embeds=negative, num_inference_steps=STEPS,
                           guidance_scale=CFG, generator=torch.manual_seed(SEED), output_type="np").images
    assert np.abs(image - reference_image).max() == 0.0


def test_batch_is_reproducible_per_image(loom, pipe):
    """Image i of a batch uses seed + i: its noise is that of the image made alone with seed + i,
    and the batch equals the pipeline given one generator per image."""
    steps = 6  # enough to show the ancestral noise stream per image, short for the suite's budget
    wf = workflow("txt2img", **{"6": {"kind": "euler_ancestral", "steps": steps}, "7": {"batch_size": 2, "seed": SEED}})
    noise = run_node(loom, wf, "7").noise
    alone = run_node(loom, workflow("txt2img", **{"7": {"seed": SEED + 1}}), "7").noise
    assert torch.equal(noise[1:], alone)
    batch = as_array(run_node(loom, wf))
    pipe.scheduler = pipeline_scheduler(pipe.base_config, "euler_ancestral")
    prompt, negative = prompts(wf)
    expected = pipe(prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=CFG,
                    num_images_per_prompt=2, generator=[torch.Generator().manual_seed(SEED + i) for i in range(2)],
                    output_type="np").images
    assert np.abs(batch - expected).max() == 0.0
    single = as_array(run_node(loom, workflow("txt2img", **{"6": {"kind": "euler_ancestral", "steps": steps},
                                                            "7": {"seed": SEED + 1}})))
    # A batch of two runs the UNet on other shapes, so rounding may differ in the last bits only.
    assert np.abs(batch[1:] - single).max() < 1e-4


@pytest.mark.parametrize("kind", ["ddpm", "lms", "heun", "dpmpp_2m_karras", "unipc"])
def test_other_kinds_match_pipeline_in_few_steps(loom, pipe, kind):
    """The remaining scheduler kinds, 6 steps each to keep the suite short."""
    wf = workflow("txt2img", **{"6": {"kind": kind, "steps": 6}})
    image = as_array(run_node(loom, wf))
    pipe.scheduler = pipeline_scheduler(pipe.base_config, kind)
    prompt, negative = prompts(wf)
    expected = pipe(prompt, negative_prompt=negative, num_inference_steps=6, guidance_scale=CFG,
                    generator=torch.manual_seed(SEED), output_type="np").images
    assert np.abs(image - expected).max() == 0.0

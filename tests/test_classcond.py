"""The class-conditional example: data set, model folders, sampler (against diffusers' own pipelines),
the nodes through the engine, the trainer node's progress and the shipped model."""
import json
from functools import partial
from pathlib import Path

import pytest
import torch
from PIL import Image
from diffusers import DDIMPipeline, DDPMPipeline, UNet2DModel

from graph import Env, Loom, Registry
from graph.node import In, Node, Out
from nodes.classcond import model as cm
from nodes.classcond.data import CLASS_NAMES, make_batch
from nodes.classcond.nodes import ALL_CLASSES, SHIPPED, SHIPPED_DIR
from nodes.classcond.sample import SAMPLERS, make_scheduler, sample
from nodes.classcond.train import TrainConfig, train


class Capture(Node):
    """Test output node: hands the images it receives back in the run result."""
    output_node = True
    images = In("IMAGE")
    outputs = (Out("IMAGE"),)

    def run(self, ctx):
        return self.images


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny model trained a few steps (with the unconditional embedding), saved in a models folder."""
    models = tmp_path_factory.mktemp("models")
    cfg = TrainConfig(steps=3, batch=8, channels=(8, 16), save_every=0, seed=3)
    train(cfg, models / "tiny")
    return models


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return cm.load(tiny_folder / "tiny")


@pytest.fixture
def loom(tiny_folder, tmp_path):
    registry = Registry()
    registry.add_package("nodes")
    registry.add(Capture)
    return Loom(Env.from_data_dir(tmp_path, models_dir=tiny_folder, device="cpu"), registry=registry)


def sampler_prompt(model_name="tiny", **inputs):
    return {
        "1": {"class_type": "LoadClassConditionalModel", "inputs": {"model_name": model_name}},
        "2": {"class_type": "ClassConditionalSampler", "inputs": {
            "model": ["1", 0], "class_label": "ring", "count": 2, "seed": 5, "sampler": "ddim", "steps": 3,
            "guidance": 2.0, **inputs}},
        "3": {"class_type": "Capture", "inputs": {"images": ["2", 0]}},
    }


def run_images(loom, prompt):
    result = loom.run(prompt)
    assert result.status == "success", result.error
    (images,) = result.values["3"]
    return images


# --- data set ------------------------------------------------------------------------------------

def test_data_shapes_range_labels_and_determinism():
    images, labels = make_batch(50, torch.Generator().manual_seed(0))
    assert images.shape == (50, 1, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (50,) and labels.dtype == torch.int64
    assert 0 <= images.min() and images.max() <= 1 and set(labels.tolist()) <= set(range(10))
    again, _ = make_batch(50, torch.Generator().manual_seed(0))
    assert torch.equal(images, again)
    asked = torch.tensor([3, 3, 7])
    assert make_batch(3, labels=asked)[1].tolist() == [3, 3, 7]
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        make_batch(1, labels=torch.tensor([10]))


@pytest.fixture(scope="module")
def classifier():
    """A small CNN trained briefly on fresh samples of the data set (never on generated images)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 5, stride=2, padding=2), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveMaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(150):
        x, y = make_batch(64, gen)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def test_classes_are_distinguishable(classifier):
    """The classifier recognises held-out samples: every class has a look."""
    net = classifier
    x, y = make_batch(500, torch.Generator().manual_seed(2))
    with torch.no_grad():
        predicted = net(x).argmax(1)
    per_class = [(predicted[y == k] == k).float().mean().item() for k in range(10)]
    assert min(per_class) > 0.7, dict(zip(CLASS_NAMES, per_class))


# --- sampler -------------------------------------------------------------------------------------

def _with_labels(unet, labels):
    """The UNet as diffusers' unconditional pipelines call it (`unet(x, t)`), with fixed class labels."""
    unet.forward = partial(UNet2DModel.forward.__get__(unet), class_labels=labels)
    return unet


@pytest.mark.parametrize("kind, pipeline_cls", [("ddim", DDIMPipeline), ("ddpm", DDPMPipeline)])
def test_sampler_matches_diffusers_pipeline(tiny, tiny_folder, kind, pipeline_cls):
    """Without guidance our loop is diffusers' DDIM/DDPM pipeline with the class labels added."""
    labels = torch.tensor([1, 4, 9])
    ours = sample(tiny, labels, seed=11, kind=kind, steps=6, guidance=1.0)
    unet = _with_labels(cm.load(tiny_folder / "tiny").unet, labels)
    pipe = pipeline_cls(unet=unet, scheduler=make_scheduler(tiny, kind))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(batch_size=3, generator=torch.Generator().manual_seed(11), num_inference_steps=6,
                  output_type="np", **SAMPLERS[kind][2]).images  # ddim: use_clipped_model_output
    torch.testing.assert_close(ours.permute(0, 2, 3, 1), torch.from_numpy(theirs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_every_sampler_kind_is_reproducible(tiny, kind):
    labels = torch.tensor([0, 5])
    first = sample(tiny, labels, seed=3, kind=kind, steps=4, guidance=2.0)
    assert first.shape == (2, 1, 32, 32) and torch.isfinite(first).all()
    assert torch.equal(first, sample(tiny, labels, seed=3, kind=kind, steps=4, guidance=2.0))


def test_sampler_is_deterministic_per_seed_and_honours_the_class(loom):
    first = run_images(loom, sampler_prompt())
    assert first.shape == (2, 32, 32, 3) and first.dtype == torch.float32
    assert 0 <= first.min() and first.max() <= 1
    loom.executor.cache.clear()
    assert torch.equal(first, run_images(loom, sampler_prompt()))
    assert not torch.allclose(first, run_images(loom, sampler_prompt(seed=6)), atol=1e-3)
    # Same seed and noise, another class: only the class embedding differs, and it changes the images.
    assert not torch.allclose(first, run_images(loom, sampler_prompt(class_label="dots")), atol=1e-3)


def test_all_classes_gives_count_per_class_in_class_order(loom, tiny):
    images = run_images(loom, sampler_prompt(class_label=ALL_CLASSES, count=2, guidance=1.0))
    assert images.shape == (20, 32, 32, 3)
    labels = torch.arange(10).repeat_interleave(2)
    expected = sample(tiny, labels, seed=5, kind="ddim", steps=3, guidance=1.0)
    torch.testing.assert_close(images, expected.permute(0, 2, 3, 1).repeat(1, 1, 1, 3))


def test_guidance_mixes_conditional_and_unconditional(tiny):
    """Guidance g extrapolates from the unconditional towards the conditional prediction."""
    labels = torch.tensor([2, 6])
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    scheduler = make_scheduler(tiny, "ddim")
    scheduler.set_timesteps(1)
    t = scheduler.timesteps[0]
    with torch.no_grad():
        cond = tiny.unet(x, t, class_labels=labels).sample
        uncond = tiny.unet(x, t, class_labels=torch.full_like(labels, tiny.null_class)).sample
    assert tiny.null_class == 10 and not torch.allclose(cond, uncond)
    eps = uncond + 3.0 * (cond - uncond)
    expected = (scheduler.step(eps, t, x, use_clipped_model_output=True).prev_sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(sample(tiny, labels, seed=0, steps=1, guidance=3.0), expected)


def class_accuracy(classifier, model, kind, steps, per_class=1, guidance=8.0, seed=0):
    labels = torch.arange(len(CLASS_NAMES)).repeat_interleave(per_class)
    images = sample(model, labels, seed, kind, steps, guidance)
    with torch.no_grad():
        return (classifier(images).argmax(1) == labels).float().mean().item()


def test_ddim_stays_class_correct_under_strong_guidance(classifier):
    """DDIM re-derives its noise estimate from the clipped x0: without that, guidance 8 on the
    shipped model gave 15% class-correct images (ddpm: 100%)."""
    assert class_accuracy(classifier, cm.load(SHIPPED_DIR), "ddim", steps=20) >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_every_sampler_is_class_correct_at_the_node_defaults(classifier, kind):
    from nodes.classcond.nodes import ClassConditionalSampler

    defaults = {name: ClassConditionalSampler.inputs[name].default for name in ("steps", "guidance")}
    accuracy = class_accuracy(classifier, cm.load(SHIPPED_DIR), kind, defaults["steps"], per_class=3,
                              guidance=defaults["guidance"])
    assert accuracy >= 0.8, (kind, accuracy)


# --- errors ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def three(tiny_folder):
    """A 3-class UNet2DModel folder as diffusers writes it: no class names, no unconditional class."""
    unet = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=8, down_block_types=("DownBlock2D",) * 2,
                       up_block_types=("UpBlock2D",) * 2, num_class_embeds=3)
    unet.save_pretrained(tiny_folder / "three")
    return tiny_folder / "three"


def test_class_not_in_the_model_is_rejected_naming_node_and_input(loom, three):
    # A name the node type knows (another model's class) that this 3-class model lacks: run-time error.
    result = loom.run(sampler_prompt("three", class_label="dots", guidance=1.0))
    assert result.status == "error" and result.error["node_type"] == "ClassConditionalSampler"
    message = result.error["exception_message"]
    assert "ClassConditionalSampler" in message and "'class_label'" in message and "'dots'" in message
    assert "'class 0', 'class 1', 'class 2'" in message
    # A name no model has: rejected at validation, before anything runs.
    v = loom.validate(sampler_prompt("three", class_label="class 7", guidance=1.0))
    (error,) = v.node_errors["2"]["errors"]
    assert error["extra_info"]["input_name"] == "class_label" and error["type"] == "value_not_in_list"
    # An index beyond the classes.
    model = cm.load(three)
    assert model.class_names == ("class 0", "class 1", "class 2") and model.null_class is None
    with pytest.raises(ValueError, match=r"class index 3 is out of range: this model has classes 0..2"):
        model.class_index("3")
    assert model.class_index("2") == 2 and model.class_index("class 1") == 1


def test_guidance_needs_an_unconditional_embedding(loom, three):
    result = loom.run(sampler_prompt("three", class_label="class 1", guidance=2.0))
    assert result.status == "error"
    assert "'guidance'" in result.error["exception_message"] and "must be 1.0" in result.error["exception_message"]


# --- folders and the loader -------------------------------------------------------------------------

def test_loader_lists_and_loads_folder_models(loom, tiny_folder, tiny):
    # A diffusers pipeline layout (unet/ + scheduler/), one level down, with its own class names.
    pipe_dir = tiny_folder / "elsewhere" / "fashion"
    tiny.unet.save_pretrained(pipe_dir / "unet")
    (pipe_dir / "scheduler").mkdir()
    (pipe_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(tiny.scheduler_config))
    names = [f"garment {i}" for i in range(10)]
    (pipe_dir / "class_names.json").write_text(json.dumps(names))
    (tiny_folder / "not-a-model").mkdir(exist_ok=True)
    info = loom.registry.get("LoadClassConditionalModel").object_info(loom.env)
    choices = info["input"]["required"]["model_name"][0]
    assert choices[0] == SHIPPED and {"tiny", "elsewhere/fashion"} <= set(choices)
    assert "not-a-model" not in choices
    sampler_choices = loom.registry.get("ClassConditionalSampler").object_info(loom.env)["input"]["required"]
    assert {"garment 3", "ring"} <= set(sampler_choices["class_label"][0])
    images = run_images(loom, sampler_prompt("elsewhere/fashion", class_label="garment 3"))
    expected = run_images(loom, sampler_prompt("tiny", class_label="horizontal stripes"))  # index 3 too
    torch.testing.assert_close(images, expected)


# --- training ---------------------------------------------------------------------------------------

def test_train_node_reports_progress_and_saves_a_loadable_model(tmp_path):
    models = tmp_path / "models"
    registry = Registry()
    registry.add_package("nodes")
    loom = Loom(Env.from_data_dir(tmp_path, models_dir=models, device="cpu"), registry=registry)
    prompt = {"1": {"class_type": "TrainClassConditional", "inputs": {
        "name": "classcond/mini", "steps": 3, "batch_size": 4, "learning_rate": 1e-3, "channels": "8,16",
        "guidance_training": True, "seed": 0}}}
    events = []
    result = loom.run(prompt, emit=lambda e, d: events.append((e, d)))
    assert result.status == "success", result.error
    assert [(d["value"], d["max"]) for e, d in events if e == "progress"] == [(1, 3), (2, 3), (3, 3)]
    assert sorted(p.name for p in (models / "classcond" / "mini").iterdir()) == [
        "class_names.json", "config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"]
    (model,) = result.values["1"]
    assert model.class_names == CLASS_NAMES and model.null_class == 10
    listed = loom.registry.get("LoadClassConditionalModel").object_info(loom.env)["input"]["required"]
    assert "classcond/mini" in listed["model_name"][0]
    bad = dict(prompt["1"]["inputs"], name="../outside", channels="8,x")
    v = loom.validate({"1": {"class_type": "TrainClassConditional", "inputs": bad}})
    assert {e["extra_info"]["input_name"] for e in v.node_errors["1"]["errors"]} == {"name", "channels"}


# --- the shipped model ------------------------------------------------------------------------------

def test_shipped_model_is_small_and_samples_every_class(loom):
    weights = SHIPPED_DIR / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 6_000_000
    model = cm.load(SHIPPED_DIR)
    assert model.class_names == CLASS_NAMES and model.null_class == len(CLASS_NAMES)
    images = run_images(loom, sampler_prompt(SHIPPED, class_label=ALL_CLASSES, count=1, steps=2))
    assert images.shape == (10, 32, 32, 3)


# --- the example workflow ---------------------------------------------------------------------------

def test_class_grid_workflow_renders_a_row_per_class(tmp_path):
    """Runs workflows/class_grid.json (made cheaper: 1 image per class, 2 steps): one grid picture
    with a row per class."""
    loom = Loom(Env.from_data_dir(tmp_path, device="cpu"))
    workflow = json.loads((Path(__file__).parents[1] / "workflows" / "class_grid.json").read_text())
    sampler = next(n for n in workflow["nodes"] if n["type"] == "ClassConditionalSampler")
    assert sampler["widgets_values"][0] == ALL_CLASSES
    sampler["widgets_values"][1], sampler["widgets_values"][5] = 1, 2  # count, steps
    result = loom.run(workflow)
    assert result.status == "success", result.error
    [path] = loom.image_paths(result)
    grid = Image.open(path)
    assert grid.height > 10 * 32 and grid.width >= 32  # ten rows of one 32 px sample, plus titles

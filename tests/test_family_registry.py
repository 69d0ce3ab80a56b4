"""The model-family registry (nodes.families): one declaration per module, consistent with the
classes and converters it names; and the model-file declaration of nodes (graph.node.model_inputs)
that memory management and routing read. Fast: no model is built."""
import importlib
import pkgutil

import pytest

import nodes.families as families
from graph import Combo, Node, Out, Registry, String
from graph.node import model_files, model_inputs
from nodes.families.spec import Family


def test_every_family_module_is_registered_by_its_name():
    declared = {}
    for info in pkgutil.iter_modules(families.__path__):
        found = getattr(importlib.import_module(f"nodes.families.{info.name}"), "FAMILY", None)
        if found is not None:
            declared[found.name] = found
    assert declared and declared == families.REGISTRY
    assert {"sd1", "sd2", "sdxl", "sdxl_refiner"} <= set(declared)
    assert families.FAMILIES == tuple(families.REGISTRY)


@pytest.mark.parametrize("family", families.all_families(), ids=lambda f: f.name)
def test_a_declaration_names_what_exists(family: Family):
    import diffusers
    import transformers
    from diffusers.loaders import single_file_utils

    for name in (family.pipeline, family.denoiser_class, family.vae_class):
        assert hasattr(diffusers, name), name
    if family.denoiser_converter:  # none: the family's single files hold diffusers' keys (Qwen-Image)
        assert callable(getattr(single_file_utils, family.denoiser_converter)), family.denoiser_converter
    for enc in family.text_encoders:
        assert hasattr(transformers, enc.model_class), enc.model_class
        assert hasattr(transformers, enc.tokenizer_class), enc.tokenizer_class
        assert enc.projection == ("WithProjection" in enc.model_class)
    assert {e.slot for e in family.text_encoders} == set(family.tiny.text_encoders)
    assert len({e.slot for e in family.text_encoders}) == len(family.text_encoders)
    assert family.scheduler["_class_name"] and hasattr(diffusers, family.scheduler["_class_name"])
    assert family.sampling.prediction in ("epsilon", "v_prediction", "flow")
    if family.sampling.prediction != "flow":  # the published schedule predicts what the family says
        assert family.scheduler.get("prediction_type", "epsilon") == family.sampling.prediction
    assert family.default_size % family.latent.downscale == 0
    if family.runtime is None:  # SD UNets pool through a projection (SDXL); Flux pools CLIP-L unprojected
        assert family.conditioning.pooled == any(e.projection for e in family.text_encoders)


def test_each_set_of_text_encoder_kinds_names_one_family():
    """Per ComfyUI loader type: two families may share an encoder (Qwen3-4B: Z-Image as "lumina2",
    Flux.2 Klein as "flux2"), the loader's type tells them apart."""
    pairs = [(f.kinds, t) for f in families.all_families() for t in f.clip_types or (None,)]
    assert len(set(pairs)) == len(pairs)
    for family in families.all_families():
        for clip_type in family.clip_types or (None,):
            assert families.family_of_clip_kinds(list(reversed(family.kinds)), clip_type) == family.name
    assert families.family_of_clip_kinds(["clip_h", "clip_l"]) is None


def test_a_new_declaration_is_recognised_and_an_overlapping_one_reported(monkeypatch):
    """What a new family module adds to the registry: its recognisers are asked with the others';
    two families answering yes for the same file is a defect of their declarations, named."""
    from dataclasses import replace

    state = {"model.diffusion_model.x_embedder.weight": None, "text_encoders.t5xxl.x": None}
    new = replace(families.family("sd1"), name="dit", is_checkpoint=lambda sd: "text_encoders.t5xxl.x" in sd)
    monkeypatch.setitem(families.REGISTRY, "dit", new)
    assert families.family_of_state_dict(state) == "dit"
    monkeypatch.setitem(families.REGISTRY, "dit2", replace(new, name="dit2"))
    with pytest.raises(families.UnknownModel, match="fits several families: dit, dit2"):
        families.family_of_state_dict(state)


def test_unknown_family_names_the_known_ones():
    with pytest.raises(families.UnknownModel, match="known: .*sd1, sd2"):  # families sorted by module name
        families.family("sd9")


def test_the_names_of_the_module_before_the_registry_follow_the_declarations():
    for f in families.all_families():
        assert families.VAE_SCALING[f.name] == f.latent.scale
        assert families.SCHEDULERS[f.name] is f.scheduler
        assert families.TEXT_ENCODER_PREFIXES[f.name] == {e.slot: (e.prefix, e.layout) for e in f.text_encoders}
    assert families.SD1_SCHEDULER["_class_name"] == "PNDMScheduler"
    assert families.VAE_SCALING[families.SDXL] == 0.13025


# --- nodes declare the models they load ---------------------------------------------------------

class LoadPart(Node):
    category = "advanced/loaders"  # not "loaders": the declaration counts, not the menu
    part_name = Combo(["a.safetensors"], model=True, model_kind="diffusion_models")
    mode = Combo(["x"], default="x")
    outputs = (Out("MODEL", "MODEL"),)


class LoadsNothing(Node):
    category = "loaders"
    text = String("a.safetensors")
    outputs = (Out("STRING", "text"),)


def test_model_inputs_follow_the_declaration_not_the_category():
    assert model_inputs(LoadPart) == {"part_name": "diffusion_models"}
    assert model_inputs(LoadsNothing) == {}


def test_model_files_lists_a_prompts_model_inputs():
    registry = Registry([LoadPart, LoadsNothing])
    prompt = {"1": {"class_type": "LoadPart", "inputs": {"part_name": "a.safetensors", "mode": "x"}},
              "2": {"class_type": "LoadsNothing", "inputs": {"text": "a.safetensors"}},
              "3": {"class_type": "NotInstalled", "inputs": {"ckpt_name": "b.safetensors"}},
              "4": {"class_type": "LoadPart", "inputs": {"part_name": ["9", 0]}}}
    assert model_files(prompt, registry) == {"1": {"part_name": ("diffusion_models", "a.safetensors")},
                                             "4": {"part_name": ("diffusion_models", ["9", 0])}}


def test_every_built_in_loader_declares_its_model_inputs():
    registry = Registry()
    registry.add_package("nodes")
    loaders = [registry[n] for n in registry.names() if "loaders" in registry[n].category]
    assert len(loaders) >= 10
    for cls in loaders:
        assert model_inputs(cls), cls.type_name()
    assert model_inputs(registry["UNETLoader"]) == {"unet_name": "diffusion_models"}
    assert model_inputs(registry["DualCLIPLoader"]) == {"clip_name1": "text_encoders", "clip_name2": "text_encoders"}

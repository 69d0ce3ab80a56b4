"""The model-family registry: one module per family in this package, each declaring `FAMILY`
(a nodes.families.spec.Family: how its models are recognised, their classes and configs, text
encoders, latent format, sampling model, schedule). Adding a family is adding a module (and its
tests); nothing else lists families.

    family("sd2").latent.scale                     # 0.18215
    family(family_of_state_dict(state_dict))       # the recognisers answer with the family's name

| family | text encoders | UNet | VAE scale | scheduler (the published repo's) |
|---|---|---|---|---|
| sd1 | CLIP ViT-L (quick-GELU) | conv attention projections | 0.18215 | PNDM, epsilon |
| sd2 | OpenCLIP ViT-H (GELU, penultimate layer) | linear projections, 64-channel heads | 0.18215 | DDIM, v-prediction (768-v) |
| sdxl | CLIP ViT-L + OpenCLIP bigG (pooled, projected) | text_time added embedding (6 size ids) | 0.13025 | Euler, epsilon |
| sdxl_refiner | OpenCLIP bigG only | text_time with an aesthetic score (5 ids) | 0.13025 | Euler, epsilon |

The recognisers answer by family name (the id bundles carry); `family(name)` gives the declaration.
The module-level constants below (SD1, VAE_SCALING, TEXT_ENCODER_PREFIXES, ...) are the names this
module had before the registry; they are derived from the declarations and kept for their users.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

from ..loading.model_files import has_prefix
from .sd_common import SGM_SD2_PREFIX, UNET_PREFIX, VAE_PREFIX
from .sd2 import V_PRED_NORM_STD
from .spec import Family, UnknownModel

__all__ = ["Family", "UnknownModel", "all_families", "family", "family_of_clip_kinds", "family_of_folder",
           "family_of_state_dict", "family_of_unet_config", "family_of_unet_state_dict", "prediction_type_of",
           "runtime_of", "runtime_of_part", "scheduler_for", "tag_family",
           # the names of the module before the registry
           "DEFAULT_SIZE", "FAMILIES", "SCHEDULERS", "SD1", "SD1_SCHEDULER", "SD2", "SD2_SCHEDULER", "SDXL",
           "SDXL_REFINER", "SDXL_SCHEDULER", "SGM_SD2_PREFIX", "TEXT_ENCODER_PREFIXES", "UNET_PREFIX", "VAE_PREFIX",
           "VAE_SCALING", "V_PRED_NORM_STD", "sd2_prediction_type"]


def _discover() -> dict[str, Family]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        declared = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILY", None)
        if isinstance(declared, Family):
            if declared.name in found:
                raise RuntimeError(f"model family {declared.name!r} is declared twice")
            found[declared.name] = declared
    return found


REGISTRY: dict[str, Family] = _discover()


def all_families() -> tuple[Family, ...]:
    return tuple(REGISTRY.values())


def family(name: str) -> Family:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownModel(f"unknown model family {name!r}; known: {', '.join(REGISTRY)}") from None


def _the_one(matches: list[Family], what: str, none: str) -> str:
    if not matches:
        raise UnknownModel(none)
    if len(matches) > 1:  # the recognisers of two families overlap: a defect of their declarations
        raise UnknownModel(f"{what} fits several families: {', '.join(f.name for f in matches)}")
    return matches[0].name


# --- single files -------------------------------------------------------------------------------

def family_of_state_dict(sd: dict) -> str:
    """The family of a full checkpoint (denoiser + VAE + text encoders) in its single-file layout."""
    if not any(has_prefix(sd, f.denoiser_prefix) for f in all_families()):
        raise UnknownModel("holds no UNet (no 'model.diffusion_model.*' keys): not a Stable Diffusion checkpoint")
    matches = [f for f in all_families() if has_prefix(sd, f.denoiser_prefix) and f.is_checkpoint(sd)]
    return _the_one(matches, "the checkpoint", "holds no text encoder of a known family (for SD 1.x, 2.x or XL: "
                    "no 'cond_stage_model.*' or 'conditioner.embedders.*' keys)")


def family_of_unet_state_dict(sd: dict, prefix: str = UNET_PREFIX) -> str:
    """The family of a denoiser alone (UNETLoader), its keys under `prefix`."""
    return _the_one([f for f in all_families() if f.is_denoiser(sd, prefix)], "the UNet",
                    "the UNet is of no known family")


def prediction_type_of(sd: dict, family_name: str, prefix: str = UNET_PREFIX) -> str:
    return family(family_name).prediction_type(sd, prefix)


def sd2_prediction_type(sd: dict, prefix: str = UNET_PREFIX) -> str:
    return prediction_type_of(sd, SD2, prefix)


def scheduler_for(family_name: str, prediction_type: str | None = None) -> dict:
    """The family's published scheduler config, optionally with another prediction type, with every
    value explicit as a saved diffusers folder has it (so a single file and its folder agree)."""
    import diffusers

    config = dict(family(family_name).scheduler)
    if prediction_type:
        config["prediction_type"] = prediction_type
    explicit = getattr(diffusers, config["_class_name"]).from_config(config).config
    return {"_class_name": config["_class_name"], **{k: v for k, v in explicit.items() if not k.startswith("_")}}


def family_of_clip_kinds(kinds: list[str], clip_type: str | None = None) -> str | None:
    """The family whose text encoders are exactly these kinds (CLIPLoader, DualCLIPLoader), among those
    that ComfyUI's loader `type` names when one is given, or None."""
    wanted = tuple(sorted(kinds))
    typed = [f for f in all_families() if clip_type is None or clip_type in f.clip_types]
    exact = next((f.name for f in typed if f.kinds == wanted), None)  # before a family that takes a part of its kinds
    return exact or next((f.name for f in typed if _takes_kinds(f, wanted)), None)


def _takes_kinds(declared: Family, wanted: tuple[str, ...]) -> bool:
    """(A family with optional encoders) a non-empty part of its encoders' kinds that holds every
    required one, each once."""
    required = {e.kind for e in declared.text_encoders if not e.optional}
    return (bool(wanted) and len(set(wanted)) == len(wanted) and set(wanted) <= set(declared.kinds)
            and required <= set(wanted))


def runtime_of(name: str):
    """The family's torch side (spec.Runtime), or None for the SD UNet families."""
    declared = family(name)
    return importlib.import_module(declared.runtime) if declared.runtime else None


FAMILY_ATTR = "loom_family"  # set by the loaders on what they load: the UNet, tokenizers and text encoders


def tag_family(part, name: str | None):
    """Marks a loaded part (UNet, tokenizer, text encoder) with its family, for the stage nodes."""
    if part is not None and name is not None:
        setattr(part, FAMILY_ATTR, name)
    return part


def runtime_of_part(part):
    """The torch side of the family a loaded part belongs to; None for SD UNet families and untagged parts."""
    name = getattr(part, FAMILY_ATTR, None)
    return None if name is None else runtime_of(name)


# --- diffusers folders --------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def family_of_unet_config(config: dict) -> str:
    return _the_one([f for f in all_families() if f.is_denoiser_config(config)], "the UNet config",
                    "the UNet config is of no known family")


def family_of_folder(path: Path) -> str:
    """The family of a diffusers pipeline folder, from its model_index.json, denoiser and text encoder configs."""
    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    unet = _read_json(path / "unet" / "config.json") or _read_json(path / "transformer" / "config.json")
    encoder = _read_json(path / "text_encoder" / "config.json")
    return _the_one([f for f in all_families() if f.is_folder(index, unet, encoder)], f"{path.name}",
                    f"{path.name}: a diffusers folder of no known family ({index.get('_class_name')})")


# --- the names of the module before the registry (derived; for existing users) -------------------

SD1, SD2, SDXL, SDXL_REFINER = "sd1", "sd2", "sdxl", "sdxl_refiner"
FAMILIES = tuple(REGISTRY)
TEXT_ENCODER_PREFIXES = {f.name: {e.slot: (e.prefix, e.layout) for e in f.text_encoders} for f in all_families()}
VAE_SCALING = {f.name: f.latent.scale for f in all_families()}
DEFAULT_SIZE = {f.name: f.default_size for f in all_families()}
SCHEDULERS = {f.name: f.scheduler for f in all_families()}
SD1_SCHEDULER, SD2_SCHEDULER, SDXL_SCHEDULER = SCHEDULERS[SD1], SCHEDULERS[SD2], SCHEDULERS[SDXL]

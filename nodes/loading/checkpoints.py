"""Loading models of every family, whole or part by part: diffusers folders and single files.

`load_checkpoint(path)` gives the `Parts` of a whole model (a diffusers pipeline folder or a single
file, see nodes.loading.single_file). The part loaders read what ComfyUI's separate loaders read:
`load_unet` (models/diffusion_models), `load_text_encoder` (models/text_encoders), `load_vae`
(models/vae); each takes a diffusers/transformers model folder (config.json), a file of that part
alone (LDM or diffusers key layout, with or without its checkpoint prefix), or a whole checkpoint
(its part is taken).

Models are returned on the device and dtype asked for, in eval mode.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clip_bpe import OPEN_CLIP_PAD, tokenizer_for
from ..families import (SD1, SDXL, UNET_PREFIX, VAE_PREFIX, VAE_SCALING, all_families, family, family_of_clip_kinds,
                       family_of_folder, family_of_state_dict, family_of_unet_config, family_of_unet_state_dict,
                       prediction_type_of, runtime_of, scheduler_for)
from .encoders import encoder_file
from .model_files import has_prefix, key_indices, read_state_dict
from .single_file import (CheckpointError, build_on_meta, load_single_file, load_weights, place, text_encoder_from_ldm,
                          unet_from_ldm, vae_from_ldm)

# Text-encoder kinds: OpenAI CLIP ViT-L (SD 1.x, SDXL's first), OpenCLIP ViT-H (SD 2.x), OpenCLIP bigG
# (SDXL's second, the refiner's only).
CLIP_L, CLIP_H, CLIP_G = "clip_l", "clip_h", "clip_g"
WIDTH_KIND = {768: CLIP_L, 1024: CLIP_H, 1280: CLIP_G}


@dataclass(eq=False)
class Parts:
    family: str
    unet: Any
    vae: Any
    scheduler_config: dict
    tokenizer: Any = None
    text_encoder: Any = None
    tokenizer_2: Any = None
    text_encoder_2: Any = None
    more: dict = field(default_factory=dict)  # further slots: {"text_encoder_3": (tokenizer, model)} (SD3, HiDream)

    def set_encoder(self, slot: str, tokenizer, model) -> None:
        if slot in ("text_encoder", "text_encoder_2"):
            setattr(self, slot.replace("text_encoder", "tokenizer"), tokenizer)
            setattr(self, slot, model)
        else:
            self.more[slot] = (tokenizer, model)


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def scheduler_config(raw: dict) -> dict:
    """The config as diffusers reads it (defaults filled in), with its `_class_name`."""
    import diffusers
    from diffusers import SchedulerMixin

    name = raw.get("_class_name", "")
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"unknown scheduler class {name!r}")
    # `_use_default_values` stays: a scheduler of another class made from this config then takes its
    # own defaults for the keys this one defaulted, as diffusers' pipelines do when they swap schedulers.
    config = {k: v for k, v in cls.from_config(raw).config.items() if k != "_diffusers_version"}
    return {**config, "_class_name": name}


def load_diffusers_folder(path: Path, device, dtype) -> Parts:
    """A diffusers pipeline folder, with the classes its family declares."""
    import diffusers
    import transformers

    name = family_of_folder(path)
    declared = family(name)
    denoiser, vae = getattr(diffusers, declared.denoiser_class), getattr(diffusers, declared.vae_class)
    unet = denoiser.from_pretrained(path, subfolder=declared.denoiser_folder, dtype=dtype)
    vae = vae.from_pretrained(path, subfolder="vae", dtype=dtype).to(device).eval()
    parts = Parts(family=name, unet=unet.to(device).eval(), vae=vae,
                  scheduler_config=_json(path / "scheduler" / "scheduler_config.json"))
    for enc in declared.text_encoders:
        if (path / enc.slot / "config.json").is_file():
            folder = "tokenizer" + enc.slot.removeprefix("text_encoder")
            tokenizer = getattr(transformers, enc.tokenizer_class).from_pretrained(path / folder)
            model = getattr(transformers, enc.model_class).from_pretrained(path / enc.slot, dtype=dtype)
            parts.set_encoder(enc.slot, tokenizer, model.to(device).eval())
    return _family_vae(parts)


def _family_vae(parts: Parts) -> Parts:
    """A family whose VAE is not an AutoencoderKL gives it Loom's VAE face (Runtime.wrap_vae)."""
    runtime = runtime_of(parts.family)
    if runtime is not None and hasattr(runtime, "wrap_vae"):
        parts.vae = runtime.wrap_vae(parts.vae)
    return parts


def _vae_of_a_family(sd: dict):
    """A VAE file in a layout a family's runtime reads (Runtime.is_vae / vae_from_file), else None."""
    for declared in all_families():
        runtime = runtime_of(declared.name)
        if runtime is not None and hasattr(runtime, "is_vae") and runtime.is_vae(sd):
            return runtime.vae_from_file(sd)
    return None


def load_checkpoint(path: Path, device, dtype) -> Parts:
    """A whole model: a diffusers pipeline folder or a single-file checkpoint."""
    if path.is_dir():
        return load_diffusers_folder(path, device, dtype)
    return Parts(**load_single_file(path, device, dtype))


# --- parts alone --------------------------------------------------------------------------------

def load_unet(path: Path, device, dtype) -> tuple[Any, str, dict]:
    """(unet, family, scheduler config) of a UNet folder, a UNet file or a whole checkpoint."""
    import diffusers

    if path.is_dir():
        folder = path / "unet" if (path / "unet" / "config.json").is_file() else path
        config = _json(folder / "config.json")
        name = family_of_unet_config(config)
        unet = getattr(diffusers, family(name).denoiser_class).from_pretrained(folder, dtype=dtype).to(device).eval()
        scheduler = folder.parent / "scheduler" / "scheduler_config.json"
        return unet, name, _json(scheduler) if scheduler.is_file() else scheduler_for(name)
    sd = read_state_dict(path)
    prefix = UNET_PREFIX if has_prefix(sd, UNET_PREFIX) else ""
    transformer = next((f for f in all_families() if f.runtime and f.is_denoiser(sd, prefix)), None)
    if transformer is not None:  # a family with its own torch side (nodes.families.spec.Runtime)
        model = runtime_of(transformer.name).denoiser_from_file(sd, prefix)
        return place(model, device, dtype), transformer.name, scheduler_for(transformer.name)
    if "input_blocks.0.0.weight" not in {k[len(prefix):] for k in sd if k.startswith(prefix)}:
        raise CheckpointError(f"{path.name}: not a UNet in the LDM layout (no 'input_blocks.0.0.weight'); "
                              "diffusers-layout UNets load from their folder (config.json)")
    name = family_of_unet_state_dict(sd, prefix)
    unet = place(unet_from_ldm(sd, name, prefix), device, dtype)
    return unet, name, scheduler_for(name, prediction_type_of(sd, name, prefix))


def _diffusers_vae_config(sd: dict, scaling: float) -> dict:
    levels = key_indices(sd, r"encoder\.down_blocks\.(\d+)\.")
    resnets = key_indices(sd, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")
    return {"block_out_channels": [sd[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in levels],
            "down_block_types": ["DownEncoderBlock2D"] * len(levels),
            "up_block_types": ["UpDecoderBlock2D"] * len(levels), "layers_per_block": len(resnets),
            "latent_channels": sd["decoder.conv_in.weight"].shape[1], "in_channels": sd["encoder.conv_in.weight"].shape[1],
            "out_channels": sd["decoder.conv_out.weight"].shape[0], "scaling_factor": scaling}


def vae_scaling_for_name(name: str) -> float:
    """A VAE file alone does not say which latent space it serves (SD and SDXL VAEs share one
    architecture): SDXL's when its name says so, else SD 1.x/2.x's."""
    return VAE_SCALING[SDXL] if re.search(r"xl", name, re.IGNORECASE) else VAE_SCALING[SD1]


def wide_vae_latent(name: str, channels: int):
    """The latent format of a 16-channel VAE file alone: SD3's and Flux's VAEs share one layout, so the
    name decides (as for SDXL's): "sd3" in it SD3's scale and shift, else Flux's (ae.safetensors, as
    Z-Image's). None for another width."""
    latent = family("zimage").latent
    if channels != latent.channels:
        return None
    return family("sd3").latent if re.search(r"sd3", name, re.IGNORECASE) else latent


def load_vae(path: Path, device, dtype):
    from diffusers import AutoencoderKL

    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        declared = next((f for f in all_families() if f.runtime and f.vae_class != "AutoencoderKL"
                         and f.vae_class == _json(folder / "config.json").get("_class_name")), None)
        if declared is not None:  # a family's own VAE class (Qwen-Image's 3D VAE, Flux.2's)
            import diffusers

            vae = getattr(diffusers, declared.vae_class).from_pretrained(folder, dtype=dtype)
            return place(runtime_of(declared.name).wrap_vae(vae.eval()), device, dtype)
        return AutoencoderKL.from_pretrained(folder, dtype=dtype).to(device).eval()
    sd = read_state_dict(path)
    own = _vae_of_a_family(sd)
    if own is not None:
        return place(own, device, dtype)
    scaling = vae_scaling_for_name(path.name)
    whole = family(family_of_state_dict(sd)) if has_prefix(sd, UNET_PREFIX) else None
    if whole is not None:  # a whole checkpoint: its VAE, at its family's scale
        scaling = whole.latent.scale
    prefix = VAE_PREFIX if has_prefix(sd, VAE_PREFIX) else ""
    try:
        if f"{prefix}encoder.down.0.block.0.conv1.weight" in sd:  # LDM layout
            channels = sd[f"{prefix}decoder.conv_in.weight"].shape[1]
            latent = whole.latent if whole is not None else wide_vae_latent(path.name, channels)
            if latent is not None and latent.shift:  # a shifted latent space (Flux's, SD3's)
                vae = vae_from_ldm(sd, latent.scale, prefix)
                vae.register_to_config(shift_factor=latent.shift)
                return place(vae, device, dtype)
            return place(vae_from_ldm(sd, scaling, prefix), device, dtype)
        if "encoder.down_blocks.0.resnets.0.conv1.weight" in sd:  # diffusers layout
            vae = load_weights(build_on_meta(AutoencoderKL, _diffusers_vae_config(sd, scaling)), sd, "VAE", assign=True)
            return place(vae, device, dtype)
    except KeyError as exc:
        raise CheckpointError(f"{path.name}: expected VAE tensor {exc} is missing") from None
    raise CheckpointError(f"{path.name}: not a VAE (no 'encoder.down' or 'encoder.down_blocks' keys)")


def _kind_of_config(config) -> str:
    if getattr(config, "hidden_act", "") == "quick_gelu":
        return CLIP_L
    if "WithProjection" in "".join(getattr(config, "architectures", None) or []):
        return CLIP_G
    return WIDTH_KIND.get(config.hidden_size, CLIP_H)


def load_text_encoder(path: Path, device, dtype, open_clip_kind: str = CLIP_H) -> tuple[str, Any, Any]:
    """(kind, tokenizer, text encoder) of a transformers folder (with its tokenizer beside it, as in a
    pipeline folder, or inside it), or of a file: Hugging Face layout (`text_model.…`, CLIP-L or
    bigG with `text_projection`), or an OpenCLIP tower (`transformer.resblocks.…`, ViT-H or bigG by
    its width; `open_clip_kind` where the width is not a published one)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if path.is_dir():
        config = CLIPTextConfig.from_pretrained(path)
        kind = _kind_of_config(config)
        cls = CLIPTextModelWithProjection if kind == CLIP_G else CLIPTextModel
        for tok in (path, path.parent / path.name.replace("text_encoder", "tokenizer")):
            if (tok / "vocab.json").is_file():
                tokenizer = CLIPTokenizer.from_pretrained(tok)
                break
        else:
            tokenizer = tokenizer_for(config.vocab_size, config.max_position_embeddings,
                                      None if kind == CLIP_L else OPEN_CLIP_PAD)
        return kind, tokenizer, cls.from_pretrained(path, dtype=dtype).to(device).eval()
    sd = read_state_dict(path)
    found = encoder_file(sd)  # T5, Qwen, ...: nodes.loading.encoders
    if found is not None:
        tokenizer, model = found.load(sd, path)
        return found.kind, tokenizer, place(model, device, dtype)
    for declared in all_families():  # a whole checkpoint: its (first) encoder
        for enc in declared.text_encoders:
            if enc.layout != "file" and has_prefix(sd, enc.prefix) and has_prefix(sd, declared.denoiser_prefix):
                tokenizer, model = text_encoder_from_ldm(sd, enc.prefix, enc.layout, projection=enc.projection)
                return enc.kind, tokenizer, place(model, device, dtype)
    kind, tokenizer, model = clip_encoder_file(sd, path, open_clip_kind)
    return kind, tokenizer, place(model, device, dtype)


def clip_encoder_file(sd: dict, path: Path, open_clip_kind: str = CLIP_H) -> tuple[str, Any, Any]:
    """(kind, tokenizer, model) of a CLIP text encoder's keys (a file of it alone, or a whole
    checkpoint's with its prefix taken off), not yet placed."""
    hf = next((k.split("text_model.")[0] for k in sd if "text_model.embeddings.token_embedding" in k), None)
    if hf is not None:
        width = sd[hf + "text_model.embeddings.token_embedding.weight"].shape[1]
        bigg = WIDTH_KIND.get(width) == CLIP_G or (width not in WIDTH_KIND and hf + "text_projection.weight" in sd)
        tokenizer, model = text_encoder_from_ldm(sd, hf, "hf") if not bigg else _hf_bigg(sd, hf)
        if not bigg and hf + "text_projection.weight" in sd:  # kept for the families that pool through it (HiDream)
            model.register_buffer("loom_text_projection", sd[hf + "text_projection.weight"], persistent=False)
        return (CLIP_G if bigg else CLIP_L), tokenizer, model
    oc = next((k.split("transformer.resblocks.")[0] for k in sd if "transformer.resblocks.0.attn.in_proj_weight" in k),
              None)
    if oc is not None:
        width = sd[oc + "token_embedding.weight"].shape[1]
        kind = {1024: CLIP_H, 1280: CLIP_G}.get(width, open_clip_kind)
        tokenizer, model = text_encoder_from_ldm(sd, oc, "open_clip", projection=kind == CLIP_G)
        return kind, tokenizer, model
    raise CheckpointError(f"{path.name}: not a CLIP text encoder (no 'text_model.' or 'transformer.resblocks.' keys)")


def _hf_bigg(sd: dict, prefix: str):
    """bigG saved in the Hugging Face layout (ComfyUI's clip_g.safetensors): CLIPTextModelWithProjection."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from .single_file import clip_config, clip_from_state

    config = {**clip_config(sd, prefix), "hidden_act": "gelu",
              "projection_dim": sd[prefix + "text_projection.weight"].shape[0]}
    tokenizer = tokenizer_for(config["vocab_size"], config["max_position_embeddings"], OPEN_CLIP_PAD)
    state = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return tokenizer, clip_from_state(CLIPTextModelWithProjection, CLIPTextConfig(
        **config, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id), state)


def clip_family(kinds: list[str], clip_type: str | None = None) -> str:
    """The family a set of text encoders serves (CLIPLoader, DualCLIPLoader): the one declaring these
    kinds (among those ComfyUI's loader `type` names, when given)."""
    found = family_of_clip_kinds(kinds, clip_type)
    if found is None:
        sets = "; ".join(f"{f.label}: {', '.join(f.kinds)}" for f in all_families() if clip_type in f.clip_types)
        raise CheckpointError(f"text encoders {', '.join(sorted(kinds))} make no text-encoder set of type "
                              f"{clip_type!r} ({sets or 'no family loads that type'})" if clip_type else
                              f"text encoders {', '.join(sorted(kinds))} make no known family's text-encoder set")
    return found

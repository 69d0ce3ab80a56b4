"""Single-file checkpoints (the LDM/SGM key layout of SD 1.x, 2.x and XL), loaded fully offline.

The family comes from the keys (nodes.families: its declaration gives the key prefixes, the
converter, the encoders and what shapes cannot tell); the diffusers configs are inferred from tensor
shapes: UNet channels, multipliers, blocks per level, attention levels, transformer depth per level,
context width, SDXL's added embedding; VAE channels, blocks and latent channels; text-encoder width,
depth, MLP width, vocabulary, context length and projection. Keys are converted by diffusers' own
converters (diffusers.loaders.single_file_utils), with these local configs, never a hub's.

What shapes cannot tell, the families' published settings give: attention heads (8 per UNet
transformer for SD 1.x, 64-channel heads for the linear-projection UNets of 2.x and XL; CLIP heads
of 64 channels, 8 below width 64), quick-GELU for CLIP-L and GELU for OpenCLIP, the VAE scaling
factor and the scheduler. A single file carries no tokenizer: nodes.loading.clip_bpe.tokenizer_for chooses
one by vocabulary size.

The same functions load a part alone (UNETLoader, CLIPLoader, VAELoader files): `unet_from_ldm`,
`vae_from_ldm`, `text_encoder_from_ldm`, each given the key prefix its part has in the file.
"""
from __future__ import annotations

import re
from types import SimpleNamespace

from .clip_bpe import OPEN_CLIP_PAD, NoTokenizer, tokenizer_for
from ..families import (SGM_SD2_PREFIX, UNET_PREFIX, VAE_PREFIX, UnknownModel, family, family_of_state_dict,
                        runtime_of, scheduler_for)
from .model_files import has_prefix, key_indices, read_state_dict

CLIP_L_WIDTH = 768  # OpenAI CLIP ViT-L/14, SDXL's first encoder


class CheckpointError(ValueError):
    pass


def _depth(sd: dict, block: str) -> int:
    return len(key_indices(sd, re.escape(block + ".transformer_blocks.") + r"(\d+)\."))


def unet_config(sd: dict, family_name: str, prefix: str = UNET_PREFIX, pooled_dim: int | None = None) -> dict:
    """diffusers' UNet2DConditionModel config of an LDM-layout UNet. `pooled_dim`: the width of SDXL's
    pooled text embedding (its second encoder's projection), when the file has that encoder."""
    p, declared = prefix, family(family_name)
    conv_in = sd[p + "input_blocks.0.0.weight"]
    model_channels, in_channels = conv_in.shape[0], conv_in.shape[1]
    blocks = key_indices(sd, re.escape(p) + r"input_blocks\.(\d+)\.")
    downs = key_indices(sd, re.escape(p) + r"input_blocks\.(\d+)\.0\.op\.weight")
    if not downs:
        raise CheckpointError("the UNet has a single resolution level; not a Stable Diffusion layout")
    per_level = downs[0]  # resnets per level + 1 (the downsampler)
    levels = len(blocks) // per_level
    mult, depths, linear = [], [], False
    for level in range(levels):
        first = 1 + level * per_level
        mult.append(sd[p + f"input_blocks.{first}.0.out_layers.3.weight"].shape[0] // model_channels)
        proj_in = sd.get(p + f"input_blocks.{first}.1.proj_in.weight")
        depths.append(_depth(sd, p + f"input_blocks.{first}.1") if proj_in is not None else 0)
        linear = linear or (proj_in is not None and proj_in.ndim == 2)
    if not any(depths):
        raise CheckpointError("the UNet has no cross-attention; not a text-to-image SD model")
    context = next(v.shape[1] for k, v in sd.items() if k.startswith(p) and k.endswith("attn2.to_k.weight"))
    channels = [model_channels * m for m in mult]
    attention = [d > 0 for d in depths]
    mid = _depth(sd, p + "middle_block.1")
    # Levels without attention ignore their depth, except the last, whose entry the middle block uses.
    layers = [d or 1 for d in depths[:-1]] + [depths[-1] or mid]
    config = {
        "sample_size": declared.default_size // declared.latent.downscale if model_channels >= 320 else 32,
        "in_channels": in_channels,
        "out_channels": sd[p + "out.2.weight"].shape[0],
        "block_out_channels": channels,
        "layers_per_block": per_level - 1,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "cross_attention_dim": context,
        "attention_head_dim": [max(1, c // 64) for c in channels],  # 64-channel heads, unless declared
        "use_linear_projection": linear,
        "transformer_layers_per_block": mid if {*filter(None, depths), mid} == {mid} else layers,
    }
    config.update(declared.denoiser_overrides)  # what shapes cannot tell (SD 1.x's 8 heads, 2.x's upcast)
    label = sd.get(p + "label_emb.0.0.weight")
    if label is not None:  # SDXL: pooled text embedding + size/crop (or aesthetic score) ids
        extra = label.shape[1]
        if len(declared.text_encoders) == 1:  # the pooled encoder alone (the refiner's bigG): as wide as the context
            pooled = context
        else:
            pooled = pooled_dim if pooled_dim is not None else context - CLIP_L_WIDTH
        time_dim = (extra - pooled) // declared.conditioning.size_ids
        config.update(addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                      projection_class_embeddings_input_dim=extra)
    return config


def vae_config(sd: dict, scaling_factor: float, prefix: str = VAE_PREFIX) -> dict:
    p = prefix
    conv_in = sd[p + "encoder.conv_in.weight"]
    levels = key_indices(sd, re.escape(p) + r"encoder\.down\.(\d+)\.")
    blocks = key_indices(sd, re.escape(p) + r"encoder\.down\.0\.block\.(\d+)\.")
    channels = [sd[p + f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in levels]
    return {
        "in_channels": conv_in.shape[1],
        "out_channels": sd[p + "decoder.conv_out.weight"].shape[0],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": channels,
        "layers_per_block": len(blocks),
        "latent_channels": sd[p + "decoder.conv_in.weight"].shape[1],
        "sample_size": 512 if conv_in.shape[0] >= 128 else 64,
        "scaling_factor": scaling_factor,
        # Flux's VAE (Z-Image's ae.safetensors) has no quant convolutions
        "use_quant_conv": p + "quant_conv.weight" in sd, "use_post_quant_conv": p + "post_quant_conv.weight" in sd,
    }


def _heads(width: int) -> int:
    return width // 64 if width % 64 == 0 else max(1, width // 8)


def clip_config(sd: dict, prefix: str) -> dict:
    """A CLIP-L text encoder in the Hugging Face layout (`<prefix>text_model.…`)."""
    p = prefix + "text_model."
    vocab, hidden = sd[p + "embeddings.token_embedding.weight"].shape
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": sd[p + "encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": len(key_indices(sd, re.escape(p) + r"encoder\.layers\.(\d+)\.")),
        "num_attention_heads": _heads(hidden),
        "max_position_embeddings": sd[p + "embeddings.position_embedding.weight"].shape[0],
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    }


def open_clip_config(sd: dict, prefix: str, layers: int) -> dict:
    """An OpenCLIP text tower (`<prefix>transformer.resblocks.…`) as a transformers CLIP config."""
    vocab, hidden = sd[prefix + "token_embedding.weight"].shape
    projection = sd.get(prefix + "text_projection")
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": sd[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": layers,
        "num_attention_heads": _heads(hidden),
        "max_position_embeddings": sd[prefix + "positional_embedding"].shape[0],
        "projection_dim": projection.shape[1] if projection is not None else hidden,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
    }


def build_on_meta(cls, config: dict):
    """A diffusers model without random initialisation (on the meta device): every weight comes
    from the checkpoint (loaded with assign=True), and these models have no buffers of their own."""
    import torch

    with torch.device("meta"):
        return cls(**config)


def load_weights(model, state: dict, what: str, allowed_missing: tuple = (), assign: bool = False):
    """`state` into `model` (assign: its tensors become the model's); refuses missing or unexpected keys."""
    result = model.load_state_dict(state, strict=False, assign=assign)
    missing = [k for k in result.missing_keys if not k.endswith(allowed_missing)]
    unexpected = [k for k in result.unexpected_keys if not k.endswith(allowed_missing)]
    if missing or unexpected:
        raise CheckpointError(f"the {what} weights do not fit the inferred config: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def place(model, device, dtype):
    model = model.to(device)
    if any(p.dtype != dtype for p in model.parameters()):  # cast only when needed: diffusers warns on any cast
        model = model.to(dtype)
    own_aligned_memory(model)
    return model.eval()


def own_aligned_memory(model) -> None:
    """CPU tensors still in a memory-mapped file sit at any offset; some CPU kernels take another
    (differently rounding) path on unaligned data, so the same weights gave results ~1e-7 apart.
    Those are copied into fresh (aligned) memory; a GPU copy is aligned already."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
            tensor.data = tensor.data.clone()


def unet_from_ldm(sd: dict, family_name: str, prefix: str = UNET_PREFIX, pooled_dim: int | None = None):
    """The family's denoiser, its keys turned into diffusers' by the converter it declares."""
    import diffusers
    from diffusers.loaders import single_file_utils

    declared = family(family_name)
    config = unet_config(sd, family_name, prefix, pooled_dim)
    if prefix != declared.denoiser_prefix:  # the converter reads the single-file prefix
        sd = {declared.denoiser_prefix + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    state = getattr(single_file_utils, declared.denoiser_converter)(sd, config)
    return load_weights(build_on_meta(getattr(diffusers, declared.denoiser_class), config), state, "UNet", assign=True)


def vae_from_ldm(sd: dict, scaling_factor: float, prefix: str = VAE_PREFIX):
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    config = vae_config(sd, scaling_factor, prefix)
    if prefix != VAE_PREFIX:
        sd = {VAE_PREFIX + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    state = convert_ldm_vae_checkpoint(sd, config)
    return load_weights(build_on_meta(AutoencoderKL, config), state, "VAE", assign=True)


def text_encoder_from_ldm(sd: dict, prefix: str, layout: str, pad_token: str | None = None,
                          projection: bool = False):
    """(tokenizer, text encoder) of one encoder of a file. layout "hf": CLIP-L keys
    (`<prefix>text_model.…`); "open_clip": an OpenCLIP tower, as CLIPTextModelWithProjection when
    `projection` (SDXL's bigG) else CLIPTextModel (SD 2.x, which drops the tower's last layer)."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if layout == "hf":
        config = clip_config(sd, prefix)
        own = {k: v for k, v in sd.items() if k.startswith(prefix)}
        state = convert_ldm_clip_checkpoint(own, prefix) if prefix else dict(own)  # the converter strips the prefix
        if not projection:  # a CLIP-L file may carry its projection (ComfyUI's clip_l_hidream); the model has none
            state.pop("text_projection.weight", None)
    else:
        width = sd[prefix + "token_embedding.weight"].shape[1]
        state = convert_open_clip_checkpoint(SimpleNamespace(config=SimpleNamespace(hidden_size=width)),
                                             {k: v for k, v in sd.items() if k.startswith(prefix)}, prefix)
        if prefix == SGM_SD2_PREFIX and not projection:  # diffusers drops SD 2.x's last layer by name only
            last = len(key_indices(sd, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")) - 1
            if last == 23:
                state = {k: v for k, v in state.items() if f"layers.{last}." not in k}
        layers = len(key_indices(state, r"text_model\.encoder\.layers\.(\d+)\."))
        config = open_clip_config(sd, prefix, layers)
    if not projection:  # also ComfyUI's clip_l.safetensors, which keeps CLIP-L's unused projection
        state.pop("text_projection.weight", None)
    tokenizer = tokenizer_for(config["vocab_size"], config["max_position_embeddings"],
                              OPEN_CLIP_PAD if layout == "open_clip" else None)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return tokenizer, clip_from_state(cls, CLIPTextConfig(**config, bos_token_id=tokenizer.bos_token_id,
                                                          eos_token_id=tokenizer.eos_token_id,
                                                          pad_token_id=tokenizer.pad_token_id), state)


def clip_from_state(cls, config, state: dict):
    """A transformers CLIP text model built on the meta device and given the converted tensors
    (no random initialisation); its position ids, a buffer no file needs to hold, are made here."""
    import torch

    with torch.device("meta"):
        model = cls(config)
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel (not ...WithProjection)
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    load_weights(model, state, "text encoder", allowed_missing=("position_ids", "logit_scale"), assign=True)
    embeddings = getattr(model, "text_model", model).embeddings
    embeddings.position_ids = torch.arange(config.max_position_embeddings)[None]
    return model


def load_single_file(path, device, dtype) -> dict:
    """The parts of one full checkpoint: family, unet, vae, tokenizer(s), text encoder(s), and the
    family's scheduler config with the file's prediction type."""
    sd = read_state_dict(path)
    name = ""  # the family, once known
    try:
        name = family_of_state_dict(sd)
        declared = family(name)
        runtime = runtime_of(name)
        if hasattr(runtime, "parts_from_checkpoint"):  # a family with its own torch side reads its parts
            return _placed({"family": name, **runtime.parts_from_checkpoint(sd, path)}, device, dtype,
                           scheduler_for(name))
        if not has_prefix(sd, declared.vae_prefix):
            raise UnknownModel(f"holds no VAE (no '{declared.vae_prefix}*' keys)")
        if declared.runtime:  # a transformer family: its runtime's denoiser, encoders by kind
            return _transformer_checkpoint(sd, path, declared, device, dtype)
        parts = {"family": name}
        for enc in declared.text_encoders:
            prefix = next((p for p in (enc.prefix, *enc.other_prefixes) if has_prefix(sd, p)), enc.prefix)
            tokenizer, encoder = text_encoder_from_ldm(sd, prefix, enc.layout, projection=enc.projection)
            parts["tokenizer" + enc.slot.removeprefix("text_encoder")], parts[enc.slot] = tokenizer, encoder
        pooled = next((parts[e.slot].config.projection_dim for e in declared.text_encoders if e.projection), None)
        parts["unet"] = unet_from_ldm(sd, name, pooled_dim=pooled)
        parts["vae"] = vae_from_ldm(sd, declared.latent.scale)
    except (UnknownModel, NoTokenizer, CheckpointError) as exc:
        raise CheckpointError(f"{path.name}: {exc}") from None
    except KeyError as exc:
        raise CheckpointError(f"{path.name}: expected tensor {exc} of the {name} layout is missing") from None
    return _placed(parts, device, dtype, scheduler_for(name, declared.prediction_type(sd)))


def _placed(parts: dict, device, dtype, scheduler_config: dict) -> dict:
    """The parts on the device and dtype, encoders past the second in `more` ({slot: (tokenizer, model)})."""
    more = {}
    for slot in [k for k in parts if k.startswith("text_encoder") and k not in ("text_encoder", "text_encoder_2")]:
        more[slot] = (parts.pop("tokenizer" + slot.removeprefix("text_encoder"), None), place(parts.pop(slot), device,
                                                                                              dtype))
    for slot in ("text_encoder", "text_encoder_2", "unet", "vae"):
        if parts.get(slot) is not None:
            parts[slot] = place(parts[slot], device, dtype)
    return {**parts, "scheduler_config": scheduler_config, **({"more": more} if more else {})}


def _transformer_checkpoint(sd: dict, path, declared, device, dtype) -> dict:
    """The parts of a whole ComfyUI checkpoint of a family with its own torch side (Flux's
    flux1-schnell-fp8.safetensors: `model.diffusion_model.`, `vae.`, `text_encoders.<name>.transformer.`):
    the denoiser from its runtime (nodes.families.spec.Runtime.denoiser_from_file), the VAE at the
    family's scale and shift, each encoder by its kind's file reader (nodes.loading.encoders; the
    tokenizer a folder beside the file or in the text_encoders folder) or as a CLIP."""
    from pathlib import Path

    from ..families import runtime_of
    from .encoders import encoder_of_kind

    parts = {"family": declared.name, "more": {}}
    for enc in declared.text_encoders:
        prefix = next((p for p in (enc.prefix, *enc.other_prefixes) if has_prefix(sd, p)), None)
        if prefix is None:
            raise CheckpointError(f"holds no {enc.kind} text encoder (no '{enc.prefix}*' keys)")
        reader = encoder_of_kind(enc.kind)
        if reader is not None:
            tokenizer, model = reader.load({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)},
                                           Path(path))
        else:
            tokenizer, model = text_encoder_from_ldm(sd, prefix, enc.layout, projection=enc.projection)
        if enc.slot in ("text_encoder", "text_encoder_2"):
            parts["tokenizer" + enc.slot.removeprefix("text_encoder")] = tokenizer
            parts[enc.slot] = place(model, device, dtype)
        else:
            parts["more"][enc.slot] = (tokenizer, place(model, device, dtype))
    parts["unet"] = place(runtime_of(declared.name).denoiser_from_file(sd, declared.denoiser_prefix), device, dtype)
    vae = vae_from_ldm(sd, declared.latent.scale, declared.vae_prefix)
    if declared.latent.shift:
        vae.register_to_config(shift_factor=declared.latent.shift)
    parts["vae"] = place(vae, device, dtype)
    parts["scheduler_config"] = scheduler_for(declared.name)
    return parts

"""Single-file ControlNets, loaded offline: the config is read from the tensor shapes.

Two key layouts are read: diffusers' own (`controlnet_cond_embedding.conv_in.weight`, ...: a
`diffusion_pytorch_model.safetensors` saved on its own) and the original LDM one (`input_hint_block`,
`zero_convs`, with or without the `control_model.` prefix: lllyasviel's and ComfyUI's .pth and
.safetensors files), converted with diffusers' own converter.

What shapes cannot tell comes from the published models: SD 1.x's 8 attention heads with
convolutional projections, 64 channels per head with linear ones (SD 2.x, SDXL), and SDXL's 256
channels per added time id.
"""
from __future__ import annotations

from pathlib import Path

from .model_files import has_prefix, key_indices, read_state_dict
from .single_file import CheckpointError, build_on_meta, load_weights

LDM_PREFIX = "control_model."
SDXL_TIME_EMBED_DIM = 256
SD1_HEADS = 8


class ControlNetFileError(ValueError):
    pass


def _attention_settings(channels: list[int], linear: bool):
    return [c // 64 for c in channels] if linear else SD1_HEADS


def _added_embedding(sd: dict, key: str) -> dict:
    weight = sd.get(key)
    if weight is None:
        return {}
    return {"addition_embed_type": "text_time", "addition_time_embed_dim": SDXL_TIME_EMBED_DIM,
            "projection_class_embeddings_input_dim": weight.shape[1]}


def diffusers_config(sd: dict) -> dict:
    """ControlNetModel's config from a state dict in diffusers' key layout."""
    levels = key_indices(sd, r"down_blocks\.(\d+)\.")
    channels = [sd[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in levels]
    attention = [f"down_blocks.{i}.attentions.0.proj_in.weight" in sd for i in levels]
    if not any(attention):
        raise ControlNetFileError("the ControlNet has no cross-attention; not an SD-family ControlNet")
    first = attention.index(True)
    proj_in = sd[f"down_blocks.{first}.attentions.0.proj_in.weight"]
    depth = [len(key_indices(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")) or 1 for i in levels]
    stride_convs = key_indices(sd, r"controlnet_cond_embedding\.blocks\.(\d+)\.weight")[1::2]
    embedding = [sd["controlnet_cond_embedding.conv_in.weight"].shape[0]] + \
        [sd[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0] for i in stride_convs]
    linear = proj_in.ndim == 2
    return {
        "in_channels": sd["conv_in.weight"].shape[1],
        "conditioning_channels": sd["controlnet_cond_embedding.conv_in.weight"].shape[1],
        "block_out_channels": channels,
        "layers_per_block": len(key_indices(sd, r"down_blocks\.0\.resnets\.(\d+)\.")),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "cross_attention_dim": sd[f"down_blocks.{first}.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape[1],
        "attention_head_dim": _attention_settings(channels, linear),
        "use_linear_projection": linear,
        "transformer_layers_per_block": depth,
        "conditioning_embedding_out_channels": embedding,
        **_added_embedding(sd, "add_embedding.linear_1.weight"),
    }


def ldm_config(sd: dict) -> dict:
    """ControlNetModel's config from a state dict in the LDM layout (prefix removed)."""
    blocks = key_indices(sd, r"input_blocks\.(\d+)\.")
    downs = key_indices(sd, r"input_blocks\.(\d+)\.0\.op\.weight")
    if not downs:
        raise ControlNetFileError("the ControlNet has a single resolution level; not an SD-family layout")
    per_level = downs[0]  # resnets per level + 1 (the downsampler)
    model_channels = sd["input_blocks.0.0.weight"].shape[0]
    levels = len(blocks) // per_level
    channels, attention, depth, context, linear = [], [], [], None, False
    for level in range(levels):
        first = 1 + level * per_level
        channels.append(sd[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0])
        proj_in = sd.get(f"input_blocks.{first}.1.proj_in.weight")
        attention.append(proj_in is not None)
        depth.append(len(key_indices(sd, rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\.")) or 1)
        if proj_in is not None and context is None:
            linear = proj_in.ndim == 2
            context = sd[f"input_blocks.{first}.1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
    if context is None:
        raise ControlNetFileError("the ControlNet has no cross-attention; not an SD-family ControlNet")
    if model_channels != channels[0]:
        raise ControlNetFileError(f"the ControlNet's first level has {channels[0]} channels but its input "
                                  f"convolution {model_channels}: an unknown layout")
    hint = key_indices(sd, r"input_hint_block\.(\d+)\.weight")
    embedding = [sd["input_hint_block.0.weight"].shape[0]] + \
        [sd[f"input_hint_block.{i}.weight"].shape[0] for i in hint[2:-1:2]]
    return {
        "in_channels": sd["input_blocks.0.0.weight"].shape[1],
        "conditioning_channels": sd["input_hint_block.0.weight"].shape[1],
        "block_out_channels": channels,
        "layers_per_block": per_level - 1,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "cross_attention_dim": context,
        "attention_head_dim": _attention_settings(channels, linear),
        "use_linear_projection": linear,
        "transformer_layers_per_block": depth,
        "conditioning_embedding_out_channels": embedding,
        **_added_embedding(sd, "label_emb.0.0.weight"),
    }


def from_ldm(sd: dict, config: dict) -> dict:
    """LDM keys -> diffusers keys with diffusers' converter (plus SDXL's added embedding, which it skips)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint

    converted = convert_controlnet_checkpoint(sd, config)
    for new, old in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
        if old in sd:
            converted[new] = sd[old]
    return converted


def load_single_file(path: Path, dtype):
    """A ControlNetModel from one file in diffusers' or the LDM key layout."""
    from diffusers import ControlNetModel

    state = read_state_dict(path)
    if "controlnet_cond_embedding.conv_in.weight" in state:
        config, weights = diffusers_config(state), state
    else:
        prefix = LDM_PREFIX if has_prefix(state, LDM_PREFIX) else ""
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if "input_hint_block.0.weight" not in state:
            raise ControlNetFileError(f"{path.name} is not a ControlNet (no hint encoder in either key layout)")
        config = ldm_config(state)
        weights = from_ldm(state, config)
    try:  # built without random initialisation: every weight comes from the file
        model = load_weights(build_on_meta(ControlNetModel, config), weights, "ControlNet", assign=True)
    except CheckpointError as exc:
        raise ControlNetFileError(f"{path.name}: {exc}") from None
    return model.to(dtype)

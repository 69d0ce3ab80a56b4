"""Single-file SD 1.x checkpoints (original LDM key layout), loaded fully offline.

The diffusers configs are inferred from tensor shapes: UNet channels, channel multipliers, blocks
per level, attention levels, context dim and transformer depth; VAE channels, multipliers, blocks
and latent channels; CLIP width, depth, MLP width, vocabulary and context length. Keys are
converted with diffusers' own converters (diffusers.loaders.single_file_utils).

What shapes cannot tell, SD 1.x's published settings give: 8 attention heads per UNet transformer
(SD 2.x style linear projections: 64 channels per head), CLIP heads of 64 channels (8 below width
64), quick-GELU, VAE scaling factor 0.18215, and the PNDM scheduler of SD 1.x.

A single file carries no tokenizer. The tokenizer is chosen by vocabulary size: the tiny demo
model's or the trained shapes model's (both generated locally), or OpenAI CLIP's 49408-entry BPE
when its merges file is installed (open_clip_torch, see nodes.clip_bpe).
"""
from __future__ import annotations

import re
from pathlib import Path

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
SD1_UNET_HEADS = 8
SD1_SCALING_FACTOR = 0.18215


class CheckpointError(ValueError):
    pass


def read_state_dict(path: Path) -> dict:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    import torch

    data = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickle arbitrary code
    return data.get("state_dict", data) if isinstance(data, dict) else data


def _indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def unet_config(sd: dict) -> dict:
    p = UNET_PREFIX
    conv_in = sd[p + "input_blocks.0.0.weight"]
    model_channels, in_channels = conv_in.shape[0], conv_in.shape[1]
    blocks = _indices(sd, re.escape(p) + r"input_blocks\.(\d+)\.")
    downs = _indices(sd, re.escape(p) + r"input_blocks\.(\d+)\.0\.op\.weight")
    if not downs:
        raise CheckpointError("the UNet has a single resolution level; not an SD 1.x layout")
    per_level = downs[0]  # resnets per level + 1 (the downsampler)
    levels = len(blocks) // per_level
    mult, attention, depth, context, linear = [], [], 1, None, False
    for level in range(levels):
        first = 1 + level * per_level
        mult.append(sd[p + f"input_blocks.{first}.0.out_layers.3.weight"].shape[0] // model_channels)
        proj_in = sd.get(p + f"input_blocks.{first}.1.proj_in.weight")
        attention.append(proj_in is not None)
        if proj_in is not None and context is None:
            linear = proj_in.ndim == 2
            context = sd[p + f"input_blocks.{first}.1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
            depth = len(_indices(sd, re.escape(p + f"input_blocks.{first}.1.transformer_blocks.") + r"(\d+)\."))
    if context is None:
        raise CheckpointError("the UNet has no cross-attention; not a text-to-image SD model")
    channels = [model_channels * m for m in mult]
    heads = [c // 64 for c in channels] if linear else SD1_UNET_HEADS
    return {
        "sample_size": 64 if model_channels >= 320 else 32,
        "in_channels": in_channels,
        "out_channels": sd[p + "out.2.weight"].shape[0],
        "block_out_channels": channels,
        "layers_per_block": per_level - 1,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "cross_attention_dim": context,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "transformer_layers_per_block": depth,
    }


def vae_config(sd: dict) -> dict:
    p = VAE_PREFIX
    conv_in = sd[p + "encoder.conv_in.weight"]
    ch = conv_in.shape[0]
    levels = _indices(sd, re.escape(p) + r"encoder\.down\.(\d+)\.")
    blocks = _indices(sd, re.escape(p) + r"encoder\.down\.0\.block\.(\d+)\.")
    channels = [sd[p + f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in levels]
    return {
        "in_channels": conv_in.shape[1],
        "out_channels": sd[p + "decoder.conv_out.weight"].shape[0],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": channels,
        "layers_per_block": len(blocks),
        "latent_channels": sd[p + "decoder.conv_in.weight"].shape[1],
        "sample_size": 512 if ch >= 128 else 64,
        "scaling_factor": SD1_SCALING_FACTOR,
    }


def clip_config(sd: dict) -> dict:
    p = CLIP_PREFIX + "text_model."
    vocab, hidden = sd[p + "embeddings.token_embedding.weight"].shape
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": sd[p + "encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": len(_indices(sd, re.escape(p) + r"encoder\.layers\.(\d+)\.")),
        "num_attention_heads": hidden // 64 if hidden % 64 == 0 else max(1, hidden // 8),
        "max_position_embeddings": sd[p + "embeddings.position_embedding.weight"].shape[0],
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    }


def tokenizer_for(vocab_size: int, max_length: int):
    from .clip_bpe import REAL_CLIP_VOCAB_SIZE, make_tokenizer, real_clip_merges
    from .tiny_model import tiny_merges

    if vocab_size == REAL_CLIP_VOCAB_SIZE:
        merges = real_clip_merges()
        if merges is None:
            raise CheckpointError("this checkpoint needs OpenAI CLIP's BPE merges (bpe_simple_vocab_16e6.txt.gz); "
                                  "install them with `pip install --no-deps open_clip_torch`, or use a diffusers "
                                  "folder, which carries its tokenizer")
        return make_tokenizer(merges, max_length)
    from .textcond.model import merges as textcond_merges

    for merges in (tiny_merges(), textcond_merges()):  # the locally built vocabularies, by size
        if vocab_size == 2 * 256 + len(merges) + 2:
            return make_tokenizer(merges, max_length)
    raise CheckpointError(f"no tokenizer is known for a CLIP vocabulary of {vocab_size} entries")


def _build(cls, config: dict):
    """A diffusers model without random initialisation (on the meta device): every weight comes
    from the checkpoint (loaded with assign=True), and these models have no buffers of their own."""
    import torch

    with torch.device("meta"):
        return cls(**config)


def _load(model, state: dict, what: str, allowed_missing: tuple = (), assign: bool = False):
    result = model.load_state_dict(state, strict=False, assign=assign)
    missing = [k for k in result.missing_keys if not k.endswith(allowed_missing)]
    unexpected = [k for k in result.unexpected_keys if not k.endswith(allowed_missing)]
    if missing or unexpected:
        raise CheckpointError(f"the {what} weights do not fit the inferred config: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def _place(model, device, dtype):
    model = model.to(device)
    if any(p.dtype != dtype for p in model.parameters()):  # cast only when needed: diffusers warns on any cast
        model = model.to(dtype)
    return model.eval()


def load_single_file(path: Path, device, dtype) -> tuple:
    """(tokenizer, text_encoder, unet, vae, scheduler config) from one LDM-layout checkpoint."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint)
    from transformers import CLIPTextConfig, CLIPTextModel

    sd = read_state_dict(path)
    for prefix, what in ((UNET_PREFIX, "UNet"), (VAE_PREFIX, "VAE"), (CLIP_PREFIX, "CLIP text encoder")):
        if not any(k.startswith(prefix) for k in sd):
            raise CheckpointError(f"{path.name} holds no {what} (no '{prefix}*' keys): not an SD 1.x checkpoint")
    try:
        u_config, v_config, c_config = unet_config(sd), vae_config(sd), clip_config(sd)
    except KeyError as exc:
        raise CheckpointError(f"{path.name}: expected tensor {exc} of the SD 1.x layout is missing") from None

    unet = _load(_build(UNet2DConditionModel, u_config), convert_ldm_unet_checkpoint(sd, u_config), "UNet",
                 assign=True)
    vae = _load(_build(AutoencoderKL, v_config), convert_ldm_vae_checkpoint(sd, v_config), "VAE", assign=True)
    tokenizer = tokenizer_for(c_config["vocab_size"], c_config["max_position_embeddings"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**c_config, bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id,
                                                pad_token_id=tokenizer.pad_token_id))
    clip_state = convert_ldm_clip_checkpoint(sd)
    if not hasattr(text_encoder, "text_model"):  # transformers >= 5 flattened CLIPTextModel
        clip_state = {k.removeprefix("text_model."): v for k, v in clip_state.items()}
    _load(text_encoder, clip_state, "CLIP text encoder", allowed_missing=("position_ids",))
    models = [_place(m, device, dtype) for m in (text_encoder, unet, vae)]
    return (tokenizer, *models, sd1_scheduler_config())


def sd1_scheduler_config() -> dict:
    """SD 1.x's PNDM settings with every value explicit, as a saved diffusers folder has them."""
    from diffusers import PNDMScheduler

    from .tiny_model import SCHEDULER

    config = PNDMScheduler.from_config(SCHEDULER).config
    return {"_class_name": "PNDMScheduler", **{k: v for k, v in config.items() if not k.startswith("_")}}

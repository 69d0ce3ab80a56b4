"""A diffusers SD 1.x model's weights in the original LDM single-file key layout, and the writer of
such a checkpoint.

diffusers only converts LDM -> diffusers (what nodes.single_file loads with); exporting a model as one
file, and the tests' single-file checkpoints, need the other direction, written out here block by block.

    python -m nodes.ldm_layout DIFFUSERS_FOLDER OUT.safetensors [--dtype float16]
"""
from __future__ import annotations

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(state: dict, prefixes: dict, inner: dict[str, dict]) -> dict:
    """Map each key by its longest matching module prefix; `inner[prefix kind]` renames the part after it."""
    out = {}
    ordered = sorted(prefixes, key=len, reverse=True)
    for key, value in state.items():
        for prefix in ordered:
            if key.startswith(prefix + "."):
                target, kind = prefixes[prefix]
                rest = key[len(prefix) + 1:]
                for old, new in inner.get(kind, {}).items():
                    if rest.startswith(old + "."):
                        rest = new + rest[len(old):]
                        break
                out[target + "." + rest] = value
                break
        else:
            raise KeyError(f"no LDM name for {key}")
    return out


def unet_to_ldm(state: dict, config) -> dict:
    n, levels = config["layers_per_block"], len(config["block_out_channels"])
    p = {"time_embedding.linear_1": ("time_embed.0", None), "time_embedding.linear_2": ("time_embed.2", None),
         "conv_in": ("input_blocks.0.0", None), "conv_norm_out": ("out.0", None), "conv_out": ("out.2", None),
         "mid_block.resnets.0": ("middle_block.0", "resnet"), "mid_block.attentions.0": ("middle_block.1", None),
         "mid_block.resnets.1": ("middle_block.2", "resnet")}
    for level in range(levels):
        for j in range(n):
            block = 1 + level * (n + 1) + j
            p[f"down_blocks.{level}.resnets.{j}"] = (f"input_blocks.{block}.0", "resnet")
            p[f"down_blocks.{level}.attentions.{j}"] = (f"input_blocks.{block}.1", None)
        if level < levels - 1:
            p[f"down_blocks.{level}.downsamplers.0.conv"] = (f"input_blocks.{(level + 1) * (n + 1)}.0.op", None)
        has_attention = "CrossAttn" in config["up_block_types"][level]
        for j in range(n + 1):
            block = level * (n + 1) + j
            p[f"up_blocks.{level}.resnets.{j}"] = (f"output_blocks.{block}.0", "resnet")
            p[f"up_blocks.{level}.attentions.{j}"] = (f"output_blocks.{block}.1", None)
        if level < levels - 1:
            slot = 2 if has_attention else 1
            p[f"up_blocks.{level}.upsamplers.0.conv"] = (f"output_blocks.{level * (n + 1) + n}.{slot}.conv", None)
    return {"model.diffusion_model." + k: v for k, v in _rename(state, p, {"resnet": RESNET}).items()}


def vae_to_ldm(state: dict, config) -> dict:
    levels = len(config["block_out_channels"])
    p = {name: (name, None) for name in ("encoder.conv_in", "encoder.conv_out", "decoder.conv_in",
                                         "decoder.conv_out", "quant_conv", "post_quant_conv")}
    for part in ("encoder", "decoder"):
        p[f"{part}.conv_norm_out"] = (f"{part}.norm_out", None)
        p[f"{part}.mid_block.resnets.0"] = (f"{part}.mid.block_1", "resnet")
        p[f"{part}.mid_block.resnets.1"] = (f"{part}.mid.block_2", "resnet")
        p[f"{part}.mid_block.attentions.0"] = (f"{part}.mid.attn_1", "attention")
    for i in range(levels):
        for j in range(config["layers_per_block"] + 1):
            p[f"encoder.down_blocks.{i}.resnets.{j}"] = (f"encoder.down.{i}.block.{j}", "resnet")
            p[f"decoder.up_blocks.{i}.resnets.{j}"] = (f"decoder.up.{levels - 1 - i}.block.{j}", "resnet")
        p[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = (f"encoder.down.{i}.downsample.conv", None)
        p[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = (f"decoder.up.{levels - 1 - i}.upsample.conv", None)
    renamed = _rename(state, p, {"resnet": {"conv_shortcut": "nin_shortcut"}, "attention": VAE_ATTENTION})
    # LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers.
    return {"first_stage_model." + k: (v[:, :, None, None] if ".attn_1." in k and v.ndim == 2 else v)
            for k, v in renamed.items()}


def clip_to_ldm(state: dict) -> dict:
    return {"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in state.items()}


def pipeline_to_ldm(pipe) -> dict:
    state = {}
    state.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    state.update(clip_to_ldm(pipe.text_encoder.state_dict()))
    return {k: v.contiguous() for k, v in state.items()}


def write_single_file(folder, path, dtype=None, extra: dict | None = None) -> dict:
    """Write the diffusers folder's UNet, VAE and text encoder as one LDM-layout .safetensors file
    (in `dtype`, e.g. torch.float16, if given); returns the state dict written."""
    from pathlib import Path

    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    state = pipeline_to_ldm(pipe)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    state.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return state


if __name__ == "__main__":
    import argparse

    import torch

    p = argparse.ArgumentParser(prog="python -m nodes.ldm_layout",
                                description="Write a diffusers SD 1.x folder as one LDM-layout .safetensors file.")
    p.add_argument("folder")
    p.add_argument("out")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None)
    args = p.parse_args()
    write_single_file(args.folder, args.out, getattr(torch, args.dtype) if args.dtype else None)

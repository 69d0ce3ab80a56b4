"""A diffusers SD model's weights (1.x, 2.x, XL base and refiner) and a ControlNet's in the original
LDM/SGM single-file key layout, and the writer of such a checkpoint.

diffusers only converts LDM -> diffusers (what nodes.loading.single_file loads with); exporting a model as one
file, and the tests' single-file checkpoints, need the other direction, written out here block by block.

    python -m nodes.loading.ldm_layout DIFFUSERS_FOLDER OUT.safetensors [--family sd1] [--dtype float16]
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


def _encoder_names(config) -> dict:
    """LDM names of the encoder half a UNet and a ControlNet share: time embedding, conv_in, the down
    blocks and the middle block."""
    n, levels = config["layers_per_block"], len(config["block_out_channels"])
    p = {"time_embedding.linear_1": ("time_embed.0", None), "time_embedding.linear_2": ("time_embed.2", None),
         "conv_in": ("input_blocks.0.0", None), "mid_block.resnets.0": ("middle_block.0", "resnet"),
         "mid_block.attentions.0": ("middle_block.1", None), "mid_block.resnets.1": ("middle_block.2", "resnet"),
         "add_embedding.linear_1": ("label_emb.0.0", None), "add_embedding.linear_2": ("label_emb.0.2", None)}
    for level in range(levels):
        for j in range(n):
            block = 1 + level * (n + 1) + j
            p[f"down_blocks.{level}.resnets.{j}"] = (f"input_blocks.{block}.0", "resnet")
            p[f"down_blocks.{level}.attentions.{j}"] = (f"input_blocks.{block}.1", None)
        if level < levels - 1:
            p[f"down_blocks.{level}.downsamplers.0.conv"] = (f"input_blocks.{(level + 1) * (n + 1)}.0.op", None)
    return p


def unet_to_ldm(state: dict, config) -> dict:
    n, levels = config["layers_per_block"], len(config["block_out_channels"])
    p = {**_encoder_names(config), "conv_norm_out": ("out.0", None), "conv_out": ("out.2", None)}
    for level in range(levels):
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


def controlnet_to_ldm(state: dict, config) -> dict:
    """A diffusers ControlNet's weights in the LDM key layout (lllyasviel's files: `control_model.`,
    `input_hint_block`, `zero_convs`)."""
    n, levels = config["layers_per_block"], len(config["block_out_channels"])
    p = {**_encoder_names(config), "controlnet_mid_block": ("middle_block_out.0", None),
         "controlnet_cond_embedding.conv_in": ("input_hint_block.0", None),
         "controlnet_cond_embedding.conv_out": ("input_hint_block.14", None)}  # 14 in every published file
    for k in range(2 * (len(config["conditioning_embedding_out_channels"]) - 1)):  # SiLUs between: every other index
        p[f"controlnet_cond_embedding.blocks.{k}"] = (f"input_hint_block.{2 * (k + 1)}", None)
    for i in range(levels * (n + 1)):
        p[f"controlnet_down_blocks.{i}"] = (f"zero_convs.{i}.0", None)
    return {"control_model." + k: v.contiguous() for k, v in _rename(state, p, {"resnet": RESNET}).items()}


def clip_to_ldm(state: dict) -> dict:
    return {"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in state.items()}


OPEN_CLIP_LAYER = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def open_clip_to_ldm(state: dict, prefix: str, extra_layer: bool = False) -> dict:
    """A transformers CLIP text model as an OpenCLIP text tower (q/k/v joined into in_proj, the
    projection transposed). `extra_layer`: append the tower's last layer, which SD 2.x's diffusers
    text encoder leaves out (a copy of the last one: only its presence matters)."""
    import torch

    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {"token_embedding.weight": state["embeddings.token_embedding.weight"],
           "positional_embedding": state["embeddings.position_embedding.weight"],
           "ln_final.weight": state["final_layer_norm.weight"], "ln_final.bias": state["final_layer_norm.bias"]}
    if "text_projection.weight" in state:
        out["text_projection"] = state["text_projection.weight"].T
    else:  # SD 2.x's tower has a projection its diffusers encoder does not use
        width = state["embeddings.token_embedding.weight"].shape[1]
        out["text_projection"] = torch.zeros(width, width, device=state["embeddings.token_embedding.weight"].device)
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")})
    for i in layers + ([layers[-1] + 1] if extra_layer else []):
        src = f"encoder.layers.{min(i, layers[-1])}."
        dst = f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat([state[src + f"self_attn.{q}_proj.{kind}"]
                                                          for q in ("q", "k", "v")])
            for old, new in OPEN_CLIP_LAYER.items():
                out[dst + f"{new}.{kind}"] = state[src + f"{old}.{kind}"]
    return {prefix + k: v for k, v in out.items()}


def pipeline_to_ldm(pipe, family: str = "sd1") -> dict:
    state = {}
    state.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    state.update(text_encoders_to_ldm(family, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)))
    return {k: v.contiguous() for k, v in state.items()}


def text_encoders_to_ldm(family: str, text_encoder, text_encoder_2=None, sd2_extra_layer: bool = False) -> dict:
    if family == "sd1":
        return clip_to_ldm(text_encoder.state_dict())
    if family == "sd2":
        return open_clip_to_ldm(text_encoder.state_dict(), "cond_stage_model.model.", sd2_extra_layer)
    if family == "sdxl":
        return {**{k.replace("cond_stage_model.", "conditioner.embedders.0."): v
                   for k, v in clip_to_ldm(text_encoder.state_dict()).items()},
                **open_clip_to_ldm(text_encoder_2.state_dict(), "conditioner.embedders.1.model.")}
    return open_clip_to_ldm(text_encoder_2.state_dict(), "conditioner.embedders.0.model.")


def write_single_file(folder, path, family: str = "sd1", dtype=None, extra: dict | None = None) -> dict:
    """A diffusers folder written as one LDM/SGM .safetensors file (in `dtype` if given, e.g.
    torch.float16; the v_pred key marks SD 2.x v-prediction); returns the state dict written."""
    from pathlib import Path

    import diffusers
    import torch
    from safetensors.torch import save_file

    cls = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline",
           "sdxl_refiner": "StableDiffusionXLImg2ImgPipeline"}[family]
    options = {"safety_checker": None, "requires_safety_checker": False} if family in ("sd1", "sd2") else {}
    state = pipeline_to_ldm(getattr(diffusers, cls).from_pretrained(folder, **options), family)
    if family == "sd2":
        state["v_pred"] = torch.zeros(())
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

    p = argparse.ArgumentParser(prog="python -m nodes.loading.ldm_layout",
                                description="Write a diffusers SD folder as one LDM-layout .safetensors file.")
    p.add_argument("folder")
    p.add_argument("out")
    p.add_argument("--family", choices=("sd1", "sd2", "sdxl", "sdxl_refiner"), default="sd1")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None)
    args = p.parse_args()
    write_single_file(args.folder, args.out, args.family, getattr(torch, args.dtype) if args.dtype else None)

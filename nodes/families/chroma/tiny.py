"""Tiny random Chroma models for tests: the diffusers folder (ChromaPipeline.save_pretrained) and the
three single files ComfyUI's Chroma template loads, under its file names:

    diffusion_models/Chroma1-HD-fp8mixed.safetensors     the transformer, original layout (float32 here)
    text_encoders/t5xxl_fp8_e4m3fn_scaled.safetensors    T5 (transformers' keys; float32 here)
    vae/ae.safetensors                                   the VAE, LDM layout, no prefix

Built from nodes.families.chroma's tiny configs with seeded weights; the tokenizer is
nodes.loading.encoders.t5's tiny one, written beside the T5 file.

    python -m nodes.families.chroma.tiny MODELS_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

from ...loading.tiny import randomise_zeros
from . import FAMILY

FILES = {"transformer": "diffusion_models/Chroma1-HD-fp8mixed.safetensors",
         "text_encoder": "text_encoders/t5xxl_fp8_e4m3fn_scaled.safetensors", "vae": "vae/ae.safetensors"}


def tiny_t5(tokenizer, config: dict, seed: int):
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(**config, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                   eos_token_id=tokenizer.eos_token_id, is_encoder_decoder=False)).eval()




def build_pipeline(seed: int = 0):
    import diffusers
    import torch

    from ...loading.encoders import t5
    from .. import scheduler_for

    tiny = FAMILY.tiny
    tokenizer = t5.tiny_tokenizer()
    torch.manual_seed(seed)
    transformer = diffusers.ChromaTransformer2DModel(**tiny.denoiser)
    randomise_zeros(transformer, seed + 3)
    torch.manual_seed(seed + 1)
    vae = diffusers.AutoencoderKL(**tiny.vae)
    text_encoder = tiny_t5(tokenizer, tiny.text_encoders["text_encoder"], seed + 2)
    scheduler_config = scheduler_for(FAMILY.name)
    scheduler = getattr(diffusers, scheduler_config.pop("_class_name")).from_config(scheduler_config)
    return diffusers.ChromaPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                    transformer=transformer)


def write_folder(folder: str | Path, seed: int = 0) -> Path:
    folder = Path(folder)
    build_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    return folder


def _fuse(state: dict, prefix: str, names) -> tuple:
    import torch

    return tuple(torch.cat([state[f"{prefix}{n}.{kind}"] for n in names]) for kind in ("weight", "bias"))


def transformer_to_original(state: dict) -> dict:
    """diffusers' Chroma keys -> the original (Flux) layout that diffusers' converter reads."""
    from ...loading.model_files import key_indices

    out = {"img_in.weight": state["x_embedder.weight"], "img_in.bias": state["x_embedder.bias"],
           "txt_in.weight": state["context_embedder.weight"], "txt_in.bias": state["context_embedder.bias"],
           "final_layer.linear.weight": state["proj_out.weight"], "final_layer.linear.bias": state["proj_out.bias"]}
    g = "distilled_guidance_layer."
    for part in ("in_proj", "out_proj"):
        for kind in ("weight", "bias"):
            out[f"{g}{part}.{kind}"] = state[f"{g}{part}.{kind}"]
    for i in key_indices(state, r"distilled_guidance_layer\.layers\.(\d+)\."):
        for ours, theirs in (("linear_1", "in_layer"), ("linear_2", "out_layer")):
            for kind in ("weight", "bias"):
                out[f"{g}layers.{i}.{theirs}.{kind}"] = state[f"{g}layers.{i}.{ours}.{kind}"]
        out[f"{g}norms.{i}.scale"] = state[f"{g}norms.{i}.weight"]
    for i in key_indices(state, r"transformer_blocks\.(\d+)\."):
        d, b = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for stream, names in (("img", ("to_q", "to_k", "to_v")), ("txt", ("add_q_proj", "add_k_proj", "add_v_proj"))):
            out[d + stream + "_attn.qkv.weight"], out[d + stream + "_attn.qkv.bias"] = _fuse(state, b + "attn.", names)
        renames = {"attn.norm_q.weight": "img_attn.norm.query_norm.scale",
                   "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
                   "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
                   "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale"}
        for kind in ("weight", "bias"):
            renames.update({f"ff.net.0.proj.{kind}": f"img_mlp.0.{kind}", f"ff.net.2.{kind}": f"img_mlp.2.{kind}",
                            f"ff_context.net.0.proj.{kind}": f"txt_mlp.0.{kind}",
                            f"ff_context.net.2.{kind}": f"txt_mlp.2.{kind}",
                            f"attn.to_out.0.{kind}": f"img_attn.proj.{kind}",
                            f"attn.to_add_out.{kind}": f"txt_attn.proj.{kind}"})
        out.update({d + theirs: state[b + ours] for ours, theirs in renames.items()})
    for i in key_indices(state, r"single_transformer_blocks\.(\d+)\."):
        s, b = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        out[s + "linear1.weight"], out[s + "linear1.bias"] = _fuse(
            state, b, ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"))
        out[s + "norm.query_norm.scale"] = state[b + "attn.norm_q.weight"]
        out[s + "norm.key_norm.scale"] = state[b + "attn.norm_k.weight"]
        out[s + "linear2.weight"], out[s + "linear2.bias"] = state[b + "proj_out.weight"], state[b + "proj_out.bias"]
    return out


def flux_vae_file(vae) -> dict:
    """Flux's ae.safetensors layout (LDM keys, no prefix) of a diffusers VAE."""
    from ...loading.ldm_layout import vae_to_ldm

    return {k.removeprefix("first_stage_model."): v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()}


def comfy_files(pipe) -> dict[str, dict]:
    """The three single files' state dicts, by FILES key."""
    t5 = {k: v for k, v in pipe.text_encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    return {"transformer": transformer_to_original(pipe.transformer.state_dict()), "text_encoder": t5,
            "vae": flux_vae_file(pipe.vae)}


def save_files(models_dir: Path, names: dict, states: dict) -> dict[str, Path]:
    from safetensors.torch import save_file

    written = {}
    for part, state in states.items():
        path = Path(models_dir) / names[part]
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        written[part] = path
    return written


def write_comfy_files(models_dir: str | Path, seed: int = 0, pipe=None) -> dict[str, Path]:
    from ...loading.encoders import t5

    pipe = pipe or build_pipeline(seed)
    written = save_files(Path(models_dir), FILES, comfy_files(pipe))
    t5.write_tiny_tokenizer(written["text_encoder"].parent)  # where Loom looks for T5's tokenizer
    return written


if __name__ == "__main__":
    print(write_comfy_files(sys.argv[1] if len(sys.argv) > 1 else "data/models"))

"""Tiny random Flux.1 models for tests: the diffusers folder (FluxPipeline.save_pretrained) and the
single files ComfyUI's Flux templates load, under their file names:

    diffusion_models/flux1-dev.safetensors                  dev's transformer (guidance embedding), BFL layout
    diffusion_models/flux1-schnell.safetensors              schnell's (none)
    diffusion_models/flux1-krea-dev_fp8_scaled.safetensors  dev's in ComfyUI's scaled fp8 layout
    text_encoders/clip_l.safetensors                        CLIP-L, transformers' keys
    text_encoders/t5xxl_fp16.safetensors                    T5 encoder, transformers' keys (+ t5_tokenizer/)
    vae/ae.safetensors                                      the VAE, LDM layout, no prefix
    checkpoints/flux1-dev-fp8.safetensors                   whole: model.diffusion_model., vae.,
    checkpoints/flux1-schnell-fp8.safetensors                 text_encoders.clip_l/t5xxl.transformer.

Built from nodes.families.flux's tiny configs with seeded weights (dev and schnell share the text
encoders and VAE; their transformers differ by the guidance embedding only); tokenizers: the tiny
CLIP BPE (nodes.loading.clip_bpe) and the tiny T5 one (nodes.loading.encoders.t5).

    python -m nodes.families.flux.tiny MODELS_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

from ...loading.encoders import t5
from ...loading.tiny import randomise_zeros
from . import CLIP_PREFIX, DENOISER_PREFIX, FAMILY, T5_PREFIX

FILES = {"dev": "diffusion_models/flux1-dev.safetensors", "schnell": "diffusion_models/flux1-schnell.safetensors",
         "krea": "diffusion_models/flux1-krea-dev_fp8_scaled.safetensors",
         "clip_l": "text_encoders/clip_l.safetensors", "t5xxl": "text_encoders/t5xxl_fp16.safetensors",
         "vae": "vae/ae.safetensors", "checkpoint_dev": "checkpoints/flux1-dev-fp8.safetensors",
         "checkpoint_schnell": "checkpoints/flux1-schnell-fp8.safetensors"}


def build_pipeline(seed: int = 0, guidance: bool = True):
    """dev's (guidance embedding) or schnell's FluxPipeline of seeded tiny random weights."""
    import diffusers
    import torch
    from transformers import T5Config, T5EncoderModel

    from ...loading.tiny import _text_encoder, tiny_tokenizer
    from .. import scheduler_for

    tiny = FAMILY.tiny
    torch.manual_seed(seed)
    transformer = diffusers.FluxTransformer2DModel(**{**tiny.denoiser, "guidance_embeds": guidance})
    randomise_zeros(transformer, seed + 3)
    torch.manual_seed(seed + 1)
    vae = diffusers.AutoencoderKL(**tiny.vae)
    clip_tokenizer = tiny_tokenizer()
    clip = _text_encoder(tiny.text_encoders["text_encoder"], clip_tokenizer, seed + 2, "CLIPTextModel")
    t5_tokenizer = t5.tiny_tokenizer()
    torch.manual_seed(seed + 4)
    t5_model = T5EncoderModel(T5Config(**tiny.text_encoders["text_encoder_2"], vocab_size=len(t5_tokenizer),
                                       is_encoder_decoder=False, use_cache=False)).eval()
    _randomise_norms(t5_model, seed + 5)
    config = scheduler_for(FAMILY.name)
    if not guidance:  # schnell's published scheduler: no shift
        config.update(shift=1.0, use_dynamic_shifting=False)
    scheduler = getattr(diffusers, config.pop("_class_name")).from_config(config)
    return diffusers.FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tokenizer,
                                  text_encoder_2=t5_model, tokenizer_2=t5_tokenizer, transformer=transformer)




def _randomise_norms(model, seed: int) -> None:
    """T5's layer norms start at one: random ones make a norm left at its default visible."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))


def write_folder(folder: str | Path, seed: int = 0, guidance: bool = True) -> Path:
    folder = Path(folder)
    build_pipeline(seed, guidance).save_pretrained(folder, safe_serialization=True)
    return folder


# diffusers' names -> BFL's (the inverse of diffusers' convert_flux_transformer_checkpoint_to_diffusers)
_RENAMES = {
    "time_text_embed.timestep_embedder.linear_1.": "time_in.in_layer.",
    "time_text_embed.timestep_embedder.linear_2.": "time_in.out_layer.",
    "time_text_embed.text_embedder.linear_1.": "vector_in.in_layer.",
    "time_text_embed.text_embedder.linear_2.": "vector_in.out_layer.",
    "time_text_embed.guidance_embedder.linear_1.": "guidance_in.in_layer.",
    "time_text_embed.guidance_embedder.linear_2.": "guidance_in.out_layer.",
    "context_embedder.": "txt_in.", "x_embedder.": "img_in.", "proj_out.": "final_layer.linear.",
}
_DOUBLE = {"norm1.linear.": "img_mod.lin.", "norm1_context.linear.": "txt_mod.lin.",
           "attn.norm_q.weight": "img_attn.norm.query_norm.scale", "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
           "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
           "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
           "ff.net.0.proj.": "img_mlp.0.", "ff.net.2.": "img_mlp.2.", "ff_context.net.0.proj.": "txt_mlp.0.",
           "ff_context.net.2.": "txt_mlp.2.", "attn.to_out.0.": "img_attn.proj.", "attn.to_add_out.": "txt_attn.proj."}
_SINGLE = {"norm.linear.": "modulation.lin.", "attn.norm_q.weight": "norm.query_norm.scale",
           "attn.norm_k.weight": "norm.key_norm.scale", "proj_out.": "linear2."}


def transformer_to_original(state: dict) -> dict:
    """diffusers' Flux transformer keys -> BFL's layout (what ComfyUI's files hold)."""
    import re

    import torch

    out = {}
    for key, value in state.items():
        block = re.match(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.*)", key)
        if block is None:
            if key.startswith("norm_out.linear."):  # diffusers keeps (scale, shift), BFL (shift, scale)
                scale, shift = value.chunk(2, dim=0)
                out["final_layer.adaLN_modulation.1." + key.rsplit(".", 1)[1]] = torch.cat([shift, scale])
                continue
            prefix = next(p for p in _RENAMES if key.startswith(p))
            out[_RENAMES[prefix] + key[len(prefix):]] = value
            continue
        kind, index, rest = block.groups()
        suffix = rest.rsplit(".", 1)[1]
        if kind == "transformer_blocks":
            base = f"double_blocks.{index}."
            if rest.startswith("attn.to_q."):
                out[base + "img_attn.qkv." + suffix] = torch.cat([state[key.replace("to_q", x)]
                                                                  for x in ("to_q", "to_k", "to_v")])
            elif rest.startswith("attn.add_q_proj."):
                out[base + "txt_attn.qkv." + suffix] = torch.cat([state[key.replace("add_q_proj", x)]
                                                                  for x in ("add_q_proj", "add_k_proj", "add_v_proj")])
            elif not rest.startswith(("attn.to_k.", "attn.to_v.", "attn.add_k_proj.", "attn.add_v_proj.")):
                name = next(p for p in _DOUBLE if rest.startswith(p))
                out[base + _DOUBLE[name] + rest[len(name):]] = value
        else:
            base = f"single_blocks.{index}."
            if rest.startswith("attn.to_q."):
                out[base + "linear1." + suffix] = torch.cat([state[key.replace("attn.to_q", x)]
                                                             for x in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")])
            elif not rest.startswith(("attn.to_k.", "attn.to_v.", "proj_mlp.")):
                name = next(p for p in _SINGLE if rest.startswith(p))
                out[base + _SINGLE[name] + rest[len(name):]] = value
    return out


def scaled_fp8(state: dict) -> dict:
    """ComfyUI's scaled fp8 layout of a state dict: each 2-D weight as fp8 (weight / scale) with its
    `scale_weight`, and the `scaled_fp8` marker."""
    import torch

    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, value in state.items():
        if key.endswith(".weight") and value.ndim == 2:
            scale = (value.abs().max().float() / 448).clamp(min=1e-12)
            out[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[key] = value
    return out


def comfy_files(dev, schnell=None) -> dict[str, dict]:
    """The single files' state dicts, by FILES key (schnell's transformer from `schnell` when given)."""
    from ...loading.ldm_layout import vae_to_ldm

    vae = {k.removeprefix("first_stage_model."): v for k, v in vae_to_ldm(dev.vae.state_dict(), dev.vae.config).items()}
    clip = dict(dev.text_encoder.state_dict())
    if not any(k.startswith("text_model.") for k in clip):  # transformers >= 5.6 flattened CLIPTextModel
        clip = {"text_model." + k: v for k, v in clip.items()}
    clip = {k: v for k, v in clip.items() if not k.endswith("position_ids")}
    t5_state = {k: v for k, v in dev.text_encoder_2.state_dict().items() if k != "encoder.embed_tokens.weight"}
    files = {"dev": transformer_to_original(dev.transformer.state_dict()), "clip_l": clip, "t5xxl": t5_state,
             "vae": vae}
    files["krea"] = scaled_fp8(files["dev"])
    if schnell is not None:
        files["schnell"] = transformer_to_original(schnell.transformer.state_dict())
    for name in ("dev", "schnell"):
        if name in files:
            files["checkpoint_" + name] = {**{DENOISER_PREFIX + k: v for k, v in files[name].items()},
                                           **{"vae." + k: v for k, v in vae.items()},
                                           **{CLIP_PREFIX + k: v for k, v in clip.items()},
                                           **{T5_PREFIX + k: v for k, v in t5_state.items()}}
    return files


def write_comfy_files(models_dir: str | Path, seed: int = 0, dev=None, schnell=None) -> dict[str, Path]:
    """Every file of FILES under `models_dir` (dev and schnell: the same seed, schnell without guidance)."""
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    dev = dev or build_pipeline(seed, guidance=True)
    schnell = schnell or build_pipeline(seed, guidance=False)
    written = {}
    for part, state in comfy_files(dev, schnell).items():
        path = models_dir / FILES[part]
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        written[part] = path
    t5.write_tiny_tokenizer(written["t5xxl"].parent)  # where nodes.loading.encoders.t5 looks
    return written


if __name__ == "__main__":
    print(write_comfy_files(sys.argv[1] if len(sys.argv) > 1 else "data/models"))

"""Tiny random Z-Image models for tests: the diffusers folder (ZImagePipeline.save_pretrained) and the
three single files ComfyUI's Z-Image-Turbo workflow loads, under its file names:

    diffusion_models/z_image_turbo_bf16.safetensors   the transformer, original layout
    text_encoders/qwen_3_4b.safetensors               Qwen3 (transformers' keys under `model.`)
    vae/ae.safetensors                                the VAE, LDM layout, no prefix

Built from nodes.families.zimage's tiny configs with seeded weights; the tokenizer is
nodes.loading.encoders.qwen's tiny one.

    python -m nodes.families.zimage.tiny MODELS_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

from ...loading.encoders import qwen
from ...loading.tiny import randomise_zeros
from . import FAMILY

FILES = {"transformer": "diffusion_models/z_image_turbo_bf16.safetensors",
         "text_encoder": "text_encoders/qwen_3_4b.safetensors", "vae": "vae/ae.safetensors"}


def tiny_tokenizer():
    return qwen.tiny_tokenizer(FAMILY.tiny.text_encoders["text_encoder"]["max_position_embeddings"])


def build_pipeline(seed: int = 0):
    import diffusers
    import torch
    from transformers import Qwen3Config, Qwen3Model

    from .. import scheduler_for

    tiny = FAMILY.tiny
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    transformer = diffusers.ZImageTransformer2DModel(**tiny.denoiser)
    torch.manual_seed(seed + 1)
    vae = diffusers.AutoencoderKL(**tiny.vae)
    torch.manual_seed(seed + 2)
    config = Qwen3Config(**tiny.text_encoders["text_encoder"], vocab_size=len(tokenizer),
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    text_encoder = Qwen3Model(config).eval()
    randomise_zeros(transformer, seed + 3)
    scheduler_config = scheduler_for(FAMILY.name)
    scheduler = getattr(diffusers, scheduler_config.pop("_class_name")).from_config(scheduler_config)
    return diffusers.ZImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                    transformer=transformer)




def write_folder(folder: str | Path, seed: int = 0) -> Path:
    folder = Path(folder)
    build_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    return folder


def transformer_to_original(state: dict) -> dict:
    """diffusers' Z-Image transformer keys -> the original layout (what diffusers' converter reads)."""
    import torch

    out = {}
    for key, value in state.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        new = key.replace("all_final_layer.2-1.", "final_layer.").replace("all_x_embedder.2-1.", "x_embedder.")
        new = new.replace(".attention.to_out.0.", ".attention.out.").replace(".attention.norm_q.", ".attention.q_norm.")
        new = new.replace(".attention.norm_k.", ".attention.k_norm.")
        if ".attention.to_q." in key:
            parts = [state[key.replace(".to_q.", f".to_{x}.")] for x in "qkv"]
            new, value = new.replace(".attention.to_q.", ".attention.qkv."), torch.cat(parts, dim=0)
        out[new] = value
    return out


def comfy_files(pipe) -> dict[str, dict]:
    """The three single files' state dicts, by FILES key."""
    from ...loading.ldm_layout import vae_to_ldm

    vae = {k.removeprefix("first_stage_model."): v
           for k, v in vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config).items()}
    return {"transformer": transformer_to_original(pipe.transformer.state_dict()),
            "text_encoder": {"model." + k: v for k, v in pipe.text_encoder.state_dict().items()},
            "vae": vae}


def write_comfy_files(models_dir: str | Path, seed: int = 0, pipe=None) -> dict[str, Path]:
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    pipe = pipe or build_pipeline(seed)
    written = {}
    for part, state in comfy_files(pipe).items():
        path = models_dir / FILES[part]
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        written[part] = path
    # Qwen2's tokenizer where Loom looks for it (nodes.loading.encoders.qwen.tokenizer_beside)
    pipe.tokenizer.save_pretrained(written["text_encoder"].parent / qwen.TOKENIZER_FOLDER)
    return written


if __name__ == "__main__":
    print(write_comfy_files(sys.argv[1] if len(sys.argv) > 1 else "data/models"))

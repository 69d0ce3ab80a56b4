"""Tiny random HiDream I1 models for tests: the diffusers folder (HiDreamImagePipeline.save_pretrained)
and the single files ComfyUI's HiDream I1 templates load, under their file names:

    diffusion_models/hidream_i1_{full,dev,fast}_fp8.safetensors   the transformer (one tiny model, four names)
    diffusion_models/hidream_e1_full_bf16.safetensors
    text_encoders/clip_l_hidream.safetensors                     CLIP-L with its projection (transformers' keys)
    text_encoders/clip_g_hidream.safetensors                     CLIP-G with its projection
    text_encoders/t5xxl_fp8_e4m3fn_scaled.safetensors            T5 (float32 here)
    text_encoders/llama_3.1_8b_instruct_fp8_scaled.safetensors   Llama (transformers' keys, float32 here)
    vae/ae.safetensors                                           the VAE, LDM layout, no prefix

Built from nodes.families.hidream's tiny configs with seeded weights; the tokenizers are Loom's tiny
CLIP BPE, nodes.loading.encoders.t5's and .llama's tiny ones (written beside the files).

    python -m nodes.families.hidream.tiny MODELS_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

from ...loading.tiny import randomise_zeros
from ..chroma.tiny import flux_vae_file, save_files, tiny_t5
from . import FAMILY

TRANSFORMER_FILES = {**{v: f"diffusion_models/hidream_i1_{v}_fp8.safetensors" for v in ("full", "dev", "fast")},
                     "e1": "diffusion_models/hidream_e1_full_bf16.safetensors"}  # E1: the same architecture
FILES = {"clip_l": "text_encoders/clip_l_hidream.safetensors", "clip_g": "text_encoders/clip_g_hidream.safetensors",
         "t5xxl": "text_encoders/t5xxl_fp8_e4m3fn_scaled.safetensors",
         "llama": "text_encoders/llama_3.1_8b_instruct_fp8_scaled.safetensors", "vae": "vae/ae.safetensors",
         **{f"transformer_{v}": path for v, path in TRANSFORMER_FILES.items()}}


def _clip(config: dict, tokenizer, seed: int):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(CLIPTextConfig(
        **config, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)).eval()


def _llama(config: dict, tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ...loading.encoders.llama import ROPE_SCALING

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**config, vocab_size=len(tokenizer), rope_scaling=dict(ROPE_SCALING),
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id)).eval()


def build_pipeline(seed: int = 0):
    import diffusers
    import torch

    from ...loading.encoders import llama, t5
    from ...loading.tiny import tiny_tokenizer as clip_tokenizer
    from .. import scheduler_for

    tiny = FAMILY.tiny
    enc = tiny.text_encoders
    torch.manual_seed(seed)
    transformer = diffusers.HiDreamImageTransformer2DModel(**tiny.denoiser).eval()  # training: MoE loss, padded output
    randomise_zeros(transformer, seed + 3)
    torch.manual_seed(seed + 1)
    vae = diffusers.AutoencoderKL(**tiny.vae)
    tokenizers = [clip_tokenizer(), clip_tokenizer("!"), t5.tiny_tokenizer(), llama.tiny_tokenizer()]
    encoders = [_clip(enc["text_encoder"], tokenizers[0], seed + 4), _clip(enc["text_encoder_2"], tokenizers[1], seed + 5),
                tiny_t5(tokenizers[2], enc["text_encoder_3"], seed + 6), _llama(enc["text_encoder_4"], tokenizers[3], seed + 7)]
    scheduler_config = scheduler_for(FAMILY.name)
    scheduler = getattr(diffusers, scheduler_config.pop("_class_name")).from_config(scheduler_config)
    parts = {}
    for i, (tokenizer, encoder) in enumerate(zip(tokenizers, encoders)):
        suffix = f"_{i + 1}" if i else ""
        parts["tokenizer" + suffix], parts["text_encoder" + suffix] = tokenizer, encoder
    return diffusers.HiDreamImagePipeline(scheduler=scheduler, vae=vae, transformer=transformer, **parts)


def write_folder(folder: str | Path, seed: int = 0) -> Path:
    folder = Path(folder)
    build_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    return folder


def comfy_files(pipe) -> dict[str, dict]:
    """The single files' state dicts, by FILES key."""
    transformer = pipe.transformer.state_dict()
    t5 = {k: v for k, v in pipe.text_encoder_3.state_dict().items() if k != "encoder.embed_tokens.weight"}
    return {"clip_l": pipe.text_encoder.state_dict(), "clip_g": pipe.text_encoder_2.state_dict(), "t5xxl": t5,
            "llama": {k: v for k, v in pipe.text_encoder_4.state_dict().items() if k.startswith("model.")},
            "vae": flux_vae_file(pipe.vae), **{f"transformer_{v}": transformer for v in TRANSFORMER_FILES}}


def write_comfy_files(models_dir: str | Path, seed: int = 0, pipe=None) -> dict[str, Path]:
    from ...loading.encoders import llama, t5

    pipe = pipe or build_pipeline(seed)
    written = save_files(Path(models_dir), FILES, comfy_files(pipe))
    t5.write_tiny_tokenizer(written["t5xxl"].parent)  # where Loom looks for their tokenizers
    llama.write_tiny_tokenizer(written["llama"].parent)
    return written


if __name__ == "__main__":
    print(write_comfy_files(sys.argv[1] if len(sys.argv) > 1 else "data/models"))

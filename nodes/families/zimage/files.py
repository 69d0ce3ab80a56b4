"""Z-Image's single files as ComfyUI names them, loaded into diffusers/transformers models, and its
prompt encoding (nodes.families.zimage describes the family).

- the transformer (diffusion_models/z_image_turbo_bf16.safetensors): its config read off the shapes
  (widths, depths, heads; the rotary axes as published: not in the weights), its keys converted by
  diffusers' own convert_z_image_transformer_checkpoint_to_diffusers.
- the text encoder (text_encoders/qwen_3_4b.safetensors): transformers' Qwen3 keys under `model.`; a
  Qwen3Model sized from its shapes. Its tokenizer is Qwen2's byte-level BPE, which the file does not
  hold: Loom reads it from a `qwen25_tokenizer/` folder (transformers' tokenizer files: vocab.json +
  merges.txt or tokenizer.json) beside the file or in the text_encoders folder, as ComfyUI ships it
  in comfy/text_encoders/qwen25_tokenizer.
- a prompt: ComfyUI's chat template, no padding, the penultimate hidden state (ComfyUI's lumina2 /
  Z-Image text encoder; prompt weights are not parsed, as in ComfyUI).
"""
from __future__ import annotations

from pathlib import Path

from .. import family
from ...loading.model_files import key_indices
from ...loading.single_file import CheckpointError, load_weights

TOKENIZER_FOLDER = "qwen25_tokenizer"
QWEN3_MARK = "model.layers.0.self_attn.q_norm.weight"  # Qwen3 normalises q and k (Qwen2 does not)


def _without_weights(make):
    """A model whose parameters are placeholders (every weight comes from the file, assign=True) and
    whose buffers (rotary tables) are computed as usual."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return make()


def transformer_config(sd: dict, prefix: str = "") -> dict:
    import re

    declared = family("zimage").tiny.denoiser  # the published values of what shapes cannot tell
    dim, text_width = sd[prefix + "cap_embedder.1.weight"].shape
    head_dim = sd[prefix + "layers.0.attention.q_norm.weight"].shape[0]
    qkv = sd[prefix + "layers.0.attention.qkv.weight"].shape[0]
    patch_in = sd[prefix + "x_embedder.weight"].shape[1]
    published_head = sum([32, 48, 48])
    return dict(
        declared, dim=dim, cap_feat_dim=text_width, n_heads=dim // head_dim,
        n_kv_heads=(qkv - dim) // (2 * head_dim), in_channels=patch_in // 4,  # 2 x 2 patches, 1 frame
        n_layers=len(key_indices(sd, re.escape(prefix) + r"layers\.(\d+)\.")),
        n_refiner_layers=len(key_indices(sd, re.escape(prefix) + r"noise_refiner\.(\d+)\.")),
        axes_dims=[32, 48, 48] if head_dim == published_head else [head_dim // 2, head_dim // 4, head_dim // 4],
        axes_lens=[1536, 512, 512])


def transformer_from_file(sd: dict, prefix: str = ""):
    from diffusers import ZImageTransformer2DModel
    from diffusers.loaders import single_file_utils

    converter = getattr(single_file_utils, family("zimage").denoiser_converter)
    config = transformer_config(sd, prefix)
    state = converter({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    model = _without_weights(lambda: ZImageTransformer2DModel(**config))
    return load_weights(model, state, "Z-Image transformer", assign=True).eval()


def is_qwen3(sd: dict) -> bool:
    return "model.embed_tokens.weight" in sd and QWEN3_MARK in sd


def qwen3_config(sd: dict):
    from transformers import Qwen3Config

    vocab, hidden = sd["model.embed_tokens.weight"].shape
    head_dim = sd[QWEN3_MARK].shape[0]
    return Qwen3Config(vocab_size=vocab, hidden_size=hidden, head_dim=head_dim,
                       intermediate_size=sd["model.layers.0.mlp.gate_proj.weight"].shape[0],
                       num_hidden_layers=len(key_indices(sd, r"model\.layers\.(\d+)\.")),
                       num_attention_heads=sd["model.layers.0.self_attn.q_proj.weight"].shape[0] // head_dim,
                       num_key_value_heads=sd["model.layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
                       rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=40960)


def tokenizer_beside(path: Path):
    from transformers import Qwen2Tokenizer

    for folder in (path.parent / TOKENIZER_FOLDER, path.parent.parent / TOKENIZER_FOLDER):
        if folder.is_dir():
            return Qwen2Tokenizer.from_pretrained(folder)
    raise CheckpointError(f"{path.name}: a Qwen3 text encoder needs Qwen2's tokenizer files (vocab.json and "
                          f"merges.txt, or tokenizer.json) in a '{TOKENIZER_FOLDER}' folder beside it")


def text_encoder_from_file(sd: dict, path: Path):
    """(tokenizer, Qwen3Model) of a ComfyUI-layout Qwen3 file."""
    from transformers import Qwen3Model

    tokenizer = tokenizer_beside(path)
    config = qwen3_config(sd)
    model = _without_weights(lambda: Qwen3Model(config))
    state = {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")}
    return tokenizer, load_weights(model, state, "Qwen3 text encoder", assign=True).eval()


def encode(tokenizer, text_encoder, text: str):
    """The conditioning embeds (1, tokens, width) of a prompt, as ComfyUI's Z-Image text encoder."""
    import torch

    from . import TEMPLATE

    ids = tokenizer(TEMPLATE.format(text), return_tensors="pt").input_ids.to(text_encoder.device)
    with torch.no_grad():
        out = text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    return out.hidden_states[family("zimage").conditioning.hidden_layer]

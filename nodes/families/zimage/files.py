"""Z-Image's transformer file as ComfyUI names it, loaded into diffusers' model, and its prompt
encoding (nodes.families.zimage describes the family; its Qwen3 text-encoder file is read by
nodes.loading.encoders.qwen).

- the transformer (diffusion_models/z_image_turbo_bf16.safetensors): its config read off the shapes
  (widths, depths, heads; the rotary axes as published: not in the weights), its keys converted by
  diffusers' own convert_z_image_transformer_checkpoint_to_diffusers.
- a prompt: ComfyUI's chat template, no padding, the penultimate hidden state (ComfyUI's lumina2 /
  Z-Image text encoder; prompt weights are not parsed, as in ComfyUI).
"""
from __future__ import annotations

from ...loading.encoders import without_weights
from ...loading.model_files import key_indices
from ...loading.single_file import load_weights
from .. import family


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
    model = without_weights(lambda: ZImageTransformer2DModel(**config))
    return load_weights(model, state, "Z-Image transformer", assign=True).eval()


def tokenize(tokenizer, text: str):
    """Token ids (1, L) of a prompt in ComfyUI's chat template, unpadded."""
    from . import TEMPLATE

    return tokenizer(TEMPLATE.format(text), return_tensors="pt").input_ids


def encode_ids(text_encoder, ids, skip: int = 0):
    """The conditioning embeds (1, tokens, width) of token ids: the penultimate hidden state (`skip`
    layers earlier), as ComfyUI's Z-Image text encoder."""
    import torch

    ids = ids.to(text_encoder.device)
    with torch.no_grad():
        out = text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    return out.hidden_states[family("zimage").conditioning.hidden_layer - skip]


def encode(tokenizer, text_encoder, text: str):
    """The conditioning embeds (1, tokens, width) of a prompt, as ComfyUI's Z-Image text encoder."""
    return encode_ids(text_encoder, tokenize(tokenizer, text))

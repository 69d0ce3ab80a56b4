"""HiDream's transformer file as ComfyUI names it (diffusion_models/hidream_i1_{full,dev,fast}_*.safetensors),
loaded into diffusers' HiDreamImageTransformer2DModel, and its prompt encoding with the four encoders
(nodes.families.hidream describes the family).

The config is read off the shapes (width, heads from the q norm, depths, experts, the text widths);
what they cannot tell is published: heads of 128 (16 for widths that are no multiple of 128: tiny
models), 2 activated experts, rotary axes [64, 32, 32] (split in that ratio for other head widths),
llama_layers 0..31 then 31 for every further block.
"""
from __future__ import annotations

import re

from ...loading.encoders import without_weights
from ...loading.model_files import key_indices
from ...loading.single_file import load_weights
from .. import family
from . import CLIP_TOKENS, LLAMA_TOKENS, T5_TOKENS


def transformer_config(sd: dict, prefix: str = "") -> dict:
    from . import TRANSFORMER

    p = re.escape(prefix)
    width, patch_in = sd[prefix + "x_embedder.proj.weight"].shape
    head_dim = 128 if width % 128 == 0 else 16  # the q/k norms span all heads: published 128, tiny 16
    double = len(key_indices(sd, p + r"double_stream_blocks\.(\d+)\."))
    single = len(key_indices(sd, p + r"single_stream_blocks\.(\d+)\."))
    patch = 2
    published_axes = [64, 32, 32]
    return dict(
        TRANSFORMER, patch_size=patch, in_channels=patch_in // (patch * patch),
        out_channels=sd[prefix + "final_layer.linear.weight"].shape[0] // (patch * patch),
        num_layers=double, num_single_layers=single, num_attention_heads=width // head_dim,
        attention_head_dim=head_dim, text_emb_dim=sd[prefix + "p_embedder.pooled_embedder.linear_1.weight"].shape[1],
        caption_channels=[sd[f"{prefix}caption_projection.{double + single}.linear.weight"].shape[1],
                          sd[prefix + "caption_projection.0.linear.weight"].shape[1]],
        num_routed_experts=len(key_indices(sd, p + r"double_stream_blocks\.0\.block\.ff_i\.experts\.(\d+)\.")),
        axes_dims_rope=published_axes if head_dim == sum(published_axes) else [head_dim // 2, head_dim // 4, head_dim // 4],
        llama_layers=[min(i, 31) for i in range(double + single)])


def transformer_from_file(sd: dict, prefix: str = ""):
    from diffusers import HiDreamImageTransformer2DModel
    from diffusers.loaders import single_file_utils

    from ...loading.fp8 import dequantize

    converter = getattr(single_file_utils, family("hidream").denoiser_converter)
    state = converter(dequantize({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}))
    config = transformer_config(state)
    model = without_weights(lambda: HiDreamImageTransformer2DModel(**config))
    return load_weights(model, state, "HiDream transformer", assign=True).eval()


def clip_pooled(tokenizer, text_encoder, text: str):
    """A CLIP's projected pooled output (1, projection), from a CLIPTextModelWithProjection or a CLIP-L
    file's model with its projection kept beside it. The prompt is padded and cut at the model's
    positions (ComfyUI's long-CLIP rule: 248 for HiDream's CLIPs, 77 for others); the pooled output
    stops at the first end token, so the padding length changes nothing else."""
    import torch

    length = getattr(text_encoder.config, "max_position_embeddings", CLIP_TOKENS)
    ids = tokenizer(text, padding="max_length", max_length=length, truncation=True,
                    return_tensors="pt").input_ids.to(text_encoder.device)
    with torch.no_grad():
        out = text_encoder(ids)
    if getattr(out, "text_embeds", None) is not None:
        return out.text_embeds
    projection = getattr(text_encoder, "loom_text_projection", None)
    if projection is None:
        raise ValueError("HiDream's CLIP-L needs its text projection: this CLIP-L file has no 'text_projection.weight'")
    return torch.nn.functional.linear(out.pooler_output, projection.to(out.pooler_output.dtype))


def padded(tokenizer, text: str, length: int, device):
    """Input ids and mask of a prompt padded to (and cut at) `length` tokens, with the tokenizer's specials."""
    tokens = tokenizer(text, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return tokens.input_ids.to(device), tokens.attention_mask.to(device)


def t5_embeds(tokenizer, text_encoder, text: str):
    import torch

    ids, mask = padded(tokenizer, text, T5_TOKENS, text_encoder.device)
    with torch.no_grad():
        return text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state


def llama_embeds(tokenizer, text_encoder, text: str):
    """Every layer's hidden state after the embeddings, (1, layers, tokens, width) (ComfyUI's layout)."""
    import torch

    ids, mask = padded(tokenizer, text, LLAMA_TOKENS, text_encoder.device)
    with torch.no_grad():
        out = text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return torch.stack(out.hidden_states[1:], dim=1)


def encode(clip, text: str):
    """(T5 embeds, pooled CLIP-L + CLIP-G, Llama's hidden states) of a prompt."""
    import torch

    pooled = torch.cat([clip_pooled(*clip.pair("text_encoder"), text),
                        clip_pooled(*clip.pair("text_encoder_2"), text)], dim=-1)
    return t5_embeds(*clip.pair("text_encoder_3"), text), pooled, llama_embeds(*clip.pair("text_encoder_4"), text)

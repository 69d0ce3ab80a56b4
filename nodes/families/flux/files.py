"""Flux.1's transformer file as ComfyUI holds it, loaded into diffusers' model, and its prompt encoding
(nodes.families.flux describes the family; its T5-XXL file is read by nodes.loading.encoders.t5, its
CLIP-L file by nodes.loading.checkpoints).

- the transformer (diffusion_models/flux1-dev.safetensors, flux1-schnell.safetensors, a whole
  checkpoint's `model.diffusion_model.`): its config read off the shapes (width, heads, depths, text
  and pooled widths, guidance embedding, input/output channels), its keys converted by diffusers' own
  convert_flux_transformer_checkpoint_to_diffusers. That converter splits the single blocks' fused
  `linear1` at the published width (3072); the split is redone here at the file's width, so smaller
  (tiny) models load too. ComfyUI's scaled fp8 files are multiplied back first.
- a prompt (ComfyUI's syntax: `(word:1.2)` weights): CLIP-L's pooled output and T5-XXL's last hidden
  state, as ComfyUI's Flux text encoder.
"""
from __future__ import annotations

import re

from ...loading.encoders import t5, without_weights
from ...loading.fp8 import dequantize
from ...loading.model_files import key_indices
from ...loading.single_file import load_weights
from .. import family


def transformer_config(sd: dict, prefix: str = "") -> dict:
    from . import GUIDANCE_KEY, PUBLISHED_AXES

    declared = family("flux").tiny.denoiser
    inner, in_channels = sd[prefix + "img_in.weight"].shape
    head_dim = sd[prefix + "double_blocks.0.img_attn.norm.query_norm.scale"].shape[0]
    out_channels = sd[prefix + "final_layer.linear.weight"].shape[0]
    axes = PUBLISHED_AXES if head_dim == sum(PUBLISHED_AXES) else declared["axes_dims_rope"]
    if sum(axes) != head_dim:
        raise ValueError(f"a Flux transformer with {head_dim}-wide heads has no known rotary axes")
    return dict(
        declared, in_channels=in_channels, out_channels=None if out_channels == in_channels else out_channels,
        num_layers=len(key_indices(sd, re.escape(prefix) + r"double_blocks\.(\d+)\.")),
        num_single_layers=len(key_indices(sd, re.escape(prefix) + r"single_blocks\.(\d+)\.")),
        attention_head_dim=head_dim, num_attention_heads=inner // head_dim,
        joint_attention_dim=sd[prefix + "txt_in.weight"].shape[1],
        pooled_projection_dim=sd[prefix + "vector_in.in_layer.weight"].shape[1],
        guidance_embeds=prefix + GUIDANCE_KEY in sd, axes_dims_rope=list(axes))


def convert(sd: dict, converter_name: str) -> dict:
    """BFL's keys (no prefix) -> diffusers', by diffusers' converter `converter_name` (Flux's, Chroma's:
    the same single blocks); the single blocks' fused q, k, v and MLP input are split here at the
    file's width (the converters assume the published 3072) and the converter gets meta placeholders."""
    import torch
    from diffusers.loaders import single_file_utils

    inner = sd["img_in.weight"].shape[0]
    published = (3 * 3072 + 4 * 3072,)
    fused = {k: v for k, v in sd.items() if re.fullmatch(r"single_blocks\.\d+\.linear1\.(weight|bias)", k)}
    placeholders = {k: torch.empty(published + tuple(v.shape[1:]), device="meta") for k, v in fused.items()}
    state = getattr(single_file_utils, converter_name)({**sd, **placeholders})
    for key, value in fused.items():
        block, kind = re.match(r"(single_blocks\.\d+)\.linear1\.(weight|bias)", key).groups()
        target = "single_transformer_blocks." + block.split(".")[1] + "."
        q, k, v, mlp = torch.split(value, (inner, inner, inner, value.shape[0] - 3 * inner), dim=0)
        for name, part in (("attn.to_q", q), ("attn.to_k", k), ("attn.to_v", v), ("proj_mlp", mlp)):
            state[f"{target}{name}.{kind}"] = part
    return state


def transformer_from_file(sd: dict, prefix: str = ""):
    from diffusers import FluxTransformer2DModel

    own = dequantize({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    config = transformer_config(own)
    state = convert(own, family("flux").denoiser_converter)
    model = without_weights(lambda: FluxTransformer2DModel(**config))
    return load_weights(model, state, "Flux transformer", assign=True).eval()


def clip_pooled(tokenizer, text_encoder, text: str):
    """CLIP-L's pooled output (1, width) of a prompt as ComfyUI pools it: its first chunk of 77 tokens
    in ComfyUI's syntax (start, the words without weight marks, end, padding; weights change only
    the hidden states, which Flux does not use)."""
    import torch

    from ...comfy.prompt_weights import tokenize_chunks

    ids = torch.tensor(tokenize_chunks(tokenizer, text).rows[:1], device=text_encoder.device)
    with torch.no_grad():
        return text_encoder(ids, output_hidden_states=False).pooler_output


def encode(clip, clip_l_text: str, t5xxl_text: str):
    """(T5 embeds (1, tokens, width), CLIP-L pooled (1, width)) of a prompt, as ComfyUI's Flux text encoder."""
    from . import T5_MIN_LENGTH

    clip_tokenizer, clip_model = clip.pair("text_encoder")
    t5_tokenizer, t5_model = clip.pair("text_encoder_2")
    if clip_model is None or t5_model is None:
        raise ValueError("a Flux CLIP needs CLIP-L and T5-XXL (DualCLIPLoader type 'flux')")
    embeds = t5.encode(t5_tokenizer, t5_model, t5xxl_text, T5_MIN_LENGTH)
    return embeds, clip_pooled(clip_tokenizer, clip_model, clip_l_text)

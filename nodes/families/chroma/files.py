"""Chroma's transformer file as ComfyUI names it (diffusion_models/Chroma1-HD*.safetensors), loaded into
diffusers' ChromaTransformer2DModel, and its prompt encoding (nodes.families.chroma describes the
family; the T5-XXL file is read by nodes.loading.encoders.t5).

The config is read off the shapes (width, heads from the q/k norm, depths, the approximator's); the
keys are converted by diffusers' own convert_chroma_transformer_checkpoint_to_diffusers, with the single
blocks' fused `linear1` split at the file's own width as for Flux (nodes.families.flux.files.convert).
"""
from __future__ import annotations

import re

from ...loading.encoders import without_weights
from ...loading.model_files import key_indices
from ...loading.single_file import load_weights
from .. import family
from ..flux.files import convert  # Chroma's transformer keeps Flux's single blocks

def transformer_config(sd: dict, prefix: str = "") -> dict:
    declared = family("chroma").tiny.denoiser  # the published values of what shapes cannot tell
    width, patch_in = sd[prefix + "img_in.weight"].shape
    head_dim = sd[prefix + "double_blocks.0.img_attn.norm.query_norm.scale"].shape[0]
    approximator_hidden, approximator_in = sd[prefix + "distilled_guidance_layer.in_proj.weight"].shape
    published_axes = [16, 56, 56]
    return dict(
        declared, in_channels=patch_in, num_attention_heads=width // head_dim, attention_head_dim=head_dim,
        joint_attention_dim=sd[prefix + "txt_in.weight"].shape[1],
        num_layers=len(key_indices(sd, re.escape(prefix) + r"double_blocks\.(\d+)\.")),
        num_single_layers=len(key_indices(sd, re.escape(prefix) + r"single_blocks\.(\d+)\.")),
        approximator_num_channels=approximator_in, approximator_hidden_dim=approximator_hidden,
        approximator_layers=len(key_indices(sd, re.escape(prefix) + r"distilled_guidance_layer\.layers\.(\d+)\.")),
        axes_dims_rope=published_axes if head_dim == sum(published_axes)
        else [head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8])


def transformer_from_file(sd: dict, prefix: str = ""):
    from diffusers import ChromaTransformer2DModel

    from ...loading.fp8 import dequantize

    state = dequantize({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    config = transformer_config(state)
    model = without_weights(lambda: ChromaTransformer2DModel(**config))
    return load_weights(model, convert(state, family("chroma").denoiser_converter), "Chroma transformer",
                        assign=True).eval()


def token_ids(tokenizer, text: str, min_padding: int = 0, min_length: int = 0) -> list[int]:
    """ComfyUI's Chroma tokens: T5's pieces and `</s>`, `min_padding` pads, then pads up to `min_length`."""
    from ...loading.encoders import t5

    ids = t5.token_ids(tokenizer, text, 0) + [tokenizer.pad_token_id] * min_padding
    return ids + [tokenizer.pad_token_id] * max(0, min_length - len(ids))


def encode(tokenizer, text_encoder, text: str, min_padding: int = 0, min_length: int = 0):
    """The conditioning embeds (1, tokens, width) of a prompt: T5's last hidden state, no mask."""
    import torch

    ids = torch.tensor([token_ids(tokenizer, text, min_padding, min_length)], device=text_encoder.device)
    with torch.no_grad():
        return text_encoder(input_ids=ids).last_hidden_state

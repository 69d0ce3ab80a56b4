"""Flux.2's transformer file as ComfyUI names it (diffusion_models/flux2_dev_fp8mixed.safetensors,
flux-2-klein-4b.safetensors, ...) loaded into diffusers' model, and its prompt encoding.

- the transformer: its config read off the shapes (widths, depths, heads, the text width, whether it
  embeds guidance; the rotary axes four equal quarters of a head, 32 each as published), its keys
  converted by diffusers' own convert_flux2_transformer_checkpoint_to_diffusers.
- a prompt: the family's template, no prompt weights (as ComfyUI), the hidden states it stacks
  (Dev 10/20/30 of Mistral, unpadded then zero-padded in front to 512 tokens; Klein 9/18/27 of Qwen3,
  the tokens padded to 512 with a mask).
"""
from __future__ import annotations

import re

import torch

from ...loading.encoders import without_weights
from ...loading.model_files import key_indices
from ...loading.single_file import load_weights
from . import DEV_LAYERS, DEV_TEMPLATE, TEXT_TOKENS, TRANSFORMER



def transformer_config(sd: dict, prefix: str = "") -> dict:
    inner, patch_in = sd[prefix + "img_in.weight"].shape
    head_dim = sd[prefix + "double_blocks.0.img_attn.norm.query_norm.scale"].shape[0]
    return dict(TRANSFORMER, in_channels=patch_in, attention_head_dim=head_dim, num_attention_heads=inner // head_dim,
                joint_attention_dim=sd[prefix + "txt_in.weight"].shape[1],
                timestep_guidance_channels=sd[prefix + "time_in.in_layer.weight"].shape[1],
                mlp_ratio=sd[prefix + "double_blocks.0.img_mlp.0.weight"].shape[0] / 2 / inner,
                num_layers=len(key_indices(sd, re.escape(prefix) + r"double_blocks\.(\d+)\.")),
                num_single_layers=len(key_indices(sd, re.escape(prefix) + r"single_blocks\.(\d+)\.")),
                axes_dims_rope=[head_dim // 4] * 4, guidance_embeds=prefix + "guidance_in.in_layer.weight" in sd)


def transformer_from_file(sd: dict, prefix: str = ""):
    from diffusers import Flux2Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers

    config = transformer_config(sd, prefix)
    own = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    state = convert_flux2_transformer_checkpoint_to_diffusers(own)
    model = without_weights(lambda: Flux2Transformer2DModel(**config))
    model = load_weights(model, state, "Flux.2 transformer", assign=True).eval()
    return model


def _stacked(model, ids: torch.Tensor, mask: torch.Tensor | None, layers) -> torch.Tensor:
    """The hidden states of `layers`, side by side per token: (B, L, 3 * width)."""
    device = next(model.parameters()).device
    out = model(input_ids=ids.to(device), attention_mask=None if mask is None else mask.to(device),
                output_hidden_states=True, use_cache=False)
    stacked = torch.stack([out.hidden_states[k] for k in layers], dim=1)
    b, n, length, width = stacked.shape
    return stacked.permute(0, 2, 1, 3).reshape(b, length, n * width)


def encode_dev(tokenizer, model, text: str) -> torch.Tensor:
    """Mistral: <s> + the template, unpadded (ComfyUI's tokenizer), then zeros in front up to 512 tokens
    (ComfyUI's Flux2 model pads the conditioning so)."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a pipeline folder's processor holds it
    ids = [tok.bos_token_id or 1] + tok(DEV_TEMPLATE.format(text), add_special_tokens=False).input_ids
    with torch.no_grad():
        embeds = _stacked(model, torch.tensor([ids]), None, DEV_LAYERS).float().cpu()
    if embeds.shape[1] < TEXT_TOKENS:
        embeds = torch.nn.functional.pad(embeds, (0, 0, TEXT_TOKENS - embeds.shape[1], 0))
    return embeds


def encode_klein(tokenizer, model, text: str) -> torch.Tensor:
    """Qwen3: the chat template with an empty thinking block, padded to 512 tokens (at least) with the
    pad token and an attention mask (ComfyUI's tokenizer: min_length 512; the pipeline: max_length)."""
    from ..flux2_klein import LAYERS, TEMPLATE

    ids = tokenizer(TEMPLATE.format(text), add_special_tokens=False).input_ids
    pad = max(0, TEXT_TOKENS - len(ids))
    mask = torch.tensor([[1] * len(ids) + [0] * pad])
    ids = torch.tensor([ids + [tokenizer.pad_token_id] * pad])
    with torch.no_grad():
        return _stacked(model, ids, mask, LAYERS).float().cpu()

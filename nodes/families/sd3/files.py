"""SD3's single files as ComfyUI users hold them, loaded into diffusers' and transformers' models, and
its prompt encoding (nodes.families.sd3 describes the family).

- the transformer (a whole checkpoint's `model.diffusion_model.*`, or a file of it alone; ComfyUI's
  scaled fp8 weights multiplied back by their `scale_weight`, as nodes.loading.encoders.t5 does): its config
  read off the shapes (width, depth, heads from the q/k norms, patch, position grid, dual-attention
  blocks), its keys converted by diffusers' own convert_sd3_transformer_checkpoint_to_diffusers.
- a whole checkpoint (sd3.5_large_fp8_scaled.safetensors, sd3.5_medium_incl_clips_t5xxlfp8scaled...):
  the transformer, the VAE (`first_stage_model.*`, LDM layout, at SD3's scale and shift: the family
  decides, the file cannot tell), CLIP-L and bigG (transformers' layout under
  `text_encoders.clip_{l,g}.transformer.`) and T5-XXL (`text_encoders.t5xxl.transformer.`, read by the
  T5 file reader of nodes.loading.encoders) when present.
"""
from __future__ import annotations

import math
import re

from ...loading.encoders import encoder_file, without_weights
from ...loading.model_files import has_prefix, key_indices
from ...loading.single_file import CheckpointError, load_weights, vae_from_ldm
from . import CLIP_TOKENS, FAMILY, MARK, T5_MIN_TOKENS

PUBLISHED_HEAD = 64  # SD 3.0 medium has no q/k norms to read the head width from


def transformer_config(sd: dict, prefix: str = "") -> dict:
    width, joint = sd[prefix + "context_embedder.weight"].shape
    patch = sd[prefix + "x_embedder.proj.weight"]
    norm = sd.get(prefix + "joint_blocks.0.x_block.attn.ln_q.weight")
    head = norm.shape[0] if norm is not None else PUBLISHED_HEAD
    blocks = key_indices(sd, re.escape(prefix) + r"joint_blocks\.(\d+)\.")
    dual = key_indices(sd, re.escape(prefix) + r"joint_blocks\.(\d+)\.x_block\.attn2\.")
    grid = math.isqrt(sd[prefix + "pos_embed"].shape[1])
    return dict(
        FAMILY.tiny.denoiser, sample_size=128, patch_size=patch.shape[-1], in_channels=patch.shape[1],
        num_layers=len(blocks), attention_head_dim=head, num_attention_heads=width // head,
        joint_attention_dim=joint, caption_projection_dim=width,
        pooled_projection_dim=sd[prefix + "y_embedder.mlp.0.weight"].shape[1],
        out_channels=sd[prefix + "final_layer.linear.weight"].shape[0] // patch.shape[-1] ** 2,
        pos_embed_max_size=grid, dual_attention_layers=tuple(dual), qk_norm="rms_norm" if norm is not None else None)


def transformer_from_file(sd: dict, prefix: str = ""):
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders import single_file_utils

    if prefix + MARK not in sd:
        raise CheckpointError("not an SD3 transformer (no 'joint_blocks.0.context_block.attn.qkv.weight')")
    from ...loading.fp8 import dequantize

    converter = getattr(single_file_utils, FAMILY.denoiser_converter)
    own = dequantize({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})  # scaled fp8 files
    config = transformer_config(own)
    state = converter(own)
    model = without_weights(lambda: SD3Transformer2DModel(**config))
    return load_weights(model, state, "SD3 transformer", assign=True).eval()


def sd3_vae(sd: dict, prefix: str):
    """SD3's VAE: the LDM layout of Flux's (16 channels, no quant convolutions) at SD3's scale and shift."""
    vae = vae_from_ldm(sd, FAMILY.latent.scale, prefix)
    vae.register_to_config(shift_factor=FAMILY.latent.shift)
    return vae


def parts_from_checkpoint(sd: dict, path) -> dict:
    """The Runtime hook (nodes.families.spec.Runtime.parts_from_checkpoint)."""
    from ...loading.checkpoints import clip_encoder_file

    if not has_prefix(sd, FAMILY.vae_prefix):
        raise CheckpointError(f"holds no VAE (no '{FAMILY.vae_prefix}*' keys)")
    parts = {"unet": transformer_from_file(sd, FAMILY.denoiser_prefix), "vae": sd3_vae(sd, FAMILY.vae_prefix)}
    for enc in FAMILY.text_encoders:
        if not has_prefix(sd, enc.prefix):
            continue  # ComfyUI's checkpoints may leave T5 (or any encoder) out
        own = {k[len(enc.prefix):]: v for k, v in sd.items() if k.startswith(enc.prefix)}
        found = encoder_file(own)
        if found is not None:
            tokenizer, model = found.load(own, path)
        else:
            kind, tokenizer, model = clip_encoder_file(own, path)
            if kind != enc.kind:
                raise CheckpointError(f"'{enc.prefix}' holds a {kind} text encoder, expected {enc.kind}")
        parts[enc.slot], parts["tokenizer" + enc.slot.removeprefix("text_encoder")] = model, tokenizer
    return parts


# --- prompts --------------------------------------------------------------------------------------

def _clip(tokenizer, model, text: str):
    """(penultimate hidden state without the final norm, pooled) of one CLIP: the pooled output is the
    projected one when the model has a projection (CLIP-L's is the identity in SD3's files, ComfyUI
    reads it unprojected), else the end token's normed state."""
    import torch

    ids = tokenizer(text, padding="max_length", max_length=CLIP_TOKENS, truncation=True,
                    return_tensors="pt").input_ids.to(model.device)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    return out.hidden_states[FAMILY.conditioning.hidden_layer], pooled


def _t5(tokenizer, model, text: str):
    """ComfyUI's T5 tokens (`</s>`, padded to at least 77, no truncation), the last hidden state."""
    from ...loading.encoders import t5

    return t5.encode(tokenizer, model, text, T5_MIN_TOKENS)


def encode(clip, text: str, clip_l: str | None = None, clip_g: str | None = None, t5xxl: str | None = None):
    """(embeds (1, 77 + T5 tokens, width), pooled (1, 2048)) of a prompt, as ComfyUI's SD3 text encoder
    (CLIPTextEncodeSD3: one text per encoder; an empty string there leaves that encoder out, as
    ComfyUI's empty_padding "none")."""
    import torch
    import torch.nn.functional as F

    texts = {"text_encoder": text if clip_l is None else clip_l, "text_encoder_2": text if clip_g is None else clip_g,
             "text_encoder_3": text if t5xxl is None else t5xxl}
    (tok_l, clip_l_model), (tok_g, clip_g_model) = clip.pair("text_encoder"), clip.pair("text_encoder_2")
    tok_t5, t5 = clip.pair("text_encoder_3")
    hidden, pooled = [], []
    for (tok, model, slot, width) in ((tok_l, clip_l_model, "text_encoder", 768),
                                      (tok_g, clip_g_model, "text_encoder_2", 1280)):
        if model is not None and texts[slot] is not None:
            h, p = _clip(tok, model, texts[slot])
            hidden.append(h.float())
            pooled.append(p.float())
        else:  # ComfyUI: zeros of the missing encoder's width in the pooled output (and hidden state)
            other = clip_g_model if slot == "text_encoder" else clip_l_model
            width = width if other is None else _published_or(other, width, slot)
            hidden.append(None)
            pooled.append(torch.zeros(1, width))
    embeds = None
    if any(h is not None for h in hidden):
        device = next(h for h in hidden if h is not None).device
        hidden = [h if h is not None else torch.zeros(1, CLIP_TOKENS, p.shape[-1], device=device)
                  for h, p in zip(hidden, pooled)]
        embeds = torch.cat(hidden, dim=-1)
    t5_out = _t5(tok_t5, t5, texts["text_encoder_3"]).float() if t5 is not None and texts["text_encoder_3"] is not None \
        else None
    if embeds is not None and t5_out is not None:
        embeds = torch.cat([F.pad(embeds, (0, t5_out.shape[-1] - embeds.shape[-1])), t5_out.to(embeds.device)], dim=-2)
    elif embeds is None:
        embeds = t5_out
    if embeds is None:
        raise ValueError("an SD3 CLIP needs at least one text encoder and one text to encode")
    return embeds, torch.cat([p.to(embeds.device) for p in pooled], dim=-1)


def _published_or(other, width: int, slot: str) -> int:
    """The width of a missing CLIP in the pooled output: the published one, or for tiny test models
    (narrower than published) the present CLIP's."""
    present = other.config.hidden_size
    return width if present in (768, 1280) else getattr(other.config, "projection_dim", present)

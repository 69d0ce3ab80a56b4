"""Qwen-Image's single files as ComfyUI names them, loaded into diffusers' and transformers' models,
and its prompt encoding (nodes.families.qwen_image describes the family).

- the transformer (diffusion_models/qwen_image_fp8_e4m3fn.safetensors, qwen_image_edit_2509_...):
  diffusers' own key names (no converter exists or is needed), its config read off the shapes; a
  `__index_timestep_zero__` entry (-Edit-2511) sets zero_cond_t.
- the VAE (vae/qwen_image_vae.safetensors): the original Wan layout, diffusers'
  convert_wan_vae_to_diffusers, sizes read off the shapes.
- a prompt (with images for editing): the family's chat template, the Qwen2-VL processor, the last
  hidden state, the template's head dropped by ComfyUI's rule (the second <|im_start|>, then "user\\n").
"""
from __future__ import annotations

import re

from ...loading.encoders import qwen25vl, without_weights
from ...loading.model_files import key_indices
from ...loading.single_file import build_on_meta, load_weights
from . import EDIT_TEMPLATE, IMAGE_TEMPLATE, TEMPLATE, TRANSFORMER, VAE, ZERO_COND_MARK

WAN_VAE_MARK = "decoder.middle.0.residual.0.gamma"


def transformer_config(sd: dict, prefix: str = "") -> dict:
    inner, joint = sd[prefix + "txt_in.weight"].shape
    head_dim = sd[prefix + "transformer_blocks.0.attn.norm_q.weight"].shape[0]
    patch_features = sd[prefix + "img_in.weight"].shape[1]
    out = sd[prefix + "proj_out.weight"].shape[0]
    published = TRANSFORMER["attention_head_dim"]
    # The rotary axes split the head as published (16, 56, 56 of 128); a narrower head: 1/4, 3/8, 3/8.
    axes = TRANSFORMER["axes_dims_rope"] if head_dim == published else (head_dim // 4, 3 * head_dim // 8,
                                                                        3 * head_dim // 8)
    return dict(TRANSFORMER, in_channels=patch_features, out_channels=out // 4, attention_head_dim=head_dim,
                num_attention_heads=inner // head_dim, joint_attention_dim=joint,
                num_layers=len(key_indices(sd, re.escape(prefix) + r"transformer_blocks\.(\d+)\.")),
                axes_dims_rope=tuple(axes), guidance_embeds=prefix + "time_text_embed.guidance_embedder.linear_1.weight" in sd,
                zero_cond_t=prefix + ZERO_COND_MARK in sd)


def transformer_from_file(sd: dict, prefix: str = ""):
    from diffusers import QwenImageTransformer2DModel

    config = transformer_config(sd, prefix)
    state = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and not k.endswith(ZERO_COND_MARK)}
    model = without_weights(lambda: QwenImageTransformer2DModel(**config))
    return load_weights(model, state, "Qwen-Image transformer", assign=True).eval()


def is_vae(sd: dict) -> bool:
    return WAN_VAE_MARK in sd and sd["decoder.conv1.weight"].shape[1] == VAE["z_dim"]


def vae_from_file(sd: dict):
    """LatentImageVAE of a Wan-layout VAE file (Qwen-Image's; Wan 2.1's has the same layout and statistics)."""
    from diffusers import AutoencoderKLQwenImage
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from .vae import LatentImageVAE

    # the published levels (widths 1, 2, 4, 4 x base, 2 resnets each: what the converter expects)
    config = dict(VAE, base_dim=sd["encoder.conv1.weight"].shape[0], z_dim=sd["conv2.weight"].shape[0])
    vae = load_weights(build_on_meta(AutoencoderKLQwenImage, config), convert_wan_vae_to_diffusers(sd), "Qwen-Image VAE",
                       assign=True)
    return LatentImageVAE(vae.eval())


def template_end(tokenizer, ids: list[int]) -> int:
    """ComfyUI's count of the template's head to drop: the position of the second <|im_start|> (or the
    only one), then past "user\\n" when that follows."""
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    starts = [i for i, t in enumerate(ids) if t == start][:2]
    if not starts:
        return 0
    end = starts[-1]
    user = tokenizer("user\n", add_special_tokens=False).input_ids
    if len(ids) > end + len(user) + 1 and ids[end + 1:end + 1 + len(user)] == user:
        end += 1 + len(user)
    return end


def prompt_text(text: str, images: int, template: str | None = None) -> str:
    """The prompt as the language model reads it (ComfyUI's QwenImageTokenizer)."""
    if text.startswith("<|im_start|>"):
        return text
    if template is not None:
        return template.format(text)
    return (IMAGE_TEMPLATE if images else TEMPLATE).format(text)


def vision_images(images) -> list:
    """IMAGE tensors (1, H, W, 3) in 0..1 -> uint8 arrays, as the pipelines hand their PIL images to the
    processor (pixels read from 8-bit files come back exactly)."""
    return [(img[0, ..., :3].float().cpu().clamp(0, 1) * 255).round().byte().numpy() for img in images]


def encode(tokenizer, text_encoder, text: str, images=(), template: str | None = None):
    """The conditioning features (1, tokens, width) of a prompt, and images for the vision tower."""
    import torch

    prompt = prompt_text(text, len(images), template)
    if images and getattr(_language(text_encoder), "visual", None) is None:
        raise ValueError("this Qwen2.5-VL text encoder file holds no vision tower (visual.*): it cannot read "
                         "images; use one that does (qwen_2.5_vl_7b_fp8_scaled.safetensors has it)")
    if images:
        inputs = qwen25vl.processor(tokenizer)(text=[prompt], images=vision_images(images), return_tensors="pt")
    else:
        inputs = tokenizer([prompt], return_tensors="pt")
    device = next(text_encoder.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(next(text_encoder.parameters()).dtype)
    with torch.no_grad():
        out = text_encoder(**inputs, output_hidden_states=True)
    drop = template_end(tokenizer, inputs["input_ids"][0].tolist())
    return out.hidden_states[-1][:, drop:]


def _language(text_encoder):
    """Qwen2_5_VLModel (from a file) or Qwen2_5_VLForConditionalGeneration (a diffusers folder's)."""
    return getattr(text_encoder, "model", text_encoder) if not hasattr(text_encoder, "visual") else text_encoder


__all__ = ["EDIT_TEMPLATE", "encode", "is_vae", "prompt_text", "template_end", "transformer_from_file",
           "vae_from_file"]

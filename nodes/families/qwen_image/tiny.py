"""Tiny random Qwen-Image models for tests: the diffusers folder (QwenImagePipeline.save_pretrained;
QwenImageEditPlusPipeline takes the same parts plus the processor) and the single files ComfyUI's
Qwen-Image templates load, under their names:

    diffusion_models/qwen_image_fp8_e4m3fn.safetensors          the transformer, diffusers' keys
    diffusion_models/qwen_image_2512_fp8_e4m3fn.safetensors     the same weights (Qwen-Image-2512's name)
    diffusion_models/qwen_image_edit_fp8_e4m3fn.safetensors     (-Edit's), qwen_image_edit_2509_fp8_e4m3fn,
                                                                 FireRed-Image-Edit-1.1-transformer
    diffusion_models/qwen_image_edit_2511_fp8mixed.safetensors  the same with -Edit-2511's marker (and _bf16)
    text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors          Qwen2.5-VL, original layout
    vae/qwen_image_vae.safetensors                               the VAE, Wan layout

The weights are float32 whatever the name says (parity tests compare exact numbers); the loaders read
fp8 and scaled-fp8 files as well (nodes.loading.fp8). The tokenizer is nodes.loading.encoders.qwen's
tiny one with Qwen2.5-VL's image markers.

    python -m nodes.families.qwen_image.tiny MODELS_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

from ...loading.encoders import qwen
from ...loading.tiny import randomise_zeros
from . import FAMILY, PUBLISHED_SCHEDULER, ZERO_COND_MARK

TRANSFORMER_FILES = ("qwen_image_fp8_e4m3fn.safetensors", "qwen_image_2512_fp8_e4m3fn.safetensors",
                     "qwen_image_edit_fp8_e4m3fn.safetensors", "qwen_image_edit_2509_fp8_e4m3fn.safetensors",
                     "FireRed-Image-Edit-1.1-transformer.safetensors")  # FireRed: a Qwen-Image-Edit fine-tune
EDIT_2511_FILE = "qwen_image_edit_2511_fp8mixed.safetensors"
EDIT_2511_FILES = (EDIT_2511_FILE, "qwen_image_edit_2511_bf16.safetensors")
FILES = {"transformer": "diffusion_models/" + TRANSFORMER_FILES[0],
         "text_encoder": "text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors", "vae": "vae/qwen_image_vae.safetensors"}


def tiny_tokenizer():
    return qwen.tiny_tokenizer(1024, vision=True)


def text_encoder(tokenizer, seed: int):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tiny = dict(FAMILY.tiny.text_encoders["text_encoder"])
    vision = tiny.pop("vision_config")
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
           (("image_token_id", "<|image_pad|>"), ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(tiny, vocab_size=len(tokenizer), bos_token_id=None,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                                                **ids)).eval()


def build_parts(seed: int = 0) -> dict:
    import diffusers
    import torch

    from ...loading.encoders import qwen25vl

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    transformer = diffusers.QwenImageTransformer2DModel(**FAMILY.tiny.denoiser)
    randomise_zeros(transformer, seed + 3)
    torch.manual_seed(seed + 1)
    vae = diffusers.AutoencoderKLQwenImage(**FAMILY.tiny.vae)
    config = dict(PUBLISHED_SCHEDULER)
    scheduler = getattr(diffusers, config.pop("_class_name")).from_config(config)
    return dict(transformer=transformer.eval(), vae=vae.eval(), text_encoder=text_encoder(tokenizer, seed + 2),
                tokenizer=tokenizer, scheduler=scheduler, processor=qwen25vl.processor(tokenizer))


def build_pipeline(seed: int = 0, edit_plus: bool = False, parts: dict | None = None):
    import diffusers

    parts = dict(parts or build_parts(seed))
    if edit_plus:
        return diffusers.QwenImageEditPlusPipeline(**parts)
    parts.pop("processor")
    return diffusers.QwenImagePipeline(**parts)




def write_folder(folder: str | Path, seed: int = 0) -> Path:
    folder = Path(folder)
    build_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    return folder


_RESNET = {"norm1.gamma": "residual.0.gamma", "conv1.": "residual.2.", "norm2.gamma": "residual.3.gamma",
           "conv2.": "residual.6.", "conv_shortcut.": "shortcut."}


def _resnet(rest: str) -> str:
    for new, old in _RESNET.items():
        if rest.startswith(new):
            return old + rest[len(new):]
    return rest


def vae_to_original(state: dict) -> dict:
    """diffusers' Qwen-Image / Wan VAE keys -> the original Wan layout (what convert_wan_vae_to_diffusers reads)."""
    import re

    out = {}
    for key, value in state.items():
        new = key
        for side in ("encoder", "decoder"):
            new = new.replace(f"{side}.conv_in.", f"{side}.conv1.").replace(f"{side}.norm_out.", f"{side}.head.0.")
            new = new.replace(f"{side}.conv_out.", f"{side}.head.2.")
            m = re.match(rf"{side}\.mid_block\.resnets\.(\d)\.(.*)", new)
            if m:
                new = f"{side}.middle.{2 * int(m[1])}.{_resnet(m[2])}"
            new = new.replace(f"{side}.mid_block.attentions.0.", f"{side}.middle.1.")
        new = {"quant_conv.weight": "conv1.weight", "quant_conv.bias": "conv1.bias",
               "post_quant_conv.weight": "conv2.weight", "post_quant_conv.bias": "conv2.bias"}.get(new, new)
        m = re.match(r"encoder\.down_blocks\.(\d+)\.(.*)", new)
        if m:
            new = f"encoder.downsamples.{m[1]}.{_resnet(m[2])}"
        m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", new)
        if m:
            new = f"decoder.upsamples.{4 * int(m[1]) + int(m[2])}.{_resnet(m[3])}"
        m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", new)
        if m:
            new = f"decoder.upsamples.{4 * int(m[1]) + 3}.{m[2]}"
        out[new] = value
    return out


def text_encoder_to_original(state: dict) -> dict:
    """Qwen2_5_VLForConditionalGeneration's keys -> Qwen2.5-VL's original checkpoint layout (ComfyUI's)."""
    out = {}
    for key, value in state.items():
        if key.startswith("model.language_model."):
            out["model." + key[len("model.language_model."):]] = value
        elif key.startswith("model.visual."):
            out[key[len("model."):]] = value
        else:
            out[key] = value  # lm_head.weight
    return out


def comfy_files(parts: dict) -> dict[str, dict]:
    return {"transformer": dict(parts["transformer"].state_dict()),
            "text_encoder": text_encoder_to_original(parts["text_encoder"].state_dict()),
            "vae": vae_to_original(parts["vae"].state_dict())}


def write_comfy_files(models_dir: str | Path, seed: int = 0, parts: dict | None = None) -> dict[str, Path]:
    import torch
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    parts = parts or build_parts(seed)
    written = {}
    for part, state in comfy_files(parts).items():
        path = models_dir / FILES[part]
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        written[part] = path
        if part == "transformer":  # the other models' names: the same tiny weights (2511: with its marker)
            for name in TRANSFORMER_FILES[1:]:
                written[name] = models_dir / "diffusion_models" / name
                save_file({k: v.contiguous() for k, v in state.items()}, str(written[name]))
            for name in EDIT_2511_FILES:
                written[name] = models_dir / "diffusion_models" / name
                save_file({**{k: v.contiguous() for k, v in state.items()}, ZERO_COND_MARK: torch.empty(0)},
                          str(written[name]))
    parts["tokenizer"].save_pretrained(written["text_encoder"].parent / qwen.TOKENIZER_FOLDER)
    return written


if __name__ == "__main__":
    print(write_comfy_files(sys.argv[1] if len(sys.argv) > 1 else "data/models"))

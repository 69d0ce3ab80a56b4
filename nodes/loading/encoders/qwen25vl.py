"""Qwen2.5-VL 7B, Qwen-Image's text encoder, as ComfyUI users hold it
(text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors, or _bf16): Qwen2.5-VL's original checkpoint
layout, the language model under `model.` (Qwen2 with q/k/v biases) and the vision tower under
`visual.` (patch_embed, blocks.N.attn.qkv, merger.ln_q, merger.mlp.0/2; ComfyUI's
comfy/text_encoders/llama.py Qwen25_7BVLI and qwen_vl.py name their modules so), optionally in
ComfyUI's scaled fp8 (nodes.loading.fp8). Loom builds transformers' Qwen2_5_VLModel, sized from the
shapes, on the meta device, and assigns the weights (`language_model.` and `visual.`; a file
without the vision tower gives a text-only model).

What shapes cannot tell is the published model's: text head width 128 (narrower models: their k/v
width, one k/v head), its multimodal rotary sections [16, 24, 24] scaled to the head (1/8, 3/16,
3/16 of it), rotary base 1e6; vision heads of width 80, full attention every 8th block, windows of
112 pixels, 14-pixel patches over 2 frames.

The tokenizer is Qwen2's (nodes.loading.encoders.qwen: a `qwen25_tokenizer/` folder beside the file);
the image markers Qwen-Image's edit prompts use are added when missing. Images go through
transformers' Qwen2-VL image processor, configured here as the published one (no hub).
"""
from __future__ import annotations

from pathlib import Path

from ..fp8 import dequantize
from ..model_files import has_prefix, key_indices
from ..single_file import load_weights
from . import EncoderFile, qwen, without_weights

KIND = "qwen25_7b"  # ComfyUI's name of it (its embedding key and checkpoint prefix)
BIAS_MARK = "model.layers.0.self_attn.q_proj.bias"  # Qwen2 / 2.5 project q, k, v with biases (Qwen3, Llama do not)
VISUAL = "visual."
HEAD_DIM, VISION_HEAD_DIM = 128, 80
# The published image processor (Qwen/Qwen2.5-VL-7B-Instruct preprocessor_config.json).
IMAGE_PROCESSOR = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280 * 16, patch_size=14, temporal_patch_size=2,
                       merge_size=2, image_mean=[0.48145466, 0.4578275, 0.40821073],
                       image_std=[0.26862954, 0.26130258, 0.27577711])


def is_qwen25vl(sd: dict) -> bool:
    return "model.embed_tokens.weight" in sd and BIAS_MARK in sd and qwen.QWEN3_MARK not in sd


def text_config(sd: dict) -> dict:
    vocab, hidden = sd["model.embed_tokens.weight"].shape
    kv_width = sd["model.layers.0.self_attn.k_proj.weight"].shape[0]
    head_dim = min(HEAD_DIM, kv_width)
    return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=sd["model.layers.0.mlp.gate_proj.weight"].shape[0],
                num_hidden_layers=len(key_indices(sd, r"model\.layers\.(\d+)\.")),
                num_attention_heads=hidden // head_dim, num_key_value_heads=kv_width // head_dim,
                rms_norm_eps=1e-6, max_position_embeddings=128000,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]})


def vision_config(sd: dict, out_hidden: int) -> dict:
    hidden = sd["visual.patch_embed.proj.weight"].shape[0]
    depth = len(key_indices(sd, r"visual\.blocks\.(\d+)\."))
    merged = sd["visual.merger.mlp.0.weight"].shape[1]
    return dict(depth=depth, hidden_size=hidden, intermediate_size=sd["visual.blocks.0.mlp.gate_proj.weight"].shape[0],
                num_heads=max(1, hidden // VISION_HEAD_DIM), out_hidden_size=sd["visual.merger.mlp.2.weight"].shape[0],
                patch_size=sd["visual.patch_embed.proj.weight"].shape[-1],
                temporal_patch_size=sd["visual.patch_embed.proj.weight"].shape[2],
                spatial_merge_size=round((merged / hidden) ** 0.5), window_size=112,
                fullatt_block_indexes=[i for i in range(depth) if i % 8 == 7])


def ensure_vision_tokens(tokenizer):
    """The tokenizer with Qwen2.5-VL's image markers (a published tokenizer has them; a tiny one may not)."""
    missing = [t for t in qwen.VISION if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": qwen.SPECIAL + qwen.VISION})
    return tokenizer


def model_config(sd: dict, tokenizer):
    from transformers import Qwen2_5_VLConfig

    text = text_config(sd)
    vision = vision_config(sd, text["hidden_size"]) if has_prefix(sd, VISUAL) else dict(depth=0)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
           (("image_token_id", "<|image_pad|>"), ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"))}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)


def to_transformers(sd: dict) -> dict:
    """ComfyUI's keys -> Qwen2_5_VLModel's (the lm_head, unused for features, is left out)."""
    out = {}
    for key, value in sd.items():
        if key.startswith("model."):
            out["language_model." + key[len("model."):]] = value
        elif key.startswith(VISUAL):
            out[key] = value
    return out


def from_file(sd: dict, path: Path):
    """(tokenizer, Qwen2_5_VLModel) of a ComfyUI-layout Qwen2.5-VL file."""
    from transformers import Qwen2_5_VLModel

    tokenizer = ensure_vision_tokens(qwen.tokenizer_beside(path))
    sd = dequantize(sd)
    config = model_config(sd, tokenizer)
    model = without_weights(lambda: Qwen2_5_VLModel(config))
    if not has_prefix(sd, VISUAL):
        model.visual = None  # text only: editing with images is refused where it is asked for
    return tokenizer, load_weights(model, to_transformers(sd), "Qwen2.5-VL text encoder", assign=True).eval()


def image_processor():
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(**IMAGE_PROCESSOR)


class Processor:
    """What transformers' Qwen2VLProcessor does for images, without its video half (which needs
    torchvision): the image processor's patches and grids, each `<|image_pad|>` of the text expanded
    to its image's merged-patch count, then the tokenizer. Called as the edit pipelines call theirs."""

    def __init__(self, tokenizer):
        self.tokenizer, self.image_processor = tokenizer, image_processor()

    def __call__(self, text, images=None, padding=True, return_tensors="pt", **_):
        from transformers import BatchFeature

        texts = [text] if isinstance(text, str) else list(text)
        pixels = {}
        if images is not None and not isinstance(images, (list, tuple)):
            images = [images]  # one image, as QwenImageEditPipeline passes it
        if images:
            pixels = dict(self.image_processor(images=images, return_tensors=return_tensors))
            merge = self.image_processor.merge_size ** 2
            counts = iter((pixels["image_grid_thw"].prod(-1) // merge).tolist())
            texts = [_expand(t, counts) for t in texts]
        tokens = self.tokenizer(texts, padding=padding, return_tensors=return_tensors)
        return BatchFeature({**tokens, **pixels})


def _expand(text: str, counts) -> str:
    pad, marker = "<|image_pad|>", "<|placeholder|>"
    while pad in text:
        text = text.replace(pad, marker * next(counts), 1)
    return text.replace(marker, pad)


def processor(tokenizer) -> Processor:
    return Processor(tokenizer)


ENCODERS = (EncoderFile(KIND, is_qwen25vl, from_file),)

"""Qwen text encoders in ComfyUI's files: Qwen3 (qwen_3_4b.safetensors: Z-Image, Flux.2 Klein 4B;
qwen_3_8b_fp8mixed.safetensors: Klein 9B, kind "qwen3_8b") as
transformers' Qwen3 keys under `model.`, a Qwen3Model sized from its shapes.

Its tokenizer is Qwen2's byte-level BPE, which the file does not hold: Loom reads it from a
`qwen25_tokenizer/` folder (transformers' tokenizer files: vocab.json + merges.txt or tokenizer.json)
beside the file or in the text_encoders folder, as ComfyUI ships it in
comfy/text_encoders/qwen25_tokenizer. `tiny_tokenizer` makes a small one for tests: the 256 byte
symbols with no merges, and Qwen's special tokens.
"""
from __future__ import annotations

from pathlib import Path

from ..model_files import key_indices
from ..single_file import CheckpointError, load_weights
from . import EncoderFile, without_weights

TOKENIZER_FOLDER = "qwen25_tokenizer"
QWEN3_MARK = "model.layers.0.self_attn.q_norm.weight"  # Qwen3 normalises q and k (Qwen2 does not)
PAD_TOKEN = "<|endoftext|>"  # Qwen's pad (id 151643 in the published vocabulary)
SPECIAL = ["<|im_start|>", "<|im_end|>"]
# Qwen2.5-VL's image markers (ids 151652, 151653, 151655 in the published vocabulary): after SPECIAL,
# so a tiny tokenizer with them gives the text the same ids as one without.
VISION = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
# What Qwen3's chat template gives for user messages with a generation prompt (thinking turned off:
# an empty thinking block, as Flux.2 Klein's pipeline asks).
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
                 "{% endif %}")


QWEN3_8B_WIDTH = 4096  # Qwen3-8B's hidden size (Flux.2 Klein 9B's encoder); the other sizes are "qwen3_4b"'s


def is_qwen3(sd: dict) -> bool:
    return "model.embed_tokens.weight" in sd and QWEN3_MARK in sd


def is_qwen3_4b(sd: dict) -> bool:
    return is_qwen3(sd) and sd["model.embed_tokens.weight"].shape[1] != QWEN3_8B_WIDTH


def is_qwen3_8b(sd: dict) -> bool:
    return is_qwen3(sd) and sd["model.embed_tokens.weight"].shape[1] == QWEN3_8B_WIDTH


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
    raise CheckpointError(f"{path.name}: a Qwen text encoder needs Qwen2's tokenizer files (vocab.json and "
                          f"merges.txt, or tokenizer.json) in a '{TOKENIZER_FOLDER}' folder beside it")


def qwen3_from_file(sd: dict, path: Path):
    """(tokenizer, Qwen3Model) of a ComfyUI-layout Qwen3 file."""
    from transformers import Qwen3Model

    tokenizer = tokenizer_beside(path)
    config = qwen3_config(sd)
    model = without_weights(lambda: Qwen3Model(config))
    state = {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")}
    return tokenizer, load_weights(model, state, "Qwen3 text encoder", assign=True).eval()


def _byte_symbols() -> list[str]:
    """GPT-2's byte -> printable symbol table (the alphabet of byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def tiny_tokenizer(max_length: int = 512, vision: bool = False):
    """A Qwen2 tokenizer over the 256 byte symbols, no merges, with Qwen's special tokens (and
    Qwen2.5-VL's image markers with `vision`)."""
    from transformers import Qwen2Tokenizer

    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    vocab[PAD_TOKEN] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=PAD_TOKEN, eos_token=PAD_TOKEN, pad_token=PAD_TOKEN)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL + (VISION if vision else [])})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = max_length
    return tokenizer


# By size, as ComfyUI names them (its Klein tokenizers and models "qwen3_4b" and "qwen3_8b"): the same reader.
ENCODERS = (EncoderFile("qwen3_4b", is_qwen3_4b, qwen3_from_file), EncoderFile("qwen3_8b", is_qwen3_8b, qwen3_from_file))

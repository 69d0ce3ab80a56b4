"""Mistral Small 3.x, Flux.2 Dev's text encoder, in ComfyUI's file (text_encoders/
mistral_3_small_flux2_bf16.safetensors, ..._fp8.safetensors): the language model's transformers keys
under `model.` (no vision tower), read into a transformers MistralModel sized from its shapes.

Its tokenizer is Mistral's tekken BPE. ComfyUI keeps the tekken.json bytes in the file itself (a uint8
tensor `tekken_model`); Loom converts them with transformers' own tekken converter. Without it, a
transformers tokenizer folder `mistral3_tokenizer/` beside the file (or in the text_encoders folder)
is read. `tiny_tokenizer` makes a small one for tests: Mistral's special tokens at their ids, then the
256 byte symbols, no merges.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..model_files import key_indices
from ..single_file import CheckpointError, load_weights
from . import EncoderFile, without_weights

TOKENIZER_FOLDER = "mistral3_tokenizer"
TEKKEN_KEY = "tekken_model"
VOCAB = 131072  # Mistral Small 3's (tekken) vocabulary
BOS, PAD = 1, 11  # ids of <s> and <pad> in tekken (ComfyUI's start and pad tokens)
# Mistral's control tokens at their tekken ids (the first 1000 ids are control tokens).
SPECIAL = {0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 11: "<pad>", 17: "[SYSTEM_PROMPT]",
           18: "[/SYSTEM_PROMPT]"}
NUM_SPECIAL = 1000


def is_mistral(sd: dict) -> bool:
    """Llama-layout keys without Qwen's q/k norms or biases, with tekken's vocabulary or its tokenizer."""
    emb = sd.get("model.embed_tokens.weight")
    if emb is None or "model.layers.0.self_attn.q_norm.weight" in sd or "model.layers.0.self_attn.q_proj.bias" in sd:
        return False
    return TEKKEN_KEY in sd or emb.shape[0] == VOCAB


def mistral_config(sd: dict):
    from transformers import MistralConfig

    vocab, hidden = sd["model.embed_tokens.weight"].shape
    q = sd["model.layers.0.self_attn.q_proj.weight"].shape[0]
    k = sd["model.layers.0.self_attn.k_proj.weight"].shape[0]
    head_dim = 128 if hidden >= 1024 else hidden // 2  # not in the shapes: published 128; tiny ones two heads
    return MistralConfig(vocab_size=vocab, hidden_size=hidden, head_dim=head_dim,
                         intermediate_size=sd["model.layers.0.mlp.gate_proj.weight"].shape[0],
                         num_hidden_layers=len(key_indices(sd, r"model\.layers\.(\d+)\.")),
                         num_attention_heads=q // head_dim, num_key_value_heads=k // head_dim,
                         rms_norm_eps=1e-5, rope_theta=1000000000.0, max_position_embeddings=131072,
                         sliding_window=None)


def tokenizer_from_tekken(data) -> object:
    """transformers' tokenizer of tekken.json bytes (ComfyUI keeps them in the file)."""
    from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

    raw = bytes(data.numpy().tobytes()) if hasattr(data, "numpy") else bytes(data)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tekken.json"
        path.write_bytes(raw)
        return convert_tekken_tokenizer(str(path))


def tokenizer_beside(sd: dict, path: Path):
    from transformers import AutoTokenizer

    for folder in (path.parent / TOKENIZER_FOLDER, path.parent.parent / TOKENIZER_FOLDER):
        if folder.is_dir():
            return AutoTokenizer.from_pretrained(folder)
    if TEKKEN_KEY in sd:
        return tokenizer_from_tekken(sd[TEKKEN_KEY])
    raise CheckpointError(f"{path.name}: a Mistral text encoder needs its tokenizer: a '{TEKKEN_KEY}' tensor in "
                          f"the file (as ComfyUI's) or a transformers tokenizer in a '{TOKENIZER_FOLDER}' folder beside it")


def mistral_from_file(sd: dict, path: Path):
    """(tokenizer, MistralModel) of ComfyUI's Mistral file."""
    from transformers import MistralModel

    tokenizer = tokenizer_beside(sd, path)
    config = mistral_config(sd)
    model = without_weights(lambda: MistralModel(config))
    state = {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")}
    return tokenizer, load_weights(model, state, "Mistral text encoder", assign=True).eval()


def tiny_tokenizer(max_length: int = 512):
    """Byte-level BPE with no merges: Mistral's control tokens at their ids, fillers up to 1000, then
    the 256 byte symbols (as tekken numbers them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from .qwen import _byte_symbols

    vocab = {SPECIAL.get(i, f"<SPECIAL_{i}>"): i for i in range(NUM_SPECIAL)}
    vocab.update({s: NUM_SPECIAL + i for i, s in enumerate(_byte_symbols())})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", model_max_length=max_length)
    tokenizer.add_special_tokens({"additional_special_tokens": [SPECIAL[i] for i in (3, 4, 17, 18)]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_tekken() -> bytes:
    """tiny_tokenizer's vocabulary as a tekken.json (what ComfyUI's Mistral files carry): the same
    control tokens, then the 256 bytes as the BPE's ranks, no merges."""
    import base64
    import json

    specials = [{"rank": i, "token_str": SPECIAL.get(i, f"<SPECIAL_{i}>"), "is_control": True}
                for i in range(NUM_SPECIAL)]
    vocab = [{"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode()} for i in range(256)]
    config = {"pattern": r"\s?\S+|\s+", "num_vocab_tokens": NUM_SPECIAL + 256,
              "default_vocab_size": NUM_SPECIAL + 256, "default_num_special_tokens": NUM_SPECIAL, "version": "v7"}
    return json.dumps({"config": config, "vocab": vocab, "special_tokens": specials}).encode()


# Mistral's chat format for a system and a user message (content as text or a list of text parts).
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}"
                 "{% set text = m['content'] if m['content'] is string else m['content'][0]['text'] %}"
                 "{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
                 "{% else %}[INST]{{ text }}[/INST]{% endif %}{% endfor %}")


ENCODERS = (EncoderFile("mistral3_24b", is_mistral, mistral_from_file),)

"""Llama 3.1 8B Instruct in ComfyUI's files (text_encoders/llama_3.1_8b_instruct_fp8_scaled.safetensors:
HiDream I1/E1): transformers' Llama keys under `model.` (an `lm_head.weight` is ignored), a LlamaModel
sized from its shapes, built on meta; ComfyUI's scaled-fp8 weights multiplied back
(nodes.loading.fp8.dequantize). What shapes cannot tell is Llama 3.1's published config: rope
theta 500000 with its "llama3" rope scaling (diffusers' HiDreamImagePipeline loads that config;
ComfyUI's own Llama leaves the scaling out), RMS-norm epsilon 1e-5.

Its tokenizer is Llama 3's byte-level BPE, which the file does not hold: Loom reads a `llama_tokenizer/`
folder (transformers' tokenizer.json) beside the file or in the text_encoders folder, as ComfyUI ships
it in comfy/text_encoders/llama_tokenizer; `<|begin_of_text|>` starts a prompt, `<|eot_id|>` pads it.
`tiny_tokenizer` makes a small one for tests: the 256 byte symbols, no merges, Llama 3's special tokens.
"""
from __future__ import annotations

from pathlib import Path

from ..model_files import key_indices
from ..single_file import CheckpointError, load_weights
from . import EncoderFile, without_weights

KIND = "llama3_8b"
TOKENIZER_FOLDER = "llama_tokenizer"
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"  # ids 128000, 128001, 128009 as published
ROPE_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}
Q = "model.layers.0.self_attn.q_proj.weight"


def is_llama(sd: dict) -> bool:
    """Llama's keys: no q/k norms (Qwen3), no q bias (Qwen2), not Mistral's tekken vocabulary (the same
    layout: nodes.loading.encoders.mistral)."""
    from .mistral import is_mistral

    return ("model.embed_tokens.weight" in sd and Q in sd and "model.layers.0.self_attn.q_norm.weight" not in sd
            and "model.layers.0.self_attn.q_proj.bias" not in sd and not is_mistral(sd))


def llama_config(sd: dict):
    """The config of a Llama state dict: heads of 128 as published (one head below 128 wide: tiny models)."""
    from transformers import LlamaConfig

    vocab, hidden = sd["model.embed_tokens.weight"].shape
    head_dim = min(128, hidden)
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, head_dim=head_dim,
                       intermediate_size=sd["model.layers.0.mlp.gate_proj.weight"].shape[0],
                       num_hidden_layers=len(key_indices(sd, r"model\.layers\.(\d+)\.")),
                       num_attention_heads=sd[Q].shape[0] // head_dim,
                       num_key_value_heads=sd["model.layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
                       rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=dict(ROPE_SCALING),
                       max_position_embeddings=131072, bos_token_id=128000, eos_token_id=128009)


def tokenizer_beside(path: Path):
    from transformers import PreTrainedTokenizerFast

    for folder in (path.parent / TOKENIZER_FOLDER, path.parent.parent / TOKENIZER_FOLDER):
        if folder.is_dir():
            tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
            tokenizer.pad_token = PAD  # ComfyUI's and the pipeline's padding
            return tokenizer
    raise CheckpointError(f"{path.name}: a Llama text encoder needs Llama 3's tokenizer (tokenizer.json) in a "
                          f"'{TOKENIZER_FOLDER}' folder beside it")


def llama_from_file(sd: dict, path: Path):
    """(tokenizer, LlamaModel) of a ComfyUI-layout Llama file."""
    from transformers import LlamaModel

    from ..fp8 import dequantize

    tokenizer = tokenizer_beside(path)
    state = dequantize({k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")})
    config = llama_config({"model." + k: v for k, v in state.items()})
    model = without_weights(lambda: LlamaModel(config))
    return tokenizer, load_weights(model, state, "Llama text encoder", assign=True).eval()


def tiny_tokenizer():
    """A byte-level BPE tokenizer over the 256 byte symbols (no merges) with Llama 3's special tokens,
    `<|begin_of_text|>` prepended to every prompt, `<|eot_id|>` ending and padding (as Llama 3.1 Instruct's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from .qwen import _byte_symbols

    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    for token in (BOS, EOS, PAD):
        vocab[token] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                        special_tokens=[(BOS, vocab[BOS])])
    # the Instruct model's: its end token is <|eot_id|> (HiDreamImagePipeline pads with the end token)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=PAD, pad_token=PAD)
    tokenizer.add_special_tokens({"additional_special_tokens": [BOS, EOS, PAD]})
    return tokenizer


def write_tiny_tokenizer(folder: Path) -> Path:
    target = Path(folder) / TOKENIZER_FOLDER
    tiny_tokenizer().save_pretrained(target)
    return target


ENCODERS = (EncoderFile(KIND, is_llama, llama_from_file),)

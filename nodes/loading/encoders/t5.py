"""T5-XXL text encoders in ComfyUI's files (text_encoders/t5xxl_fp16.safetensors,
t5xxl_fp8_e4m3fn.safetensors, t5xxl_fp8_e4m3fn_scaled.safetensors: Flux.1, SD 3.5, HiDream, Chroma):
transformers' T5EncoderModel keys (`shared.weight`, `encoder.block.N.layer.…`,
`encoder.final_layer_norm.weight`; `encoder.embed_tokens.weight` is usually left out, it is `shared`),
a T5EncoderModel sized from the shapes and built on meta.

fp8 files: plain fp8 weights are cast to the compute dtype when placed; ComfyUI's *scaled* fp8 files
(a `scaled_fp8` marker and a `<layer>.scale_weight` per linear layer) hold weight / scale, so the weight
is multiplied back (`dequantize`) before it is assigned.

Its tokenizer is T5's SentencePiece unigram, which the file does not hold: Loom reads a `t5_tokenizer/`
folder (transformers' tokenizer files: tokenizer.json, or spiece.model) beside the file or in the
text_encoders folder (also for a whole checkpoint in checkpoints/), as ComfyUI ships it in
comfy/text_encoders/t5_tokenizer. `tiny_tokenizer` makes a small one for tests (`write_tiny_tokenizer`
puts it beside tiny files).

ComfyUI's prompt path (`encode`): the prompt in ComfyUI's syntax (weights `(word:1.2)`), its pieces,
then `</s>`, padded with `<pad>` up to a family's minimum length (Flux 256, SD3 77), never truncated;
the last hidden state (after the final layer norm), weighted tokens moved from the empty prompt's
as ComfyUI does; without an attention mask unless the family asks for one (Chroma does).
"""
from __future__ import annotations

import re
import string
from pathlib import Path

from ..model_files import key_indices
from ..single_file import CheckpointError, load_weights
from ..fp8 import dequantize
from . import EncoderFile, without_weights

KIND = "t5xxl"
TOKENIZER_FOLDER = "t5_tokenizer"
BIAS = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"  # (buckets, heads)
UMT5_MARK = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"  # UMT5: a bias per block


def is_t5(sd: dict, prefix: str = "") -> bool:
    return (prefix + "shared.weight" in sd and prefix + BIAS in sd and prefix + "encoder.final_layer_norm.weight" in sd
            and prefix + UMT5_MARK not in sd and not any(k.startswith(prefix + "decoder.") for k in sd))


def t5_config(sd: dict, prefix: str = ""):
    from transformers import T5Config

    vocab, d_model = sd[prefix + "shared.weight"].shape
    buckets, heads = sd[prefix + BIAS].shape
    attention = prefix + "encoder.block.0.layer.0.SelfAttention."
    gated = prefix + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
    wi = prefix + "encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"
    return T5Config(vocab_size=vocab, d_model=d_model, d_kv=sd[attention + "q.weight"].shape[0] // heads,
                    d_ff=sd[wi].shape[0], num_heads=heads, relative_attention_num_buckets=buckets,
                    num_layers=len(key_indices(sd, re.escape(prefix) + r"encoder\.block\.(\d+)\.")),
                    feed_forward_proj="gated-gelu" if gated else "relu", layer_norm_epsilon=1e-6,
                    is_encoder_decoder=False, use_cache=False)


def t5_from_state(sd: dict, prefix: str = ""):
    """The T5EncoderModel (eval mode, weights as stored) of a T5 state dict under `prefix`."""
    from transformers import T5EncoderModel

    sd = dequantize({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    config = t5_config(sd)
    model = without_weights(lambda: T5EncoderModel(config))
    state = dict(sd)
    state.setdefault("encoder.embed_tokens.weight", state["shared.weight"])  # tied: both names, one tensor
    model = load_weights(model, state, "T5 text encoder", assign=True)
    model.encoder.embed_tokens.weight = model.shared.weight  # one parameter again: casts keep them one
    return model.eval()


def tokenizer_beside(path: Path):
    from transformers import T5TokenizerFast

    for folder in (path.parent / TOKENIZER_FOLDER, path.parent.parent / TOKENIZER_FOLDER,
                   path.parent.parent / "text_encoders" / TOKENIZER_FOLDER):  # a checkpoint's: checkpoints/..
        if folder.is_dir():
            return T5TokenizerFast.from_pretrained(folder)
    raise CheckpointError(f"{path.name}: a T5 text encoder needs T5's tokenizer files (tokenizer.json or "
                          f"spiece.model) in a '{TOKENIZER_FOLDER}' folder beside it")


def t5_from_file(sd: dict, path: Path):
    """(tokenizer, T5EncoderModel) of a ComfyUI-layout T5-XXL file."""
    return tokenizer_beside(path), t5_from_state(sd)


def weighted_tokens(tokenizer, text: str, min_length: int) -> tuple[list[int], list[float]]:
    """ComfyUI's T5 tokens of a prompt in ComfyUI's syntax (`(word:1.2)`, nodes.comfy.prompt_weights):
    each weighted piece tokenized on its own, `</s>`, then `<pad>` up to min_length; no truncation.
    (ids, the weight of each)."""
    from ...comfy.prompt_weights import parse_weights

    ids, weights = [], []
    for segment, weight in parse_weights(text):
        if segment:
            piece = tokenizer(segment, add_special_tokens=False, truncation=False).input_ids
            ids, weights = ids + piece, weights + [weight] * len(piece)
    ids, weights = ids + [tokenizer.eos_token_id], weights + [1.0]
    padding = max(0, min_length - len(ids))
    return ids + [tokenizer.pad_token_id] * padding, weights + [1.0] * padding


def token_ids(tokenizer, text: str, min_length: int) -> list[int]:
    return weighted_tokens(tokenizer, text, min_length)[0]


def encode(tokenizer, text_encoder, texts, min_length: int, attention_mask: bool = False):
    """The last hidden states (B, tokens, width) of prompts, as ComfyUI's T5-XXL encoder gives them
    (prompts of one batch padded to the longest). A token of weight w != 1 at position j becomes
    e_j + w * (z_j - e_j), e the encoding of the empty prompt (`</s>` and padding) run beside it."""
    import torch

    texts = [texts] if isinstance(texts, str) else list(texts)
    tokens = [weighted_tokens(tokenizer, t, min_length) for t in texts]
    length = max(len(ids) for ids, _ in tokens)
    pad, out = tokenizer.pad_token_id, []
    empty = [tokenizer.eos_token_id] + [pad] * (length - 1)
    for ids, weights in tokens:
        seen = len(ids) - ids[::-1].index(tokenizer.eos_token_id)  # the pieces and </s>
        ids, weights = ids + [pad] * (length - len(ids)), weights + [1.0] * (length - len(ids))
        weighted = any(w != 1.0 for w in weights)
        rows = torch.tensor([ids, empty] if weighted else [ids], device=text_encoder.device)
        mask = None
        if attention_mask:  # the pieces and </s> are seen, the padding is not
            mask = torch.tensor([[1] * n + [0] * (length - n) for n in ([seen, 1] if weighted else [seen])],
                                device=rows.device)
        with torch.no_grad():
            hidden = text_encoder(input_ids=rows, attention_mask=mask).last_hidden_state
        z = hidden[:1]
        if weighted:  # only where the weight is not 1, as ComfyUI
            w = torch.tensor(weights, device=z.device, dtype=torch.float32)[None, :, None]
            moved = (z.float() - hidden[1:].float()) * w + hidden[1:].float()
            z = torch.where(w != 1.0, moved, z.float()).to(hidden.dtype)
        out.append(z)
    return torch.cat(out)


def tiny_tokenizer():
    """A T5 tokenizer over printable ASCII (single characters, and letters after a word start), with
    T5's `<pad>` (0), `</s>` (1) and `<unk>` (2) and no sentinels: the same pre-tokenizer and
    post-processor as the published one."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + c, -3.0) for c in string.ascii_letters]
    vocab += [(c, -4.0) for c in string.printable.strip()]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def write_tiny_tokenizer(folder: Path) -> Path:
    """The tiny tokenizer's files in `folder`/t5_tokenizer, where the loader looks beside a file."""
    target = Path(folder) / TOKENIZER_FOLDER
    tiny_tokenizer().save_pretrained(target)
    return target


ENCODERS = (EncoderFile(KIND, is_t5, t5_from_file),)

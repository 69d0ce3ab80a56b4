"""CLIP's byte-level BPE vocabulary, built offline.

CLIP orders its vocabulary as: the 256 byte symbols, the same symbols with the end-of-word mark
`</w>`, one entry per merge (the two parts joined), then `<|startoftext|>` and `<|endoftext|>`.
Given the merges, the vocabulary follows, so only merges need to be stored or generated:

- `train_merges(words, n)` learns merges from a word list (the tiny demo model's tokenizer);
- `real_clip_merges()` reads the 48894 merges of OpenAI's CLIP (`bpe_simple_vocab_16e6.txt.gz`)
  when a package that ships the file (open_clip_torch) is installed; it is never imported, only
  located, since importing it needs torchvision.
"""
from __future__ import annotations

import collections
import gzip
import importlib.util
from pathlib import Path

END = "</w>"
SPECIALS = ("<|startoftext|>", "<|endoftext|>")
REAL_CLIP_VOCAB_SIZE = 49408


def byte_table() -> dict[int, str]:
    """byte -> the printable character byte-level BPE uses for it (GPT-2/CLIP's table): printable
    bytes stand for themselves, the others get characters from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


def byte_symbols() -> list[str]:
    """The 256 byte symbols in CLIP's vocabulary order: printable bytes first, then the others."""
    return list(byte_table().values())


def vocab_from_merges(merges: list[tuple[str, str]]) -> dict[str, int]:
    symbols = byte_symbols()
    tokens = symbols + [s + END for s in symbols] + ["".join(m) for m in merges] + list(SPECIALS)
    return {token: i for i, token in enumerate(tokens)}


def _word_symbols(word: str) -> tuple[str, ...]:
    table = byte_table()
    chars = [table[b] for b in word.encode("utf-8")]
    return tuple(chars[:-1]) + (chars[-1] + END,)


def train_merges(words: list[str], n: int) -> list[tuple[str, str]]:
    """Greedy BPE: repeatedly merge the most frequent adjacent pair (ties broken by the pair itself,
    so the result is deterministic). Stops early when no pair is left."""
    corpus = collections.Counter(_word_symbols(w.lower()) for w in words if w)
    merges: list[tuple[str, str]] = []
    while len(merges) < n:
        pairs: collections.Counter = collections.Counter()
        for symbols, count in corpus.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged = collections.Counter()
        for symbols, count in corpus.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += count
        corpus = merged
    return merges


def real_clip_merges_file() -> Path | None:
    """The path of OpenAI CLIP's merges file inside an installed open_clip package, or None."""
    for package in ("open_clip", "clip"):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
            if path.is_file():
                return path
    return None


def real_clip_merges() -> list[tuple[str, str]] | None:
    path = real_clip_merges_file()
    if path is None:
        return None
    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
    # The first line is a version header; CLIP uses the first 49152 - 256 - 2 merges.
    wanted = REAL_CLIP_VOCAB_SIZE - 2 * 256 - len(SPECIALS)
    return [tuple(line.split()) for line in lines[1:1 + wanted]]


def make_tokenizer(merges: list[tuple[str, str]], max_length: int = 77):
    """A transformers CLIPTokenizer from merges (vocabulary derived as CLIP does)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=vocab_from_merges(merges), merges=[tuple(m) for m in merges],
                         model_max_length=max_length)

"""CLIP's byte-level BPE vocabulary, built offline.

CLIP orders its vocabulary as: the 256 byte symbols, the same symbols with the end-of-word mark
`</w>`, one entry per merge (the two parts joined), then `<|startoftext|>` and `<|endoftext|>`.
Given the merges, the vocabulary follows, so only merges need to be stored or generated:

- `train_merges(words, n)` learns merges from a word list; `tiny_merges()` are those of the built-in
  word list, the tokenizer of the tiny models (nodes.loading.tiny), TINY_VOCAB_SIZE entries. Learning
  them costs ~0.2 CPU-s, on the first image's path of a single file without a tokenizer, so
  `learned_merges` reads them from assets/bpe/ (written by scripts/bpe_merges.py) when the file there
  was learned from the same words, else learns them;
- `real_clip_merges()` reads the 48894 merges of OpenAI's CLIP (`bpe_simple_vocab_16e6.txt.gz`)
  when a package that ships the file (open_clip_torch) is installed; it is never imported, only
  located, since importing it needs torchvision.
"""
from __future__ import annotations

import collections
import functools
import gzip
import hashlib
import importlib.util
from pathlib import Path

END = "</w>"
SPECIALS = ("<|startoftext|>", "<|endoftext|>")
REAL_CLIP_VOCAB_SIZE = 49408
# OpenCLIP's tokenizers (SD 2.x, SDXL's second encoder) pad with "!" where OpenAI CLIP's pad with
# <|endoftext|>; the ids differ, and so do the embeddings after the prompt.
OPEN_CLIP_PAD = "!"

WORDS = """
a an the of and with in on at by from for to into over under near behind beside above below
photo photograph painting drawing sketch render illustration portrait landscape closeup detailed
highly intricate beautiful stunning sharp focus blurry low quality bad ugly deformed extra watermark
text signature cropped worst best masterpiece trending artstation concept art digital oil canvas
watercolor pencil charcoal ink style cinematic lighting light dark shadow sunset sunrise night day
morning evening golden hour soft hard volumetric fog mist rain snow storm cloud clouds sky blue red
green yellow orange purple pink white black gray grey brown silver gold colorful vibrant muted pastel
cat cats dog dogs horse bird birds fish dragon tiger lion wolf fox owl rabbit bear deer elephant
astronaut robot knight wizard witch princess king queen warrior soldier man woman girl boy child
old young face eyes hair smiling standing sitting running flying riding walking reading holding
castle tower house city street road bridge forest tree trees flower flowers garden field mountain
mountains river lake ocean sea beach island desert valley cave waterfall village temple ruins
space planet moon stars galaxy nebula spaceship station future futuristic cyberpunk steampunk
fantasy medieval ancient modern vintage retro minimal abstract surreal realistic photorealistic
hyperrealistic unreal engine octane studio ghibli anime cartoon comic pixel isometric wide angle
lens bokeh depth field resolution quality high ultra hd 4k 8k award winning professional
""".split()
TINY_MERGES = 486  # 512 byte symbols + 486 merges + 2 specials = 1000 entries
TINY_VOCAB_SIZE = 2 * 256 + TINY_MERGES + len(SPECIALS)


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


def merges_key(words: list[str], n: int) -> str:
    """What a learned merges file was learned from: a hash of the words (in order) and the count."""
    return hashlib.sha256(("\n".join(words) + f"\n{n}").encode()).hexdigest()


def merges_file(name: str) -> Path:
    from ..common import asset_dir

    return asset_dir("bpe") / f"{name}.txt"


def write_merges(name: str, words: list[str], n: int) -> Path:
    """Learn the merges and keep them in assets/bpe/NAME.txt: the key, then one merge a line."""
    path = merges_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [merges_key(words, n)] + [" ".join(m) for m in train_merges(words, n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def learned_merges(name: str, words: list[str], n: int) -> tuple[tuple[str, str], ...]:
    """train_merges(words, n), read from assets/bpe/NAME.txt when that file was learned from the same
    words and count (its first line), else learned here."""
    try:
        key, *lines = merges_file(name).read_text(encoding="utf-8").splitlines()
    except OSError:
        key, lines = None, []
    if key == merges_key(words, n):
        return tuple(tuple(line.split(" ")) for line in lines)
    return tuple(train_merges(words, n))


@functools.lru_cache(maxsize=1)
def tiny_merges() -> tuple[tuple[str, str], ...]:
    return learned_merges("tiny", WORDS, TINY_MERGES)


SHAPES_MERGES = 510  # 512 byte symbols + 510 merges + 2 specials = 1024 entries (the tiny demo model has 1000)


def shapes_merge_words() -> list[str]:
    """The words the trained shapes model's merges (nodes.textcond) are learned from: its caption words
    (weighted, so each becomes one token) and the tiny demo model's word list (so other prompts still
    tokenise into sensible pieces). Here, not in nodes.textcond, so that this module imports nothing
    of it but its word list."""
    from ..textcond.data import caption_words

    return caption_words() * 50 + WORDS


@functools.lru_cache(maxsize=1)
def shapes_merges() -> tuple[tuple[str, str], ...]:
    return learned_merges("shapes64", shapes_merge_words(), SHAPES_MERGES)


def make_tokenizer(merges: list[tuple[str, str]], max_length: int = 77, pad_token: str | None = None):
    """A transformers CLIPTokenizer from merges (vocabulary derived as CLIP does); `pad_token` "!"
    for OpenCLIP's tokenizers, else CLIP's <|endoftext|>."""
    from transformers import CLIPTokenizer

    extra = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer(vocab=vocab_from_merges(merges), merges=[tuple(m) for m in merges],
                         model_max_length=max_length, **extra)


class NoTokenizer(ValueError):
    pass


def tokenizer_for(vocab_size: int, max_length: int = 77, pad_token: str | None = None):
    """The tokenizer of a text encoder that came without one (a single file), by its vocabulary size:
    OpenAI CLIP's 49408-entry BPE when its merges file is installed, or one of the vocabularies built
    here (the tiny models', the trained shapes model's)."""
    if vocab_size == REAL_CLIP_VOCAB_SIZE:
        merges = real_clip_merges()
        if merges is None:
            raise NoTokenizer("this model needs OpenAI CLIP's BPE merges (bpe_simple_vocab_16e6.txt.gz); install "
                              "them with `pip install --no-deps open_clip_torch`, or use a diffusers folder, "
                              "which carries its tokenizer")
        return make_tokenizer(merges, max_length, pad_token)
    if vocab_size == TINY_VOCAB_SIZE:
        return make_tokenizer(tiny_merges(), max_length, pad_token)
    if vocab_size == 2 * 256 + SHAPES_MERGES + len(SPECIALS):  # the trained shapes model's (nodes.textcond)
        return make_tokenizer(shapes_merges(), max_length, pad_token)
    raise NoTokenizer(f"no tokenizer is known for a CLIP vocabulary of {vocab_size} entries")

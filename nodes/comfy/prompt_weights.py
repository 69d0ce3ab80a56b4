"""ComfyUI's prompt syntax, for the ComfyUI-named prompt encoders (CLIPTextEncode, CLIPTextEncodeSDXL,
CLIPTextEncodeSDXLRefiner): the embeddings ComfyUI computes for a prompt. Loom's own Tokenize and
EncodeText keep diffusers' pipelines' semantics (plain text, truncated at 77 tokens).

The rules, as ComfyUI applies them (docs/prompt-syntax.md says the same for users):

- `(text)` multiplies the weight of its text by 1.1, `(text:w)` sets it to w (the number after the
  last colon; when it is no number, the colon stays text and the 1.1 applies); groups nest: `((a))`
  is 1.21. `\\(` and `\\)` are literal parentheses. Square brackets are plain text (ComfyUI gives
  them no meaning; A1111's `[a]` = 1/1.1 does not apply). An unmatched `(` is plain text.
- Each weighted piece is tokenized on its own. `embedding:name` (at the start of a piece or after a
  space) puts the vectors of models/embeddings/name(.safetensors|.pt|.bin) there as input
  embeddings; a name that is not found is dropped from the prompt with a warning.
- Tokens go in chunks of 75 between the start and end tokens, padded to 77; a piece of fewer than 8
  tokens that does not fit in the current chunk starts the next one, a longer one is split. The
  chunks are encoded and concatenated along the sequence (77, 154, ... tokens); SDXL's pooled output
  is the first chunk's.
- With any weight other than 1, the empty prompt's encoding e (start, end, padding) is made too, and
  a token of weight w at position j becomes e_j + w * (z_j - e_j).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from graph.env import UnsafePath, safe_join

from ..conditioning import Cond
from ..loading.model_files import read_state_dict, stat_fingerprint
from ..text import _check_skip, final_layer_norm, run_text_encoder

log = logging.getLogger(__name__)

GROUP_WEIGHT = 1.1  # what a pair of parentheses without a number multiplies by
LONG_WORD = 8  # pieces of at least this many tokens may be split between chunks; shorter ones move whole
EMBEDDING = "embedding:"
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
# Literal parentheses while the groups are parsed (ComfyUI's two markers).
_ESCAPES = (("\\)", "\0\1"), ("\\(", "\0\2"))


def _escape(text: str) -> str:
    for literal, marker in _ESCAPES:
        text = text.replace(literal, marker)
    return text


def _unescape(text: str) -> str:
    for literal, marker in _ESCAPES:
        text = text.replace(marker, literal[1])
    return text


def top_level_groups(text: str) -> list[str]:
    """`text` cut before each top-level "(" and after its matching ")". A ")" with no "(" before it
    is text, and parentheses after it count from -1 (ComfyUI's counting)."""
    pieces, current, depth = [], "", 0
    for char in text:
        if char == "(" and depth == 0:
            if current:
                pieces.append(current)
            current = ""
        if char == ")" and depth == 1:
            pieces.append(current + char)
            current, depth = "", 0
            continue
        current += char
        depth += {"(": 1, ")": -1}.get(char, 0)
    if current:
        pieces.append(current)
    return pieces


def parse_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """ComfyUI's weighted pieces of a prompt: [(text, weight), ...] in order (escapes resolved)."""
    return [(_unescape(piece), w) for piece, w in _weights(_escape(text), weight)]


def _weights(text: str, weight: float) -> list[tuple[str, float]]:
    out = []
    for piece in top_level_groups(text):
        if len(piece) < 2 or not (piece.startswith("(") and piece.endswith(")")):
            out.append((piece, weight))
            continue
        inner, inner_weight = piece[1:-1], weight * GROUP_WEIGHT
        colon = inner.rfind(":")
        if colon > 0:
            try:
                inner, inner_weight = inner[:colon], float(inner[colon + 1:])
            except ValueError:
                pass
        out += _weights(inner, inner_weight)
    return out


# --- embeddings ---------------------------------------------------------------------------------

def embedding_file(folder: Path, name: str) -> Path | None:
    """models/embeddings/<name>, or with a suffix added, in the folder or any folder below it;
    never a path outside it."""
    if not folder.is_dir() or not name:
        return None
    for root in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        try:
            path = safe_join(folder, root.relative_to(folder).as_posix(), name)
        except UnsafePath:
            continue
        if path.is_file():
            return path
        for suffix in EMBEDDING_SUFFIXES:
            if path.with_name(path.name + suffix).is_file():
                return path.with_name(path.name + suffix)
    return None


def embedding_vectors(path: Path, key: str) -> torch.Tensor:
    """The (n, dim) vectors of a textual-inversion file: A1111's `string_to_param`, the encoder's
    key (`clip_l`, `clip_g`) of SDXL's files, else the file's first tensor."""
    data = read_state_dict(path)
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):
        data = data["string_to_param"]
    if isinstance(data, dict) and key in data:
        vectors = data[key]
    else:
        vectors = next((v for v in (data.values() if isinstance(data, dict) else []) if torch.is_tensor(v)), None)
    if vectors is None:
        raise ValueError(f"{path.name} holds no tensor")
    return vectors.reshape(-1, vectors.shape[-1]).float()


class Embeddings:
    """Looks up `embedding:name` in a folder for one encoder (its key in SDXL files), once per name."""

    def __init__(self, folder: Path | None, key: str):
        self.folder, self.key, self.seen = folder, key, {}

    def get(self, name: str) -> torch.Tensor | None:
        if name not in self.seen:
            path = embedding_file(self.folder, name) if self.folder is not None else None
            try:
                self.seen[name] = embedding_vectors(path, self.key) if path is not None else None
            except Exception as exc:  # noqa: BLE001 - ComfyUI skips a file it cannot read
                log.warning("embedding %r could not be read, ignoring it: %s", name, exc)
                self.seen[name] = None
        return self.seen[name]


def _embedding_word(word: str, embeddings: Embeddings) -> tuple[torch.Tensor | None, str]:
    """The vectors named after `embedding:` and the text left after the name (a name ends at white
    space, "<" or "["; commas around it are tried without when the name is not found)."""
    name, *rest = word.split() or [""]
    rest = " ".join(rest)
    cut = re.search(r"[<\[]", name)
    if cut:
        name, rest = name[:cut.start()], name[cut.start():] + (" " + rest if rest else "")
    vectors = embeddings.get(name)
    if vectors is None and name.strip(",") != name:
        vectors = embeddings.get(name.strip(","))
        rest = name[len(name.strip(",")):] + " " + rest  # ComfyUI keeps the commas after the name
    if vectors is None:
        log.warning("embedding:%s does not exist in models/embeddings, ignoring it", name)
    return vectors, rest


def embeddings_fingerprint(cls, env, **constants):
    """A prompt encoder's cache key part: the embedding files, when a prompt may name one (a text
    that says `embedding:`, or one that comes from another node)."""
    texts = [v for k, v in constants.items() if k.startswith("text")]
    if env is None or (texts and not any(EMBEDDING in str(t) for t in texts)):
        return None
    folder = Path(env.models_dir) / "embeddings"
    return stat_fingerprint(folder) if folder.is_dir() else None


# --- tokens in chunks ---------------------------------------------------------------------------

@dataclass
class Chunks:
    """Rows of exactly max_length items (token ids, or embedding vectors) with their weights."""
    rows: list[list]
    weights: list[list[float]]

    @property
    def weighted(self) -> bool:
        return any(w != 1.0 for row in self.weights for w in row)


def _pieces(tokenizer, text: str, embeddings: Embeddings | None) -> list[list[tuple]]:
    """[(item, weight), ...] per tokenized piece: words between weight groups and embeddings."""
    groups = []
    for segment, weight in parse_weights(text):
        words = re.split(rf"(?<=\s){EMBEDDING}", segment)
        words = [words[0]] + [EMBEDDING + w for w in words[1:]]
        for word in filter(None, words):
            if word.startswith(EMBEDDING) and embeddings is not None:
                vectors, word = _embedding_word(word[len(EMBEDDING):], embeddings)
                if vectors is not None:
                    groups.append([(v, weight) for v in vectors])
                if not word:
                    continue
            ids = tokenizer(word, add_special_tokens=False, verbose=False).input_ids
            groups.append([(i, weight) for i in ids])
    return groups


def plain_text(text: str) -> str:
    """The words a prompt in ComfyUI's syntax gives the tokenizer: no weight marks, no embedding names."""
    segments = (segment for segment, _ in parse_weights(text))
    return " ".join(re.sub(rf"(^|\s){EMBEDDING}\S*", " ", segment) for segment in segments)


def pad_id(tokenizer) -> int:
    """The padding token: the tokenizer's (CLIP: the end token; OpenCLIP: "!"), else the end token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def tokenize_chunks(tokenizer, text: str, embeddings: Embeddings | None = None) -> Chunks:
    """ComfyUI's tokenization: start, up to max_length - 2 tokens, end, padding; as many rows as needed."""
    size = tokenizer.model_max_length
    start, end, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, pad_id(tokenizer)
    rows: list[list[tuple]] = [[(start, 1.0)]]
    for group in _pieces(tokenizer, text, embeddings):
        splittable = len(group) >= LONG_WORD
        while group:
            room = size - 1 - len(rows[-1])  # one place stays for the end token
            if len(group) <= room:
                rows[-1] += group
                break
            if splittable:
                rows[-1] += group[:room]
                group = group[room:]
            rows[-1] += [(end, 1.0)] + [(pad, 1.0)] * (size - 1 - len(rows[-1]))
            rows.append([(start, 1.0)])
    rows[-1] += [(end, 1.0)] + [(pad, 1.0)] * (size - 1 - len(rows[-1]))
    return Chunks([[i for i, _ in row] for row in rows], [[w for _, w in row] for row in rows])


def empty_chunk(tokenizer) -> Chunks:
    return tokenize_chunks(tokenizer, "")


# --- encoding -----------------------------------------------------------------------------------

class _VectorsAt:
    """Replaces the token embeddings at given (row, position)s by embedding vectors while the encoder
    runs (the input embeddings ComfyUI builds for `embedding:name`)."""

    def __init__(self, encoder, rows: list[list]):
        self.module = encoder.get_input_embeddings()
        self.places = [(r, j, item) for r, row in enumerate(rows) for j, item in enumerate(row) if torch.is_tensor(item)]
        self.handle = None

    def __enter__(self):
        if self.places:
            self.handle = self.module.register_forward_hook(self._replace)
        return self

    def _replace(self, module, args, out):
        out = out.clone()
        for r, j, vector in self.places:
            out[r, j] = vector.to(device=out.device, dtype=out.dtype)
        return out

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()


def _fit(rows: list[list], width: int, pad: int) -> list[list]:
    """A vector of another width than the encoder's is dropped and the row padded at its end, as
    ComfyUI does (with a warning)."""
    out = []
    for row in rows:
        kept = [i for i in row if not torch.is_tensor(i) or i.shape[-1] == width]
        if len(kept) < len(row):
            log.warning("an embedding's width is not the text encoder's %d; ignoring it", width)
        out.append(kept + [pad] * (len(row) - len(kept)))
    return out


def encode_rows(encoder, rows: list[list], clip_skip: int, sdxl: bool, pad: int):
    """Hidden states (rows, tokens, dim) as EncodeText (sdxl False) or one encoder of EncodeTextSDXL
    computes them, and the projected pooled output when the encoder has one. An embedding vector's
    place holds a token id that is not the end token (the pooled output is read at the first end
    token), and the vector replaces its input embedding."""
    _check_skip("CLIPTextEncode", encoder, clip_skip, reserved=1 if sdxl else 0)
    rows = _fit(rows, encoder.get_input_embeddings().embedding_dim, pad)
    placeholder = 0 if encoder.config.eos_token_id != 0 else 1
    ids = torch.tensor([[placeholder if torch.is_tensor(i) else i for i in row] for row in rows], dtype=torch.long)
    with _VectorsAt(encoder, rows):
        if not sdxl and clip_skip == 0:
            return run_text_encoder(encoder, ids)[0], None
        out = run_text_encoder(encoder, ids, hidden_states=True)
    pooled = out[0] if out[0].ndim == 2 else None
    if sdxl:
        return out.hidden_states[-(clip_skip + 2)], pooled
    return final_layer_norm(encoder)(out.hidden_states[-(clip_skip + 1)]), pooled


def encode_chunks(encoder, tokenizer, chunks: Chunks, clip_skip: int, sdxl: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 77 * chunks, dim) embeddings with ComfyUI's weighting, and the first chunk's pooled output."""
    rows = list(chunks.rows)
    if chunks.weighted:
        rows += empty_chunk(tokenizer).rows
    hidden, pooled = encode_rows(encoder, rows, clip_skip, sdxl, pad_id(tokenizer))
    z = hidden[:len(chunks.rows)]
    if chunks.weighted:  # only where the weight is not 1: (z - e) + e need not give z back exactly
        empty = hidden[-1].float()
        weights = torch.tensor(chunks.weights, device=z.device, dtype=torch.float32)[..., None]
        moved = (z.float() - empty) * weights + empty
        z = torch.where(weights != 1.0, moved, z.float()).to(hidden.dtype)
    pooled = pooled[:1] if pooled is not None else None
    return z.reshape(1, -1, z.shape[-1]), pooled


def _padded(chunks: Chunks, count: int, tokenizer) -> Chunks:
    """ComfyUI's CLIPTextEncodeSDXL: the side with fewer chunks gets empty prompts' chunks appended."""
    empty = empty_chunk(tokenizer)
    extra = count - len(chunks.rows)
    return Chunks(chunks.rows + empty.rows * extra, chunks.weights + empty.weights * extra)


@torch.no_grad()
def encode_comfy_prompt(models_dir, clip, clip_skip: int, text: str, text_2: str | None = None) -> Cond:
    """A prompt in ComfyUI's syntax encoded with a CLIP bundle (nodes.loading.bundles.Clip). SDXL: `text` for
    CLIP-L, `text_2` (default: the same) for OpenCLIP bigG; as in ComfyUI, with two texts
    (CLIPTextEncodeSDXL) the side with fewer chunks gets empty ones, with one text (where an embedding
    has more vectors for one encoder) the longer side is cut; the refiner has bigG alone."""
    folder = Path(models_dir) / "embeddings" if models_dir is not None else None
    if clip.text_encoder_2 is None:
        key = "clip_h" if clip.family == "sd2" else "clip_l"
        chunks = tokenize_chunks(clip.tokenizer, text, Embeddings(folder, key))
        z, _ = encode_chunks(clip.text_encoder, clip.tokenizer, chunks, clip_skip, sdxl=False)
        return Cond(z.to(dtype=clip.text_encoder.dtype, device=clip.text_encoder.device))
    g = tokenize_chunks(clip.tokenizer_2, text if text_2 is None else text_2, Embeddings(folder, "clip_g"))
    parts = []
    if clip.text_encoder is not None:
        l = tokenize_chunks(clip.tokenizer, text, Embeddings(folder, "clip_l"))
        if text_2 is not None:  # CLIPTextEncodeSDXL: two texts, the side with fewer chunks padded
            count = max(len(l.rows), len(g.rows))
            l, g = _padded(l, count, clip.tokenizer), _padded(g, count, clip.tokenizer_2)
        parts.append(encode_chunks(clip.text_encoder, clip.tokenizer, l, clip_skip, sdxl=True)[0])
    z, pooled = encode_chunks(clip.text_encoder_2, clip.tokenizer_2, g, clip_skip, sdxl=True)
    if pooled is None:
        raise ValueError("CLIPTextEncode: the second text encoder gave no pooled output; it should be a "
                         "CLIPTextModelWithProjection")
    parts.append(z)
    target = clip.text_encoder_2
    length = min(p.shape[1] for p in parts)  # one text whose embeddings chunk differently: the shorter
    embeds = torch.cat([p[:, :length] for p in parts], dim=-1).to(dtype=target.dtype, device=target.device)
    return Cond(embeds, pooled=pooled.to(dtype=target.dtype, device=target.device))

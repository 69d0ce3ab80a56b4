"""Writes the BPE merges of the built-in vocabularies into assets/bpe/ (tiny.txt: the tiny demo
models', shapes64.txt: the trained shapes model's), so loading a single file of those models reads
them instead of learning them again (nodes.loading.clip_bpe.learned_merges). Run it after changing a word list.

    .venv/bin/python scripts/bpe_merges.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodes.loading.clip_bpe import SHAPES_MERGES, TINY_MERGES, WORDS, shapes_merge_words, write_merges  # noqa: E402

if __name__ == "__main__":
    print(write_merges("tiny", WORDS, TINY_MERGES))
    print(write_merges("shapes64", shapes_merge_words(), SHAPES_MERGES))

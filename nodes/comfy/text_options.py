"""ComfyUI's T5TokenizerOptions (comfy_extras/nodes_cond.py): the CLIP with tokenizer options for its
T5-family tokenizers, under ComfyUI's names ("t5xxl_min_padding", "t5xxl_min_length", and the same for
pile_t5xl, t5base, mt5xl, umt5xxl). A family's encode reads them (Chroma: nodes.families.chroma)."""
from __future__ import annotations

from dataclasses import replace

from graph import In, Int, Node, Out

T5_TYPES = ("t5xxl", "pile_t5xl", "t5base", "mt5xl", "umt5xxl")


class T5TokenizerOptions(Node):
    """Pads every T5 prompt with at least `min_padding` pad tokens and up to `min_length` tokens."""
    category = "_for_testing/conditioning"  # ComfyUI's
    clip = In("CLIP")
    min_padding = Int(0, min=0, max=10000, step=1)
    min_length = Int(0, min=0, max=10000, step=1)
    outputs = (Out("CLIP", "CLIP"),)

    def run(self, ctx):
        options = dict(self.clip.tokenizer_options)
        for kind in T5_TYPES:
            options[f"{kind}_min_padding"], options[f"{kind}_min_length"] = self.min_padding, self.min_length
        return replace(self.clip, tokenizer_options=options)

"""Text stages: prompt -> TOKENS -> CONDITIONING.

TOKENS: a LongTensor (1, max_length) of token ids on the CPU, padded with the tokenizer's pad token
to its model_max_length (77 for CLIP) and truncated, as the diffusers pipelines tokenize.

CONDITIONING (nodes.conditioning): a tuple of entries; EncodeText and EncodeTextSDXL make one entry
whose `embeds` are SD 1.x/2.x's last layer of the encoder (or an earlier one, clip skip) after its final
layer norm, or SDXL's penultimate layers of both encoders, unnormalised, concatenated (768 + 1280),
with the second encoder's projection as `pooled`.

A tokenizer and text encoder of a transformer family (Z-Image, ...) are tokenized and encoded as that
family's pipeline does (nodes.families.spec.Runtime.stage_tokenize / stage_encode): TOKENS then hold
its own ids (Z-Image: its chat template, unpadded).

Every text-encoder call goes through `run_text_encoder` (one place to change it; LoRA views need none).
"""
from __future__ import annotations

import torch

from graph import In, Int, Node, Out, String

from .conditioning import Cond
from .families import runtime_of_part

MAX_CLIP_SKIP = 48
LISTED_WORDS = 8  # unknown words named in one warning


def prompt_warnings(tokenizer, text: str, cut: bool = True) -> list[str]:
    """What the model will not read as written. Words for which a CLIP tokenizer has no whole-word
    token (`word</w>`) split into pieces the model may never have seen in training ("a cat" on
    shapes64, whose vocabulary holds its caption words); text past the tokenizer's length (77 tokens
    for CLIP, start and end included) is cut off, as the diffusers pipelines cut it."""
    pieces = tokenizer.tokenize(text)  # (its backend is not asked directly: it keeps the last call's padding)
    warnings = []
    if any(piece.endswith("</w>") for piece in pieces):  # CLIP's BPE: a word ends with its `</w>` piece
        split, word = {}, []
        for piece in pieces:
            word.append(piece.removesuffix("</w>"))
            if piece.endswith("</w>"):
                if len(word) > 1:
                    split.setdefault("".join(word), "+".join(word))
                word = []
        if split:
            named = [f"{word} ({parts})" for word, parts in list(split.items())[:LISTED_WORDS]]
            more = f" and {len(split) - LISTED_WORDS} more" if len(split) > LISTED_WORDS else ""
            warnings.append(f"{len(split)} word(s) not in the model's vocabulary, read as pieces it may never have "
                            f"seen: {', '.join(named)}{more}")
    room = tokenizer.model_max_length - 2  # the start and end tokens take two places
    if cut and len(pieces) > room:
        cut = "".join(pieces[room:]).replace("</w>", " ").strip()
        warnings.append(f"the prompt is {len(pieces) + 2} tokens, the model reads {tokenizer.model_max_length}: "
                        f"\"{cut if len(cut) <= 60 else cut[:57] + '...'}\" is cut off")
    return warnings


def check_prompt(ctx, tokenizer, text: str, cut: bool = True) -> None:
    """Shows prompt_warnings on the running node (the editor, the history, `loom run`'s output); every
    node that tokenizes a prompt calls it. A message already shown (SDXL's second tokenizer) is not repeated."""
    shown = getattr(ctx, "ui", {}).get("warnings", [])
    new = [w for w in prompt_warnings(tokenizer, text, cut) if w not in shown]
    if new:
        ctx.show(warnings=new)


class Tokenize(Node):
    """Turns a prompt into token ids, padded to the tokenizer's maximum length and truncated."""

    category = "conditioning"
    tokenizer = In("TOKENIZER")
    text = String("", multiline=True)
    outputs = (Out("TOKENS", "tokens"),)

    def run(self, ctx):
        runtime = runtime_of_part(self.tokenizer)
        check_prompt(ctx, self.tokenizer, self.text, cut=runtime is None)  # a family's pipeline does not cut
        if runtime is not None:
            return runtime.stage_tokenize(self.tokenizer, self.text)
        return self.tokenizer(self.text, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids


def final_layer_norm(text_encoder):
    """transformers >= 5 flattened CLIPTextModel (no `.text_model`); older versions nest it."""
    return getattr(text_encoder, "text_model", text_encoder).final_layer_norm


def run_text_encoder(text_encoder, ids: torch.Tensor, hidden_states: bool = False):
    """The one call of a text encoder. No attention mask: CLIP in SD was trained without one, and
    the pipelines pass none."""
    return text_encoder(ids.to(text_encoder.device), attention_mask=None, output_hidden_states=hidden_states)


def _check_skip(node: str, text_encoder, clip_skip: int, reserved: int = 0) -> None:
    layers = text_encoder.config.num_hidden_layers
    if clip_skip + reserved >= layers:
        raise ValueError(f"{node}: clip_skip {clip_skip} must be smaller than the encoder's {layers - reserved} "
                         f"usable layers")


class EncodeText(Node):
    """Encodes tokens with an SD 1.x/2.x CLIP text encoder. clip_skip n uses the output of the n-th
    layer from the end (0: the last layer), then the final layer norm, as diffusers' clip_skip does."""

    category = "conditioning"
    text_encoder = In("TEXT_ENCODER")
    tokens = In("TOKENS")
    clip_skip = Int(0, min=0, max=MAX_CLIP_SKIP, tooltip="how many of the last layers to skip")
    outputs = (Out("CONDITIONING", "conditioning"),)

    @torch.no_grad()
    def run(self, ctx):
        runtime = runtime_of_part(self.text_encoder)
        if runtime is not None:
            return runtime.stage_encode([(self.text_encoder, self.tokens)], self.clip_skip)
        _check_skip("EncodeText", self.text_encoder, self.clip_skip)
        if self.clip_skip == 0:
            hidden = run_text_encoder(self.text_encoder, self.tokens)[0]
        else:
            out = run_text_encoder(self.text_encoder, self.tokens, hidden_states=True)
            hidden = final_layer_norm(self.text_encoder)(out.hidden_states[-(self.clip_skip + 1)])
        return (Cond(hidden.to(dtype=self.text_encoder.dtype, device=self.text_encoder.device)),)


class EncodeTextSDXL(Node):
    """Encodes tokens as StableDiffusionXLPipeline does: the penultimate hidden states (clip_skip n:
    n layers earlier) of each encoder given, concatenated, and the second encoder's pooled
    projection. The refiner has the second encoder only. The two encoders of another family (Flux:
    CLIP-L and T5-XXL) are encoded as that family's pipeline does."""

    category = "conditioning"
    text_encoder = In("TEXT_ENCODER", optional=True, tooltip="CLIP ViT-L (absent in the refiner)")
    tokens = In("TOKENS", optional=True)
    text_encoder_2 = In("TEXT_ENCODER", tooltip="OpenCLIP bigG, with projection")
    tokens_2 = In("TOKENS")
    clip_skip = Int(0, min=0, max=MAX_CLIP_SKIP, tooltip="layers to skip before the penultimate one")
    outputs = (Out("CONDITIONING", "conditioning"),)

    @torch.no_grad()
    def run(self, ctx):
        if (self.text_encoder is None) != (self.tokens is None):
            raise ValueError("EncodeTextSDXL: text_encoder and tokens go together (both or neither)")
        pairs = [(self.text_encoder, self.tokens)] if self.text_encoder is not None else []
        pairs.append((self.text_encoder_2, self.tokens_2))
        runtime = runtime_of_part(self.text_encoder_2)
        if runtime is not None:  # two encoders of a transformer family (Flux: CLIP-L and T5)
            return runtime.stage_encode(pairs, self.clip_skip)
        hidden, pooled = [], None
        for encoder, tokens in pairs:
            _check_skip("EncodeTextSDXL", encoder, self.clip_skip, reserved=1)
            out = run_text_encoder(encoder, tokens, hidden_states=True)
            if pooled is None and out[0].ndim == 2:  # the projected pooled output (text_embeds)
                pooled = out[0]
            hidden.append(out.hidden_states[-(self.clip_skip + 2)])
        if pooled is None:
            raise ValueError("EncodeTextSDXL: text_encoder_2 gave no pooled output; it should be a "
                             "CLIPTextModelWithProjection")
        target = self.text_encoder_2
        embeds = torch.cat(hidden, dim=-1).to(dtype=target.dtype, device=target.device)
        return (Cond(embeds, pooled=pooled.to(dtype=target.dtype, device=target.device)),)

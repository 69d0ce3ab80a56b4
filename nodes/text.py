"""Text stages: prompt -> TOKENS -> CONDITIONING.

TOKENS: a LongTensor (1, max_length) of token ids on the CPU, padded with the tokenizer's pad token
to its model_max_length (77 for SD 1.x) and truncated, as StableDiffusionPipeline tokenizes.
CONDITIONING: a tensor (1, max_length, width) of text-encoder hidden states on the model's device and
dtype (the UNet's cross-attention input).
"""
from __future__ import annotations

import torch

from graph import In, Int, Node, Out, String


class Tokenize(Node):
    """Turns a prompt into token ids, padded to the tokenizer's maximum length and truncated."""

    category = "conditioning"
    tokenizer = In("TOKENIZER")
    text = String("", multiline=True)
    outputs = (Out("TOKENS", "tokens"),)

    def run(self, ctx):
        return self.tokenizer(self.text, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids


def final_layer_norm(text_encoder):
    """transformers >= 5 flattened CLIPTextModel (no `.text_model`); older versions nest it."""
    return getattr(text_encoder, "text_model", text_encoder).final_layer_norm


class EncodeText(Node):
    """Encodes tokens with the CLIP text encoder. clip_skip n uses the output of the n-th layer from
    the end (0: the last layer), then the final layer norm, as diffusers' clip_skip does."""

    category = "conditioning"
    text_encoder = In("TEXT_ENCODER")
    tokens = In("TOKENS")
    clip_skip = Int(0, min=0, max=24, tooltip="how many of the last layers to skip")
    outputs = (Out("CONDITIONING", "conditioning"),)

    @torch.no_grad()
    def run(self, ctx):
        layers = self.text_encoder.config.num_hidden_layers
        if self.clip_skip >= layers:
            raise ValueError(f"EncodeText: clip_skip {self.clip_skip} must be smaller than the encoder's "
                             f"{layers} layers")
        ids = self.tokens.to(self.text_encoder.device)
        # No attention mask: SD 1.x was trained without one, and the pipeline passes none.
        if self.clip_skip == 0:
            hidden = self.text_encoder(ids, attention_mask=None)[0]
        else:
            out = self.text_encoder(ids, attention_mask=None, output_hidden_states=True)
            hidden = final_layer_norm(self.text_encoder)(out.hidden_states[-(self.clip_skip + 1)])
        return hidden.to(dtype=self.text_encoder.dtype, device=self.text_encoder.device)

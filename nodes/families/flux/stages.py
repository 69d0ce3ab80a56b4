"""Flux.1 in Loom's stage nodes (nodes.families.spec.Runtime.stage_*), as diffusers' FluxPipeline runs:

- Tokenize: as CLIPTextEncode (nodes.families.flux.files): CLIP-L's first chunk of 77 tokens in
  ComfyUI's syntax, T5's padded to at least 256 (the pipeline's 512 would change the features).
- EncodeTextSDXL (CLIP-L + T5): T5's last hidden state as the embeds, CLIP-L's pooled output.
- the schedule: sigmas linspace(1, 1/steps) shifted by mu, the resolution's shift (image tokens).
- the prediction: the transformer at t / 1000 on the 2x2-packed latents (nodes.families.flux.guide's
  `velocity`), the embedded guidance of dev from the conditioning (FluxGuidance) or 3.5, as the
  pipeline's default; Loom's guidance g as the pipeline's true CFG, u + g * (c - u) (its
  true_cfg_scale), the negative pass only for g != 1. The scheduler steps unpacked latents: its step is
  elementwise, so the values equal the pipeline's on packed ones.
"""
from __future__ import annotations

import torch

from .guide import side, velocity
from ..guidance import CFGMix


def _is_t5(part) -> bool:
    return "T5" in type(part).__name__


def stage_tokenize(tokenizer, text: str):
    from ...comfy.prompt_weights import tokenize_chunks
    from ...loading.encoders import t5

    from . import T5_MIN_LENGTH

    if _is_t5(tokenizer):
        return torch.tensor([t5.token_ids(tokenizer, text, T5_MIN_LENGTH)])
    return torch.tensor(tokenize_chunks(tokenizer, text).rows[:1])  # CLIPTextEncode's first chunk of 77


def stage_encode(pairs: list, clip_skip: int) -> tuple:
    from ...conditioning import Cond

    t5 = [(e, t) for e, t in pairs if _is_t5(e)]
    clip = [(e, t) for e, t in pairs if not _is_t5(e)]
    if len(t5) != 1 or len(clip) != 1:
        raise ValueError("Flux encodes with CLIP-L and T5-XXL together: give both to EncodeTextSDXL "
                         "(text_encoder: CLIP-L, text_encoder_2: T5)")
    if clip_skip:
        raise ValueError("clip_skip is not used by Flux (T5's last layer, CLIP-L's pooled output): set it to 0")
    (clip_model, clip_ids), (t5_model, t5_ids) = clip[0], t5[0]
    with torch.no_grad():
        pooled = clip_model(clip_ids.to(clip_model.device), output_hidden_states=False).pooler_output
        embeds = t5_model(input_ids=t5_ids.to(t5_model.device), attention_mask=None).last_hidden_state
    return (Cond(embeds=embeds, pooled=pooled),)


def stage_timesteps(scheduler, steps: int, shape: tuple, device) -> None:
    import numpy as np
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

    config = scheduler.config
    tokens = (shape[-2] // 2) * (shape[-1] // 2)
    mu = calculate_shift(tokens, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))
    retrieve_timesteps(scheduler, steps, device, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)


class FluxPipelineGuide(CFGMix):
    def __init__(self, transformer, positive, negative, guidance_scale: float):
        self.transformer, self.cfg, self.dtype = transformer, guidance_scale, transformer.dtype
        self.guided = guidance_scale != 1.0
        if self.guided and negative is None:
            raise ValueError("guidance other than 1 needs a negative conditioning")
        self.positive = side(positive, "positive")[:3]
        self.negative = side(negative, "negative")[:3] if self.guided else None

    def __call__(self, x: torch.Tensor, t, step: int, total: int) -> torch.Tensor:
        time = t.expand(x.shape[0]).to(x.dtype) / 1000
        cond = velocity(self.transformer, x, time, *self.positive, dtype=self.dtype)
        if not self.guided:
            return cond
        uncond = velocity(self.transformer, x, time, *self.negative, dtype=self.dtype)
        return self.mix(uncond, cond)


def stage_guide(unet, positive, negative, guidance_scale: float):
    return FluxPipelineGuide(unet, positive, negative, guidance_scale)

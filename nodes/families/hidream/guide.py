"""The guided prediction of HiDream's transformer for nodes.comfy.ksampling (flow: a velocity v with
denoised = x - sigma * v; HiDream's timestep is 1000 sigma, as diffusers' scheduler gives it).

As HiDreamImagePipeline: one transformer call on the batch [negative, positive] (latents repeated),
T5 embeds (B, 128, D), Llama's hidden states (layers, B, 128, D), pooled CLIP-L + CLIP-G (B, 2048);
the output negated (the transformer predicts minus the velocity), then u + cfg * (c - u). At cfg 1
(Dev and Fast) only the positive pass runs. Plain conditioning only (one entry per side).

HiDream E1 (editing): an entry with an image (InstructPixToPixConditioning's `concat`, raw VAE latents)
gets it in the model's latent space placed beside the noisy latents along the width, and the output
cut back (ComfyUI's image_cond); sides with and without an image run as separate calls."""
from __future__ import annotations

import torch

from ..chroma.guide import batched, text_of
from ...conditioning import as_conditioning
from ..guidance import CFGMix


def _side(conditioning, side: str, batch: int, like: torch.Tensor) -> tuple:
    text_of(conditioning, side, "HiDream")
    entry = as_conditioning(conditioning)[0]
    llama = entry.extra.get("conditioning_llama3")
    if entry.pooled is None or llama is None:
        raise ValueError(f"the {side} conditioning is not a HiDream text encoding (no pooled CLIP output or "
                         "Llama states): encode it with a HiDream CLIP (QuadrupleCLIPLoader)")
    as_like = dict(device=like.device, dtype=like.dtype)
    image = None
    if entry.concat is not None:  # raw latents -> the model's (Flux's scale and shift)
        from .. import family

        latent = family("hidream").latent
        image = batched((entry.concat.to(**as_like) - latent.shift) * latent.scale, batch)
        if image.shape[-2] != like.shape[-2]:
            raise ValueError(f"the edited image's latents are {image.shape[-2]} high, the sampled ones "
                             f"{like.shape[-2]}: give the sampler InstructPixToPixConditioning's latent")
    return (batched(entry.embeds.to(**as_like), batch), batched(entry.pooled.to(**as_like), batch),
            batched(llama.to(**as_like), batch).movedim(1, 0), image)


class HiDreamGuide(CFGMix):
    def __init__(self, transformer, positive, negative, cfg: float, keep_uncond: bool = False):
        self.transformer, self.cfg = transformer, cfg
        self.guided = negative is not None and (cfg != 1.0 or keep_uncond)
        self.keep_uncond, self.last_uncond = keep_uncond, None
        self.positive, self.negative = positive, negative

    def _predict(self, x: torch.Tensor, t, sides: list) -> torch.Tensor:
        """One transformer call on the sides' batches, in order; the velocities."""
        texts = zip(*[side[:3] for side in sides])
        t5, pooled, llama = (torch.cat(parts, dim=1 if i == 2 else 0) for i, parts in enumerate(texts))
        model_input = torch.cat([x] * len(sides))
        if sides[0][3] is not None:
            model_input = torch.cat([model_input, torch.cat([s[3] for s in sides])], dim=-1)
        timestep = torch.as_tensor(t, device=x.device).to(x.dtype).expand(model_input.shape[0])
        out = self.transformer(hidden_states=model_input, timesteps=timestep, encoder_hidden_states_t5=t5,
                               encoder_hidden_states_llama3=llama, pooled_embeds=pooled, return_dict=False)[0]
        return -out[..., :x.shape[-1]]

    def __call__(self, x: torch.Tensor, t, step: int, total: int) -> torch.Tensor:
        batch = x.shape[0]
        sides = [_side(self.positive, "positive", batch, x)]
        if self.guided:
            sides.insert(0, _side(self.negative, "negative", batch, x))
        if len({s[3] is None for s in sides}) == 1:
            out = self._predict(x, t, sides)
        else:
            out = torch.cat([self._predict(x, t, [s]) for s in sides])
        if not self.guided:
            return out
        uncond, cond = out.chunk(2)
        return self.mix(uncond, cond)

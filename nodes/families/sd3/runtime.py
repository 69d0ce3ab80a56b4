"""SD3's torch side (nodes.families.spec.Runtime): its transformer file, whole checkpoints, prompt
encoding, guided prediction and tiny models."""
from __future__ import annotations

from .files import parts_from_checkpoint  # noqa: F401  (the Runtime's names)
from .files import transformer_from_file as denoiser_from_file  # noqa: F401
from .tiny import write_comfy_files as write_tiny_files  # noqa: F401
from .tiny import write_folder as write_tiny  # noqa: F401


def encode(clip, text: str, **texts) -> tuple:
    """CONDITIONING of a prompt (CLIPTextEncode); `texts`: clip_l / clip_g / t5xxl apart (CLIPTextEncodeSD3)."""
    from ...conditioning import Cond
    from .files import encode as embeds

    hidden, pooled = embeds(clip, text, **texts)
    return (Cond(embeds=hidden, pooled=pooled),)


def guide(model, positive, negative, cfg: float, keep_uncond: bool):
    from ...comfy.ksampling.ksampler import model_sampling
    from .guide import SD3Guide, SkipLayers, SkipLayersAfterCfg

    skip = next((p for p in reversed(model.patches) if isinstance(p, SkipLayers)), None)
    after = next((p for p in reversed(model.patches) if isinstance(p, SkipLayersAfterCfg)), None)
    return SD3Guide(model.unet, positive, negative, cfg, keep_uncond=keep_uncond, skip=skip,
                    multiplier=getattr(model_sampling(model), "multiplier", 1000), after=after)

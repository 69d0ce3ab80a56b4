"""Export a trained run as a shippable model: a float16 diffusers folder, optionally one single file.

A decoder trained on after the UNet stage started (`python -m nodes.textcond decoder`, the encoder
frozen) replaces the run's decoder: its VAE gets the same latent rescaling the UNet stage folded into
the run's VAE, and the encoders must agree, which is checked.
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import model as tm
from .train import SD_SCALING_FACTOR, fold_scaling


def load_parts(folder: str | Path):
    """(vae, text_encoder, unet) of a diffusers folder, in float32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
    return vae.eval(), text_encoder.eval(), unet.eval()


@torch.no_grad()
def with_decoder(vae, decoder_folder: str | Path):
    """`vae` with the decoder of the (unfolded) VAE folder `decoder_folder`, rescaled as `vae` is."""
    from diffusers import AutoencoderKL

    other = AutoencoderKL.from_pretrained(decoder_folder, torch_dtype=torch.float32).eval()
    mine, theirs = vae.state_dict(), other.state_dict()
    differ = [k for k in mine if k.startswith("encoder.") and not torch.equal(mine[k], theirs[k])]
    if differ:
        raise ValueError(f"{decoder_folder}: its encoder differs from the run's ({differ[:3]}...): "
                         f"train it with `decoder` on the same run")
    channels = vae.config.latent_channels
    k = float(vae.quant_conv.weight[:channels].norm() / other.quant_conv.weight[:channels].norm())
    fold_scaling(other, k * SD_SCALING_FACTOR)
    torch.testing.assert_close(other.quant_conv.weight, vae.quant_conv.weight)  # the same latent space
    return other


def export(src: str | Path, dst: str | Path, single_file: str | Path | None = None,
           decoder: str | Path | None = None) -> Path:
    """Write `src` (a trained pipeline folder) to `dst` with float16 weights and no training state."""
    vae, text_encoder, unet = load_parts(src)
    if decoder:
        vae = with_decoder(vae, decoder)
    tm.save_pipeline(dst, vae, text_encoder, unet, dtype=torch.float16)
    if single_file:
        from nodes.loading.ldm_layout import write_single_file

        write_single_file(dst, single_file, dtype=torch.float16)
    return Path(dst)

"""Test helper: small models made locally for the tests (no download), beside the tiny checkpoints
of nodes.loading.tiny: LoRA files in the diffusers/PEFT and kohya layouts, ControlNets made from a tiny
UNet, and an ESRGAN-shaped upscale model."""
from __future__ import annotations

from pathlib import Path

import torch

RANK, KOHYA_ALPHA = 4, 2.0
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def peft_layers(folder, seed: int) -> dict:
    """Random LoRA layers (B not zero, so they change the output) on a tiny pipeline folder's UNet and
    text encoders, as PEFT state dicts by slot (unet, text_encoder, text_encoder_2 when there is one)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    models = {"unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet")}
    for slot, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
        if (folder / slot).is_dir():
            models[slot] = cls.from_pretrained(folder / slot)
    torch.manual_seed(seed)
    layers = {}
    for slot, model in models.items():
        targets = UNET_TARGETS if slot == "unet" else TEXT_TARGETS
        model.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=targets, init_lora_weights=False))
        layers[slot] = get_peft_model_state_dict(model)
    return layers


def write_diffusers_lora(folder, path: Path, seed: int) -> Path:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    layers = peft_layers(folder, seed)
    if "text_encoder_2" in layers:
        StableDiffusionXLPipeline.save_lora_weights(path.parent, unet_lora_layers=layers["unet"],
                                                    text_encoder_lora_layers=layers["text_encoder"],
                                                    text_encoder_2_lora_layers=layers["text_encoder_2"],
                                                    weight_name=path.name)
    else:
        StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=layers["unet"],
                                                  text_encoder_lora_layers=layers["text_encoder"], weight_name=path.name)
    return path


KOHYA_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te_text_model_"}
KOHYA_XL_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te1_text_model_",
                     "text_encoder_2": "lora_te2_text_model_"}


def write_kohya_lora(folder, path: Path, seed: int) -> Path:
    """kohya's layout: lora_unet_<module with _>.lora_down/lora_up.weight and .alpha, lora_te_text_model_…
    (SDXL: lora_te1_/lora_te2_); UNet modules named as in diffusers (kohya's SD 1.x naming)."""
    from safetensors.torch import save_file

    layers = peft_layers(folder, seed)
    prefixes = KOHYA_XL_PREFIXES if "text_encoder_2" in layers else KOHYA_PREFIXES
    state = {}
    for slot, slot_layers in layers.items():
        for key, value in slot_layers.items():
            module, kind = key.rsplit(".lora_", 1)
            name = prefixes[slot] + module.removeprefix("text_model.").replace(".", "_")
            # alpha/rank scales the product: the up weights carry rank/alpha so the file equals the PEFT one
            state[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = \
                value * (RANK / KOHYA_ALPHA if kind.startswith("B") else 1.0)
            state[f"{name}.alpha"] = torch.tensor(KOHYA_ALPHA)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


HINT_CHANNELS = (16, 32, 96, 256)  # SD 1.5 ControlNets' hint encoder: 8x down, as the VAE


def controlnet(unet, seed: int = 0, latent_scale: int = 2):
    """A ControlNet for `unet` (any family; diffusers' ControlNetModel.from_unet copies its encoder, as
    ControlNet training starts), its hint encoder seeded and its zero convolutions made non-zero
    (else it does nothing). `latent_scale`: the VAE's (tiny-sd's 2; SD's 8, the published hint encoder)."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    hint = HINT_CHANNELS[:latent_scale.bit_length()]  # one stride-2 stage per halving
    model = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=hint)
    with torch.no_grad():
        for p in [*model.controlnet_down_blocks.parameters(), *model.controlnet_mid_block.parameters()]:
            p.normal_(0, 0.3)
    return model.eval()


def tiny_esrgan_state(seed: int, feat: int = 8, grow: int = 32, blocks: int = 1, identity: bool = False) -> dict:
    """Real-ESRGAN's RRDBNet key layout (conv_first, body.N.rdbK.convM, conv_body, conv_up1/2, conv_hr,
    conv_last) with a small width and one block (growth 32, as every RRDBNet). Random weights, or with
    `identity` the network that upscales by nearest neighbour exactly: identity kernels on the main
    path (the image's channels first), zero trunk (conv_body 0 adds nothing)."""
    g = torch.Generator().manual_seed(seed)

    def conv(out_ch, in_ch, main=False):
        weight = torch.randn(out_ch, in_ch, 3, 3, generator=g) * 0.05
        if identity:
            weight = torch.zeros(out_ch, in_ch, 3, 3)
            if main:
                weight[:, :, 1, 1] = torch.eye(out_ch, in_ch)
        return {"weight": weight, "bias": torch.zeros(out_ch)}

    parts = {"conv_first": conv(feat, 3, True), "conv_body": conv(feat, feat), "conv_up1": conv(feat, feat, True),
             "conv_up2": conv(feat, feat, True), "conv_hr": conv(feat, feat, True), "conv_last": conv(3, feat, True)}
    for b in range(blocks):
        for r in (1, 2, 3):
            for m in range(1, 6):
                parts[f"body.{b}.rdb{r}.conv{m}"] = conv(feat if m == 5 else grow, feat + (m - 1) * grow)
    return {f"{name}.{k}": v for name, tensors in parts.items() for k, v in tensors.items()}

"""Model families from diffusers folders and single files (nodes.families, nodes.loading.single_file,
nodes.loading.checkpoints): the real SD 1.5, 2.1, XL base and refiner layouts checked on the meta device
(shapes only: the published configs are built without memory and written in the single-file key
layout), and the tiny models of each family written to files and loaded back tensor for tensor."""
import numpy as np
import pytest
import torch

from nodes.loading.ldm_layout import text_encoders_to_ldm, unet_to_ldm, vae_to_ldm, write_single_file

SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
              num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu")
CLIP_H = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
              num_hidden_layers=23, max_position_embeddings=77, hidden_act="gelu")
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
              num_hidden_layers=32, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
# The published diffusers configs (stable-diffusion-v1-5, stable-diffusion-2-1, stable-diffusion-xl-base-1.0,
# stable-diffusion-xl-refiner-1.0): the UNet's, and the text encoders' (None: the slot is empty).
REAL = {
    "sd1": (dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                 attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, sample_size=64),
            CLIP_L, None, "v1"),
    "sd2": (dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
                 attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, upcast_attention=True,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, sample_size=96),
            CLIP_H, None, "v2"),
    "sdxl": (dict(block_out_channels=(320, 640, 1280), layers_per_block=2, cross_attention_dim=2048,
                  attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  addition_embed_type="text_time", addition_time_embed_dim=256,
                  projection_class_embeddings_input_dim=2816, sample_size=128),
             CLIP_L, CLIP_G, "xl_base"),
    "sdxl_refiner": (dict(block_out_channels=(384, 768, 1536, 1536), layers_per_block=2, cross_attention_dim=1280,
                          attention_head_dim=(6, 12, 24, 24), transformer_layers_per_block=4,
                          use_linear_projection=True,
                          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                          addition_embed_type="text_time", addition_time_embed_dim=256,
                          projection_class_embeddings_input_dim=2560, sample_size=128),
                     None, CLIP_G, "xl_refiner"),
}


def same(a, b) -> bool:
    return list(np.ravel(a)) == list(np.ravel(b))


def meta_checkpoint(family: str) -> tuple[dict, dict]:
    """The family's published models on the meta device, as a single file's state dict."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet_config, clip_1, clip_2, _ = REAL[family]
    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**unet_config), AutoencoderKL(**SD_VAE)
        te1 = CLIPTextModel(CLIPTextConfig(**clip_1)) if clip_1 else None
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**clip_2)) if clip_2 else None
        if family == "sd2":
            te1 = CLIPTextModel(CLIPTextConfig(**clip_1))
    ldm = {**unet_to_ldm(unet.state_dict(), unet.config), **vae_to_ldm(vae.state_dict(), vae.config),
           **text_encoders_to_ldm(family, te1, te2, sd2_extra_layer=True)}
    return ldm, {"unet": unet, "text_encoder": te1, "text_encoder_2": te2}


def shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("position_ids")}


@pytest.mark.parametrize("family", list(REAL))
def test_real_layouts_are_detected_and_rebuilt_on_meta(family):
    """Family from the keys (agreeing with diffusers' own detection), every config from the shapes:
    the rebuilt UNet, VAE and text encoders have the published models' tensors, and every converted
    tensor fits them."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    from nodes.families import VAE_PREFIX, VAE_SCALING, family_of_state_dict, family_of_unet_state_dict
    from nodes.loading.single_file import text_encoder_from_ldm, unet_from_ldm, unet_config, vae_from_ldm
    from nodes.families import TEXT_ENCODER_PREFIXES

    ldm, published = meta_checkpoint(family)
    assert family_of_state_dict(ldm) == family
    assert infer_diffusers_model_type(ldm) == REAL[family][3]
    assert family_of_unet_state_dict(ldm) == family  # a UNet alone (UNETLoader) tells too

    inferred = unet_config(ldm, family, pooled_dim=1280 if family.startswith("sdxl") else None)
    for name, value in REAL[family][0].items():
        if name != "transformer_layers_per_block":  # levels without attention may differ: compared below
            assert same(inferred[name], value), name
    unet = unet_from_ldm(ldm, family, pooled_dim=1280 if family.startswith("sdxl") else None)
    assert shapes(unet) == shapes(published["unet"])
    vae = vae_from_ldm(ldm, VAE_SCALING[family])
    assert vae.config.scaling_factor == VAE_SCALING[family] and same(vae.config.block_out_channels, (128, 256, 512, 512))
    assert {k for k in ldm if k.startswith(VAE_PREFIX)} and vae.encoder.conv_in.weight.is_meta

    for slot, (prefix, layout) in TEXT_ENCODER_PREFIXES[family].items():
        tokenizer, encoder = text_encoder_from_ldm(ldm, prefix, layout, projection=slot == "text_encoder_2")
        assert shapes(encoder) == shapes(published[slot]), slot
        expected = REAL[family][1 if slot == "text_encoder" else 2]
        for name, value in expected.items():
            assert getattr(encoder.config, name) == value, (slot, name)
        assert len(tokenizer) == 49408
        assert tokenizer.pad_token == ("!" if layout == "open_clip" else "<|endoftext|>")


def test_sd2_prediction_type_from_the_weights():
    """ComfyUI's rule: v_pred key, 9-channel inpainting (epsilon), else the spread of one norm bias."""
    from nodes.families import sd2_prediction_type

    key = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
    conv = "model.diffusion_model.input_blocks.0.0.weight"
    spread = {key: torch.linspace(-0.5, 0.5, 320), conv: torch.zeros(320, 4, 3, 3)}
    flat = {key: torch.full((320,), 0.01), conv: torch.zeros(320, 4, 3, 3)}
    assert sd2_prediction_type(spread) == "v_prediction"
    assert sd2_prediction_type(flat) == "epsilon"
    assert sd2_prediction_type({**flat, "v_pred": torch.zeros(())}) == "v_prediction"
    assert sd2_prediction_type({**spread, conv: torch.zeros(320, 9, 3, 3)}) == "epsilon"


@pytest.fixture(scope="module")
def tiny_families(tmp_path_factory):
    from nodes.loading.tiny import FAMILY_NAMES, write_tiny_model

    root = tmp_path_factory.mktemp("families")
    return {family: write_tiny_model(root / name, family=family) for family, name in FAMILY_NAMES.items()}


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_tiny_single_file_loads_as_its_folder(family, tiny_families, tmp_path):
    """Each family's tiny model, from its folder and from a single file: same family, same scheduler,
    same tokenizer ids, and every tensor of every part equal."""
    from nodes.loading.checkpoints import load_checkpoint, scheduler_config
    from nodes.families import family_of_folder

    folder = tiny_families[family]
    assert family_of_folder(folder) == family
    path = tmp_path / f"{family}.safetensors"
    write_single_file(folder, path, family)
    cpu = torch.device("cpu")
    a, b = load_checkpoint(folder, cpu, torch.float32), load_checkpoint(path, cpu, torch.float32)
    assert a.family == b.family == family
    assert scheduler_config(a.scheduler_config) == scheduler_config(b.scheduler_config)
    for slot in ("unet", "vae", "text_encoder", "text_encoder_2"):
        x, y = getattr(a, slot), getattr(b, slot)
        assert (x is None) == (y is None), slot
        if x is None:
            continue
        sx, sy = x.state_dict(), y.state_dict()
        assert sx.keys() == sy.keys(), slot
        assert all(torch.equal(sx[k], sy[k]) for k in sx), slot
    for slot in ("tokenizer", "tokenizer_2"):
        x, y = getattr(a, slot), getattr(b, slot)
        if x is not None:
            text = "a cat on a horse"
            assert x(text, padding="max_length", max_length=77).input_ids == \
                y(text, padding="max_length", max_length=77).input_ids, slot

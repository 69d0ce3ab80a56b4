"""Tiny random Flux.2 models for tests: Dev and Klein pipelines (diffusers' Flux2Pipeline and
Flux2KleinPipeline) and the single files ComfyUI's Flux.2 templates load, under their names:

    diffusion_models/flux2_dev_fp8mixed.safetensors, flux-2-klein-4b.safetensors, ...   BFL's layout
    text_encoders/mistral_3_small_flux2_bf16.safetensors (Dev)  Mistral's keys under `model.`, tekken_model
    text_encoders/qwen_3_4b.safetensors (Klein)                 Qwen3's keys under `model.`
    vae/flux2-vae.safetensors, full_encoder_small_decoder.safetensors   LDM layout + `bn.*`

The tiny pipelines' text encoders are the language models alone (MistralModel, Qwen3Model): the
published pipelines hold Mistral3ForConditionalGeneration / Qwen3ForCausalLM, whose hidden states are
those of these. Tokenizers: nodes.loading.encoders' tiny ones, saved beside the encoder files.

    python -m nodes.families.flux2.tiny MODELS_DIR [dev|klein]
"""
from __future__ import annotations

import sys
from pathlib import Path

from ...loading.encoders import mistral, qwen
from ...loading.tiny import randomise_zeros

VAES = ("vae/flux2-vae.safetensors", "vae/full_encoder_small_decoder.safetensors")
FILES = {
    "dev": {"transformer": ("diffusion_models/flux2_dev_fp8mixed.safetensors",),
            "text_encoder": ("text_encoders/mistral_3_small_flux2_bf16.safetensors",
                             "text_encoders/mistral_3_small_flux2_fp8.safetensors"),
            "vae": VAES},
    "klein": {"transformer": tuple(f"diffusion_models/flux-2-klein-{v}.safetensors" for v in (
                  "4b", "base-4b", "4b-fp8", "base-4b-fp8", "9b", "base-9b", "9b-fp8", "base-9b-fp8")),
              "text_encoder": ("text_encoders/qwen_3_4b.safetensors", "text_encoders/qwen_3_8b_fp8mixed.safetensors"),
              "vae": VAES},
}


def _family(variant: str):
    from .. import family

    return family("flux2" if variant == "dev" else "flux2_klein")


def build_pipeline(variant: str = "dev", seed: int = 0):
    import diffusers
    import torch
    from transformers import MistralConfig, MistralModel, Qwen3Config, Qwen3Model

    from .. import scheduler_for

    declared = _family(variant)
    tiny = declared.tiny
    config = dict(tiny.text_encoders["text_encoder"])
    torch.manual_seed(seed)
    transformer = diffusers.Flux2Transformer2DModel(**tiny.denoiser)
    torch.manual_seed(seed + 1)
    vae = diffusers.AutoencoderKLFlux2(**tiny.vae)
    torch.manual_seed(seed + 2)
    if variant == "dev":
        tokenizer = mistral.tiny_tokenizer()
        text_encoder = MistralModel(MistralConfig(**config, pad_token_id=mistral.PAD, bos_token_id=mistral.BOS,
                                                  sliding_window=None)).eval()
    else:
        tokenizer = qwen.tiny_tokenizer(config["max_position_embeddings"])
        text_encoder = Qwen3Model(Qwen3Config(**config, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                              eos_token_id=tokenizer.eos_token_id)).eval()
    _randomise(transformer, vae, seed + 3)
    scheduler_config = scheduler_for(declared.name)
    scheduler = getattr(diffusers, scheduler_config.pop("_class_name")).from_config(scheduler_config)
    pipeline = getattr(diffusers, declared.pipeline)
    return pipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                    transformer=transformer)


def _randomise(transformer, vae, seed: int) -> None:
    """Zero-initialised weights get small random values (else a tiny model predicts zeros), and the VAE's
    batch-norm statistics are made not the identity, so every step of the latent path matters."""
    import torch

    generator = randomise_zeros(transformer, seed)
    with torch.no_grad():
        vae.bn.running_mean.copy_(torch.randn(vae.bn.running_mean.shape, generator=generator) * 0.1)
        vae.bn.running_var.copy_(torch.rand(vae.bn.running_var.shape, generator=generator) + 0.5)


def write_folder(folder: str | Path, seed: int = 0, variant: str = "dev") -> Path:
    folder = Path(folder)
    build_pipeline(variant, seed).save_pretrained(folder, safe_serialization=True)
    return folder


# diffusers' names -> BFL's (the inverse of diffusers' convert_flux2_transformer_checkpoint_to_diffusers)
_TOP = {"x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
        "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
        "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
        "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
        "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
        "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
        "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
        "single_stream_modulation.linear": "single_stream_modulation.lin"}
_DOUBLE = {"attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
           "attn.to_out.0": "img_attn.proj", "ff.linear_in": "img_mlp.0", "ff.linear_out": "img_mlp.2",
           "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm",
           "attn.to_add_out": "txt_attn.proj", "ff_context.linear_in": "txt_mlp.0",
           "ff_context.linear_out": "txt_mlp.2"}
_SINGLE = {"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2", "attn.norm_q": "norm.query_norm",
           "attn.norm_k": "norm.key_norm"}
_FUSED = {"attn.to_q": ("img_attn.qkv", ("to_q", "to_k", "to_v")),
          "attn.add_q_proj": ("txt_attn.qkv", ("add_q_proj", "add_k_proj", "add_v_proj"))}


def transformer_to_original(state: dict) -> dict:
    import torch

    out = {}
    for key, value in state.items():
        name, param = key.rsplit(".", 1)
        if name == "norm_out.linear":  # diffusers keeps (scale, shift), BFL (shift, scale)
            scale, shift = value.chunk(2, dim=0)
            out["final_layer.adaLN_modulation.1." + param] = torch.cat([shift, scale], dim=0)
        elif name in _TOP:
            out[f"{_TOP[name]}.{param}"] = value
        elif name.startswith(("transformer_blocks.", "single_transformer_blocks.")):
            _, index, inner = name.split(".", 2)
            if ".norm_" in "." + inner.split(".")[-1]:  # RMS norms: BFL calls their weight `scale`
                param = "scale"
            if name.startswith("single_"):
                out[f"single_blocks.{index}.{_SINGLE[inner]}.{param}"] = value
            elif inner in _FUSED:
                target, parts = _FUSED[inner]
                out[f"double_blocks.{index}.{target}.{param}"] = torch.cat(
                    [state[f"transformer_blocks.{index}.attn.{p}.{param}"] for p in parts], dim=0)
            elif inner not in ("attn.to_k", "attn.to_v", "attn.add_k_proj", "attn.add_v_proj"):
                out[f"double_blocks.{index}.{_DOUBLE[inner]}.{param}"] = value
        else:
            raise KeyError(f"no BFL name for the Flux.2 transformer's {key}")
    return out


def vae_to_original(vae) -> dict:
    from ...loading.ldm_layout import vae_to_ldm

    state = vae.state_dict()
    main = {k: v for k, v in state.items() if not k.startswith("bn.")}
    out = {k.removeprefix("first_stage_model."): v for k, v in vae_to_ldm(main, vae.config).items()}
    out.update({k: state[k] for k in ("bn.running_mean", "bn.running_var")})
    return out


def comfy_files(pipe) -> dict[str, dict]:
    """The single files' state dicts by part; Mistral's carries its tokenizer as ComfyUI's does (the
    tekken.json bytes in a `tekken_model` uint8 tensor)."""
    import torch

    text = {"model." + k: v for k, v in pipe.text_encoder.state_dict().items()}
    if type(pipe.text_encoder).__name__.startswith("Mistral"):
        text[mistral.TEKKEN_KEY] = torch.frombuffer(bytearray(mistral.tiny_tekken()), dtype=torch.uint8)
    return {"transformer": transformer_to_original(pipe.transformer.state_dict()), "text_encoder": text,
            "vae": vae_to_original(pipe.vae)}


def write_comfy_files(models_dir: str | Path, seed: int = 0, pipe=None, variant: str = "dev") -> dict[str, Path]:
    """Every file name of FILES[variant], each part's the same tiny weights: {name: path}."""
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    pipe = pipe or build_pipeline(variant, seed)
    written = {}
    for part, state in comfy_files(pipe).items():
        for name in FILES[variant][part]:
            path = models_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
            written[name] = path
    if variant == "klein":  # Qwen's tokenizer where Loom looks for it (Mistral's is in its file)
        pipe.tokenizer.save_pretrained(models_dir / "text_encoders" / qwen.TOKENIZER_FOLDER)
    return written


if __name__ == "__main__":
    print(write_comfy_files(sys.argv[1] if len(sys.argv) > 1 else "data/models",
                            variant=sys.argv[2] if len(sys.argv) > 2 else "dev"))

"""Tiny random SD 3.5 models for tests (large and medium: nodes.families.sd3's TINY_LARGE / TINY_MEDIUM):
the diffusers folder (StableDiffusion3Pipeline.save_pretrained) and ComfyUI's single files under the
names its templates and examples use:

    checkpoints/sd3.5_large_fp8_scaled.safetensors                  large, whole (the templates' file)
    checkpoints/sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors   medium, whole
    diffusion_models/sd3.5_large.safetensors, sd3.5_medium.safetensors   the transformers alone
    text_encoders/clip_l.safetensors, clip_g.safetensors (+ T5-XXL when a T5 writer is there)

Whole checkpoints in ComfyUI's layout: `model.diffusion_model.` (the original MMDiT keys),
`first_stage_model.` (LDM VAE), `text_encoders.clip_l.transformer.` / `clip_g` (transformers' keys),
`text_encoders.t5xxl.transformer.`. The tiny weights are stored in float32 (the real files hold fp8).
CLIP-L's projection is the identity, as in the published SD3 files (ComfyUI reads it unprojected).

    python -m nodes.families.sd3.tiny MODELS_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import FAMILY, TINY_LARGE, TINY_MEDIUM

VARIANTS = {"large": TINY_LARGE, "medium": TINY_MEDIUM}
CHECKPOINTS = {"large": "checkpoints/sd3.5_large_fp8_scaled.safetensors",
               "medium": "checkpoints/sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors"}
TRANSFORMERS = {"large": "diffusion_models/sd3.5_large.safetensors",
                "medium": "diffusion_models/sd3.5_medium.safetensors"}
ENCODER_FILES = {"text_encoder": "text_encoders/clip_l.safetensors", "text_encoder_2": "text_encoders/clip_g.safetensors",
                 "text_encoder_3": "text_encoders/t5xxl_fp16.safetensors"}


def _t5_module():
    """nodes.loading.encoders.t5 (T5-XXL files, its tiny tokenizer), when it is there."""
    try:
        from ...loading.encoders import t5
    except ImportError:
        return None
    return t5 if hasattr(t5, "tiny_tokenizer") else None


def build_pipeline(seed: int = 0, variant: str = "large", t5: bool = True):
    """The tiny StableDiffusion3Pipeline of a variant; T5 when asked and a T5 reader is there."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from ...loading.tiny import tiny_tokenizer
    from .. import scheduler_for

    tiny = FAMILY.tiny
    torch.manual_seed(seed)
    transformer = diffusers.SD3Transformer2DModel(**VARIANTS[variant]).eval()  # as from_pretrained gives them
    torch.manual_seed(seed + 1)
    vae = diffusers.AutoencoderKL(**tiny.vae).eval()
    encoders = {}
    for number, enc in enumerate(FAMILY.text_encoders[:2], start=2):
        tokenizer = tiny_tokenizer(enc.pad_token)
        config = tiny.text_encoders[enc.slot]
        torch.manual_seed(seed + number)
        model = CLIPTextModelWithProjection(CLIPTextConfig(
            **config, projection_dim=config["hidden_size"], vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)).eval()
        encoders[enc.slot], encoders["tokenizer" + enc.slot.removeprefix("text_encoder")] = model, tokenizer
    with torch.no_grad():  # CLIP-L's projection: the identity, as SD3's files (diffusers' converter sets it)
        encoders["text_encoder"].text_projection.weight.copy_(torch.eye(tiny.text_encoders["text_encoder"]["hidden_size"]))
    t5_module = _t5_module() if t5 else None
    encoders["text_encoder_3"] = encoders["tokenizer_3"] = None
    if t5_module is not None:
        from transformers import T5Config, T5EncoderModel

        tokenizer = t5_module.tiny_tokenizer()
        torch.manual_seed(seed + 4)
        encoders["text_encoder_3"] = T5EncoderModel(T5Config(
            **tiny.text_encoders["text_encoder_3"], vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)).eval()
        encoders["tokenizer_3"] = tokenizer
    config = scheduler_for(FAMILY.name)
    scheduler = getattr(diffusers, config.pop("_class_name")).from_config(config)
    return diffusers.StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=vae, **encoders)


def write_folder(folder: str | Path, seed: int = 0, variant: str = "large") -> Path:
    folder = Path(folder)
    build_pipeline(seed, variant).save_pretrained(folder, safe_serialization=True)
    return folder


# --- ComfyUI's layout -------------------------------------------------------------------------------

_RENAMES = [  # diffusers -> the original MMDiT keys (the inverse of diffusers' converter)
    ("pos_embed.pos_embed", "pos_embed"), ("pos_embed.proj.", "x_embedder.proj."),
    ("time_text_embed.timestep_embedder.linear_1.", "t_embedder.mlp.0."),
    ("time_text_embed.timestep_embedder.linear_2.", "t_embedder.mlp.2."),
    ("time_text_embed.text_embedder.linear_1.", "y_embedder.mlp.0."),
    ("time_text_embed.text_embedder.linear_2.", "y_embedder.mlp.2."),
    ("proj_out.", "final_layer.linear."), ("norm_out.linear.", "final_layer.adaLN_modulation.1."),
]
_BLOCK_RENAMES = [
    ("attn.norm_q.", "x_block.attn.ln_q."), ("attn.norm_k.", "x_block.attn.ln_k."),
    ("attn.norm_added_q.", "context_block.attn.ln_q."), ("attn.norm_added_k.", "context_block.attn.ln_k."),
    ("attn.to_out.0.", "x_block.attn.proj."), ("attn.to_add_out.", "context_block.attn.proj."),
    ("attn2.norm_q.", "x_block.attn2.ln_q."), ("attn2.norm_k.", "x_block.attn2.ln_k."),
    ("attn2.to_out.0.", "x_block.attn2.proj."),
    ("norm1.linear.", "x_block.adaLN_modulation.1."), ("norm1_context.linear.", "context_block.adaLN_modulation.1."),
    ("ff.net.0.proj.", "x_block.mlp.fc1."), ("ff.net.2.", "x_block.mlp.fc2."),
    ("ff_context.net.0.proj.", "context_block.mlp.fc1."), ("ff_context.net.2.", "context_block.mlp.fc2."),
]
_FUSED = [("attn.to_{}.", "x_block.attn.qkv."), ("attn.add_{}_proj.", "context_block.attn.qkv."),
          ("attn2.to_{}.", "x_block.attn2.qkv.")]


def _swap_halves(t):
    import torch

    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def transformer_to_original(state: dict, num_layers: int) -> dict:
    """diffusers' SD3 transformer keys -> the original MMDiT layout (what diffusers' converter reads)."""
    import torch

    out = {}
    for key, value in state.items():
        new = next((key.replace(a, b, 1) for a, b in _RENAMES if key.startswith(a)), None)
        if new is not None:
            out[new] = _swap_halves(value) if key.startswith("norm_out.") else value
            continue
        if key.startswith("context_embedder."):
            out[key] = value
            continue
        _, index, rest = key.split(".", 2)
        block = f"joint_blocks.{index}."
        fused = next(((a, b) for a, b in _FUSED if rest.startswith(a.format("q"))), None)
        if fused is not None:
            suffix = rest[len(fused[0].format("q")):]
            parts = [state[f"transformer_blocks.{index}.{fused[0].format(x)}{suffix}"] for x in "qkv"]
            out[block + fused[1] + suffix] = torch.cat(parts, dim=0)
            continue
        if any(rest.startswith(fused[0].format(x)) for fused in _FUSED for x in "kv"):
            continue
        a, b = next((a, b) for a, b in _BLOCK_RENAMES if rest.startswith(a))
        last = int(index) == num_layers - 1
        out[block + b + rest[len(a):]] = _swap_halves(value) if last and a == "norm1_context.linear." else value
    return out


def comfy_files(pipe) -> dict[str, dict]:
    """State dicts of the single files by part: "transformer" (original keys, no prefix), "vae" (LDM,
    no prefix), and the encoders by slot (transformers' keys; CLIP-L without its identity projection)."""
    from ...loading.ldm_layout import vae_to_ldm

    files = {"transformer": transformer_to_original(pipe.transformer.state_dict(), pipe.transformer.config.num_layers),
             "vae": {k.removeprefix("first_stage_model."): v
                     for k, v in vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config).items()}}
    for enc in FAMILY.text_encoders:
        model = getattr(pipe, enc.slot)
        if model is not None:
            state = model.state_dict()
            files[enc.slot] = {k: v for k, v in state.items() if not (enc.kind == "clip_l" and "text_projection" in k)
                               and k != "encoder.embed_tokens.weight"}  # T5's: `shared`, as ComfyUI's files
    return files


def checkpoint(files: dict) -> dict:
    """A whole ComfyUI checkpoint of these parts."""
    whole = {FAMILY.denoiser_prefix + k: v for k, v in files["transformer"].items()}
    whole.update({FAMILY.vae_prefix + k: v for k, v in files["vae"].items()})
    for enc in FAMILY.text_encoders:
        whole.update({enc.prefix + k: v for k, v in files.get(enc.slot, {}).items()})
    return whole


def _save(state: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def write_comfy_files(models_dir: str | Path, seed: int = 0, pipes: dict | None = None) -> dict[str, Path]:
    """Both variants' whole checkpoints and transformers, and the text encoders (shared: the same
    tiny encoders serve both), under ComfyUI's names: {what: path}."""
    models_dir = Path(models_dir)
    pipes = pipes or {v: build_pipeline(seed, v) for v in VARIANTS}
    written = {}
    for variant, pipe in pipes.items():
        files = comfy_files(pipe)
        written[variant] = _save(checkpoint(files), models_dir / CHECKPOINTS[variant])
        written[f"{variant}_transformer"] = _save({FAMILY.denoiser_prefix + k: v for k, v in files["transformer"].items()},
                                                  models_dir / TRANSFORMERS[variant])
        for slot, name in ENCODER_FILES.items():
            if slot in files:
                written[slot] = _save(files[slot], models_dir / name)
    t5 = _t5_module()
    if t5 is not None and "text_encoder_3" in written:  # T5's tokenizer where the loader looks for it
        t5.write_tiny_tokenizer(written["text_encoder_3"].parent)
    return written


if __name__ == "__main__":
    print(write_comfy_files(sys.argv[1] if len(sys.argv) > 1 else "data/models"))

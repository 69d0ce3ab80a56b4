"""ComfyUI's separate loaders and LoRA loaders under their own names and inputs, composed from Loom's
loader stages (nodes.loading.loaders, nodes.lora) and returning ComfyUI's MODEL / CLIP bundles
(nodes.loading.bundles). Files are named relative to ComfyUI's folders: models/diffusion_models (or unet),
models/text_encoders (or clip), models/vae, models/loras.

Loom runs what these files hold in diffusers form, so ComfyUI's options that only choose a storage
format are accepted and ignored where they change nothing here: UNETLoader's `weight_dtype` (the
server's --dtype decides), the loaders' `device` (the server's --device decides). A `type` that no
family declares (nodes.families.spec.Family.clip_types: wan, mochi, ...) is refused by name at validation.
SD3's type takes any part of its three encoders (CLIP-L, bigG, T5-XXL), as ComfyUI.
"""
from __future__ import annotations

from dataclasses import replace

from graph import Combo, Float, In, Node, Out

from ..loading.bundles import Clip, Model
from ..loading.checkpoints import CheckpointError, clip_family
from ..common import call
from ..families import SDXL, SDXL_REFINER, all_families, family
from ..loading.loaders import LoadTextEncoder, LoadUNet, LoadVAE
from ..lora import apply_lora, lora_node_inputs
from ..loading.model_files import kind_choices, kind_fingerprint

# ComfyUI's choices; Loom loads the SD families among them.
CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image",
              "flux2"]
DUAL_CLIP_TYPES = ["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"]
WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
DEVICES = ["default", "cpu"]


def _refuse_type(value) -> dict[str, str]:
    """A `type` no family declares (nodes.families.spec.Family.clip_types) is refused at validation."""
    supported = sorted({t for f in all_families() for t in f.clip_types})
    if isinstance(value, str) and value not in supported:
        return {"type": f"type {value!r} is a model family Loom does not load yet; Loom loads {', '.join(supported)}"}
    return {}


class UNETLoader(Node):
    """ComfyUI's diffusion-model loader: LoadUNet, as a MODEL of the UNet's family."""
    category = "advanced/loaders"  # ComfyUI's
    unet_name = Combo(kind_choices("diffusion_models"), model=True, model_kind="diffusion_models")
    weight_dtype = Combo(WEIGHT_DTYPES, default="default", tooltip="accepted; the server's --dtype decides")
    outputs = (Out("MODEL", "MODEL"),)

    @classmethod
    def fingerprint(cls, env, unet_name=None, **_):
        return kind_fingerprint(env, "diffusion_models", unet_name)

    def run(self, ctx):
        unet, scheduler = call(LoadUNet, ctx, unet_name=self.unet_name)
        return Model(unet, scheduler, unet.loom_family)


def _encoders(ctx, node: str, names: list[str], open_clip: str, clip_type: str) -> Clip:
    """The CLIP of these text-encoder files: the family of `clip_type` whose encoders they are."""
    loaded = [call(LoadTextEncoder, ctx, clip_name=name, open_clip=open_clip) for name in names]
    kinds = [encoder.loom_clip_kind for _, encoder in loaded]
    try:
        name = clip_family(kinds, clip_type)
    except CheckpointError as exc:
        raise ValueError(f"{node}: {exc}: {', '.join(names)}") from None
    by_kind = {kind: pair for kind, pair in zip(kinds, loaded)}
    return Clip.of_slots({enc.slot: by_kind[enc.kind] for enc in family(name).text_encoders if enc.kind in by_kind},
                         name)


class CLIPLoader(Node):
    """ComfyUI's text-encoder loader: LoadTextEncoder, as a CLIP (CLIP-L: SD 1.x, OpenCLIP ViT-H:
    SD 2.x, bigG alone: the SDXL refiner's)."""
    category = "advanced/loaders"  # ComfyUI's
    clip_name = Combo(kind_choices("text_encoders"), model=True, model_kind="text_encoders")
    type = Combo(CLIP_TYPES, default="stable_diffusion")
    device = Combo(DEVICES, default="default", optional=True, tooltip="accepted; the server's --device decides")
    outputs = (Out("CLIP", "CLIP"),)

    @classmethod
    def fingerprint(cls, env, clip_name=None, **_):
        return kind_fingerprint(env, "text_encoders", clip_name)

    @classmethod
    def check(cls, env, type=None, **_):
        return _refuse_type(type)

    def run(self, ctx):
        return _encoders(ctx, "CLIPLoader", [self.clip_name], "clip_h", self.type)


class DualCLIPLoader(Node):
    """ComfyUI's two-encoder loader: two LoadTextEncoder, as the CLIP of the family `type` names (sdxl:
    CLIP-L and bigG; flux: CLIP-L and T5-XXL; any order)."""
    category = "advanced/loaders"  # ComfyUI's
    clip_name1 = Combo(kind_choices("text_encoders"), model=True, model_kind="text_encoders")
    clip_name2 = Combo(kind_choices("text_encoders"), model=True, model_kind="text_encoders")
    type = Combo(DUAL_CLIP_TYPES, default="sdxl")
    device = Combo(DEVICES, default="default", optional=True, tooltip="accepted; the server's --device decides")
    outputs = (Out("CLIP", "CLIP"),)

    @classmethod
    def fingerprint(cls, env, clip_name1=None, clip_name2=None, **_):
        return [kind_fingerprint(env, "text_encoders", clip_name1), kind_fingerprint(env, "text_encoders", clip_name2)]

    @classmethod
    def check(cls, env, type=None, **_):
        return _refuse_type(type)

    def run(self, ctx):
        return _encoders(ctx, "DualCLIPLoader", [self.clip_name1, self.clip_name2], "clip_g", self.type)


class TripleCLIPLoader(Node):
    """ComfyUI's three-encoder loader: three LoadTextEncoder, as SD3's CLIP (CLIP-L, bigG and T5-XXL,
    any order)."""
    category = "advanced/loaders"  # ComfyUI's
    clip_name1 = Combo(kind_choices("text_encoders"), model=True, model_kind="text_encoders")
    clip_name2 = Combo(kind_choices("text_encoders"), model=True, model_kind="text_encoders")
    clip_name3 = Combo(kind_choices("text_encoders"), model=True, model_kind="text_encoders")
    device = Combo(DEVICES, default="default", optional=True, tooltip="accepted; the server's --device decides")
    outputs = (Out("CLIP", "CLIP"),)

    @classmethod
    def fingerprint(cls, env, clip_name1=None, clip_name2=None, clip_name3=None, **_):
        return [kind_fingerprint(env, "text_encoders", n) for n in (clip_name1, clip_name2, clip_name3)]

    def run(self, ctx):
        return _encoders(ctx, "TripleCLIPLoader", [self.clip_name1, self.clip_name2, self.clip_name3], "clip_g",
                         "sd3")


class QuadrupleCLIPLoader(Node):
    """ComfyUI's four-encoder loader (HiDream: CLIP-L, CLIP-G, T5-XXL, Llama 3.1 8B, any order): four
    LoadTextEncoder, as the CLIP of the family whose encoders they are (ComfyUI's has no `type`)."""
    category = "advanced/loaders"  # ComfyUI's
    clip_name1 = Combo(kind_choices("text_encoders"), model=True, model_kind="text_encoders")
    clip_name2 = Combo(kind_choices("text_encoders"), model=True, model_kind="text_encoders")
    clip_name3 = Combo(kind_choices("text_encoders"), model=True, model_kind="text_encoders")
    clip_name4 = Combo(kind_choices("text_encoders"), model=True, model_kind="text_encoders")
    outputs = (Out("CLIP", "CLIP"),)

    @classmethod
    def fingerprint(cls, env, clip_name1=None, clip_name2=None, clip_name3=None, clip_name4=None, **_):
        return [kind_fingerprint(env, "text_encoders", name) for name in (clip_name1, clip_name2, clip_name3, clip_name4)]

    def run(self, ctx):
        names = [self.clip_name1, self.clip_name2, self.clip_name3, self.clip_name4]
        return _encoders(ctx, "QuadrupleCLIPLoader", names, "clip_g", None)


class VAELoader(Node):
    """ComfyUI's VAE loader: LoadVAE."""
    category = "loaders"  # ComfyUI's
    vae_name = Combo(kind_choices("vae"), model=True, model_kind="vae")
    outputs = (Out("VAE", "VAE"),)

    @classmethod
    def fingerprint(cls, env, vae_name=None, **_):
        return kind_fingerprint(env, "vae", vae_name)

    def run(self, ctx):
        return call(LoadVAE, ctx, vae_name=self.vae_name)


def _with_lora(ctx, model: Model, clip: Clip | None, name: str, strength_model: float, strength_clip: float):
    sdxl = model.family in (SDXL, SDXL_REFINER)
    encoders = (clip.text_encoder, clip.text_encoder_2) if clip is not None else ()
    unet, encoders = apply_lora(ctx.env, name, model.unet, encoders, strength_model, strength_clip, sdxl)
    model = replace(model, unet=unet, loras=model.loras + ((name, strength_model),)) if unet is not model.unet \
        else model
    if clip is not None and any(a is not b for a, b in zip(encoders, (clip.text_encoder, clip.text_encoder_2))):
        clip = replace(clip, text_encoder=encoders[0], text_encoder_2=encoders[1],
                       loras=clip.loras + ((name, strength_clip),))
    return model, clip


class LoraLoader(Node):
    """ComfyUI's LoRA loader: ApplyLora on the MODEL's UNet (strength_model) and the CLIP's text
    encoders (strength_clip). Stackable; the loaded models are never changed (see nodes.lora)."""
    category = "loaders"  # ComfyUI's
    model = In("MODEL")
    clip = In("CLIP")
    lora_name = lora_node_inputs()
    strength_model = Float(1.0, min=-100.0, max=100.0, step=0.01)
    strength_clip = Float(1.0, min=-100.0, max=100.0, step=0.01)
    outputs = (Out("MODEL", "MODEL"), Out("CLIP", "CLIP"))

    @classmethod
    def fingerprint(cls, env, lora_name=None, **_):
        return kind_fingerprint(env, "loras", lora_name)

    def run(self, ctx):
        return _with_lora(ctx, self.model, self.clip, self.lora_name, self.strength_model, self.strength_clip)


class LoraLoaderModelOnly(Node):
    """ComfyUI's LoRA loader for the UNet alone."""
    category = "loaders"  # ComfyUI's
    model = In("MODEL")
    lora_name = lora_node_inputs()
    strength_model = Float(1.0, min=-100.0, max=100.0, step=0.01)
    outputs = (Out("MODEL", "MODEL"),)

    @classmethod
    def fingerprint(cls, env, lora_name=None, **_):
        return kind_fingerprint(env, "loras", lora_name)

    def run(self, ctx):
        return _with_lora(ctx, self.model, None, self.lora_name, self.strength_model, 0.0)[0]


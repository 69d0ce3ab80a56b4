"""LoRA: kohya/A1111 and diffusers/PEFT files applied through diffusers' and peft's own loading.

A LoRA file is loaded once into the base model as an inactive PEFT adapter (diffusers'
`lora_state_dict` converts kohya/A1111 keys; `load_lora_into_unet` / `load_lora_into_text_encoder`
inject the layers). The base model is never left patched: the node outputs a `LoraView`, which
activates its adapters with their strengths only for the duration of each call and turns them off
again (also on errors). Everything else (config, device, dtype, submodules) is the base model's, so
every node that calls a UNet or a text encoder applies the LoRAs without knowing of them.

- Stackable: a view of a view keeps the base and appends its adapter; strengths are per adapter.
- Undone when the node's inputs change: a changed strength is a new view of the same adapter;
  a changed file loads a new adapter. An adapter is removed from the base once no view uses it
  (its view was dropped from the cache), at the next LoRA load or call.
- UNet and text encoders separately: `strength_model` and `strength_clip` (ComfyUI's).
"""
from __future__ import annotations

import contextlib
import itertools
import weakref
from typing import Any

from graph import Float, In, Node, Out

_names = itertools.count()
STALE_ATTR = "_loom_stale_adapters"


class LoraView:
    """A model seen with LoRA adapters: `adapters` are (name, strength) pairs loaded into `base`."""

    def __init__(self, base, adapters: tuple, parent: LoraView | None = None):
        self.__dict__.update(base=base, adapters=adapters, parent=parent)  # parent keeps its adapters alive

    def __call__(self, *args, **kwargs):
        with active(self.base, self.adapters):
            return self.base(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["base"], name)

    def to(self, *args, **kwargs) -> LoraView:  # moves the base; the view stays the value to use
        self.base.to(*args, **kwargs)
        return self

    def eval(self) -> LoraView:
        self.base.eval()
        return self

    def __setattr__(self, name: str, value) -> None:
        setattr(self.base, name, value)

    def __repr__(self) -> str:
        return f"LoraView({type(self.base).__name__}, {self.adapters})"


def base_of(model):
    return model.base if isinstance(model, LoraView) else model


def adapters_of(model) -> tuple:
    return model.adapters if isinstance(model, LoraView) else ()


@contextlib.contextmanager
def active(model, adapters: tuple):
    """The adapters on, with their strengths, for the duration of the block; then off again."""
    from diffusers.utils.peft_utils import set_adapter_layers, set_weights_and_activate_adapters

    _purge(model)
    if not adapters:
        yield model
        return
    names, weights = zip(*adapters)
    set_weights_and_activate_adapters(model, list(names), list(weights))
    set_adapter_layers(model, enabled=True)
    try:
        yield model
    finally:
        set_adapter_layers(model, enabled=False)


def _purge(model) -> None:
    """Delete the adapters whose views were dropped (queued by their finalizers)."""
    stale = getattr(model, STALE_ATTR, None)
    if not stale:
        return
    from diffusers.utils.peft_utils import delete_adapter_layers

    while stale:
        name = stale.pop()
        delete_adapter_layers(model, name)
        (getattr(model, "peft_config", None) or {}).pop(name, None)


def _retire(model_ref, name: str) -> None:
    model = model_ref()
    if model is not None:
        getattr(model, STALE_ATTR).append(name)


def read_lora(path, sdxl: bool, unet_config=None) -> tuple[dict, dict | None, dict | None]:
    """(diffusers-format state dict, network alphas, adapter metadata) of a LoRA file in any format
    diffusers reads, as the pipelines' load_lora_weights reads it (the UNet config maps kohya's SDXL
    block names)."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    mixin = StableDiffusionXLLoraLoaderMixin if sdxl else StableDiffusionLoraLoaderMixin
    state, alphas, metadata = mixin.lora_state_dict(str(path), unet_config=unet_config, return_lora_metadata=True)
    if not state or not all("lora" in key for key in state):
        raise ValueError(f"{path.name} is not a LoRA file (its tensors are not named lora_*)")
    return state, alphas, metadata


# diffusers' LoRA loader of a transformer family, by its denoiser's class (UNets: SD's and SDXL's).
TRANSFORMER_LORA = {"FluxTransformer2DModel": "FluxLoraLoaderMixin",
                    "QwenImageTransformer2DModel": "QwenImageLoraLoaderMixin"}


def takes_alphas(mixin) -> bool:
    """Whether the mixin's LoRA files carry network alphas apart (Flux's; Qwen-Image's folds them in)."""
    import inspect

    return "network_alphas" in inspect.signature(mixin.load_lora_into_transformer).parameters


def transformer_lora_mixin(model):
    """diffusers' LoRA loader mixin for a transformer denoiser (None: a UNet, or a family without one)."""
    name = TRANSFORMER_LORA.get(type(base_of(model)).__name__) if model is not None else None
    if name is None:
        return None
    from diffusers.loaders import lora_pipeline

    return getattr(lora_pipeline, name)


def _inject(model, name: str, loader) -> bool:
    """Load an adapter into `model` with `loader(adapter_name)`; False when the file has nothing for it."""
    from diffusers.utils.peft_utils import set_adapter_layers

    before = set(getattr(model, "peft_config", {}) or {})
    loader(name)
    if name not in (getattr(model, "peft_config", {}) or {}) or name in before:
        return False
    if not hasattr(model, STALE_ATTR):
        object.__setattr__(model, STALE_ATTR, [])
    set_adapter_layers(model, enabled=False)  # loading activates it: off until a view's call
    return True


def with_lora(model, state: dict, alphas, strength: float, target: str, metadata=None, mixin=None):
    """A LoraView of `model` (a UNet; a transformer with `mixin`, its diffusers LoRA loader; or a text
    encoder whose keys start with `target`) with the file's adapter added at `strength`; the model
    itself when the file has nothing for it."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin as Mixin

    base = base_of(model)
    _purge(base)
    name = f"loom_lora_{next(_names)}"
    if mixin is not None:
        extra = {"network_alphas": alphas} if takes_alphas(mixin) else {}
        loaded = _inject(base, name, lambda n: mixin.load_lora_into_transformer(
            state, transformer=base, adapter_name=n, metadata=metadata, **extra))
    elif target == "unet":
        loaded = _inject(base, name, lambda n: Mixin.load_lora_into_unet(state, alphas, base, adapter_name=n,
                                                                         metadata=metadata))
    else:
        from transformers.utils import logging as hf_logging

        # transformers reports the other adapters' tensors as "missing" from this file (they are kept)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            loaded = _inject(base, name, lambda n: Mixin.load_lora_into_text_encoder(
                state, alphas, base, prefix=target, adapter_name=n, metadata=metadata))
        finally:
            hf_logging.set_verbosity(verbosity)
    if not loaded:
        return model
    view = LoraView(base, adapters_of(model) + ((name, float(strength)),),
                    model if isinstance(model, LoraView) else None)
    weakref.finalize(view, _retire, weakref.ref(base), name)
    return view


def apply_lora(env, name: str, unet=None, text_encoders: tuple = (), strength_unet: float = 1.0,
               strength_text: float = 1.0, sdxl: bool = False) -> tuple:
    """(unet, text encoders) with the LoRA file `name` applied (views; None stays None)."""
    from .loading.model_files import kind_path

    path = kind_path(env, "loras", name, "LoRA")
    mixin = transformer_lora_mixin(unet)
    if mixin is not None:  # a transformer family: its own reader and loader (text-encoder LoRAs not applied)
        if takes_alphas(mixin):
            state, alphas, metadata = mixin.lora_state_dict(str(path), return_alphas=True, return_lora_metadata=True)
        else:
            (state, metadata), alphas = mixin.lora_state_dict(str(path), return_lora_metadata=True), None
        if not state or not all("lora" in key for key in state):
            raise ValueError(f"{path.name} is not a LoRA file (its tensors are not named lora_*)")
        if strength_unet != 0:
            unet = with_lora(unet, state, alphas, strength_unet, "transformer", metadata, mixin)
        return unet, tuple(text_encoders)
    state, alphas, metadata = read_lora(path, sdxl, base_of(unet).config if unet is not None else None)
    if unet is not None and strength_unet != 0:
        unet = with_lora(unet, state, alphas, strength_unet, "unet", metadata)
    prefixes = ("text_encoder", "text_encoder_2")
    encoders = tuple(with_lora(te, state, alphas, strength_text, prefix, metadata)
                     if te is not None and strength_text != 0 else te for te, prefix in zip(text_encoders, prefixes))
    return unet, encoders


def lora_node_inputs():
    from graph import Combo

    from .loading.model_files import kind_choices

    return Combo(kind_choices("loras"), model=True, model_kind="loras",
                 tooltip="a LoRA file in models/loras (kohya/A1111 or diffusers)")


class ApplyLora(Node):
    """Applies a LoRA file (models/loras; kohya/A1111 or diffusers/PEFT format) to a UNet and text
    encoders, each with its own strength. The models themselves are not changed: the outputs are views
    that switch the LoRA on only while they run. Chain nodes to stack LoRAs."""

    category = "loaders"
    unet = In("UNET")
    lora_name = lora_node_inputs()
    strength_unet = Float(1.0, min=-100.0, max=100.0, step=0.01)
    strength_text = Float(1.0, min=-100.0, max=100.0, step=0.01)
    text_encoder = In("TEXT_ENCODER", optional=True)
    text_encoder_2 = In("TEXT_ENCODER", optional=True, tooltip="SDXL's second text encoder")
    outputs = (Out("UNET", "unet"), Out("TEXT_ENCODER", "text_encoder"), Out("TEXT_ENCODER", "text_encoder_2"))

    @classmethod
    def fingerprint(cls, env, lora_name=None, **_):
        from .loading.model_files import kind_fingerprint

        return kind_fingerprint(env, "loras", lora_name)

    def run(self, ctx):
        sdxl = getattr(base_of(self.unet).config, "addition_embed_type", None) == "text_time"
        unet, (te, te2) = apply_lora(ctx.env, self.lora_name, self.unet, (self.text_encoder, self.text_encoder_2),
                                     self.strength_unet, self.strength_text, sdxl)
        return unet, te, te2

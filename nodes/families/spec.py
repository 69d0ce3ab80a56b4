"""What a model family declares (one module per family in this package, each a `FAMILY = Family(...)`).

A family is data plus a few recognisers: how its models are told apart (from a diffusers folder's
configs, a whole single file's keys, a denoiser file alone), the diffusers/transformers classes and
configs that hold it (the published ones are the reference; small `tiny` ones serve tests), where
each part sits in a single file and which of diffusers' converters turns its keys into diffusers',
its text encoders and how a prompt becomes conditioning, its latent format and its sampling model.
Nothing here imports torch: recognisers get state dicts and read shapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

StateDict = dict  # tensor name -> tensor (only `.shape`, `.ndim` and the values asked for are read)


class UnknownModel(ValueError):
    pass


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder of a family, by the pipeline slot it fills."""

    slot: str  # the diffusers pipeline's attribute: "text_encoder", "text_encoder_2", ...
    kind: str  # what a text-encoder file alone is recognised as (CLIPLoader): "clip_l", "clip_h", "clip_g", ...
    prefix: str  # where it sits in a whole single file
    layout: str  # the key layout under that prefix: "hf" (transformers') or "open_clip"
    model_class: str  # its transformers class
    projection: bool = False  # a projected pooled output (SDXL's bigG): ...WithProjection
    other_prefixes: tuple[str, ...] = ()  # other places a single file may keep it (SD 2.x saved by SGM code)
    pad_token: str | None = None  # the tokenizer's padding, when not the end token (OpenCLIP pads with "!")
    tokenizer_class: str = "CLIPTokenizer"  # its transformers tokenizer (in a folder: tokenizer<suffix>/)
    optional: bool = False  # the loaders may leave it out (SD3: any of its three encoders)


@dataclass(frozen=True)
class Conditioning:
    """How a prompt becomes the denoiser's conditioning."""

    encoder_node: str  # the Loom node that encodes tokens: "EncodeText" (one encoder), "EncodeTextSDXL" (two)
    hidden_layer: int = -1  # which hidden state by default: -1 the last (normalised), -2 the penultimate
    pooled: bool = False  # a pooled text embedding goes with it (SDXL)
    size_ids: int = 0  # micro-conditioning ids added to the time embedding: 6 sizes, or 5 with an aesthetic score


@dataclass(frozen=True)
class LatentFormat:
    channels: int = 4
    scale: float = 0.18215  # latents = (vae latents - shift) * scale
    shift: float = 0.0
    downscale: int = 8  # image pixels per latent pixel (published VAEs)
    packed: int = 1  # side of the square patches packed into channels before the denoiser (2 for Flux)


@dataclass(frozen=True)
class Sampling:
    prediction: str  # "epsilon", "v_prediction" or "flow" (flow matching, velocity towards the noise)
    shift: float | None = None  # flow matching's timestep shift (None: not shifted / not flow)
    multiplier: float = 1000  # flow: ComfyUI's timestep of sigma 1 (1000 for SD3, 1.0 for AuraFlow, Z-Image)


@dataclass(frozen=True)
class Tiny:
    """Scaled-down configs of the family's models for tests (nodes.loading.tiny builds them with seeded
    random weights): the denoiser's and VAE's diffusers configs, one transformers config per encoder."""

    denoiser: dict
    vae: dict
    text_encoders: dict[str, dict]  # slot -> config (vocab and special tokens come from the tokenizer)
    folder: str  # the folder name nodes.loading.tiny writes
    pipeline_options: dict = field(default_factory=dict)  # other arguments of the family's pipeline class


class Runtime(Protocol):
    """What a family's runtime module (`Family.runtime`, e.g. "nodes.families.zimage.runtime") defines:
    the torch side that the generic code calls instead of branching on family names. A family whose
    runtime is None is an SD UNet family, run by the SD code paths."""

    def denoiser_from_file(self, sd: StateDict, prefix: str):
        """Its denoiser from a single file's keys under `prefix` (UNETLoader; a whole checkpoint's),
        built on the meta device, weights assigned, in eval mode (nodes.loading.checkpoints.load_unet)."""

    def encode(self, clip, text: str) -> tuple:
        """CONDITIONING (a tuple of nodes.conditioning.Cond) of a prompt with a CLIP bundle of this family
        (CLIPTextEncode), as the family's pipeline encodes it; family-specific values go in Cond.extra."""

    def guide(self, model, positive, negative, cfg: float, keep_uncond: bool):
        """The guided prediction for nodes.comfy.ksampling: a callable (x, t, step, total) -> prediction
        in the convention of the model's schedule (flow: a velocity v with denoised = x - sigma * v), with
        `last_uncond` kept when keep_uncond (samplers that need the unconditional prediction)."""

    def parts_from_checkpoint(self, sd: StateDict, path) -> dict:
        """Optional. A whole single file's parts (nodes.loading.single_file.load_single_file): {"unet",
        "vae", and per text encoder its slot and tokenizer ("text_encoder_3", "tokenizer_3", ...)}, built
        on the meta device with the file's weights, not yet placed; the caller adds the family, places
        them and adds the scheduler. `path` is the file (a tokenizer may be read beside it)."""

    def model_sampling(self, unet):
        """Optional: ComfyUI's model sampling of this denoiser when no ModelSampling* node set one (a
        nodes.comfy.ksampling FlowSchedule; Flux.1 dev: FluxSchedule, schnell: discrete flow). Without
        it, the scheduler config decides (nodes.comfy.ksampling.ksampler.model_sampling)."""

    # Loom's stage nodes (Tokenize, EncodeText, SetScheduler, MakeNoiseLatents, UNetStep/Sample: the
    # tutorial's step-by-step graph) on this family, each as the family's diffusers pipeline does it, so
    # that the graph gives the pipeline's pixels. A family without them is refused by those nodes.

    def stage_tokenize(self, tokenizer, text: str):
        """TOKENS of a prompt (Tokenize): a LongTensor (1, L) of token ids on the CPU."""

    def stage_encode(self, pairs: list, clip_skip: int) -> tuple:
        """CONDITIONING of [(text encoder, TOKENS), ...]: one pair from EncodeText, two from EncodeTextSDXL
        (Flux: CLIP-L and T5); clip_skip n: the hidden layer n earlier than the family's."""

    def stage_timesteps(self, scheduler, steps: int, shape: tuple, device) -> None:
        """Sets a fresh scheduler to `steps` steps as the pipeline does for latents of `shape` (B, C, h, w)
        (its sigmas, its resolution-dependent shift)."""

    def stage_guide(self, unet, positive, negative, guidance_scale: float):
        """The guided prediction for Sample/UNetStep: a callable (x, t, step, total) -> what the pipeline
        gives its scheduler's `step` at timestep t, for guidance u + g * (c - u) (Loom's and ComfyUI's g),
        computed in the pipeline's order of operations; g = 1 skips the negative pass."""

    def write_tiny(self, folder, seed: int = 0):
        """A tiny random diffusers folder of the family (its pipeline's save_pretrained)."""

    def write_tiny_files(self, models_dir, seed: int = 0) -> dict:
        """Tiny random single files in ComfyUI's folders under the names its templates ask for: {name: path}."""

    # Optional, for a family whose VAE is not an AutoencoderKL (Qwen-Image's 3D VAE); looked up with hasattr:
    # is_vae(sd) -> bool: a VAE file alone (VAELoader) is in this family's layout;
    # vae_from_file(sd): that VAE, built on meta, weights assigned, with Loom's VAE face (encode / decode
    #   of (B, C, H, W), config.scaling_factor / shift_factor / block_out_channels);
    # wrap_vae(vae): a diffusers folder's VAE of the family given that face (nodes.loading.checkpoints).


@dataclass(frozen=True)
class Family:
    name: str  # the id the family travels by (bundles' `family`), e.g. "sd1"
    label: str  # for people: "Stable Diffusion 1.x"
    published: str  # the published diffusers repository whose layout this mirrors (never downloaded)
    pipeline: str  # the diffusers pipeline class of a folder of this family
    denoiser_class: str  # diffusers class of the UNet / transformer
    vae_class: str
    text_encoders: tuple[TextEncoder, ...]
    conditioning: Conditioning
    latent: LatentFormat
    sampling: Sampling
    scheduler: dict  # the published scheduler config (`_class_name` + the values that differ from defaults)
    default_size: int  # the image side it was trained for
    tiny: Tiny
    # recognition: each answers "is this mine?"; the registry asks every family and expects one yes
    is_folder: Callable[[dict, dict, dict], bool]  # (model_index.json, denoiser config, text_encoder config)
    is_checkpoint: Callable[[StateDict], bool]  # a whole single file's keys
    is_denoiser: Callable[[StateDict, str], bool]  # a denoiser file alone (its keys under a prefix)
    is_denoiser_config: Callable[[dict], bool]  # a denoiser folder's config.json
    # single files: the key prefixes of its parts, diffusers' converter of its denoiser (VAEs of the
    # LDM layout share one: convert_ldm_vae_checkpoint), and what the keys say about the prediction
    # type (default: the scheduler's)
    denoiser_folder: str = "unet"  # its subfolder in a diffusers pipeline folder ("transformer" for DiTs)
    denoiser_prefix: str = "model.diffusion_model."
    vae_prefix: str = "first_stage_model."
    denoiser_converter: str = "convert_ldm_unet_checkpoint"  # in diffusers.loaders.single_file_utils
    prediction_of_file: Callable[[StateDict, str], str] | None = None
    denoiser_overrides: dict = field(default_factory=dict)  # published config values shapes cannot tell
    # ComfyUI's CLIPLoader / DualCLIPLoader / TripleCLIPLoader `type` values that load this family's encoders
    clip_types: tuple[str, ...] = ()
    # the module of its torch side (see `Runtime`), for families whose denoiser is not an SD UNet
    runtime: str | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """Its text encoders' kinds, sorted: the set CLIPLoader / DualCLIPLoader must be given."""
        return tuple(sorted(e.kind for e in self.text_encoders))

    def encoder(self, slot: str) -> TextEncoder | None:
        return next((e for e in self.text_encoders if e.slot == slot), None)

    def prediction_type(self, sd: StateDict, prefix: str | None = None) -> str:
        """The prediction type of a single file of this family (a `v_pred` key always says v)."""
        if "v_pred" in sd:
            return "v_prediction"
        if self.prediction_of_file is not None:
            return self.prediction_of_file(sd, self.denoiser_prefix if prefix is None else prefix)
        return self.scheduler.get("prediction_type", "epsilon")

    def __repr__(self) -> str:
        return f"Family({self.name!r})"

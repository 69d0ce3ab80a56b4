"""GLIGEN: phrases placed in boxes, for SD 1.x UNets (ComfyUI's GLIGENLoader and GLIGENTextBoxApply).

A GLIGEN file (ComfyUI's layout, in models/gligen) holds one gated self-attention layer per
transformer block of the UNet (`<ldm block>.transformer_blocks.<k>.fuser.*`, in block order: input,
middle, output) and the position net that turns (phrase embedding, box) pairs into grounding tokens.
Loom builds them as diffusers' own modules (GatedSelfAttentionDense, GLIGENTextBoundingboxProjection:
what UNet2DConditionModel(attention_type="gated") holds) and attaches them to the UNet only while a
grounded conditioning entry is sampled (`grounded`), passing the boxes as diffusers'
cross_attention_kwargs["gligen"]. As in ComfyUI, entries without boxes (the negative prompt) run the
plain UNet; up to 30 boxes; a box is given in pixels and placed on the latent grid (pixels // 8, or
the VAE's own scale), relative to the latent's size.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from graph import Combo, In, Int, Node, Out, String

from ..common import MAX_RESOLUTION, call
from ..conditioning import as_conditioning
from ..loading.model_files import kind_choices, kind_fingerprint, kind_path, read_state_dict
from ..text import Tokenize, run_text_encoder

MAX_OBJECTS = 30
SECTIONS = ("input_blocks", "middle_block", "output_blocks")
FUSER_KEY = re.compile(r"(?:^|\.)(input_blocks|middle_block|output_blocks)\.(\d+)\.(.*?)\.fuser\.(.+)$")


@dataclass(eq=False)
class Gligen:
    """ComfyUI's GLIGEN: the fusers (one per transformer block, in order) and the position net."""
    fusers: list
    position_net: torch.nn.Module
    key_dim: int


@dataclass(frozen=True)
class Box:
    """One phrase in one box: the phrase's pooled CLIP embedding (unprojected) and the box in pixels."""
    embedding: torch.Tensor
    x: int
    y: int
    width: int
    height: int


def load_gligen(path) -> Gligen:
    from diffusers.models.attention import GatedSelfAttentionDense
    from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

    sd = read_state_dict(path)
    groups: dict[tuple, dict] = {}
    for key, value in sd.items():
        match = FUSER_KEY.search(key)  # with or without a "model.diffusion_model." prefix
        if match:
            section, block, inner, name = match.groups()
            groups.setdefault((SECTIONS.index(section), int(block), inner), {})[name] = value
    if not groups or "position_net.null_positive_feature" not in sd:
        raise ValueError(f"GLIGENLoader: {path.name} is not a GLIGEN model (no fuser layers or position net)")
    fusers = []
    for _, state in sorted(groups.items()):
        query_dim, key_dim = state["linear.weight"].shape
        heads = 8 if key_dim == 768 else query_dim // 64  # ComfyUI's rule: SD 1.x has 8 heads
        fuser = GatedSelfAttentionDense(query_dim, key_dim, heads, query_dim // heads)
        fuser.load_state_dict(state)
        fusers.append(fuser.eval())
    net_state = {k[len("position_net."):]: v for k, v in sd.items() if k.startswith("position_net.")}
    in_dim, out_dim = net_state["null_positive_feature"].shape[0], net_state["linears.4.weight"].shape[0]
    net = GLIGENTextBoundingboxProjection(positive_len=in_dim, out_dim=out_dim, feature_type="text-only")
    net.load_state_dict(net_state)
    return Gligen(fusers, net.eval(), in_dim)


def transformer_blocks(unet) -> list:
    """The UNet's BasicTransformerBlocks in ComfyUI's transformer order: down, middle, up."""
    from diffusers.models.attention import BasicTransformerBlock

    parts = list(unet.down_blocks) + [unet.mid_block] + list(unet.up_blocks)
    return [m for part in parts if part is not None for m in part.modules() if isinstance(m, BasicTransformerBlock)]


@contextmanager
def grounded(unet, gligen: Gligen):
    """The UNet with GLIGEN's layers attached (diffusers' `fuser` and `position_net`), for one call."""
    blocks = transformer_blocks(unet)
    if len(blocks) != len(gligen.fusers):
        raise ValueError(f"GLIGEN: the model has {len(gligen.fusers)} layers for a UNet with {len(blocks)} "
                         f"transformer blocks (GLIGEN models are made for SD 1.x)")
    param = next(unet.parameters())
    for block, fuser in zip(blocks, gligen.fusers):
        block.fuser = fuser.to(device=param.device, dtype=param.dtype)
        # the file does not say how many heads: the block's own (SD 1.x: 8, ComfyUI's rule)
        heads = block.attn1.heads
        fuser.attn.heads, fuser.attn.scale = heads, (fuser.attn.inner_dim // heads) ** -0.5
    unet.position_net = gligen.position_net.to(device=param.device, dtype=param.dtype)
    try:
        yield unet
    finally:
        for block in blocks:
            del block.fuser
        del unet.position_net


def gligen_kwargs(boxes: tuple[Box, ...], key_dim: int, batch: int, height: int, width: int, latent_scale: int,
                  device, dtype) -> dict:
    """diffusers' cross_attention_kwargs["gligen"] for latents of height x width: boxes as (x1, y1, x2,
    y2) fractions of the latent, the phrase embeddings, and 1 for each box given (30 slots)."""
    xyxy = torch.zeros(MAX_OBJECTS, 4)
    embeddings = torch.zeros(MAX_OBJECTS, key_dim)
    masks = torch.zeros(MAX_OBJECTS)
    for i, box in enumerate(boxes[:MAX_OBJECTS]):
        s = latent_scale
        x, y, w, h = box.x // s, box.y // s, box.width // s, box.height // s
        xyxy[i] = torch.tensor([x / width, y / height, (x + w) / width, (y + h) / height])
        embeddings[i] = box.embedding.reshape(-1).float().cpu()
        masks[i] = 1.0
    expand = lambda t: t[None].expand(batch, *t.shape).to(device=device, dtype=dtype)  # noqa: E731
    return {"boxes": expand(xyxy), "positive_embeddings": expand(embeddings), "masks": expand(masks)}


def pooled_embedding(clip, text: str, ctx=None) -> torch.Tensor:
    """The phrase's CLIP embedding GLIGEN was trained on: the text encoder's pooled output, before any
    projection (ComfyUI's return_pooled="unprojected")."""
    if clip.text_encoder is None or clip.text_encoder_2 is not None:
        raise ValueError("GLIGENTextBoxApply: GLIGEN needs an SD 1.x CLIP (one CLIP-L text encoder)")
    tokens = call(Tokenize, ctx, tokenizer=clip.tokenizer, text=text)
    with torch.no_grad():
        return run_text_encoder(clip.text_encoder, tokens).pooler_output[0]


class GLIGENLoader(Node):
    """Loads a GLIGEN model (ComfyUI's file layout) from models/gligen."""
    category = "loaders"
    gligen_name = Combo(kind_choices("gligen"), model=True, model_kind="gligen")
    outputs = (Out("GLIGEN", "GLIGEN"),)

    @classmethod
    def fingerprint(cls, env, gligen_name=None, **_):
        return kind_fingerprint(env, "gligen", gligen_name)

    def run(self, ctx):
        return load_gligen(kind_path(ctx.env, "gligen", self.gligen_name, "GLIGENLoader"))


class GLIGENTextBoxApply(Node):
    """Places a phrase in a box (pixels) on every entry of the conditioning; boxes add up over nodes."""
    category = "conditioning/gligen"
    conditioning_to = In("CONDITIONING")
    clip = In("CLIP")
    gligen_textbox_model = In("GLIGEN")
    text = String("", multiline=True)
    width = Int(64, min=8, max=MAX_RESOLUTION, step=8)
    height = Int(64, min=8, max=MAX_RESOLUTION, step=8)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    outputs = (Out("CONDITIONING", "CONDITIONING"),)

    def run(self, ctx):
        box = Box(pooled_embedding(self.clip, self.text, ctx), self.x, self.y, self.width, self.height)
        return tuple(replace(c, gligen=(self.gligen_textbox_model, (c.gligen[1] if c.gligen else ()) + (box,)))
                     for c in as_conditioning(self.conditioning_to))

"""ComfyUI's scaled fp8 files (`*_fp8_scaled.safetensors`): each quantised Linear weight is stored in
float8 with a per-tensor scale beside it. Two layouts exist: ComfyUI's older one (`<layer>.scale_weight`,
an optional `<layer>.scale_input`, and a `scaled_fp8` marker tensor) and its newer one
(`<layer>.weight_scale`, `<layer>.input_scale`, `<layer>.comfy_quant` JSON bytes). Loom computes in
the model's dtype, so a weight is dequantised once at load: weight (as float32) * scale. Plain fp8
files (`*_fp8_e4m3fn.safetensors`, no scales) need nothing: their weights are cast when placed.
"""
from __future__ import annotations

WEIGHT_SCALES = (".scale_weight", ".weight_scale")
DROPPED = (".scale_input", ".input_scale", ".comfy_quant")
MARKERS = ("scaled_fp8",)


def is_scaled(sd: dict) -> bool:
    return any(k.endswith(WEIGHT_SCALES) or k.rsplit(".", 1)[-1] in MARKERS for k in sd)


def dequantize(sd: dict) -> dict:
    """The state dict with every scaled weight multiplied out (float32) and the scale entries removed;
    a file without scales is returned as it is."""
    if not is_scaled(sd):
        return sd
    out = {}
    for key, value in sd.items():
        if key.rsplit(".", 1)[-1] in MARKERS or key.endswith(DROPPED + WEIGHT_SCALES):
            continue
        if key.endswith(".weight"):
            scale = next((sd[key[:-len(".weight")] + s] for s in WEIGHT_SCALES
                          if key[:-len(".weight")] + s in sd), None)
            if scale is not None:
                value = value.float() * scale.float()
        out[key] = value
    return out

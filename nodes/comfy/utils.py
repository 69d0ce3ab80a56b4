"""ComfyUI's small utility nodes of today's workflows: Preview Any (shows any value as text), Get
Image Size, Resolution Selector, Math Expression and Number Convert (comfy_extras/nodes_preview_any.py,
nodes_images.py, nodes_resolution.py, nodes_math.py, nodes_number_convert.py), with ComfyUI's inputs
and outputs. None of them imports torch."""
from __future__ import annotations

import json
import math
import string

from graph import Combo, Float, In, Int, Node, Out, String

from .expressions import evaluate


def as_text(value) -> str:
    """A value as Preview Any shows it: text as it is, numbers and booleans by str, the rest as
    JSON when it can be, else by str."""
    if isinstance(value, str):
        return value
    if value is None:
        return "None"
    if isinstance(value, (int, float, bool)):
        return str(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        try:
            return str(value)
        except Exception:
            return "source exists, but could not be serialized."


class PreviewAny(Node):
    """Shows any value as text in the editor (the history's `text` output, as ComfyUI's) and passes
    that text on. (The output is today's: the templates saved by ComfyUI 0.22 link it.)"""
    display_name = "Preview Any"
    category = "utils"
    output_node = True
    source = In("*")
    outputs = (Out("STRING", "STRING"),)

    def run(self, ctx):
        text = as_text(self.source)
        ctx.show(text=[text])
        return text


class GetImageSize(Node):
    """The width, height and batch size of an image batch."""
    display_name = "Get Image Size"
    category = "image"
    pure = True
    image = In("IMAGE")
    outputs = (Out("INT", "width"), Out("INT", "height"), Out("INT", "batch_size"))

    def run(self, ctx):
        batch, height, width = (int(n) for n in self.image.shape[:3])  # images are (B, H, W, C)
        return width, height, batch


ASPECT_RATIOS = {  # ComfyUI's names, in its order
    "1:1 (Square)": (1, 1), "3:2 (Photo)": (3, 2), "4:3 (Standard)": (4, 3), "16:9 (Widescreen)": (16, 9),
    "21:9 (Ultrawide)": (21, 9), "2:3 (Portrait Photo)": (2, 3), "3:4 (Portrait Standard)": (3, 4),
    "9:16 (Portrait Widescreen)": (9, 16),
}


def resolution(aspect_ratio: str, megapixels: float, multiple: int, minimum: int) -> tuple[int, int]:
    """Width and height of about `megapixels` (of 1024 x 1024) at the ratio, rounded to `multiple`;
    when a side falls below `minimum`, the smallest exact multiple of the ratio whose sides are at
    least `minimum` and multiples of `multiple`."""
    w_ratio, h_ratio = ASPECT_RATIOS[aspect_ratio]
    scale = math.sqrt(megapixels * 1024 * 1024 / (w_ratio * h_ratio))
    width = round(w_ratio * scale / multiple) * multiple
    height = round(h_ratio * scale / multiple) * multiple
    if width < minimum or height < minimum:
        step_w = multiple // math.gcd(w_ratio, multiple)  # k * ratio is a multiple of `multiple`
        step_h = multiple // math.gcd(h_ratio, multiple)
        step = math.lcm(step_w, step_h)
        k = math.ceil(math.ceil(max(minimum / w_ratio, minimum / h_ratio)) / step) * step
        width, height = w_ratio * k, h_ratio * k
    return width, height


class ResolutionSelector(Node):
    """Width and height from an aspect ratio and a number of megapixels, for an empty latent."""
    display_name = "Resolution Selector"
    category = "utilities"
    pure = True
    aspect_ratio = Combo(list(ASPECT_RATIOS), default="1:1 (Square)", tooltip="The aspect ratio for the output dimensions.")
    megapixels = Float(1.0, min=0.1, max=16.0, step=0.1, tooltip="Target total megapixels. 1.0 MP ≈ 1024×1024 for square.")
    multiple = Int(8, min=8, max=128, step=4, tooltip="Nearest multiple of the result to set the selected resolution to.")
    minimum = Int(256, min=32, max=4096, step=32, tooltip="Set minimum resolution for any side to be used")
    outputs = (Out("INT", "width"), Out("INT", "height"))

    def run(self, ctx):
        return resolution(self.aspect_ratio, self.megapixels, self.multiple, self.minimum)


NUMBER = "FLOAT,INT,BOOLEAN"


class ComfyMathExpression(Node):
    """The value of an arithmetic expression of the inputs a, b, c, ... (and `values`, the list of
    the connected ones), as a float, an integer and a boolean. The expression is parsed and walked
    by nodes.comfy.expressions, never evaluated as Python. ComfyUI grows these inputs as they are linked
    (an Autogrow group `values`); Loom declares all 26, `values.a` required as ComfyUI's first."""
    display_name = "Math Expression"
    category = "utilities"
    pure = True
    expression = String("a + b", multiline=True)
    locals().update({f"values.{c}": In(NUMBER, optional=c != "a") for c in string.ascii_lowercase})
    outputs = (Out("FLOAT", "FLOAT"), Out("INT", "INT"), Out("BOOLEAN", "BOOL"))

    def run(self, ctx):
        if not self.expression.strip():
            raise ValueError("the expression is empty")
        names = {c: v for c in string.ascii_lowercase if (v := getattr(self, f"values.{c}", None)) is not None}
        result = evaluate(self.expression, {**names, "values": list(names.values())})
        if not isinstance(result, (int, float)):  # a comparison's bool is a number too
            raise ValueError(f"the expression {self.expression!r} must give a number, "
                             f"not {type(result).__name__} {result!r}")
        try:
            as_float = float(result)
        except OverflowError:
            raise ValueError(f"the expression {self.expression!r} gave a number too large for a float") from None
        if not math.isfinite(as_float):
            raise ValueError(f"the expression {self.expression!r} gave {as_float}")
        return as_float, int(result), bool(result)


class ComfyNumberConvert(Node):
    """A number, a boolean or a text holding a number, as a float and an integer."""
    display_name = "Number Convert"
    category = "math"
    pure = True
    value = In("INT,FLOAT,STRING,BOOLEAN")
    outputs = (Out("FLOAT", "FLOAT"), Out("INT", "INT"))

    def run(self, ctx):
        value = self.value
        if isinstance(value, bool):
            return float(value), int(value)
        if isinstance(value, int):
            return float(value), value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"cannot convert {value} to a number")
            return value, int(value)
        if isinstance(value, str):
            text = value.strip()
            if not text:
                raise ValueError("cannot convert an empty text to a number")
            try:
                as_float = float(text)
            except ValueError:
                raise ValueError(f"cannot convert the text {value!r} to a number") from None
            if not math.isfinite(as_float):
                raise ValueError(f"cannot convert {value!r} to a finite number")
            try:
                return as_float, int(text)  # "12345678901234567890" keeps every digit
            except ValueError:
                return as_float, int(as_float)
        raise TypeError(f"cannot convert {type(value).__name__} to a number")

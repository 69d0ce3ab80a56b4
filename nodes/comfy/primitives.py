"""ComfyUI's primitive nodes (PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline,
PrimitiveBoolean): one constant widget whose value is the output, to feed several inputs at once.
Their inputs are ComfyUI's: `value`, with the integer as a seed-style widget (control_after_generate)."""
from __future__ import annotations

import sys

from graph import Boolean, Float, Int, Node, Out, String


class _Primitive(Node):
    category = "utils/primitive"  # ComfyUI's
    pure = True  # validation may read it to decide a switch before the run (graph.lazy)

    def run(self, ctx):
        return self.value


class PrimitiveInt(_Primitive):
    """An integer."""
    display_name = "Int"
    value = Int(0, min=-sys.maxsize, max=sys.maxsize, control_after_generate=True)
    outputs = (Out("INT", "INT"),)


class PrimitiveFloat(_Primitive):
    """A number."""
    display_name = "Float"
    value = Float(0.0, min=-sys.maxsize, max=sys.maxsize, step=0.1)
    outputs = (Out("FLOAT", "FLOAT"),)


class PrimitiveString(_Primitive):
    """A line of text."""
    display_name = "String"
    value = String("")
    outputs = (Out("STRING", "STRING"),)


class PrimitiveStringMultiline(_Primitive):
    """Text of several lines."""
    display_name = "String (Multiline)"
    value = String("", multiline=True)
    outputs = (Out("STRING", "STRING"),)


class PrimitiveBoolean(_Primitive):
    """True or false."""
    display_name = "Boolean"
    value = Boolean(False)
    outputs = (Out("BOOLEAN", "BOOLEAN"),)

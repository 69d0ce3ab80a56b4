"""Node declarations: one class per node, read by validation, `/object_info` and the executor.

A node is a subclass of `Node` whose class attributes declare its typed inputs (in order) and
whose `outputs` tuple declares its typed, named outputs:

    class Add(Node):
        "Adds two numbers."
        category = "math"
        a = Float(0.0)
        b = Float(0.0, min=-10, max=10)
        outputs = (Out("FLOAT", "sum"),)

        def run(self, ctx):
            return self.a + self.b

The executor makes a fresh instance per call, sets each input as an attribute and calls `run`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

class InputError(ValueError):
    """A constant input value that does not fit its declaration.

    `kind` is one of ComfyUI's per-input error types (invalid_input_type, value_smaller_than_min, ...).
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(kw_only=True)
class Input:
    """Base of every input declaration. `type` is the socket or widget type name."""

    type: str = "*"
    optional: bool = False
    tooltip: str | None = None
    # The value names a model the node loads, of this kind (a models-folder kind such as "checkpoints",
    # "diffusion_models", "text_encoders", "vae", "loras"; or a node's own). Memory management and
    # routing treat a node with such an input as a model loader (model_inputs).
    model_kind: str | None = None
    name: str = field(default="", init=False)  # filled by Node.__init_subclass__

    @property
    def is_widget(self) -> bool:
        """Widgets (Int, Float, ...) hold a constant; plain `In` sockets only take links."""
        return type(self) is not Input

    @property
    def has_default(self) -> bool:
        return getattr(self, "default", None) is not None

    def options(self, env: Any = None) -> dict:
        """The options dict of `/object_info` (ComfyUI's `[TYPE, {options}]`)."""
        opts = {}
        if self.tooltip:
            opts["tooltip"] = self.tooltip
        return opts

    def spec(self, env: Any = None) -> list:
        return [self.type, self.options(env)]

    def coerce(self, value: Any, env: Any = None) -> Any:
        """Return the value converted to this input's type, or raise InputError."""
        return value


def In(type: str, optional: bool = False, tooltip: str | None = None) -> Input:
    """A socket input: its value comes only from a link to another node's output of `type`."""
    return Input(type=type, optional=optional, tooltip=tooltip)


def _check_range(value, lo, hi):
    if lo is not None and value < lo:
        raise InputError("value_smaller_than_min", f"{value} is smaller than the minimum {lo}")
    if hi is not None and value > hi:
        raise InputError("value_bigger_than_max", f"{value} is bigger than the maximum {hi}")
    return value


@dataclass
class Int(Input):
    default: int = 0
    min: int | None = None
    max: int | None = None
    step: int = 1
    control_after_generate: bool = False  # a seed: the editor offers fixed/increment/randomize
    type: str = field(default="INT", init=False)

    def options(self, env=None):
        opts = {"default": self.default, "step": self.step, **super().options(env)}
        if self.min is not None:
            opts["min"] = self.min
        if self.max is not None:
            opts["max"] = self.max
        if self.control_after_generate:
            opts["control_after_generate"] = True
        return opts

    def coerce(self, value, env=None):
        if isinstance(value, bool):
            raise InputError("invalid_input_type", f"expected an integer, got the boolean {value}")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise InputError("invalid_input_type", f"expected an integer, got the text {value!r}") from None
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise InputError("invalid_input_type", f"expected an integer, got {value}")
            value = int(value)
        if not isinstance(value, int):
            raise InputError("invalid_input_type", f"expected an integer, got {type(value).__name__}")
        return _check_range(value, self.min, self.max)


@dataclass
class Float(Input):
    default: float = 0.0
    min: float | None = None
    max: float | None = None
    step: float = 0.01
    round: float | None = None
    type: str = field(default="FLOAT", init=False)

    def options(self, env=None):
        opts = {"default": self.default, "step": self.step, **super().options(env)}
        if self.min is not None:
            opts["min"] = self.min
        if self.max is not None:
            opts["max"] = self.max
        if self.round is not None:
            opts["round"] = self.round
        return opts

    def coerce(self, value, env=None):
        if isinstance(value, bool):
            raise InputError("invalid_input_type", f"expected a number, got the boolean {value}")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise InputError("invalid_input_type", f"expected a number, got the text {value!r}") from None
        if not isinstance(value, (int, float)):
            raise InputError("invalid_input_type", f"expected a number, got {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value):
            raise InputError("invalid_input_type", f"expected a finite number, got {value}")
        return _check_range(value, self.min, self.max)


@dataclass
class String(Input):
    default: str = ""
    multiline: bool = False
    max_length: int = 100_000
    type: str = field(default="STRING", init=False)

    def options(self, env=None):
        opts = {"default": self.default, **super().options(env)}
        if self.multiline:
            opts["multiline"] = True
        return opts

    def coerce(self, value, env=None):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError("invalid_input_type", f"expected text, got {type(value).__name__}")
        value = str(value)
        if len(value) > self.max_length:
            raise InputError("value_bigger_than_max", f"text is {len(value)} characters long, the limit is {self.max_length}")
        return value


@dataclass
class Boolean(Input):
    default: bool = False
    type: str = field(default="BOOLEAN", init=False)

    def options(self, env=None):
        return {"default": self.default, **super().options(env)}

    def coerce(self, value, env=None):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise InputError("invalid_input_type", f"expected true or false, got {value!r}")


@dataclass
class Combo(Input):
    """A choice among strings. `choices` is a list, or a callable `choices(env)` read on each use
    (e.g. the files of the models folder)."""

    choices: Sequence[str] | Callable[[Any], Sequence[str]] = ()
    default: str | None = None
    image_upload: bool = False  # the editor shows an upload button (LoadImage)
    model: bool = False  # the value names a file or folder of the models folder (see graph.models)
    type: str = field(default="COMBO", init=False)

    def choices_for(self, env=None) -> list[str]:
        return list(self.choices(env) if callable(self.choices) else self.choices)

    def options(self, env=None):
        choices = self.choices_for(env)
        opts = {"options": choices, **super().options(env)}
        default = self.default if self.default is not None else (choices[0] if choices else None)
        if default is not None:
            opts["default"] = default
        if self.image_upload:
            opts["image_upload"] = True
        return opts

    def spec(self, env=None):
        # ComfyUI's classic shape `[[choices], {options}]`, understood by every client version.
        opts = self.options(env)
        return [opts["options"], {k: v for k, v in opts.items() if k != "options"}]

    def coerce(self, value, env=None):
        if not isinstance(value, str):
            raise InputError("invalid_input_type", f"expected one of the choices, got {type(value).__name__}")
        choices = self.choices_for(env)
        if value not in choices:
            shown = ", ".join(repr(c) for c in choices[:20]) + (" ..." if len(choices) > 20 else "")
            raise InputError("value_not_in_list", f"{value!r} is not among the choices: {shown or 'none available'}")
        return value


@dataclass(frozen=True)
class Out:
    type: str
    name: str = ""
    is_list: bool = False

    @property
    def label(self) -> str:
        return self.name or self.type


class Node:
    """Base class of all nodes. Subclasses declare inputs as class attributes and `outputs`."""

    category: ClassVar[str] = "misc"
    display_name: ClassVar[str | None] = None
    outputs: ClassVar[tuple[Out, ...]] = ()
    output_node: ClassVar[bool] = False  # a result the user asked for (saved or shown)
    idempotent: ClassVar[bool] = True  # False: run every time, never served from the cache
    inputs: ClassVar[dict[str, Input]] = {}
    # Other names an input is known by in workflows from elsewhere (ComfyUI's VAEDecode calls its
    # latent input `samples`): alias -> input name. Loading renames them (graph.formats).
    input_aliases: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        inputs = {}
        for base in reversed(cls.__mro__[1:]):  # inherited inputs first
            inputs.update(getattr(base, "inputs", {}))
        for name, value in list(vars(cls).items()):
            if isinstance(value, Input):
                value.name = name
                inputs[name] = value
                delattr(cls, name)  # instances get the real value as an attribute
        cls.inputs = inputs

    # --- hooks a node may override -------------------------------------------------------------
    @classmethod
    def fingerprint(cls, env: Any, **constants) -> Any:
        """Extra data for the cache key, e.g. a file's mtime and size, so a changed file re-runs."""
        return None

    @classmethod
    def check(cls, env: Any, **constants) -> dict[str, str]:
        """Custom validation of constant inputs; returns {input_name: message} for each problem."""
        return {}

    def run(self, ctx) -> Any:
        raise NotImplementedError

    # --- derived views of the declaration ------------------------------------------------------
    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip()

    @classmethod
    def object_info(cls, env: Any = None) -> dict:
        """This node in the shape of ComfyUI's `/object_info` entries."""
        required, optional = {}, {}
        for name, inp in cls.inputs.items():
            (optional if inp.optional else required)[name] = inp.spec(env)
        return {
            "input": {"required": required, "optional": optional, "hidden": {}},
            "input_order": {
                "required": [n for n, i in cls.inputs.items() if not i.optional],
                "optional": [n for n, i in cls.inputs.items() if i.optional],
            },
            "output": [o.type for o in cls.outputs],
            "output_is_list": [o.is_list for o in cls.outputs],
            "output_name": [o.label for o in cls.outputs],
            "output_tooltips": [None for _ in cls.outputs],
            "name": cls.type_name(),
            "display_name": cls.display_name or cls.type_name(),
            "description": cls.describe(),
            "python_module": cls.__module__,
            "category": cls.category,
            "output_node": cls.output_node,
        }

    @classmethod
    def widget_names(cls) -> list[str]:
        """Widget inputs in the order the editor lists their values (required, then optional)."""
        ordered = [i for i in cls.inputs.values() if not i.optional] + [i for i in cls.inputs.values() if i.optional]
        return [i.name for i in ordered if i.is_widget]


def model_inputs(cls: type[Node]) -> dict[str, str]:
    """The inputs of a node type that name a model it loads, with their kind; empty for a node that
    loads none."""
    return {name: inp.model_kind for name, inp in cls.inputs.items() if inp.model_kind}


def model_files(prompt: dict, registry) -> dict[str, dict[str, tuple[str, Any]]]:
    """The model-loading nodes of an API prompt: {node id: {input: (kind, value)}}, the value a
    constant or a link. Nodes of unknown types are left out."""
    found = {}
    for node_id, node in prompt.items():
        cls = registry.get(node.get("class_type")) if isinstance(node, dict) else None
        kinds = model_inputs(cls) if cls is not None else {}
        if kinds:
            found[node_id] = {name: (kind, node.get("inputs", {}).get(name)) for name, kind in kinds.items()}
    return found

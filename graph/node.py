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

An input declared `lazy=True` is evaluated only when the node asks for it: the executor first
sets the other inputs, calls `needs(linked_lazy_inputs)` and runs the ancestors of the lazy inputs
it returns; lazy inputs not needed read as None (docs/core-nodes.md).
"""
from __future__ import annotations

import copy
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

    type: str = "*"  # one type, "*" (any) or several joined by commas ("INT,FLOAT")
    optional: bool = False
    tooltip: str | None = None
    lazy: bool = False  # evaluated only when the node's `needs` asks for it
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
        if self.lazy:
            opts["lazy"] = True
        return opts

    def spec(self, env: Any = None) -> list:
        return [self.type, self.options(env)]

    def coerce(self, value: Any, env: Any = None) -> Any:
        """Return the value converted to this input's type, or raise InputError."""
        return value


def In(type: str, optional: bool = False, tooltip: str | None = None, lazy: bool = False) -> Input:
    """A socket input: its value comes only from a link to another node's output of `type`."""
    return Input(type=type, optional=optional, tooltip=tooltip, lazy=lazy)


def accepts(input_type: str, output_type: str) -> bool:
    """Whether an input of `input_type` takes a link from an output of `output_type`: equal types,
    "*" on either side, or one of the comma-separated types of a union ("INT,FLOAT")."""
    if "*" in (input_type, output_type) or input_type == output_type:
        return True
    wanted, given = set(input_type.split(",")), set(output_type.split(","))
    return bool(given & wanted) or (input_type == "COMBO" and "STRING" in given)


def normalize_outputs(cls, value: Any) -> tuple:
    """What a node's `run` returned, as the tuple of its outputs."""
    n = len(cls.outputs)
    if n == 0:
        return ()
    if n == 1:
        return (value,)
    if not isinstance(value, tuple) or len(value) != n:
        raise TypeError(f"{cls.type_name()}.run returned {type(value).__name__}, expected a tuple of {n} outputs")
    return value


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


@dataclass
class DynamicCombo(Input):
    """A choice whose options each bring their own inputs (ComfyUI's DynamicCombo): the chosen
    option's inputs follow the combo in the editor's widgets, and the API prompt names them
    `<combo>.<input>` (nested: `format.save_mode.fps`). Each becomes an optional input of the node
    under that name (see `Node.parts`); `Node.chosen(name)` gives the chosen option's values."""

    choices: dict[str, Sequence[Input]] = field(default_factory=dict)  # option -> its inputs
    default: str | None = None
    type: str = field(default="COMFY_DYNAMICCOMBO_V3", init=False)

    def options(self, env=None):
        opts = {"options": [{"key": key, "inputs": {"required": {i.name: i.spec(env) for i in inputs}}}
                            for key, inputs in self.choices.items()], **super().options(env)}
        if self.default is not None:
            opts["default"] = self.default
        return opts

    def choices_for(self, env=None) -> list[str]:
        return list(self.choices)

    def coerce(self, value, env=None):
        return Combo(choices=self.choices_for()).coerce(value, env)

    def widgets_after(self, value) -> list[str]:
        """Full names of the widgets the option `value` shows after this combo, in order."""
        names = []
        for inp in self.choices.get(value, ()) if isinstance(value, str) else ():
            if inp.is_widget:
                names.append(f"{self.name}.{inp.name}")
        return names


@dataclass
class Autogrow(Input):
    """Sockets that grow as they are linked (ComfyUI's Autogrow): `<name>.<prefix>0`, `...1`, up
    to `max`; the first `min` are required. `Node.grown(name)` gives the linked values in order."""

    template: Input = None
    prefix: str = ""
    min: int = 1
    max: int = 10
    type: str = field(default="COMFY_AUTOGROW_V3", init=False)

    @property
    def is_widget(self) -> bool:
        return False

    def options(self, env=None):
        return {"template": {"input": {"required": {self.prefix: self.template.spec(env)}},
                             "prefix": self.prefix, "min": self.min, "max": self.max}, **super().options(env)}


def _parts(inp: Input) -> list[Input]:
    """The inputs a DynamicCombo or Autogrow stands for, named in full (first declaration of a name wins)."""
    found = []
    if isinstance(inp, DynamicCombo):
        for option in inp.choices.values():
            for sub in option:
                part = copy.copy(sub)
                part.name, part.optional = f"{inp.name}.{sub.name}", True
                found += [part] + _parts(part)
    elif isinstance(inp, Autogrow):
        for i in range(inp.max):
            part = copy.copy(inp.template)
            part.name, part.optional = f"{inp.name}.{inp.prefix}{i}", inp.optional or i >= inp.min
            found.append(part)
    return found


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
    # True: `run` is a cheap function of the inputs alone (no files, no device, no ctx). Validation
    # may run such a node to decide a lazy input early (a switch fed by a PrimitiveBoolean).
    pure: ClassVar[bool] = False
    # Inputs whose links must bring one type, which the node's `*` outputs then carry (ComfyUI's
    # MatchType: both branches of a switch are of the type the switch passes on).
    match_type: ClassVar[tuple[str, ...]] = ()
    # Inputs read when given but left out of /object_info: widgets another editor adds on its own
    # (ComfyUI's editor adds CustomCombo's `index`).
    unpublished: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[dict[str, Input]] = {}
    # Other names an input is known by in workflows from elsewhere (ComfyUI's VAEDecode calls its
    # latent input `samples`): alias -> input name. Loading renames them (graph.formats).
    input_aliases: ClassVar[dict[str, str]] = {}
    parts: ClassVar[set[str]] = set()

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
        parts = {}
        for inp in inputs.values():
            for part in _parts(inp):
                parts.setdefault(part.name, part)
        cls.parts = set(parts)  # inputs that belong to a DynamicCombo or Autogrow
        cls.inputs = {**inputs, **{k: v for k, v in parts.items() if k not in inputs}}

    # --- hooks a node may override -------------------------------------------------------------
    @classmethod
    def fingerprint(cls, env: Any, **constants) -> Any:
        """Extra data for the cache key, e.g. a file's mtime and size, so a changed file re-runs."""
        return None

    @classmethod
    def check(cls, env: Any, **constants) -> dict[str, str]:
        """Custom validation of constant inputs; returns {input_name: message} for each problem."""
        return {}

    def needs(self, lazy: list[str]) -> Any:
        """Of the linked lazy inputs `lazy`, those this node needs (an iterable of names), decided
        from its other inputs, which are set on `self`. Called once before `run`; the answer must
        depend on those inputs only (it is cached with them). Default: all of them."""
        return lazy

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
        published = {n: i for n, i in cls.inputs.items() if n not in cls.unpublished and n not in cls.parts}
        for name, inp in published.items():
            (optional if inp.optional else required)[name] = inp.spec(env)
        return {
            "input": {"required": required, "optional": optional, "hidden": {}},
            "input_order": {
                "required": [n for n, i in published.items() if not i.optional],
                "optional": [n for n, i in published.items() if i.optional],
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
    def lazy_inputs(cls) -> list[str]:
        return [name for name, inp in cls.inputs.items() if inp.lazy]

    @classmethod
    def widget_names(cls) -> list[str]:
        """Widget inputs in the order the editor lists their values (required, then optional)."""
        own = [i for i in cls.inputs.values() if i.name not in cls.parts]
        ordered = [i for i in own if not i.optional] + [i for i in own if i.optional]
        return [i.name for i in ordered if i.is_widget]

    # --- reading DynamicCombo and Autogrow inputs in run() ----------------------------------------
    def chosen(self, name: str) -> dict:
        """The values of the inputs of DynamicCombo `name`'s chosen option, by their short names."""
        option = type(self).inputs[name].choices.get(getattr(self, name), ())
        return {inp.name: getattr(self, f"{name}.{inp.name}", None) for inp in option}

    def grown(self, name: str) -> list:
        """The linked values of Autogrow `name`, in slot order."""
        spec = type(self).inputs[name]
        values = (getattr(self, f"{name}.{spec.prefix}{i}", None) for i in range(spec.max))
        return [v for v in values if v is not None]


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

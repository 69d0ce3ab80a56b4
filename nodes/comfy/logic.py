"""ComfyUI's logic nodes (comfy_extras/nodes_logic.py): the If/Else switch, whose branches are lazy
inputs (only the branch it picks runs: graph.lazy), and the Custom Combo, whose choices the
editor defines."""
from __future__ import annotations

from dataclasses import dataclass

from graph import Boolean, Combo, In, InputError, Int, Node, Out


class ComfySwitchNode(Node):
    """Passes on `on_true` when the switch is on, else `on_false`; only that branch runs. ComfyUI
    types both branches and the output alike (its MatchType); Loom publishes them as any type `*`
    and validation checks the same: both branches of one type, and that type where the output goes."""
    display_name = "If/Else Switch"
    category = "utilities/logic"
    pure = True
    switch = Boolean(False)
    on_false = In("*", optional=True, lazy=True)
    on_true = In("*", optional=True, lazy=True)
    outputs = (Out("*", "output"),)
    match_type = ("on_false", "on_true")  # validation checks both branches and the output's use

    def needs(self, lazy):
        return ["on_true" if self.switch else "on_false"]

    def run(self, ctx):
        return self.on_true if self.switch else self.on_false  # None when that branch is not linked


@dataclass
class _FreeCombo(Combo):
    """A combo whose choices the editor defines: any text is accepted (ComfyUI skips the check)."""

    def coerce(self, value, env=None):
        if not isinstance(value, str):
            raise InputError("invalid_input_type", f"expected text, got {type(value).__name__}")
        return value


class CustomCombo(Node):
    """A choice among options typed in the editor: the chosen text and its position among them.
    `index` is not in ComfyUI's declaration (its editor adds that widget); Loom reads it when given."""
    display_name = "Custom Combo"
    category = "utilities"
    pure = True
    choice = _FreeCombo(())
    index = Int(0, min=0, optional=True)
    outputs = (Out("STRING", "STRING"), Out("INT", "INDEX"))
    unpublished = ("index",)

    def run(self, ctx):
        return self.choice, self.index or 0

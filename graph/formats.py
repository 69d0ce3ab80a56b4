"""Workflow formats: the API format the executor runs, and everything it is made from.

API format:    {id: {"class_type": str, "inputs": {name: literal | [src_id, slot]}, "_meta": {"title"}}}
Editor format: {"nodes": [...], "links": [...], "groups", "extra", "version"} as litegraph serialises it,
               in any shape `graph.workflow` migrates (Loom file, litegraph 0.4 or version 1), maybe
               with subgraphs (`definitions.subgraphs`, see graph.subgraphs).
Request body:  {"prompt": <API format>, "extra_data": {"extra_pnginfo": {"workflow": <editor format>}}},
               what /prompt receives and what a PNG made by Loom or ComfyUI carries.

`load` is the one way in, each step once: detect the shape -> check it against the schema ->
migrate an editor workflow to the canonical Loom file -> expand its subgraphs -> convert it to the
API prompt. Validation of that prompt follows in `graph.runtime.Loom.validate`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from . import subgraphs
from .links import is_link
from .plan import sort_key
from .registry import Registry
from .workflow import WorkflowError, canonical, check, is_editor, kind_of, migrate

UI_ONLY_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
CONTROL_VALUES = subgraphs.CONTROL_VALUES
MODE_MUTED, MODE_BYPASS = subgraphs.MODE_MUTED, subgraphs.MODE_BYPASS

__all__ = ["Loaded", "WorkflowError", "api_to_editor", "editor_to_api", "is_editor_format", "is_link", "load",
           "to_api"]


@dataclass
class Loaded:
    """A workflow read into what runs: the API prompt, and the editor workflow (canonical Loom
    format) when there is one, which is what saved images carry; `flat` is that workflow with its
    subgraphs expanded (the nodes the prompt was made from)."""

    kind: str  # see graph.workflow.KINDS
    prompt: dict
    workflow: dict | None = None
    extra_data: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    flat: dict | None = None


def is_editor_format(data: Any) -> bool:
    """An editor workflow of any version (not an API prompt or a request body)."""
    return is_editor(data)


def load(data: Any, registry: Registry) -> Loaded:
    """Read any accepted shape; raise WorkflowError, naming what is wrong and where, if it is none."""
    kind = kind_of(data)
    check(data, kind)
    if kind == "api":
        return Loaded(kind, _api_prompt(data, registry))
    if kind == "request":
        extra = copy.deepcopy(data.get("extra_data") or {})
        loaded = Loaded(kind, _api_prompt(data["prompt"], registry), extra_data=extra)
        workflow = (extra.get("extra_pnginfo") or {}).get("workflow")
        if workflow is not None:
            try:  # the prompt is what runs; a workflow we cannot read only loses its embedding
                loaded.workflow = canonical(workflow)
                extra["extra_pnginfo"]["workflow"] = loaded.workflow
            except WorkflowError as exc:
                loaded.warnings.append(f"the embedded editor workflow was not kept: {exc}")
        return loaded
    workflow = migrate(data, kind)
    flat = subgraphs.expand(workflow)
    return Loaded(kind, _editor_prompt(flat, registry), workflow, flat=flat)


def to_api(data: Any, registry: Registry) -> dict:
    """Return the API-format prompt for any accepted shape; raise WorkflowError if it is none."""
    return load(data, registry).prompt


def _api_prompt(data: dict, registry: Registry) -> dict:
    """A schema-checked API prompt with every input under its node's own name."""
    if not data:
        raise WorkflowError("the workflow is empty: it has no nodes")
    return {str(k): {"class_type": v["class_type"], "inputs": _renamed(v["class_type"], v.get("inputs", {}), registry),
                     **({"_meta": v["_meta"]} if isinstance(v.get("_meta"), dict) else {})}
            for k, v in data.items()}


def _renamed(class_type: str, inputs: dict, registry: Registry) -> dict:
    """Inputs under the node's own names: an alias (e.g. ComfyUI's) is renamed unless the real name
    is given too."""
    cls = registry.get(class_type)
    aliases = cls.input_aliases if cls else {}
    return {aliases[k] if k in aliases and aliases[k] not in inputs else k: v for k, v in inputs.items()}


def _widget_values(node: dict, names: list[str], cls) -> dict:
    """Map the editor's positional `widgets_values` onto widget names, skipping the UI-only
    control_after_generate value that follows a seed widget; a DynamicCombo's value is followed
    by its chosen option's widgets."""
    values = node.get("widgets_values")
    if isinstance(values, dict):
        return {k: v for k, v in values.items() if k in names or k in cls.parts}
    if not isinstance(values, list):
        return {}
    out, i, names, k = {}, 0, list(names), -1
    while k + 1 < len(names):
        k += 1
        name = names[k]
        if i >= len(values):
            break
        out[name] = values[i]
        i += 1
        after = getattr(cls.inputs[name], "widgets_after", None)
        if after is not None:
            names[k + 1:k + 1] = after(out[name])
        if getattr(cls.inputs[name], "control_after_generate", False) and i < len(values) \
                and _is_control(values[i], cls, names[k + 1:], len(values) - i):
            i += 1
    return out


def _is_control(value: Any, cls, later: list[str], left: int) -> bool:
    """Whether `value`, after a seed, is its UI-only control_after_generate value: one of ComfyUI's
    names, or a boolean (older files saved `true`) unless it is the next widget's own value."""
    if isinstance(value, str):
        return value in CONTROL_VALUES
    if isinstance(value, bool):
        return not later or cls.inputs[later[0]].type != "BOOLEAN" or left > len(later)
    return False


def editor_to_api(data: dict, registry: Registry) -> dict:
    """The API prompt of an editor workflow of any version."""
    if not is_editor(data):
        raise WorkflowError("this is not an editor workflow")
    return load(data, registry).prompt


def _editor_prompt(data: dict, registry: Registry) -> dict:
    """The API prompt of a canonical (schema-checked) editor workflow."""
    nodes = {}
    for node in data["nodes"]:
        if not isinstance(node, dict) or "id" not in node or not isinstance(node.get("type"), str):
            raise WorkflowError(f"malformed editor node {str(node)[:200]}: needs 'id' and 'type'")
        nodes[node["id"]] = node
    links = subgraphs.link_table(data.get("links"))

    def input_link(node: dict, slot_or_name) -> int | None:
        for idx, inp in enumerate(node.get("inputs") or []):
            if (idx == slot_or_name or inp.get("name") == slot_or_name) and inp.get("link") is not None:
                return inp["link"]
        return None

    def resolve(link_id, seen=()) -> tuple | None:
        """Follow a link back through reroutes and bypassed nodes to a real output, or None."""
        link = links.get(link_id)
        if link is None or link_id in seen:
            return None
        origin_id, origin_slot = link[0], link[1]
        origin = nodes.get(origin_id)
        if origin is None or origin.get("mode") == MODE_MUTED:
            return None
        if origin["type"] == "Reroute":
            return resolve(input_link(origin, 0), seen + (link_id,))
        if origin["type"] == "PrimitiveNode":
            values = origin.get("widgets_values")
            return ("value", values[0]) if isinstance(values, list) and values else None
        if origin.get("mode") == MODE_BYPASS:
            outputs = origin.get("outputs") or []
            wanted = outputs[origin_slot].get("type") if origin_slot < len(outputs) else None
            for inp in origin.get("inputs") or []:
                if inp.get("link") is not None and inp.get("type") == wanted:
                    return resolve(inp["link"], seen + (link_id,))
            return None
        return ("link", [str(origin_id), origin_slot])

    prompt = {}
    for node_id, node in nodes.items():
        if node["type"] in UI_ONLY_TYPES or node.get("mode") in (MODE_MUTED, MODE_BYPASS):
            continue
        cls = registry.get(node["type"])
        inputs = _widget_values(node, cls.widget_names(), cls) if cls else {}
        for inp in node.get("inputs") or []:
            if inp.get("link") is None or not inp.get("name"):
                continue
            found = resolve(inp["link"])
            if found is not None:
                inputs[inp["name"]] = found[1]
        entry = {"class_type": node["type"], "inputs": _renamed(node["type"], inputs, registry)}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[str(node_id)] = entry
    if not prompt:
        raise WorkflowError("the workflow has no runnable nodes")
    return prompt


def api_to_editor(prompt: dict, registry: Registry) -> dict:
    """An editor workflow (litegraph 0.4) of an API prompt, laid out in columns by depth, so an
    editor can open it: widget values in declaration order, 'fixed' after a seed, links by socket."""
    check(prompt, "api")
    prompt = _api_prompt(prompt, registry)
    numeric = [int(k) for k in prompt if k.isdigit()]
    ids, spare = {}, max(numeric, default=0)
    for key in sorted(prompt, key=sort_key):
        if key.isdigit():
            ids[key] = int(key)
        else:
            spare += 1
            ids[key] = spare
    depth: dict[str, int] = {}

    def level(key: str, seen: tuple = ()) -> int:
        if key not in depth:
            sources = [str(v[0]) for v in prompt[key]["inputs"].values()
                       if is_link(v) and str(v[0]) in prompt and str(v[0]) not in seen]
            depth[key] = 1 + max((level(s, seen + (key,)) for s in sources), default=-1)
        return depth[key]

    nodes, links, outgoing, rows = {}, [], {}, {}
    for key in sorted(prompt, key=sort_key):
        node, cls = prompt[key], registry.get(prompt[key]["class_type"])
        col = level(key)
        values, inputs = [], []
        declared = list(cls.inputs.values()) if cls else []
        names = cls.widget_names() if cls else [k for k, v in node["inputs"].items() if not is_link(v)]
        names, k = list(names), 0
        while k < len(names):
            name, k = names[k], k + 1
            value = node["inputs"].get(name, getattr(cls.inputs[name], "default", None) if cls else None)
            values.append(None if is_link(value) else value)
            if cls and hasattr(cls.inputs[name], "widgets_after"):  # a DynamicCombo's option widgets
                names[k:k] = cls.inputs[name].widgets_after(value)
            if cls and getattr(cls.inputs[name], "control_after_generate", False):
                values.append("fixed")
        sockets = [i.name for i in declared if not i.is_widget] if cls else \
            [k for k, v in node["inputs"].items() if is_link(v)]
        linked_widgets = [n for n in names if is_link(node["inputs"].get(n))]
        for name in sockets + linked_widgets:
            value, kind = node["inputs"].get(name), cls.inputs[name].type if cls else "*"
            entry = {"name": name, "type": kind, "link": None}
            if name in linked_widgets:
                entry["widget"] = {"name": name}
            if is_link(value) and str(value[0]) in prompt:
                link = [len(links) + 1, ids[str(value[0])], value[1], ids[key], len(inputs), kind]
                links.append(link)
                entry["link"] = link[0]
                outgoing.setdefault((str(value[0]), value[1]), []).append(link[0])
            inputs.append(entry)
        height = 46 + 24 * (len(values) + max(len(inputs), len(cls.outputs) if cls else 1))
        y = rows.get(col, 0)
        rows[col] = y + height + 60
        nodes[key] = {"id": ids[key], "type": node["class_type"], "pos": [col * 320, y], "size": [270, height],
                      "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs, "outputs": [],
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values}
        if node.get("_meta", {}).get("title"):
            nodes[key]["title"] = node["_meta"]["title"]
    for key, node in nodes.items():
        cls = registry.get(node["type"])
        outs = cls.outputs if cls else ()
        node["outputs"] = [{"name": o.label, "type": o.type, "links": outgoing.get((key, slot), [])}
                           for slot, o in enumerate(outs)]
        for link in links:  # the link's type is its output's
            if link[1] == node["id"] and link[2] < len(outs):
                link[5] = outs[link[2]].type
    return {"last_node_id": max(ids.values(), default=0), "last_link_id": len(links),
            "nodes": list(nodes.values()), "links": links, "groups": [], "config": {}, "extra": {},
            "version": 0.4}

"""Workflow formats: the API format the executor runs, and the editor (litegraph) format it is made from.

API format:    {id: {"class_type": str, "inputs": {name: literal | [src_id, slot]}, "_meta": {"title"}}}
Editor format: {"nodes": [...], "links": [...], "groups", "extra", "version"} as litegraph serialises it.
"""
from __future__ import annotations

from typing import Any

from .registry import Registry

UI_ONLY_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
MODE_MUTED, MODE_BYPASS = 2, 4


class WorkflowError(ValueError):
    """A workflow that cannot be read at all (not one of the two formats, or malformed)."""


def is_link(value: Any) -> bool:
    """API-format links are `[src_id, slot]` with a string id and an integer slot."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def is_editor_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def to_api(data: Any, registry: Registry) -> dict:
    """Return the API-format prompt for either format; raise WorkflowError if it is neither."""
    if is_editor_format(data):
        return editor_to_api(data, registry)
    if not isinstance(data, dict):
        raise WorkflowError(f"a workflow must be a JSON object, got {type(data).__name__}")
    if not data:
        raise WorkflowError("the workflow has no nodes")
    for node_id, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(
                f"node {node_id!r} is not of the API format {{'class_type': ..., 'inputs': {{...}}}} "
                "and the workflow is not of the editor format (no 'nodes' list)")
        if not isinstance(node.get("inputs", {}), dict):
            raise WorkflowError(f"node {node_id!r}: 'inputs' must be an object")
    return {str(k): {"class_type": v["class_type"], "inputs": dict(v.get("inputs", {})),
                     **({"_meta": v["_meta"]} if isinstance(v.get("_meta"), dict) else {})}
            for k, v in data.items()}


def _links_by_id(data: dict) -> dict[int, tuple]:
    """Link id -> (origin_id, origin_slot, target_id, target_slot); array (0.4) or object (v1) links."""
    links = {}
    for link in data.get("links") or []:
        if isinstance(link, list) and len(link) >= 5:
            links[link[0]] = tuple(link[1:5])
        elif isinstance(link, dict) and "id" in link:
            links[link["id"]] = (link.get("origin_id"), link.get("origin_slot"),
                                 link.get("target_id"), link.get("target_slot"))
        else:
            raise WorkflowError(f"malformed link {link!r}: expected [id, origin, slot, target, slot, type]")
    return links


def _widget_values(node: dict, names: list[str], cls) -> dict:
    """Map the editor's positional `widgets_values` onto widget names, skipping the UI-only
    control_after_generate value that follows a seed widget."""
    values = node.get("widgets_values")
    if isinstance(values, dict):
        return {k: v for k, v in values.items() if k in names}
    if not isinstance(values, list):
        return {}
    out, i = {}, 0
    for name in names:
        if i >= len(values):
            break
        out[name] = values[i]
        i += 1
        if getattr(cls.inputs[name], "control_after_generate", False) and i < len(values) \
                and values[i] in CONTROL_VALUES:
            i += 1
    return out


def editor_to_api(data: dict, registry: Registry) -> dict:
    nodes = {}
    for node in data["nodes"]:
        if not isinstance(node, dict) or "id" not in node or not isinstance(node.get("type"), str):
            raise WorkflowError(f"malformed editor node {str(node)[:200]}: needs 'id' and 'type'")
        nodes[node["id"]] = node
    links = _links_by_id(data)

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
            values = origin.get("widgets_values") or []
            return ("value", values[0]) if values else None
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
        entry = {"class_type": node["type"], "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[str(node_id)] = entry
    if not prompt:
        raise WorkflowError("the workflow has no runnable nodes")
    return prompt

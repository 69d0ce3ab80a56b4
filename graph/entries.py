"""Malformed node entries of an API prompt, each filed on its node in `node_errors`.

ComfyUI's frontend sends an entry without `class_type` for every node whose type the server lacks
({"inputs": ..., "_meta": {"title"}}): the type name is then only in the editor workflow it sends
along (extra_data.extra_pnginfo.workflow), where the node with that id (`10:4` inside subgraph
instances) has it as `type`. So the answer can say which node types are missing, per node, with
the top-level type `missing_node_type` that makes the frontend show its missing-nodes panel. A
named type this server has (`installed`) means the page was loaded before the server had it: that
entry says so (reload the page), and with no type truly missing the error is an `invalid_prompt`.
"""
from __future__ import annotations

from typing import Any

from .plan import sort_key
from .subgraphs import definitions
from .validate import Validation
from .workflow import _json_type

INVALID = "invalid_node_entry"
MISSING = "missing_node_type"


def entry_errors(prompt: dict, editor: Any = None, installed: Any = ()) -> Validation | None:
    """A failed Validation naming every malformed entry of `prompt` (a dict), or None if all are sound."""
    node_errors: dict[str, dict] = {}
    missing: dict[str, list[str]] = {}  # type name (or '' when unknown) -> node ids
    stale: dict[str, list[str]] = {}  # installed type name -> node ids whose entry lacks it

    def add(node_id: str, kind: str, message: str, type_name: str | None = None, **extra) -> None:
        entry = node_errors.setdefault(node_id, {"errors": [], "dependent_outputs": [], "class_type": type_name})
        entry["errors"].append({"type": kind, "message": message, "details": f"Node ID '#{node_id}'",
                                "extra_info": {"node_id": node_id, **extra}})

    for key, node in prompt.items():
        node_id = str(key)
        if not isinstance(node, dict):
            add(node_id, INVALID, f"a node entry must be an object {{class_type, inputs}}, not {_json_type(node)}")
            continue
        meta = node.get("_meta")
        title = meta.get("title") if isinstance(meta, dict) and isinstance(meta.get("title"), str) else None
        class_type = node.get("class_type")
        if class_type is None:
            name = editor_type(editor, node_id)
            if name and name in installed:  # a page loaded before this server had the type
                stale.setdefault(name, []).append(node_id)
                add(node_id, INVALID, f"node type '{name}' is installed, but the entry has no class_type: the page "
                                      "that sent it was loaded before this server had it (reload the page)", name,
                    class_type=name, node_title=title)
                continue
            missing.setdefault(name or "", []).append(node_id)
            what = f"node type '{name}'" if name else f"the node type of '{title}'" if title else f"the node type of node {node_id}"
            add(node_id, MISSING, f"{what} is not installed (the entry has no class_type)", name,
                class_type=name, node_title=title)
        elif not isinstance(class_type, str) or not class_type:
            add(node_id, INVALID, f"'class_type' must be the name of a node type, not {_json_type(class_type)}")
        if "inputs" in node and not isinstance(node["inputs"], dict):
            add(node_id, INVALID, "'inputs' must be an object {name: value or [node id, output slot]}, "
                                  f"not {_json_type(node['inputs'])}", _str(class_type))
        if meta is not None and not isinstance(meta, dict):
            add(node_id, INVALID, f"'_meta' must be an object, not {_json_type(meta)}", _str(class_type))
    if not node_errors:
        return None
    lines = [f"#{nid}: {e['message']}" for nid in sorted(node_errors, key=sort_key) for e in node_errors[nid]["errors"]]
    if missing:
        named = sorted(n for n in missing if n)
        message = "node types not installed: " + ", ".join(named) if named else \
            "nodes without a class_type: their node types are not installed"
        if "" in missing and named:
            message += f", and {len(missing[''])} node(s) of unknown type"
        error = {"type": MISSING, "message": message, "details": "\n".join(lines),
                 "extra_info": {"missing_node_types": named, "nodes": {n: ids for n, ids in missing.items() if n}}}
    elif stale:
        others = len(lines) - sum(len(ids) for ids in stale.values())
        message = ("the page that sent this prompt is out of date: reload it (it sent no class_type for node types "
                   "this server has: " + ", ".join(sorted(stale)) + ")"
                   + (f"; and {others} other malformed entries" if others else ""))
        error = {"type": "invalid_prompt", "message": message, "details": "\n".join(lines),
                 "extra_info": {"stale_node_types": sorted(stale), "nodes": stale}}
    else:
        error = {"type": "invalid_prompt", "message": "malformed node entries: " + "; ".join(lines[:3])
                 + (f"; and {len(lines) - 3} more" if len(lines) > 3 else ""), "details": "\n".join(lines),
                 "extra_info": {}}
    return Validation(prompt={}, outputs=[], error=error, node_errors=node_errors)


def editor_type(editor: Any, node_id: str) -> str | None:
    """The `type` of node `node_id` (an execution id, `10:4` inside instances) in an editor workflow."""
    if not isinstance(editor, dict):
        return None
    defs = definitions(editor)
    nodes = editor.get("nodes")
    *path, last = node_id.split(":")
    for part in path:
        kind = (_find(nodes, part) or {}).get("type")
        definition = defs.get(kind) if isinstance(kind, str) else None
        if definition is None:
            return None
        nodes = definition.get("nodes")
    found = _find(nodes, last)
    kind = found.get("type") if found else None
    return kind if isinstance(kind, str) and kind and kind not in defs else None


def _find(nodes: Any, node_id: str) -> dict | None:
    for node in nodes if isinstance(nodes, list) else []:
        if isinstance(node, dict) and str(node.get("id")) == node_id:
            return node
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None

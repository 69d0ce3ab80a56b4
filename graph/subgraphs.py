"""Subgraphs of editor workflows (`definitions.subgraphs`), expanded into one flat graph the way
ComfyUI's frontend flattens them before it queues a prompt.

A subgraph is a graph of its own ({id, name, inputs, outputs, nodes, links}); a node whose `type` is a
subgraph's id is an instance of it. Its input slot i is the subgraph's input i, its output slot j the
subgraph's output j. Inside, links from the subgraph's input node (origin id -10) carry input i, links
to its output node (target id -20) give output j. Instances may be nested.

Expanding an instance puts its inner nodes in its place with ids `<instance id>:<inner id>` (nested:
`10:4:7`, the frontend's execution ids). An inner input fed by subgraph input i takes what feeds the
instance's input i; when nothing does, the instance's own widget value for that input (older files),
else the inner node's widget value (the frontend's promoted "proxy" widgets keep it there). Consumers
of the instance's output j are fed by what feeds subgraph output j. A muted or bypassed instance is
left as one node, which the converter then drops or bypasses like any other.
"""
from __future__ import annotations

import copy
from typing import Any

from .workflow import WorkflowError

INPUT_NODE, OUTPUT_NODE = -10, -20
MODE_MUTED, MODE_BYPASS = 2, 4
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
MAX_DEPTH = 32


def definitions(workflow: dict) -> dict[str, dict]:
    defs = (workflow.get("definitions") or {}).get("subgraphs") if isinstance(workflow.get("definitions"), dict) else None
    return {d["id"]: d for d in defs or [] if isinstance(d, dict) and isinstance(d.get("id"), str)}


def expand(workflow: dict) -> dict:
    """The workflow with every active subgraph instance replaced by its nodes (a new dict; the input
    is not modified). Links are [id, origin, slot, target, slot, type] as in litegraph 0.4."""
    defs = definitions(workflow)
    if not defs:
        return workflow
    nodes, links = _flatten(workflow["nodes"], link_table(workflow.get("links")), defs, ())
    return {**workflow, "nodes": nodes, "links": [[lid, *link] for lid, link in links.items()]}


def link_table(links) -> dict:
    """Link id -> [origin, origin slot, target, target slot, type] from arrays (0.4) or objects (v1)."""
    table = {}
    for link in links or []:
        if isinstance(link, list) and len(link) >= 5:
            table[link[0]] = list(link[1:5]) + [link[5] if len(link) > 5 else "*"]
        elif isinstance(link, dict) and "id" in link:
            table[link["id"]] = [link.get("origin_id"), link.get("origin_slot"), link.get("target_id"),
                                 link.get("target_slot"), link.get("type", "*")]
        elif link is not None:
            raise WorkflowError(f"malformed link {str(link)[:200]}: expected [id, origin, slot, target, slot, type]")
    return table


def _flatten(nodes: list, links: dict, defs: dict, path: tuple) -> tuple[list, dict]:
    if len(path) > MAX_DEPTH:
        raise WorkflowError(f"subgraphs nest deeper than {MAX_DEPTH} levels: {' > '.join(path[:4])} ...")
    nodes, links = copy.deepcopy(nodes), copy.deepcopy(links)
    out = []
    for node in nodes:
        definition = defs.get(node.get("type"))
        if definition is None or node.get("mode") in (MODE_MUTED, MODE_BYPASS):
            out.append(node)
            continue
        if definition["id"] in path:
            raise WorkflowError(f"subgraph '{definition.get('name') or definition['id']}' contains itself")
        out += _splice(node, definition, links, defs, path + (definition["id"],))
    return out, links


def _splice(instance: dict, definition: dict, links: dict, defs: dict, path: tuple) -> list:
    """The inner nodes of one instance, renamed; `links` (the outer graph's) is rewired in place."""
    inner_nodes, inner_links = _flatten(definition.get("nodes") or [], link_table(definition.get("links")),
                                        defs, path)
    prefix = f"{instance['id']}:"
    renamed = {}
    for lid, (origin, oslot, target, tslot, kind) in inner_links.items():
        new_id = prefix + str(lid)
        renamed[lid] = new_id
        links[new_id] = [origin if origin == INPUT_NODE else prefix + str(origin), oslot,
                         target if target == OUTPUT_NODE else prefix + str(target), tslot, kind]
    for node in inner_nodes:
        node["id"] = prefix + str(node["id"])
        for inp in node.get("inputs") or []:
            if inp.get("link") is not None:
                inp["link"] = renamed.get(inp["link"])
        for out in node.get("outputs") or []:
            out["links"] = [renamed[l] for l in out.get("links") or [] if l in renamed]
    by_id = {node["id"]: node for node in inner_nodes}
    outer_inputs = instance.get("inputs") or []
    values = _instance_widget_values(instance)
    extra = []
    for lid in [prefix + str(l) for l in inner_links]:
        origin, oslot, target, tslot, kind = links[lid]
        if origin == INPUT_NODE:  # fed by the instance's input for subgraph input `oslot`
            slot = _instance_slot(outer_inputs, definition.get("inputs") or [], oslot)
            outer = outer_inputs[slot].get("link") if slot is not None else None
            if outer in links:
                links[lid][0:2] = links[outer][0:2]
            elif slot in values:  # the instance's own widget value, as a constant source
                source = f"{prefix}input{oslot}"
                extra.append({"id": source, "type": "PrimitiveNode", "mode": 0, "inputs": [], "outputs": [],
                              "widgets_values": [values[slot]]})
                links[lid][0:2] = [source, 0]
            else:  # nothing feeds it: the inner widget keeps its own value
                _unlink(by_id.get(target), lid)
                del links[lid]
    feeds = {}  # subgraph output slot -> (inner origin, slot)
    for lid in [prefix + str(l) for l in inner_links]:
        if lid in links and links[lid][2] == OUTPUT_NODE:
            feeds[links[lid][3]] = tuple(links[lid][0:2])
            del links[lid]
    for lid, link in list(links.items()):
        if link[2] == instance["id"]:  # into the instance: now read by the inner nodes directly
            del links[lid]
        elif link[0] == instance["id"]:
            if link[1] in feeds:
                link[0:2] = feeds[link[1]]
            else:
                del links[lid]
    return inner_nodes + extra


def _instance_slot(outer: list, inner: list, oslot: int) -> int | None:
    """Which of the instance's inputs carries subgraph input `oslot`: the one of the same name (the
    frontend keeps only some of a subgraph's inputs on an instance, so positions may differ), else,
    in files whose instance inputs bear no subgraph input's name, the same position."""
    names = [inp.get("name") for inp in outer]
    wanted = inner[oslot].get("name") if oslot < len(inner) and isinstance(inner[oslot], dict) else None
    if wanted in names:
        return names.index(wanted)
    if any(isinstance(d, dict) and d.get("name") in names for d in inner):
        return None  # matched by name, and this one is not on the instance
    return oslot if oslot < len(outer) else None


def _unlink(node: dict | None, link_id) -> None:
    for inp in (node or {}).get("inputs") or []:
        if inp.get("link") == link_id:
            inp["link"] = None


def _instance_widget_values(instance: dict) -> dict[int, Any]:
    """Input slot -> value of the instance's own widgets (older files promote inner widgets this way:
    one value per widget input, in order, a seed's control value after it)."""
    values = instance.get("widgets_values")
    slots = [i for i, inp in enumerate(instance.get("inputs") or []) if inp.get("widget")]
    if isinstance(values, dict):
        names = {(instance["inputs"][i].get("widget") or {}).get("name"): i for i in slots}
        return {names[k]: v for k, v in values.items() if k in names}
    if not isinstance(values, list) or not values:
        return {}
    out, k = {}, 0
    for slot in slots:
        if k >= len(values):
            break
        out[slot] = values[k]
        k += 1
        if k < len(values) and values[k] in CONTROL_VALUES and not isinstance(values[k - 1], str):
            k += 1
    return out

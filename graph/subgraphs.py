"""Subgraphs of editor workflows (`definitions.subgraphs`), expanded into one flat graph the way
ComfyUI's frontend flattens them before it queues a prompt.

A subgraph is a graph of its own ({id, name, inputs, outputs, nodes, links}); a node whose `type` is a
subgraph's id is an instance of it. Its input slot i is the subgraph's input i, its output slot j the
subgraph's output j. Inside, links from the subgraph's input node (origin id -10) carry input i, links
to its output node (target id -20) give output j. Instances may be nested.

Expanding an instance puts its inner nodes in its place with ids `<instance id>:<inner id>` (nested:
`10:4:7`, the frontend's execution ids). An inner input fed by subgraph input i takes what feeds the
instance's input i; when nothing does, the instance's own widget value for that input (its
`widgets_values`: one per subgraph input that feeds an inner widget, as the frontend promotes them),
else the inner node's widget value (the frontend's promoted "proxy" widgets keep it there). Consumers
of the instance's output j are fed by what feeds subgraph output j. A muted or bypassed instance is
left as one node, which the converter then drops or bypasses like any other.

Expansion is bounded (see docs/errors-and-limits.md): the size of the flat graph is computed from
the definitions before anything is copied, so a file whose subgraphs multiply (10 levels, each using
the one below 10 times: 10^10 nodes) is refused at once, naming the subgraph. Limits, each settable
by an environment variable: LOOM_MAX_EXPANDED_NODES (nodes of the flat graph; links may be 4 times
as many), LOOM_MAX_SUBGRAPH_DEPTH, LOOM_MAX_EXPAND_SECONDS.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from .workflow import WorkflowError

INPUT_NODE, OUTPUT_NODE = -10, -20
MODE_MUTED, MODE_BYPASS = 2, 4
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


@dataclass(frozen=True)
class Limits:
    nodes: int = _env_int("LOOM_MAX_EXPANDED_NODES", 20_000)
    depth: int = _env_int("LOOM_MAX_SUBGRAPH_DEPTH", 32)
    seconds: float = float(_env_int("LOOM_MAX_EXPAND_SECONDS", 10))

    @property
    def links(self) -> int:
        return 4 * self.nodes


LIMITS = Limits()


class ExpansionLimit(WorkflowError):
    """The subgraphs would expand past a limit (nodes, links, depth or time)."""


def definitions(workflow: dict) -> dict[str, dict]:
    defs = (workflow.get("definitions") or {}).get("subgraphs") if isinstance(workflow.get("definitions"), dict) else None
    return {d["id"]: d for d in defs if isinstance(d, dict) and isinstance(d.get("id"), str)} \
        if isinstance(defs, list) else {}


def expand(workflow: dict, limits: Limits | None = None) -> dict:
    """The workflow with every active subgraph instance replaced by its nodes (a new dict; the input
    is not modified). Links are [id, origin, slot, target, slot, type] as in litegraph 0.4."""
    defs = definitions(workflow)
    if not defs:
        return workflow
    limits = limits or LIMITS
    _check_size(workflow["nodes"], defs, limits)
    flat = _Expansion(defs, limits)
    flat.links.update(flat.level(workflow["nodes"], link_table(workflow.get("links")), "", ()))
    return {**workflow, "nodes": list(flat.nodes.values()), "links": [[lid, *link] for lid, link in flat.links.items()]}


def link_table(links) -> dict:
    """Link id -> [origin, origin slot, target, target slot, type] from arrays (0.4) or objects (v1)."""
    table = {}
    for link in links or []:
        if isinstance(link, list) and len(link) >= 5:
            lid, entry = link[0], list(link[1:5]) + [link[5] if len(link) > 5 else "*"]
        elif isinstance(link, dict) and "id" in link:
            lid, entry = link["id"], [link.get("origin_id"), link.get("origin_slot"), link.get("target_id"),
                                      link.get("target_slot"), link.get("type", "*")]
        elif link is None:
            continue
        else:
            entry = None
        if entry is None or not all(_is_id(v) for v in (lid, entry[0], entry[2])) or \
                not all(isinstance(v, int) and not isinstance(v, bool) for v in (entry[1], entry[3])):
            raise WorkflowError(f"malformed link {str(link)[:200]}: expected [id, origin, slot, target, slot, type]")
        table[lid] = entry
    return table


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _instance_of(node: dict, defs: dict) -> dict | None:
    """The definition `node` is an active instance of, or None."""
    definition = defs.get(node.get("type"))
    return None if definition is None or node.get("mode") in (MODE_MUTED, MODE_BYPASS) else definition


def _name(definition: dict) -> str:
    return str(definition.get("name") or definition["id"])[:100]


# --- the size of the flat graph, from the definitions alone ---------------------------------------

def _check_size(nodes: list, defs: dict, limits: Limits) -> None:
    """Refuse a workflow whose flat graph would pass a limit, before anything is expanded."""
    memo: dict[str, tuple[int, int, int]] = {}
    total_nodes = total_links = 0
    biggest = None
    for node in nodes:
        definition = _instance_of(node, defs)
        if definition is None:
            total_nodes += 1
            continue
        n, l, depth = _size(definition, defs, memo, (), limits)
        total_nodes, total_links = total_nodes + n, total_links + l
        if biggest is None or n > biggest[0]:
            biggest = (n, definition, node.get("id"))
    if biggest and (total_nodes > limits.nodes or total_links > limits.links):
        n, definition, node_id = biggest
        what = f"{total_nodes:,} nodes" if total_nodes > limits.nodes else f"{total_links:,} links"
        limit = f"{limits.nodes:,} nodes" if total_nodes > limits.nodes else f"{limits.links:,} links"
        raise ExpansionLimit(f"the subgraphs expand to {what}; at most {limit} are allowed "
                             f"(LOOM_MAX_EXPANDED_NODES): subgraph '{_name(definition)}' (node {node_id}) "
                             f"alone expands to {n:,} nodes")


def _size(definition: dict, defs: dict, memo: dict, path: tuple, limits: Limits) -> tuple[int, int, int]:
    """(nodes, links, depth) of one instance of `definition` expanded; each definition is measured once."""
    key = definition["id"]
    if key in memo:
        return memo[key]
    if key in path:
        raise WorkflowError(f"subgraph '{_name(definition)}' contains itself")
    path = path + (key,)
    if len(path) > limits.depth:
        chain = " > ".join(_name(defs[k]) for k in path[:4])
        raise ExpansionLimit(f"subgraphs nest deeper than {limits.depth} levels (LOOM_MAX_SUBGRAPH_DEPTH): "
                             f"{chain} > ...")
    inner_nodes, inner_links = definition.get("nodes") or [], definition.get("links") or []
    nodes, links, depth = 0, len(inner_links) if isinstance(inner_links, list) else 0, 1
    for node in inner_nodes if isinstance(inner_nodes, list) else []:
        inner = _instance_of(node, defs) if isinstance(node, dict) else None
        if inner is None:
            nodes += 1
            continue
        n, l, d = _size(inner, defs, memo, path, limits)
        nodes += n + len(_instance_widget_values(node, inner, _instance_slots(node, inner)))  # values become constant nodes
        links, depth = links + l, max(depth, d + 1)
    memo[key] = (nodes, links, depth)
    return memo[key]


# --- the expansion --------------------------------------------------------------------------------

class _Expansion:
    """One flattening: nodes and finished links by their final ids, collected depth first.

    Each level (the workflow, or one instance's definition) is read once with its ids prefixed
    (`<instance id>:`, nested `10:4:`); what it hands to the level above are only its boundary
    links, those from the subgraph's input node or to its output node."""

    def __init__(self, defs: dict, limits: Limits):
        self.defs, self.limits = defs, limits
        self.deadline = time.monotonic() + limits.seconds
        self.nodes: dict[Any, dict] = {}
        self.links: dict[Any, list] = {}
        self.tables: dict[str, dict] = {}  # definition id -> its link table

    def level(self, nodes: list, raw_links: dict, prefix: str, path: tuple) -> dict:
        """Expand one level; returns its boundary links (all of them at the top, prefix '')."""
        def name(x):
            return f"{prefix}{x}" if prefix else x

        def node_name(x):
            return x if x in (INPUT_NODE, OUTPUT_NODE) else name(x)

        table = {name(lid): [node_name(o), os_, node_name(t), ts, kind] for lid, (o, os_, t, ts, kind) in raw_links.items()}
        instances: dict[Any, dict] = {}
        feeds: dict[Any, dict] = {}  # instance -> output slot -> ("node", origin, slot) | ("outer", level link)
        pending: list[tuple[Any, list, Any]] = []  # inner links fed by what feeds a level link
        if not isinstance(nodes, list):
            raise WorkflowError(f"the nodes of a subgraph must be a list, got {type(nodes).__name__}")
        for node in nodes:
            if not isinstance(node, dict) or not _is_id(node.get("id")):
                raise WorkflowError(f"malformed subgraph node {str(node)[:200]}: needs 'id' and 'type'")
            definition = _instance_of(node, self.defs)
            if definition is None:
                self._add_node(node, name, raw_links, prefix)
                continue
            if definition["id"] in path:
                raise WorkflowError(f"subgraph '{_name(definition)}' contains itself")
            if time.monotonic() > self.deadline:
                raise ExpansionLimit(f"expanding the subgraphs took longer than {self.limits.seconds:g} s "
                                     f"(LOOM_MAX_EXPAND_SECONDS), at subgraph '{_name(definition)}'")
            fid = name(node["id"])
            instances[fid] = node
            if definition["id"] not in self.tables:  # read once, however many instances it has
                self.tables[definition["id"]] = link_table(definition.get("links"))
            inner = self.level(definition.get("nodes") or [], self.tables[definition["id"]], f"{fid}:",
                               path + (definition["id"],))
            feeds[fid] = self._splice(node, fid, inner, table, name, pending)
        return self._rewire(table, instances, feeds, pending)

    def _add_node(self, node: dict, name, raw_links: dict, prefix: str) -> None:
        new = {**node, "id": name(node["id"])}
        inputs, outputs = node.get("inputs"), node.get("outputs")
        if isinstance(inputs, list):
            new["inputs"] = [dict(i) for i in inputs]
            if prefix:
                for inp in new["inputs"]:
                    if inp.get("link") is not None:
                        inp["link"] = name(inp["link"]) if inp["link"] in raw_links else None
        if isinstance(outputs, list):
            new["outputs"] = [dict(o) for o in outputs]
            if prefix:
                for out in new["outputs"]:
                    out["links"] = [name(l) for l in out.get("links") or [] if l in raw_links]
        values = node.get("widgets_values")
        if isinstance(values, (list, dict)):
            new["widgets_values"] = type(values)(values)
        self.nodes[new["id"]] = new

    def _splice(self, instance: dict, fid, inner: dict, table: dict, name, pending: list) -> dict:
        """Connect one expanded instance's boundary links: from its input node to what feeds the
        instance (pending until every instance of the level is expanded), a widget value or nothing;
        to its output node: what feeds each output slot."""
        outer_inputs = instance.get("inputs") or []
        definition = self.defs[instance["type"]]
        slot_of = _instance_slots(instance, definition)
        values = _instance_widget_values(instance, definition, slot_of)
        feeds = {}
        for lid, link in inner.items():
            origin, dslot, target, tslot = link[:4]
            outer = None
            if origin == INPUT_NODE:  # fed by the instance's input for the subgraph's input `dslot`
                oslot = slot_of.get(dslot) if slot_of is not None else dslot
                raw = outer_inputs[oslot].get("link") if isinstance(oslot, int) and 0 <= oslot < len(outer_inputs) else None
                outer = name(raw) if raw is not None else None
                if outer not in table:
                    outer = None
                    if dslot in values:  # the instance's own widget value, as a constant source
                        source = f"{fid}:input{dslot}"
                        if source not in self.nodes:
                            self.nodes[source] = {"id": source, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                                                  "outputs": [], "widgets_values": [values[dslot]]}
                        link[0:2] = [source, 0]
                    else:  # nothing feeds it: the inner widget keeps its own value
                        _unlink(self.nodes.get(target), lid)
                        continue
            if target == OUTPUT_NODE:
                feeds[tslot] = ("outer", outer) if outer is not None else ("node", link[0], link[1])
            elif outer is not None:
                pending.append((lid, link, outer))
            else:
                self.links[lid] = link
        return feeds

    def _rewire(self, table: dict, instances: dict, feeds: dict, pending: list) -> dict:
        """The level's own links with instances resolved to the inner nodes that feed them; the
        pending inner links get their sources. Returns the boundary links."""
        resolved: dict[tuple, tuple | None] = {}  # (instance, output slot) -> the real source, once

        def source(origin, slot):
            trail, found = {}, None  # a dict: ordered, and quick to ask
            while origin in instances:
                key = (origin, slot)
                if key in resolved:
                    found = resolved[key]
                    break
                if key in trail:  # instances passing a value round in a circle
                    break
                trail[key] = True
                feed = feeds[origin].get(slot)
                if feed is None or (feed[0] == "outer" and feed[1] not in table):
                    break
                origin, slot = table[feed[1]][0:2] if feed[0] == "outer" else feed[1:3]
            else:
                found = (origin, slot)
            for key in trail:
                resolved[key] = found
            return found

        boundary = {}

        def keep(lid, link):
            (boundary if link[0] == INPUT_NODE or link[2] == OUTPUT_NODE else self.links)[lid] = link

        for lid, link, outer in pending:
            found = source(*table[outer][0:2])
            if found is None:
                _unlink(self.nodes.get(link[2]), lid)
                continue
            link[0:2] = found
            keep(lid, link)
        for lid, link in table.items():
            if link[2] in instances:  # into an instance: read by its inner nodes directly now
                continue
            if link[0] in instances:
                found = source(link[0], link[1])
                if found is None:
                    continue
                link = [*found, *link[2:]]
            keep(lid, link)
        return boundary


def _instance_slots(instance: dict, definition: dict) -> dict[int, int | None] | None:
    """Subgraph input slot -> the instance's input slot of the same name (None: the instance has no
    such socket). They differ when the instance shows only some of the subgraph's inputs as sockets,
    the others being promoted widgets. None when names are missing: then slots match by position."""
    outer = instance.get("inputs") or []
    inner = definition.get("inputs") or []
    if not all(isinstance(inp, dict) and isinstance(inp.get("name"), str) and inp["name"] for inp in outer + inner):
        return None
    names = {inp["name"]: i for i, inp in enumerate(outer)}
    return {i: names.get(inp["name"]) for i, inp in enumerate(inner)}


def _unlink(node: dict | None, link_id) -> None:
    for inp in (node or {}).get("inputs") or []:
        if inp.get("link") == link_id:
            inp["link"] = None


def _widget_slots(definition: dict) -> list[int]:
    """The subgraph's inputs that feed an inner widget, in order: those an instance shows as
    (promoted) widgets of its own."""
    nodes = {n.get("id"): n for n in definition.get("nodes") or [] if isinstance(n, dict)}
    found = set()
    for link in link_table(definition.get("links")).values():
        origin, slot, target, tslot = link[:4]
        inputs = (nodes.get(target) or {}).get("inputs") or []
        if origin == INPUT_NODE and isinstance(tslot, int) and 0 <= tslot < len(inputs) \
                and isinstance(inputs[tslot], dict) and inputs[tslot].get("widget"):
            found.add(slot)
    return sorted(s for s in found if isinstance(s, int))


def _instance_widget_values(instance: dict, definition: dict, slot_of: dict | None) -> dict[int, Any]:
    """Subgraph input slot -> the instance's own widget value for it. The frontend gives an instance
    one widget per subgraph input that feeds an inner widget, in the subgraph's input order, and
    saves one value each; older files list only the instance's widget sockets, in order, a seed's
    control value after it. A file whose instance lacks sockets for some of those widget inputs
    (shown as promoted widgets only) is read the frontend's way."""
    values = instance.get("widgets_values")
    inputs = instance.get("inputs") or []
    def_slot = {v: k for k, v in slot_of.items() if v is not None} if slot_of is not None else None
    sockets = [i for i, inp in enumerate(inputs) if isinstance(inp, dict) and inp.get("widget")]
    slots = [def_slot.get(i) if def_slot is not None else i for i in sockets]
    if isinstance(values, dict):  # by widget name: the instance's sockets', else the subgraph inputs'
        names = {inp.get("name"): i for i, inp in enumerate(definition.get("inputs") or []) if isinstance(inp, dict)}
        names.update({(inputs[i].get("widget") or {}).get("name"): slot for i, slot in zip(sockets, slots)})
        return {names[k]: v for k, v in values.items() if names.get(k) is not None}
    promoted = _widget_slots(definition)
    if slot_of is not None and any(slot_of.get(s) is None for s in promoted):
        slots = promoted
    if not isinstance(values, list) or not values:
        return {}
    out, k = {}, 0
    for slot in slots:
        if k >= len(values):
            break
        if slot is not None:
            out[slot] = values[k]
        k += 1
        if k < len(values) and values[k] in CONTROL_VALUES and not isinstance(values[k - 1], str):
            k += 1
    return out

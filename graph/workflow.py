"""The Loom workflow file: what a saved or shared workflow looks like, and how older shapes migrate.

Format version 1 (schema: `graph/workflow.schema.json`) is litegraph's 0.4 serialisation, which the
editor and ComfyUI's frontend read, plus:

    "format": "loom-workflow", "format_version": 1,
    "models": [{"name": "tiny-sd", "sha256": "<hex>"}, ...]   every model file or folder it references

Accepted on load and migrated to that one canonical form:
- litegraph 0.4 (`version: 0.4`, links as arrays; ComfyUI's `models` entries {name, hash, hash_type,
  directory, url}; old `pos`/`size` objects {"0": x, "1": y}; null entries in `links`),
- litegraph version 1 (`version: 1`, `state` {lastNodeId, lastLinkId, ...}, links as objects,
  top-level `reroutes`), which becomes 0.4 the way ComfyUI itself writes 0.4 (`extra.reroutes`,
  `extra.linkExtensions` for links that pass through a reroute).
Every shape is checked against its part of the schema first, so migration only sees sane data and
a broken file gets a message with the JSON path of each problem.
"""
from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

FORMAT = "loom-workflow"
FORMAT_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("workflow.schema.json")
MAX_ERRORS = 8  # schema problems listed in one message

# The kinds of data a workflow can arrive as; the value is the schema definition that checks it.
KINDS = {"loom-1": "loom_1", "litegraph-0.4": "litegraph_0_4", "litegraph-1": "litegraph_1",
         "api": "api_prompt", "request": "request"}
EDITOR_KINDS = ("loom-1", "litegraph-0.4", "litegraph-1")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class WorkflowError(ValueError):
    """A workflow that cannot be read at all (not one of the formats, or malformed)."""


def kind_of(data: Any) -> str:
    """Which shape `data` has: one of KINDS. Raises WorkflowError for what is none of them."""
    if not isinstance(data, dict):
        raise WorkflowError(f"a workflow must be a JSON object, got {_json_type(data)}")
    if "format_version" in data or data.get("format") == FORMAT:
        if data.get("format") != FORMAT:
            raise WorkflowError(f"unknown workflow format {data.get('format')!r}, expected {FORMAT!r}")
        version = data.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise WorkflowError(f"this workflow file has format version {version}, made by a newer Loom; "
                                f"this one reads versions up to {FORMAT_VERSION}")
        if version != FORMAT_VERSION:
            raise WorkflowError(f"unknown format_version {version!r}, expected {FORMAT_VERSION}")
        return "loom-1"
    if "nodes" in data and not _is_api_node(data["nodes"]):
        return "litegraph-1" if data.get("version") == 1 or "state" in data else "litegraph-0.4"
    if "prompt" in data and not _is_api_node(data["prompt"]) and isinstance(data["prompt"], dict):
        return "request"
    return "api"


def is_editor(data: Any) -> bool:
    try:
        return kind_of(data) in EDITOR_KINDS
    except WorkflowError:
        return False


def check(data: Any, kind: str) -> None:
    """Raise WorkflowError listing where `data` breaks the schema definition of `kind`."""
    errors = sorted(_validator(KINDS[kind]).iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    lines = [_describe(e, kind) for e in errors[:MAX_ERRORS]]
    more = f"\n  ... and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
    raise WorkflowError(f"not a valid {_KIND_NAMES[kind]}:\n  " + "\n  ".join(lines) + more)


def canonical(data: Any) -> dict:
    """The workflow as a format-version-1 Loom file, whatever editor shape it came in. The input is
    not modified."""
    kind = kind_of(data)
    if kind not in EDITOR_KINDS:
        raise WorkflowError("this is an API-format prompt, not an editor workflow: it has no positions or links "
                            "to migrate")
    check(data, kind)
    return migrate(data, kind)


def migrate(data: dict, kind: str) -> dict:
    """An editor workflow of `kind`, already checked against its schema, as a canonical Loom file."""
    wf = copy.deepcopy(data)
    if kind == "litegraph-1":
        wf = _from_v1(wf)
    return _finish(wf)  # follows the loom-1 schema (tests check it; checking each load would double the cost)


def dumps(workflow: dict) -> str:
    """The text of a canonical workflow file: indented, for diffs."""
    return json.dumps(workflow, indent=1, ensure_ascii=False)


# --- migration ----------------------------------------------------------------------------------

def _from_v1(wf: dict) -> dict:
    """litegraph version 1 -> 0.4 arrays, keeping reroutes the way ComfyUI keeps them in 0.4."""
    state = wf.pop("state", None) or {}
    extra = wf.get("extra") or {}
    links = []
    for link in wf.get("links") or []:
        links.append([link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                      link["target_slot"], link.get("type", "*")])
        if link.get("parentId") is not None:
            extra.setdefault("linkExtensions", []).append({"id": link["id"], "parentId": link["parentId"]})
    wf["links"] = links
    if wf.get("reroutes"):
        extra["reroutes"] = wf["reroutes"]
    wf.pop("reroutes", None)
    wf["extra"] = extra
    if "lastNodeId" in state:
        wf.setdefault("last_node_id", state["lastNodeId"])
    if "lastLinkId" in state:
        wf.setdefault("last_link_id", state["lastLinkId"])
    return wf


def _finish(wf: dict) -> dict:
    """Shared by every source shape: integral numbers as ints, pairs as lists, defaults filled."""
    for node in wf["nodes"]:
        node["id"] = _int(node["id"])
        for key in ("pos", "size"):
            if isinstance(node.get(key), dict):
                node[key] = [node[key]["0"], node[key]["1"]]
            elif isinstance(node.get(key), list):
                node[key] = node[key][:2]
        for inp in node.get("inputs") or []:
            if inp.get("link") is not None:
                inp["link"] = _int(inp["link"])
    links = []
    for link in wf.get("links") or []:
        if link is None:  # some ComfyUI versions left holes in the array
            continue
        links.append([_int(link[0]), _int(link[1]), _int(link[2]), _int(link[3]), _int(link[4]),
                      link[5] if len(link) > 5 else "*"])
    ids = [n["id"] for n in wf["nodes"] if isinstance(n["id"], int)]
    out = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": 0.4,
           "last_node_id": wf.get("last_node_id") if wf.get("last_node_id") is not None else max(ids, default=0),
           "last_link_id": wf.get("last_link_id") if wf.get("last_link_id") is not None
           else max((link[0] for link in links), default=0),
           "nodes": wf["nodes"], "links": links, "groups": list(wf.get("groups") or []),
           "config": wf.get("config") or {}, "extra": wf.get("extra") or {}, "models": _models(wf)}
    out["last_node_id"] = _int(out["last_node_id"])
    out["last_link_id"] = _int(out["last_link_id"])
    for key, value in wf.items():  # id, revision, definitions, ...: kept for the editors that wrote them
        out.setdefault(key, value)
    return out


def _models(wf: dict) -> list[dict]:
    """The file's model list in Loom's shape, merged with ComfyUI's per-node `properties.models`."""
    entries = list(wf.get("models") or [])
    for node in wf["nodes"]:
        found = (node.get("properties") or {}).get("models")
        if isinstance(found, list):
            entries += [m for m in found if isinstance(m, dict) and isinstance(m.get("name"), str) and m["name"]]
    models: dict[str, dict] = {}
    for entry in entries:
        sha = entry.get("sha256")
        if sha is None and isinstance(entry.get("hash"), str) and str(entry.get("hash_type", "sha256")).lower() == "sha256":
            sha = entry["hash"]
        sha = sha.lower() if isinstance(sha, str) and SHA256.match(sha.lower()) else None
        model = {"name": entry["name"], "sha256": sha}
        for key in ("size", "directory", "url"):
            if key in entry and isinstance(entry[key], (str, int)) and not isinstance(entry[key], bool):
                model[key] = entry[key]
        old = models.get(entry["name"])
        if old is None or (old["sha256"] is None and sha):
            models[entry["name"]] = {**(old or {}), **model}
    return list(models.values())


def _int(value: Any) -> Any:
    """JSON numbers like 3.0 pass the schema's integer check; use them as the ints they are."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _is_api_node(value: Any) -> bool:
    return isinstance(value, dict) and "class_type" in value


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


# --- schema -------------------------------------------------------------------------------------

_KIND_NAMES = {"loom-1": "Loom workflow (format version 1)", "litegraph-0.4": "editor workflow (litegraph 0.4)",
               "litegraph-1": "editor workflow (litegraph version 1)", "api": "API-format prompt",
               "request": "prompt request {prompt, extra_data}"}


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _validator(definition: str):
    import jsonschema  # imported on first use: most callers never see a malformed file

    root = schema()
    return jsonschema.Draft202012Validator({"$defs": root["$defs"], "$ref": f"#/$defs/{definition}"})


def _describe(error, kind: str) -> str:
    """One schema error as `at nodes[2].pos: <what was wrong>`, short even for huge values."""
    while error.context:  # anyOf: the alternative that got furthest into the data says the most
        error = max(error.context, key=lambda e: len(e.absolute_path))
    parts = list(error.absolute_path)
    if kind == "api" and parts:
        parts[0] = f"node {parts[0]}"  # API prompts are keyed by node id
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    message = error.message
    if len(message) > 160:
        message = message[:150] + " ..." + message[-40:]
    return f"at {path or 'the top level'}: {message}"

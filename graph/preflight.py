"""The pre-flight report of a loaded workflow: everything it needs that is not here, found at once,
before anything runs.

- node types that are not installed, with the nodes that use them;
- models not in the models folder, by name, and by sha256 when the file gives one (a model present
  under another name is found by its hash and named);
- models present under the name but with other content (a different sha256): a warning.

Where models are named: Combo inputs declared `model=True`, string widget values of node types that
are not installed that look like model files, and the workflow file's `models` list (with ComfyUI's
per-node `properties.models`). That list is a hint (where to download what the author used): a
model only the hint names is reported, never refused; a model a node needs and lacks is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .formats import Loaded
from .models import ModelStore, looks_like_model
from .node import Combo
from .plan import sort_key
from .registry import Registry


@dataclass
class ModelCheck:
    name: str
    nodes: list[str] = field(default_factory=list)  # the nodes naming it (none: only in `models`)
    sha256: str | None = None  # what the workflow says it should be
    directory: str | None = None
    status: str = "present"  # present | missing | different
    path: str | None = None  # where it is, relative to the models folder
    found_as: str | None = None  # missing by name, but this model has the wanted sha256
    actual_sha256: str | None = None

    def line(self) -> str:
        sha = f" (sha256 {self.sha256[:12]}…)" if self.sha256 else ""
        used = f", used by node{'s' if len(self.nodes) > 1 else ''} {', '.join(self.nodes)}" if self.nodes else ""
        if self.status == "missing":
            hint = f"; the same file is here as '{self.found_as}'" if self.found_as else ""
            if not self.nodes:
                return (f"note: the workflow's model list names '{self.name}'{sha}, which is not in the models "
                        f"folder; no node uses it{hint}")
            return f"model '{self.name}'{sha} is not in the models folder{used}{hint}"
        hint = f"; the file the workflow names is here as '{self.found_as}'" if self.found_as else ""
        return (f"model '{self.name}' is in the models folder but its sha256 is {self.actual_sha256[:12]}…, "
                f"not {self.sha256[:12]}… as the workflow says: it is another file{used}{hint}")


@dataclass
class Preflight:
    missing_nodes: dict[str, list[str]] = field(default_factory=dict)  # type -> node ids
    models: list[ModelCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def missing_models(self) -> list[ModelCheck]:
        """Models a node needs that are not here: the workflow cannot run."""
        return [m for m in self.models if m.status == "missing" and m.nodes]

    @property
    def missing_hints(self) -> list[ModelCheck]:
        """Models only the file's model list names (no node uses them) that are not here."""
        return [m for m in self.models if m.status == "missing" and not m.nodes]

    @property
    def ok(self) -> bool:
        return not self.missing_nodes and not self.missing_models

    def lines(self) -> list[str]:
        out = [f"node type '{t}' is not installed (node{'s' if len(ids) > 1 else ''} {', '.join(ids)})"
               for t, ids in sorted(self.missing_nodes.items())]
        out += [m.line() for m in self.models if m.status != "present"]
        return out + self.notes

    def as_dict(self) -> dict:
        return {"ok": self.ok, "missing_nodes": self.missing_nodes,
                "models": [vars(m).copy() for m in self.models], "notes": list(self.notes)}


def preflight(loaded: Loaded, registry: Registry, store: ModelStore, check_hashes: bool = True) -> Preflight:
    report = Preflight(notes=list(loaded.warnings))
    for node_id in sorted(loaded.prompt, key=sort_key):
        class_type = loaded.prompt[node_id]["class_type"]
        if class_type not in registry:
            report.missing_nodes.setdefault(class_type, []).append(node_id)
    for check in model_references(loaded, registry).values():
        try:
            _locate(check, store, check_hashes)
        except OSError as exc:
            report.notes.append(f"model '{check.name}' could not be read to check its sha256: {exc}")
        report.models.append(check)
    return report


def model_references(loaded: Loaded, registry: Registry) -> dict[str, ModelCheck]:
    """Every model the workflow names, by name, with the nodes naming it and the hash it gives."""
    refs: dict[str, ModelCheck] = {}

    def add(name: str, node_id: str | None = None) -> ModelCheck:
        check = refs.setdefault(name, ModelCheck(name))
        if node_id is not None and node_id not in check.nodes:
            check.nodes.append(node_id)
        return check

    for node_id in sorted(loaded.prompt, key=sort_key):
        node = loaded.prompt[node_id]
        cls = registry.get(node["class_type"])
        for name, value in node["inputs"].items():
            inp = cls.inputs.get(name) if cls else None
            declared = isinstance(inp, Combo) and inp.model and isinstance(value, str) and value
            if declared or (cls is None and looks_like_model(value)):
                add(value, node_id)
    if loaded.workflow:
        runnable = set(loaded.prompt)
        for node in (loaded.flat or loaded.workflow)["nodes"]:  # widgets of missing types never reach the prompt
            if str(node["id"]) in runnable and node["type"] not in registry:
                values = node.get("widgets_values")
                for value in values.values() if isinstance(values, dict) else values or []:
                    if looks_like_model(value):
                        add(value, str(node["id"]))
        for entry in loaded.workflow.get("models", []):
            check = refs.get(entry["name"]) or add(entry["name"])
            check.sha256 = check.sha256 or entry.get("sha256")
            check.directory = check.directory or entry.get("directory")
    return refs


def _locate(check: ModelCheck, store: ModelStore, check_hashes: bool) -> None:
    path = store.path_of(check.name, check.directory)
    if path is None:
        check.status = "missing"
        if check.sha256 and check_hashes:
            found = store.find_by_sha256(check.sha256)
            check.found_as = store.relative_name(found) if found else None
        return
    check.path = store.relative_name(path)
    if check.sha256 and check_hashes:
        check.actual_sha256 = store.sha256(path)
        if check.actual_sha256 != check.sha256:
            check.status = "different"
            found = store.find_by_sha256(check.sha256)
            check.found_as = store.relative_name(found) if found else None

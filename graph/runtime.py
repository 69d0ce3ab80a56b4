"""Headless use: load a workflow (any format, JSON or PNG), check it, run it, find its images.

The server and the command line both go through `Loom`; nothing about running a workflow lives
in the command line.

    loom = Loom("data")                      # or Loom(Env.from_data_dir("data", device="cpu"))
    result = loom.run_file("workflows/txt2img.json")
    print(loom.image_paths(result))
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from .cache import Cache
from .entries import entry_errors
from .env import Env
from .executor import Emit, Executor, RunResult
from .formats import Loaded, WorkflowError, load
from .memory import DeviceMemory, Placement
from .model_paths import read_all
from .models import ModelStore
from .pngmeta import is_png, workflow_from_png
from .preflight import Preflight, model_references, preflight
from .registry import Registry
from .validate import Validation, validate
from .workflow import is_editor, kind_of

log = logging.getLogger(__name__)


class ValidationFailed(ValueError):
    def __init__(self, validation: Validation):
        super().__init__(validation.error["message"] + "\n" + validation.error.get("details", ""))
        self.validation = validation


def invalid_workflow(message: str) -> Validation:
    return Validation(prompt={}, outputs=[], error={
        "type": "invalid_prompt", "message": f"Invalid workflow: {message}", "details": message,
        "extra_info": {}})


def read_workflow_file(path: str | Path) -> Any:
    """The workflow in a file: JSON of any accepted shape, or a PNG made by Loom or ComfyUI (its
    `prompt` and `workflow` chunks, as the request body {prompt, extra_data} that /prompt takes)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WorkflowError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if is_png(data):
        return workflow_from_png(data, path.name)
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WorkflowError(f"cannot read {path.name}: it is neither JSON nor a PNG ({exc})") from None


def _entry_errors(workflow: Any, extra_data: dict | None, installed: Any = ()) -> Validation | None:
    """Malformed entries of an API prompt (or of a request body's prompt), filed on their nodes."""
    try:
        kind = kind_of(workflow)
    except WorkflowError:
        return None  # load() says what is wrong
    if kind not in ("api", "request"):
        return None
    prompt, extra = (workflow, extra_data) if kind == "api" else (workflow["prompt"], workflow.get("extra_data"))
    pnginfo = extra.get("extra_pnginfo") if isinstance(extra, dict) else None
    return entry_errors(prompt, pnginfo.get("workflow") if isinstance(pnginfo, dict) else None, installed)


def add_preflight(validation: Validation, report: Preflight) -> None:
    """File the report's missing models on the nodes naming them and put its lines first in the
    error details, so one response lists everything a shared workflow needs."""
    lazy_only = validation.maybe | validation.untaken
    blocking = []  # models a node needs for sure; those named only on lazy branches wait for the run
    for check in report.missing_models:
        later = set(check.nodes) <= lazy_only
        if not later:
            blocking.append(check)
        for node_id in check.nodes:
            entry = (validation.deferred if later else validation.node_errors).setdefault(node_id, {
                "errors": [], "dependent_outputs": [],
                "class_type": validation.prompt.get(node_id, {}).get("class_type")})
            entry["errors"].append({"type": "model_not_found", "message": check.line(), "details": check.name,
                                    "extra_info": {"model": check.name, "sha256": check.sha256,
                                                   "found_as": check.found_as}})
    lines = report.lines()
    if not lines:
        return
    if validation.error is None and blocking:
        validation.error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                            "details": "", "extra_info": {}}
    if validation.error is not None:
        missing = [c.name for c in blocking]
        if missing:
            validation.error["message"] += "; models not found: " + ", ".join(missing)
        validation.error["details"] = "\n".join(["Pre-flight:"] + [f"- {line}" for line in lines]
                                                + ([validation.error["details"]] if validation.error["details"] else []))
        validation.error["extra_info"]["preflight"] = report.as_dict()


class Loom:
    """The engine with its nodes. `env` is an `Env`, or a data folder's path: then Loom opens it as the
    server does (creates its subfolders; a node package's `prepare_models(models_dir)`, if it has one,
    writes its built-in model into a models folder that holds none). `extra_model_paths`: ComfyUI
    extra_model_paths.yaml files naming more model folders (graph.model_paths; docs/model-folders.md).

    `placement` (nodes.loading.placement.placement_for(env) on a GPU) turns on device memory management:
    what the cache holds on the device stays within `vram_bytes` (default: the placement's, free
    device memory minus a margin), models moving to the host and back (graph.memory)."""

    def __init__(self, env: Env | str | os.PathLike, packages: tuple[str, ...] = ("nodes",),
                 custom_nodes: str | Path | None = None, cache_bytes: int | None = None,
                 verbose_errors: bool = False, registry: Registry | None = None,
                 placement: Placement | None = None, vram_bytes: int | None = None, extra_model_paths=()):
        opened = isinstance(env, (str, os.PathLike))
        if opened:
            env = Env.from_data_dir(env, extra_model_paths=extra_model_paths)
        elif not isinstance(env, Env):
            raise TypeError(f"Loom takes a data folder (a path) or a graph.Env, not {type(env).__name__}")
        elif extra_model_paths:
            env.extra_model_folders = tuple(env.extra_model_folders) + read_all(extra_model_paths)
        self.env = env
        if registry is None:
            registry = Registry()
            for package in packages:
                registry.add_package(package)
                prepare = getattr(importlib.import_module(package), "prepare_models", None)
                if opened and prepare is not None:
                    prepare(env.models_dir)
            if custom_nodes:
                registry.add_folder(custom_nodes)
        self.registry = registry
        self.models = ModelStore(env.models_dir, env.data_dir / "cache" / "model-hashes.json",
                                 extra=env.extra_model_folders)
        cache = Cache(cache_bytes)
        memory = None
        if placement is not None:
            memory = DeviceMemory(cache, placement, placement.default_budget() if vram_bytes is None else vram_bytes)
        self.executor = Executor(registry, env, cache, verbose_errors=verbose_errors, memory=memory)

    def load(self, workflow: Any) -> Loaded:
        """Read a workflow of any accepted shape (raises WorkflowError)."""
        try:
            return load(workflow, self.registry)
        except RecursionError:
            raise WorkflowError("the workflow is nested too deeply to be a workflow") from None

    def preflight(self, workflow: Any) -> Preflight:
        """What a workflow needs that is not here: node types and models (raises WorkflowError)."""
        return preflight(workflow if isinstance(workflow, Loaded) else self.load(workflow), self.registry, self.models)

    def validate(self, workflow: Any, outputs: list[str] | None = None, extra_data: dict | None = None) -> Validation:
        """Validate a workflow of any format; a malformed one gives an `invalid_prompt` error. The
        pre-flight report (missing node types and models) is part of the result. `extra_data` is
        the /prompt request's: its editor workflow names the types of entries that lack one."""
        malformed = _entry_errors(workflow, extra_data, self.registry)
        if malformed is not None:
            return malformed
        try:
            loaded = self.load(workflow)
        except WorkflowError as exc:
            return invalid_workflow(str(exc))
        validation = validate(loaded.prompt, self.registry, self.env, outputs)
        validation.loaded, validation.preflight = loaded, self.preflight(loaded)
        add_preflight(validation, validation.preflight)
        return validation

    def run(self, workflow: Any, emit: Emit | None = None, interrupt=None, extra_data: dict | None = None,
            prompt_id: str | None = None, previews: bool = False) -> RunResult:
        """Validate and run; raises ValidationFailed for an invalid workflow. The editor workflow, when
        there is one, is what the saved images carry (as a Loom file naming its models)."""
        validation = workflow if isinstance(workflow, Validation) else self.validate(workflow)
        if not validation.ok:
            raise ValidationFailed(validation)
        loaded = validation.loaded
        extra = {**(loaded.extra_data if loaded else {}), **(extra_data or {})}  # what the caller posts wins
        pnginfo = extra.get("extra_pnginfo", {})
        if isinstance(pnginfo, dict):
            workflow = pnginfo.get("workflow", loaded.workflow if loaded else None)
            if workflow is not None:
                extra["extra_pnginfo"] = {**pnginfo, "workflow": self._embeddable(workflow, loaded)}
        return self.executor.run(validation, prompt_id or str(uuid.uuid4()), emit, interrupt, extra, previews)

    def _embeddable(self, workflow: Any, loaded: Loaded | None) -> Any:
        """An editor workflow as images carry it: a Loom file naming its models. Anything else (or
        one that cannot be read, or whose models cannot be hashed) is carried as it is."""
        try:
            if loaded is not None and workflow is loaded.workflow:
                return self.save(loaded)
            return self.save(workflow) if is_editor(workflow) else workflow
        except (WorkflowError, OSError, RecursionError) as exc:
            log.warning("the workflow is embedded as it was given: %s", exc)
            return workflow

    def save(self, workflow: Any) -> dict:
        """The workflow as a Loom file (format version 1) whose `models` list names every model it
        references with its sha256 (hashes are cached, so this reads a model file once)."""
        loaded = workflow if isinstance(workflow, Loaded) else self.load(workflow)
        if loaded.workflow is None:
            raise WorkflowError("an API-format prompt has no editor layout to save; save it from the editor")
        models = []
        for check in model_references(loaded, self.registry).values():
            path = self.models.path_of(check.name, check.directory)
            entry = {"name": check.name, "sha256": self.models.sha256(path) if path else check.sha256}
            if check.directory:
                entry["directory"] = check.directory
            models.append(entry)
        return {**loaded.workflow, "models": models}

    def run_file(self, path: str | Path, **kwargs) -> RunResult:
        return self.run(read_workflow_file(path), **kwargs)

    def image_paths(self, result: RunResult) -> list[Path]:
        """Files of every image the run's output nodes reported."""
        paths = []
        for ui in result.outputs.values():
            for image in ui.get("images", []):
                paths.append(self.env.safe_path(image.get("type", "output"), image["filename"],
                                                image.get("subfolder", "")))
        return paths

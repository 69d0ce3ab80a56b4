"""Headless use: load a workflow (either format), validate it, run it, find its images.

The server and the command line both go through `Loom`; nothing about running a workflow lives
in `server.py`.

    loom = Loom(Env.from_data_dir("data"))
    result = loom.run(json.load(open("workflows/txt2img.json")))
    print(loom.image_paths(result))
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from .cache import Cache
from .env import Env
from .executor import Emit, Executor, RunResult
from .formats import WorkflowError, is_editor_format, to_api
from .registry import Registry
from .validate import Validation, validate


class ValidationFailed(ValueError):
    def __init__(self, validation: Validation):
        super().__init__(validation.error["message"] + "\n" + validation.error.get("details", ""))
        self.validation = validation


def invalid_workflow(message: str) -> Validation:
    return Validation(prompt={}, outputs=[], error={
        "type": "invalid_prompt", "message": f"Invalid workflow: {message}", "details": message,
        "extra_info": {}})


def read_workflow_file(path: str | Path) -> Any:
    """The JSON of a workflow file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"cannot read {path.name}: {exc}") from None


class Loom:
    def __init__(self, env: Env, packages: tuple[str, ...] = ("nodes",), custom_nodes: str | Path | None = None,
                 cache_bytes: int | None = None, verbose_errors: bool = False, registry: Registry | None = None):
        self.env = env
        if registry is None:
            registry = Registry()
            for package in packages:
                registry.add_package(package)
            if custom_nodes:
                registry.add_folder(custom_nodes)
        self.registry = registry
        self.executor = Executor(registry, env, Cache(cache_bytes), verbose_errors=verbose_errors)

    def validate(self, workflow: Any, outputs: list[str] | None = None) -> Validation:
        """Validate a workflow of either format; a malformed one gives an `invalid_prompt` error."""
        try:
            prompt = to_api(workflow, self.registry)
        except WorkflowError as exc:
            return invalid_workflow(str(exc))
        return validate(prompt, self.registry, self.env, outputs)

    def run(self, workflow: Any, emit: Emit | None = None, interrupt=None, extra_data: dict | None = None,
            prompt_id: str | None = None, previews: bool = False) -> RunResult:
        """Validate and run; raises ValidationFailed for an invalid workflow. An editor-format workflow
        is also kept as the `workflow` the saved images carry."""
        validation = workflow if isinstance(workflow, Validation) else self.validate(workflow)
        if not validation.ok:
            raise ValidationFailed(validation)
        extra = dict(extra_data or {})
        if is_editor_format(workflow):
            extra.setdefault("extra_pnginfo", {}).setdefault("workflow", workflow)
        return self.executor.run(validation, prompt_id or str(uuid.uuid4()), emit, interrupt, extra, previews)

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

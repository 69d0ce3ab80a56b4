"""Loom's engine: node declarations, workflow formats, validation, planning, execution, caching.

Nothing here imports torch; nodes that need it live in `nodes/`.
"""
from .cache import Cache
from .env import Env, UnsafePath, safe_join
from .executor import Context, Executor, Interrupted, RunResult
from .formats import Loaded, WorkflowError, editor_to_api, is_editor_format, load, to_api
from .node import Autogrow, Boolean, Combo, DynamicCombo, Float, In, Input, InputError, Int, Node, Out, String
from .model_paths import ModelPathsError
from .models import ModelStore
from .plan import plan
from .preflight import Preflight, preflight
from .registry import Registry
from .runtime import Loom, ValidationFailed, read_workflow_file
from .validate import Validation, validate

__all__ = [
    "Autogrow", "Boolean", "Cache", "Combo", "Context", "DynamicCombo", "Env", "Executor", "Float", "In", "Input",
    "InputError", "Int", "Interrupted", "Loaded", "Loom", "ModelPathsError", "ModelStore", "Node", "Out", "Preflight",
    "Registry", "RunResult", "String",
    "UnsafePath", "Validation", "ValidationFailed", "WorkflowError", "editor_to_api", "is_editor_format", "load",
    "plan", "preflight", "read_workflow_file", "safe_join", "to_api", "validate",
]

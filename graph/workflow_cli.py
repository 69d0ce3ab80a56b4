"""`python server.py workflow extract|check`: workflow files on the command line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .pngmeta import is_png, read_png
from .workflow import WorkflowError, canonical, dumps, is_editor


def extract_workflow(image: str | Path, out: str | Path | None = None, api: bool = False) -> int:
    """Write the workflow a PNG carries: the editor workflow as a Loom file, or with `api` (or when
    the image has no editor workflow) the API-format prompt."""
    image = Path(image)
    try:
        data = image.read_bytes()
    except OSError as exc:
        raise WorkflowError(f"cannot read {image.name}: {exc.strerror or exc}") from None
    if not is_png(data):
        raise WorkflowError(f"{image.name} is not a PNG image")
    prompt, workflow = read_png(data, image.name)
    if api or workflow is None:
        if prompt is None:
            raise WorkflowError(f"{image.name} has an editor workflow but no API-format 'prompt' chunk")
        if not api:
            print(f"{image.name} carries only the API-format prompt; writing that", file=sys.stderr)
        text = json.dumps(prompt, indent=1, ensure_ascii=False)
    else:
        text = dumps(canonical(workflow)) if is_editor(workflow) else json.dumps(workflow, indent=1)
    if out is None:
        print(text)
    else:
        Path(out).write_text(text + "\n", encoding="utf-8")
        print(out, file=sys.stderr)
    return 0


def check_workflow(loom, path: str | Path) -> int:
    """Print everything the workflow needs that is missing or wrong; 0 if it can run, 2 if not."""
    from .runtime import read_workflow_file

    validation = loom.validate(read_workflow_file(path))
    if validation.ok:
        notes = validation.preflight.lines() if validation.preflight else []
        print("\n".join([f"{Path(path).name}: ready to run"] + [f"- {n}" for n in notes]))
        return 0
    print(f"{Path(path).name}: {validation.error['message']}\n{validation.error['details']}", file=sys.stderr)
    return 2

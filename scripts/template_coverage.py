"""How many of ComfyUI's current local image templates Loom has every node type for.

The set: the templates of comfyui-workflow-templates' image categories (index.json entries of
type "image") that ship as local files and are not API-node templates (`openSource` not false):
150 in comfyui-workflow-templates-json 0.1.123. Each is loaded through Loom's workflow loader
(subgraphs expanded, muted and bypassed nodes and the frontend-only Note, MarkdownNote, Reroute,
PrimitiveNode left out) and its node types are compared with Loom's node registry.

    python scripts/template_coverage.py [--templates DIR] [--list]

prints the count of node-complete templates and the missing node types by the number of templates
that use them (--list: each template with what it lacks).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graph import Registry  # noqa: E402
from graph.formats import load  # noqa: E402


def default_templates() -> Path:
    import comfyui_workflow_templates_json

    return Path(comfyui_workflow_templates_json.__file__).parent / "templates"


def image_templates(folder: Path) -> list[str]:
    """Names of the local (non-API) templates of the image categories, in index order."""
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    names = []
    for category in index:
        if category.get("type") != "image":
            continue
        for template in category["templates"]:
            name = template["name"]
            if template.get("openSource") is not False and (folder / f"{name}.json").is_file() and name not in names:
                names.append(name)
    return names


def missing_types(workflow: dict, registry: Registry) -> set[str]:
    """Node types the workflow runs (as Loom loads it) that the registry lacks."""
    prompt = load(workflow, registry).prompt
    return {node["class_type"] for node in prompt.values() if node["class_type"] not in registry}


def coverage(folder: Path, registry: Registry) -> dict[str, set[str]]:
    """Template name -> the node types it lacks."""
    return {name: missing_types(json.loads((folder / f"{name}.json").read_text(encoding="utf-8")), registry)
            for name in image_templates(folder)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--templates", type=Path, help="the templates folder (default: the installed package's)")
    parser.add_argument("--list", action="store_true", help="each template with the node types it lacks")
    args = parser.parse_args(argv)
    registry = Registry()
    registry.add_package("nodes")
    found = coverage(args.templates or default_templates(), registry)
    complete = sorted(name for name, missing in found.items() if not missing)
    counts = Counter(t for missing in found.values() for t in missing)
    print(f"{len(complete)} of {len(found)} local image templates are node-complete on Loom")
    print(f"missing node types ({len(counts)}), by number of templates:")
    print(", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
    if args.list:
        for name, missing in found.items():
            print(f"  {name}: {', '.join(sorted(missing)) or 'complete'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

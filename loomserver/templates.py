"""Workflow templates for the official frontend's template browser.

    GET /templates/{file}                       ComfyUI's core templates (index*.json, NAME.json,
                                                NAME-1.webp, ...) from the `comfyui-workflow-templates`
                                                package when it is installed; without it an empty index
    GET /workflow_templates                     {"loom": [names]}: Loom's own workflows/ (as ComfyUI
                                                lists a custom node pack's example workflows)
    GET /workflow_templates/loom/{NAME}.json    one of them, as an editor workflow (API-format files
                                                are laid out first, so any editor can open them)
    GET /workflow_templates/loom/{NAME}.jpg     its thumbnail (loomserver/thumbnails.py)
"""
from __future__ import annotations

import asyncio
import json
import mimetypes
from functools import lru_cache
from pathlib import Path

from aiohttp import web

from .files import SANDBOX
from .paths import workflows_dir
from .security import Refused, reply
from .thumbnails import PICTURES, draw_graph, picture_beside

MODULE = "loom"
NOT_INDEXES = ("index_logo.json", "index.schema.json", "index.mcp.json")  # not lists of categories


@lru_cache(maxsize=1)
def _package() -> tuple[dict[str, Path], set[str]] | None:
    """Every file the templates package serves, by name, and the templates whose files are all
    there; None when it is not installed. (Its media bundles are separate packages: a template whose
    pictures are not installed is not listed, rather than shown with broken images.)"""
    try:
        from importlib import resources

        import comfyui_workflow_templates_core as core
    except ImportError:
        return None
    files: dict[str, Path] = {}
    json_dir = Path(str(resources.files("comfyui_workflow_templates_json") / "templates"))
    for path in json_dir.glob("index*.json"):
        files[path.name] = path
    complete = set()
    for entry in core.iter_templates():
        found = 0
        for asset in entry.assets:
            try:
                files.setdefault(asset.filename, Path(core.get_asset_path(entry.template_id, asset.filename)))
                found += 1
            except (FileNotFoundError, KeyError):  # a media bundle that is not installed
                continue
        if found == len(entry.assets):
            complete.add(entry.template_id)
    return files, complete


def template_index(path: Path, complete: set[str]) -> list:
    """An index file of the package with only the templates whose files are all installed."""
    categories = json.loads(path.read_text(encoding="utf-8"))
    shown = []
    for category in categories:
        templates = [t for t in category.get("templates", []) if t.get("name") in complete]
        if templates:
            shown.append({**category, "templates": templates})
    return shown


def core_template(name: str) -> Path | None:
    package = _package()
    return None if package is None else package[0].get(name)


def loom_templates() -> dict[str, Path]:
    """Loom's example workflows by template name: `txt2img`, `tutorial/cfg_sweep`, ..."""
    folder = workflows_dir()  # the checkout's workflows/, or the wheel's copy
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in sorted(folder.rglob("*.json"))}


def as_editor_workflow(path: Path, registry) -> dict:
    from graph.formats import api_to_editor
    from graph.workflow import is_editor

    data = json.loads(path.read_text(encoding="utf-8"))
    return data if is_editor(data) else api_to_editor(data, registry)


def routes(server) -> list[tuple]:
    async def get_core(request):
        name = request.match_info["file"]
        path = await asyncio.to_thread(core_template, name)
        if path is None and name.startswith("index") and name.endswith(".json"):
            return reply({} if name == "index_logo.json" else [])  # no package: no core templates
        if path is not None and name.startswith("index") and name not in NOT_INDEXES:  # index.json, index.fr.json...
            return reply(await asyncio.to_thread(template_index, path, _package()[1]))
        if path is None:
            raise Refused(404, f"no template file {name!r}", "not_found")
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return web.FileResponse(path, headers={**SANDBOX, "Content-Type": ctype})

    async def get_modules(request):
        return reply({MODULE: list(await asyncio.to_thread(loom_templates))})

    async def get_loom(request):
        module, name = request.match_info["module"], request.match_info["file"]
        stem, ext = name.rsplit(".", 1) if "." in name else (name, "")
        known = ext == "json" or f".{ext}" in PICTURES
        path = (await asyncio.to_thread(loom_templates)).get(stem) if module == MODULE and known else None
        if path is None:
            raise Refused(404, f"no template {module}/{name}", "not_found")
        loom = await server.loom()
        if ext == "json":
            return reply(await asyncio.to_thread(as_editor_workflow, path, loom.registry))
        picture = picture_beside(path)
        if picture is not None:
            return web.FileResponse(picture, headers={**SANDBOX, "Content-Type": PICTURES[picture.suffix]})
        workflow = await asyncio.to_thread(as_editor_workflow, path, loom.registry)
        return web.Response(body=await asyncio.to_thread(draw_graph, workflow),
                            headers={**SANDBOX, "Content-Type": "image/jpeg"})

    return [
        ("get", "/templates/{file}", get_core, "ComfyUI's core workflow templates (comfyui-workflow-templates)"),
        ("get", "/workflow_templates", get_modules, "Template names by module: Loom's workflows/"),
        ("get", "/workflow_templates/{module}/{file:.+}", get_loom, "One of Loom's workflows as an editor workflow, or its thumbnail"),
    ]

"""What ComfyUI's official frontend asks of a server at start and in its model library, in ComfyUI's
shapes; and where that frontend's files are (`--frontend comfyui`, from the `comfyui-frontend-package`
wheel: `pip install 'loom-diffusion[comfyui-frontend]'`).

    GET /extensions            ["/extensions/<path>.js", ...]: the scripts of the served site's extensions/
    GET /features              the server's feature flags
    GET /i18n                  translations of custom nodes: none
    GET /embeddings            textual-inversion names in the models folder's embeddings/
    GET /experiment/models     [{name: folder kind, folders: [paths]}]
    GET /experiment/models/{folder}   [{name, pathIndex, modified, created, size}]
    GET /internal/folder_paths {folder kind: [paths]}
    GET /global_subgraphs      {}: subgraph blueprints (none shipped)
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from .security import Refused, reply
from .system import list_checkpoints

FRONTENDS = ("loom", "comfyui")
INSTALL_HINT = "pip install 'loom-diffusion[comfyui-frontend]'"


def web_root(args) -> Path:
    """The folder served at /: Loom's editor (`--web-dir`), or the official frontend's static site."""
    if getattr(args, "frontend", "loom") != "comfyui":
        return Path(args.web_dir).resolve()
    try:
        import comfyui_frontend_package
    except ImportError:
        raise SystemExit(f"--frontend comfyui needs ComfyUI's frontend package: {INSTALL_HINT}") from None
    return (Path(comfyui_frontend_package.__file__).parent / "static").resolve()


def model_folders(env) -> dict[str, list[Path]]:
    """Each kind of model ComfyUI's clients ask for, and the folders it is found in: for checkpoints the
    models folder (LoadCheckpoint's names are relative to it), then the extra checkpoint folders
    (extra_model_paths.yaml)."""
    models = Path(env.models_dir)
    extra = [f for f in env.model_folders("checkpoints") if f != models / "checkpoints"]
    return {"checkpoints": [models, *extra], "embeddings": env.model_folders("embeddings")}


def model_entries(kind: str, env) -> list[dict]:
    """The models of one kind with ComfyUI's file facts (a diffusers folder's size is its files' sum);
    `pathIndex` is the folder's index in model_folders."""
    from graph.model_paths import walk_files

    folders = model_folders(env)[kind]
    if kind == "checkpoints":
        found = []
        for name in list_checkpoints(env):
            index = next((i for i, f in enumerate(folders) if (f / name).exists()), None)
            if index is not None:
                found.append((name, index))
    else:
        found = [(rel, i) for i, folder in enumerate(folders) for rel, _ in walk_files(folder)]
    out = []
    for name, index in found:
        path = folders[index] / name
        try:
            st = path.stat()
            size = sum(f.stat().st_size for _, f in walk_files(path)) if path.is_dir() else st.st_size
        except OSError:
            continue
        out.append({"name": name, "pathIndex": index, "modified": st.st_mtime, "created": st.st_ctime, "size": size})
    return out


def extensions(web_dir: Path) -> list[str]:
    folder = web_dir / "extensions"
    if not folder.is_dir():
        return []
    return sorted("/" + p.relative_to(web_dir).as_posix() for p in folder.rglob("*.js") if p.is_file())


def routes(server, upload_limit: int) -> list[tuple]:
    def env():
        return server.env

    async def get_extensions(request):
        return reply(await asyncio.to_thread(extensions, server.web_dir))

    async def get_features(request):
        return reply({"supports_preview_metadata": False, "max_upload_size": upload_limit})

    async def get_i18n(request):
        return reply({})

    async def get_embeddings(request):
        await server.core()
        found = await asyncio.to_thread(model_entries, "embeddings", env())
        return reply([e["name"].rsplit(".", 1)[0] for e in found])

    async def get_model_folders(request):
        await server.core()
        return reply([{"name": kind, "folders": [str(f) for f in folders]}
                      for kind, folders in model_folders(env()).items()])

    async def get_models_of(request):
        await server.core()
        kind = request.match_info["folder"]
        if kind not in model_folders(env()):
            raise Refused(404, f"no model folder {kind!r}; there are {', '.join(model_folders(env()))}",
                          "not_found")
        return reply(await asyncio.to_thread(model_entries, kind, env()))

    async def get_folder_paths(request):
        await server.core()
        return reply({kind: [str(f) for f in folders] for kind, folders in model_folders(env()).items()})

    async def get_global_subgraphs(request):
        return reply({})

    return [
        ("get", "/extensions", get_extensions, "Scripts of the served frontend's extensions/ folder"),
        ("get", "/features", get_features, "Server feature flags (ComfyUI's)"),
        ("get", "/i18n", get_i18n, "Translations of custom nodes (none)"),
        ("get", "/embeddings", get_embeddings, "Textual-inversion embeddings in models/embeddings"),
        ("get", "/experiment/models", get_model_folders, "Kinds of models and their folders"),
        ("get", "/experiment/models/{folder}", get_models_of, "The models of one kind with size and times"),
        ("get", "/internal/folder_paths", get_folder_paths, "The folders of each kind of model"),
        ("get", "/global_subgraphs", get_global_subgraphs, "Subgraph blueprints (none)"),
    ]

"""The models folder: ComfyUI's subfolders, what each lists, safe paths and reading weights.

ComfyUI keeps each kind of file in its own subfolder (`checkpoints/`, `diffusion_models/` or `unet/`,
`text_encoders/` or `clip/`, `vae/`, `loras/`, `upscale_models/`, `controlnet/`); its nodes name a file relative to
that subfolder. Loom reads the same layout, and keeps reading the flat layout it had: checkpoints
(diffusers folders, single files) anywhere in the models folder outside the other kinds' folders.
The folders of each kind, extra ones from ComfyUI's extra_model_paths.yaml included, come from one
place (`Env.model_folders`, graph.model_paths); symlinks in them are followed wherever they point.

An entry is a file with a weights suffix, or a folder: a diffusers pipeline (`model_index.json`)
for checkpoints, a diffusers/transformers model folder (`config.json`) for the other kinds.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from graph.env import UnsafePath
from graph.model_paths import KIND_FOLDERS, join_inside, kind_folders, walk_files

WEIGHT_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
# Folders of other kinds, never listed as checkpoints of the flat layout.
NOT_CHECKPOINTS = {f for kind, folders in KIND_FOLDERS.items() if kind != "checkpoints" for f in folders} | {
    "embeddings", "clip_vision", "configs", "hypernetworks", "style_models", "gligen", "photomaker",
    "vae_approx", "upscale_models", "diffusers"}


def _is_entry(path: Path, kind: str) -> bool:
    if path.is_dir():
        return (path / ("model_index.json" if kind == "checkpoints" else "config.json")).is_file()
    suffixes = CHECKPOINT_SUFFIXES if kind == "checkpoints" else WEIGHT_SUFFIXES
    return path.suffix.lower() in suffixes


def _walk(root: Path, kind: str, depth: int, skip: set[str] = frozenset()) -> list[str]:
    """Entries below `root` (links followed; broken links left out; a link back to a folder above
    is not entered again)."""
    found: list[str] = []

    def walk(folder: Path, level: int, above: frozenset) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for path in entries:
            if path.name.startswith(".") or (level == 1 and path.name in skip) or not path.exists():
                continue
            if _is_entry(path, kind):
                found.append(path.relative_to(root).as_posix())
            elif path.is_dir() and level < depth and (real := os.path.realpath(path)) not in above:
                walk(path, level + 1, above | {real})

    walk(root, 1, frozenset({os.path.realpath(root)}))
    return found


def list_models(models_dir: str | Path, depth: int = 2) -> list[str]:
    """Checkpoints (diffusers folders and single files) under `models_dir`, as paths relative to it,
    leaving out the folders of other kinds (loras/, vae/, ...)."""
    return _walk(Path(models_dir), "checkpoints", depth, NOT_CHECKPOINTS)


def _folders(source, kind: str) -> list[Path]:
    """The folders of `kind` of an Env (its extra folders included) or of a models folder's path."""
    if isinstance(source, (str, os.PathLike)):
        return kind_folders(Path(source), kind)
    return source.model_folders(kind)


def list_kind(source, kind: str, depth: int = 3) -> list[str]:
    """ComfyUI's names for `kind`: entries of its folders, relative to the folder; for checkpoints
    also the flat layout's entries (relative to the models folder). `source`: an Env, or the path
    of a models folder (no extra folders)."""
    names: list[str] = []
    for folder in _folders(source, kind):
        names += [n for n in _walk(folder, kind, depth) if n not in names]
    if kind == "checkpoints":
        root = Path(source) if isinstance(source, (str, os.PathLike)) else source.models_dir
        names += [n for n in list_models(root) if n not in names and not n.startswith("checkpoints/")]
    return names


def kind_choices(kind: str):
    """A Combo's choices: the entries of `kind` in the environment's model folders."""
    return lambda env: list_kind(env, kind) if env is not None else []


def checkpoint_choices(env) -> list[str]:
    """LoadCheckpoint's names: the flat layout's (relative to the models folder), then those of the
    extra checkpoint folders."""
    if env is None:
        return []
    names = list_models(env.models_dir)
    for folder in env.model_folders("checkpoints"):
        if folder != env.models_dir / "checkpoints":
            names += [n for n in _walk(folder, "checkpoints", 3) if n not in names]
    return names


def model_path(env, name: str) -> Path:
    """Where a LoadCheckpoint name is: relative to the models folder, else in a checkpoint folder."""
    path = join_inside(env.models_dir, name)
    if path.exists():
        return path
    try:
        return kind_path(env, "checkpoints", name)
    except FileNotFoundError:
        return path  # the loader's own "not found" names the models folder


def _shown(env, folder: Path) -> str:
    models = Path(env.models_dir)
    if folder == models or models in folder.parents:
        return Path("models", folder.relative_to(models)).as_posix()
    return str(folder)


def kind_path(env, kind: str, name: str, who: str = "") -> Path:
    """Where a ComfyUI name of `kind` is: in one of the kind's folders (env.model_folders), else
    (checkpoints) relative to the models folder. Raises FileNotFoundError naming `who` asked and the
    folders looked in."""
    tried = []
    for folder in env.model_folders(kind) + ([Path(env.models_dir)] if kind == "checkpoints" else []):
        try:
            path = join_inside(folder, name)
        except UnsafePath:
            raise FileNotFoundError(f"{who}: {name!r} is not a name inside the models folder") from None
        if path.exists():
            return path
        tried.append(_shown(env, folder))
    raise FileNotFoundError(f"{who}: {name!r} is not in {' or '.join(tried)}")


def stat_fingerprint(path: Path) -> list:
    """mtime and size of a file, or of every file in a folder (links followed): a replaced model
    changes it."""
    if path.is_file():
        st = path.stat()
        return [st.st_mtime_ns, st.st_size]
    parts = []
    for rel, file in walk_files(path, hidden=True):
        st = file.stat()
        parts.append([rel, st.st_mtime_ns, st.st_size])
    return parts


def kind_fingerprint(env, kind: str, name) -> list | None:
    try:
        return stat_fingerprint(kind_path(env, kind, name))
    except (OSError, ValueError, TypeError):
        return None


def read_state_dict(path: Path) -> dict:
    """The tensors of a weights file: safetensors, or a torch pickle read with `weights_only=True`
    (never unpickling code); a top-level `state_dict` entry is unwrapped."""
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    import torch

    data = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickle arbitrary code
    return data.get("state_dict", data) if isinstance(data, dict) else data


def has_prefix(sd: dict, prefix: str) -> bool:
    """Whether any key of a state dict starts with `prefix` (a part of a checkpoint: its UNet, VAE, ...)."""
    return any(k.startswith(prefix) for k in sd)


def key_indices(keys, pattern: str) -> list[int]:
    """The distinct numbers that `pattern`'s first group matches at the start of `keys`, sorted: the
    blocks, levels or layers a state dict has (`down_blocks\\.(\\d+)\\.`)."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})

"""Where each kind of model is: the models folder's subfolders (ComfyUI's names), the extra folders of
ComfyUI's `extra_model_paths.yaml`, and walking them through symlinks.

Model folders are set up by whoever runs the server, and people link files and whole folders between
tools (an A1111 or ComfyUI install, a shared disk), so a symlink in a models folder is followed wherever
it points. A name a client sends must still be a relative path without `..`: it can reach what the
folders hold, links included, and nothing else. The files the server serves (`Env.safe_path`: input,
output, temp) keep refusing links that point outside their folder.

The yaml file, as ComfyUI reads it: top-level sections (any names), each a mapping of
`kind: folder` (several folders: one per line, e.g. a `|` block), plus optional `base_path` (folders are
relative to it; `~` and environment variables expand; a relative base is relative to the yaml file's
folder) and `is_default` (its folders are searched before the models folder's own). Without
`base_path`, relative folders are relative to the yaml file's folder. Kind names are ComfyUI's; the
legacy `unet` and `clip` mean `diffusion_models` and `text_encoders`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .env import UnsafePath

# kind -> its folders in a models folder, ComfyUI's current name first (the legacy name still read)
KIND_FOLDERS = {
    "checkpoints": ("checkpoints",),
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "loras": ("loras",),
    "upscale_models": ("upscale_models",),
    "controlnet": ("controlnet", "t2i_adapter"),
    "embeddings": ("embeddings",),
    "gligen": ("gligen",),
}


class ModelPathsError(ValueError):
    """An extra_model_paths.yaml that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class ExtraFolder:
    kind: str  # ComfyUI's kind name, legacy names mapped (kind_of)
    path: Path  # absolute, as written (links not resolved)
    first: bool = False  # is_default: searched before the models folder's own folders


def kind_of(name: str) -> str:
    """The kind a folder name stands for: `unet` -> diffusion_models, `clip` -> text_encoders, ..."""
    for kind, folders in KIND_FOLDERS.items():
        if name in folders:
            return kind
    return name


def kind_folders(models_dir: Path, kind: str, extra: Iterable[ExtraFolder] = ()) -> list[Path]:
    """The folders holding models of `kind`, in search order: extra folders marked is_default, the
    models folder's own (`models/<name>` for each of the kind's names), the other extra folders."""
    kind = kind_of(kind)
    extra = [e for e in extra if e.kind == kind]
    own = [Path(models_dir) / name for name in KIND_FOLDERS.get(kind, (kind,))]
    found: list[Path] = []
    for path in [e.path for e in extra if e.first] + own + [e.path for e in extra if not e.first]:
        if path not in found:
            found.append(path)
    return found


def join_inside(folder: Path, name: str) -> Path:
    """`folder/name` for a model name a client sent: a relative path without `..` (backslashes of names
    saved on Windows read as slashes). Not resolved: links inside the folder are followed wherever
    they point (see the module docstring). Raises UnsafePath."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafePath(f"{name!r} is not a relative path")
    name = name.replace("\\", "/")
    if name.startswith("/") or Path(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafePath(f"{name!r} is not a relative path")
    if ".." in Path(name).parts:
        raise UnsafePath(f"{name!r} leaves its folder")
    return Path(folder) / name


def walk_files(folder: Path, hidden: bool = False) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every file below `folder`, sorted by path, following links to folders
    but never into a folder that is one of its own ancestors (a link loop). Broken links are left out."""
    def walk(path: Path, rel: str, ancestors: frozenset) -> Iterator[tuple[str, Path]]:
        try:
            entries = sorted(path.iterdir())
        except OSError:
            return
        for entry in entries:
            if not hidden and entry.name.startswith("."):
                continue
            sub = f"{rel}{entry.name}"
            if entry.is_dir():
                real = os.path.realpath(entry)
                if real not in ancestors:
                    yield from walk(entry, sub + "/", ancestors | {real})
            elif entry.is_file():
                yield sub, entry

    yield from walk(Path(folder), "", frozenset({os.path.realpath(folder)}))


# --- extra_model_paths.yaml ------------------------------------------------------------------------
def read_extra_model_paths(path: str | os.PathLike) -> list[ExtraFolder]:
    """The extra folders one yaml file names, in file order. Raises ModelPathsError (one line)."""
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else \
            "it is a folder" if isinstance(exc, IsADirectoryError) else \
            "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror or str(exc)
        raise ModelPathsError(f"cannot read the extra model paths file {path}: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ModelPathsError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ModelPathsError(f"{path}: expected sections of 'kind: folder' lines (e.g. 'comfyui:'), "
                              f"found {type(data).__name__}")
    found: list[ExtraFolder] = []
    for section, entries in data.items():
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise ModelPathsError(f"{path}: section {section!r} must be a mapping of 'kind: folder' lines, "
                                  f"found {type(entries).__name__}")
        found += _section(path, str(section), entries)
    return found


def _section(path: Path, section: str, entries: dict) -> list[ExtraFolder]:
    here = path.resolve().parent
    base = entries.get("base_path")
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise ModelPathsError(f"{path}: {section}.base_path must be a folder path, found {base!r}")
        base = Path(os.path.expandvars(os.path.expanduser(base.strip())))
        base = base if base.is_absolute() else here / base
    first = entries.get("is_default", False)
    if not isinstance(first, bool):
        raise ModelPathsError(f"{path}: {section}.is_default must be true or false, found {first!r}")
    found = []
    for kind, value in entries.items():
        if kind in ("base_path", "is_default"):
            continue
        if not isinstance(value, str):
            raise ModelPathsError(f"{path}: {section}.{kind} must be a folder path (several: one per line), "
                                  f"found {type(value).__name__}")
        for line in value.splitlines():
            line = line.strip()
            if not line:
                continue
            folder = Path(os.path.expandvars(os.path.expanduser(line)))
            if not folder.is_absolute():
                folder = (base or here) / folder
            found.append(ExtraFolder(kind_of(str(kind)), Path(os.path.normpath(folder)), first))
    return found


def read_all(paths: Iterable[str | os.PathLike]) -> tuple[ExtraFolder, ...]:
    """The extra folders of several yaml files (ComfyUI's option may be given more than once)."""
    return tuple(folder for path in paths for folder in read_extra_model_paths(path))

"""Model files and folders of the models folder: found by name or by sha256, each hashed once.

A model is a file (`sd15.safetensors`) or a folder (a diffusers layout such as `tiny-sd/`). The sha256
of a file is that of its bytes; of a folder, that of the text `<sha256>  <relative path>\\n` for
each of its files in path order (the output of `sha256sum` on the sorted file list; hidden files
such as `.DS_Store` are left out). File hashes are cached on disk by path, mtime and size, so a
multi-GB checkpoint is read once, not on every load.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from .env import UnsafePath
from .model_paths import join_inside, kind_of, walk_files

log = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx")
BLOCK = 1 << 20


def looks_like_model(value: object) -> bool:
    """A string naming a model file, e.g. a widget value of a node type that is not installed."""
    return isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS) and len(value) < 1000


class ModelStore:
    """Models by name or sha256 in the models folder and the extra model folders (`extra`:
    graph.model_paths.ExtraFolder, from extra_model_paths.yaml). Links are followed wherever they point
    (graph.model_paths); names stay relative to the folder they were found in."""

    def __init__(self, models_dir: str | Path, cache_file: str | Path | None = None, extra=()):
        self.root = Path(models_dir).resolve()
        self.extra = tuple(extra)
        self.cache_file = Path(cache_file) if cache_file else None
        self._hashes: dict[str, list] | None = None  # path -> [mtime_ns, size, sha256]
        self._lock = threading.Lock()
        self.bytes_hashed = 0  # bytes actually read to hash, for tests and logs

    def _roots(self) -> list[Path]:
        roots = [self.root]
        for folder in self.extra:
            if folder.path not in roots:
                roots.append(folder.path)
        return roots

    # --- finding ------------------------------------------------------------------------------
    def path_of(self, name: str, directory: str | None = None) -> Path | None:
        """The file or folder `name` refers to: the exact relative path, else `directory/name`
        (ComfyUI's model folders, e.g. checkpoints/, and the extra folders of that kind), else the only
        entry of that name below the models folder or an extra folder."""
        name = name.replace("\\", "/")  # names saved on Windows
        try:
            folders = [self.root] + ([join_inside(self.root, directory)] if directory else [])
        except UnsafePath:
            return None
        if directory:
            folders += [f.path for f in self.extra if f.kind == kind_of(directory)]
        for folder in folders:
            try:
                path = join_inside(folder, name)
            except UnsafePath:
                return None
            if path != folder and path.exists():
                return path
        base = name.rsplit("/", 1)[-1]
        found = sorted(p for p in self._entries() if p.name == base and p.exists())
        return found[0] if found else None

    def relative_name(self, path: Path) -> str:
        """The name of a found model: relative to the models folder, else to the extra folder holding
        it (the path itself if neither: a caller's own path)."""
        for root in self._roots():
            if root == path or root in path.parents:
                return path.relative_to(root).as_posix()
        return Path(path).as_posix()

    def find_by_sha256(self, sha256: str) -> Path | None:
        """The model whose content has this sha256: the top-level entries, then model files below."""
        tops = []
        for root in self._roots():
            if root.is_dir():
                tops += sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.exists())
        files = sorted(p for p in self._entries() if p.is_file() and looks_like_model(p.name) and p not in tops)
        for path in tops + files:
            try:
                if self.sha256(path) == sha256:
                    return path
            except OSError as exc:
                log.warning("cannot hash %s: %s", path, exc)
        return None

    def _entries(self, depth: int = 4):
        """Files and folders below the roots (following links, at most `depth` levels down, never twice
        into the same folder: a link loop ends there)."""
        seen = set()
        for root in self._roots():
            for folder, dirs, files in os.walk(root, followlinks=True):
                rel = Path(folder).relative_to(root)
                real = os.path.realpath(folder)
                if real in seen or len(rel.parts) >= depth:
                    dirs[:] = []
                    continue
                seen.add(real)
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in dirs + sorted(f for f in files if not f.startswith(".")):
                    yield Path(folder) / name

    # --- hashing ------------------------------------------------------------------------------
    def sha256(self, path: str | Path) -> str:
        """The sha256 of a model file or folder (see the module docstring)."""
        path = Path(path)
        if path.is_dir():
            lines = [f"{self._file_sha256(file)}  {rel}\n" for rel, file in walk_files(path)]
            return hashlib.sha256("".join(sorted(lines, key=lambda s: s[66:])).encode()).hexdigest()
        return self._file_sha256(path)

    def _file_sha256(self, path: Path) -> str:
        key, stat = str(path.resolve()), path.stat()
        with self._lock:
            cached = self._cache().get(key)
        if cached and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
            return cached[2]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(BLOCK):
                digest.update(block)
        self.bytes_hashed += stat.st_size
        with self._lock:
            self._cache()[key] = [stat.st_mtime_ns, stat.st_size, digest.hexdigest()]
            self._save()
        return digest.hexdigest()

    def _cache(self) -> dict:
        if self._hashes is None:
            self._hashes = {}
            if self.cache_file and self.cache_file.is_file():
                try:
                    data = json.loads(self.cache_file.read_text(encoding="utf-8"))
                    self._hashes = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 3}
                except (OSError, ValueError, AttributeError) as exc:
                    log.warning("ignoring the model hash cache %s: %s", self.cache_file, exc)
        return self._hashes

    def _save(self) -> None:
        if not self.cache_file:
            return
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_name(self.cache_file.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._hashes), encoding="utf-8")
            os.replace(tmp, self.cache_file)
        except OSError as exc:  # a read-only data folder only costs re-hashing later
            log.warning("cannot write the model hash cache %s: %s", self.cache_file, exc)

"""The environment nodes run in: data folders, device and dtype choices."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FOLDER_KINDS = ("input", "output", "temp")


@dataclass(frozen=True)
class Speed:
    """How a loaded UNet is prepared for speed (nodes.loading.speed). None: on for CUDA in half precision
    (float16/bfloat16), off elsewhere, so CPU and float32 results stay exactly diffusers'."""
    compile: bool = False  # torch.compile the UNet (slow first run per shape)
    channels_last: bool | None = None
    cudnn_benchmark: bool | None = None


class UnsafePath(ValueError):
    """A requested file lies outside the folder it must be in."""


@dataclass
class Env:
    data_dir: Path
    models_dir: Path
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    device: str = "auto"  # auto: cuda when present, else cpu
    dtype: str = "auto"  # auto: float16 on cuda, float32 on cpu
    speed: Speed = field(default_factory=Speed)
    extras: dict = field(default_factory=dict)
    # more folders per kind of model, from ComfyUI's extra_model_paths.yaml (graph.model_paths)
    extra_model_folders: tuple = ()

    @classmethod
    def from_data_dir(cls, data_dir: str | Path, models_dir: str | Path | None = None,
                      extra_model_paths=(), **kwargs) -> "Env":
        """`extra_model_paths`: ComfyUI extra_model_paths.yaml files (raises ModelPathsError for a bad one)."""
        from .model_paths import read_all

        data = Path(data_dir).expanduser().resolve()
        if extra_model_paths:
            kwargs["extra_model_folders"] = tuple(kwargs.get("extra_model_folders", ())) + read_all(extra_model_paths)
        env = cls(data_dir=data, models_dir=Path(models_dir).expanduser().resolve() if models_dir else data / "models",
                  input_dir=data / "input", output_dir=data / "output", temp_dir=data / "temp", **kwargs)
        for folder in (env.models_dir, env.input_dir, env.output_dir, env.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return env

    def model_folders(self, kind: str) -> list[Path]:
        """The folders holding models of `kind` (ComfyUI's name: checkpoints, loras, vae, ...), in
        search order: the models folder's own and the extra ones (graph.model_paths.kind_folders)."""
        from .model_paths import kind_folders

        return kind_folders(self.models_dir, kind, self.extra_model_folders)

    def folder(self, kind: str) -> Path:
        if kind not in FOLDER_KINDS:
            raise UnsafePath(f"unknown folder type {kind!r}: expected one of {', '.join(FOLDER_KINDS)}")
        return getattr(self, f"{kind}_dir")

    def safe_path(self, kind: str, filename: str, subfolder: str = "") -> Path:
        """The path of `subfolder/filename` inside folder `kind`, refusing anything that resolves outside
        it: `..`, absolute paths, and symlinks that point elsewhere."""
        return safe_join(self.folder(kind), subfolder, filename)


def safe_join(root: Path, *parts: str) -> Path:
    root = Path(root).resolve()
    for part in parts:
        if not isinstance(part, str) or "\x00" in part or Path(part).is_absolute() or part.startswith(("/", "\\")):
            raise UnsafePath(f"{part!r} is not a relative path")
        if ".." in Path(part.replace("\\", "/")).parts:
            raise UnsafePath(f"{part!r} leaves its folder")
    path = root.joinpath(*[p for p in parts if p]).resolve()
    if path != root and root not in path.parents:
        raise UnsafePath("the path resolves outside its folder")
    return path

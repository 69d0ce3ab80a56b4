"""Where Loom's own files are, in a checkout and in an installed wheel, and the default data folder.

In a checkout the editor is `web/` beside the packages, the example workflows `workflows/`; the wheel
carries them as `loomserver/web` and `loomserver/workflows` (see setup.py). The default data folder is `./data` of the current directory when Loom runs from a
checkout (or is started inside one), and the per-user data folder otherwise (`~/.local/share/loom`
on Linux): never inside the installed packages.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE.parent  # the checkout, or site-packages when installed
APP_NAME = "loom"


def is_checkout(folder: Path | None = None) -> bool:
    """A Loom source tree (not an installed copy): its project file sits beside the packages."""
    folder = SOURCE_ROOT if folder is None else folder
    return (folder / "pyproject.toml").is_file() and (folder / "loomserver").is_dir() and (folder / "web").is_dir()


def _shipped(name: str) -> Path:
    """A folder the wheel carries inside this package (see setup.py) and a checkout has at its root."""
    installed = PACKAGE / name
    return installed if installed.is_dir() else SOURCE_ROOT / name


def editor_dir() -> Path:
    return _shipped("web")


def workflows_dir() -> Path:
    """The example workflows (`workflows/` of a checkout)."""
    return _shipped("workflows")


def example_names() -> list[str]:
    """The shipped example workflows by name: `shapes`, `txt2img`, `tutorial/cfg_sweep`, ..."""
    folder = workflows_dir()
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.json"))


def shipped_workflow(name: str) -> Path | None:
    """The shipped example `name` names (`shapes`, `shapes.json`, `workflows/shapes.json`), or None:
    an installed Loom has no `workflows/` in the current directory, so `loom run shapes` finds it here."""
    name = name.replace("\\", "/").removeprefix("./").removeprefix("workflows/")
    folder = workflows_dir().resolve()
    for candidate in (folder / name, folder / f"{name}.json"):
        candidate = candidate.resolve()
        if candidate.is_file() and candidate.suffix == ".json" and candidate.is_relative_to(folder):
            return candidate
    return None


def default_data_dir(cwd: Path | None = None) -> Path:
    cwd = Path.cwd() if cwd is None else cwd
    if is_checkout() or is_checkout(cwd):
        return cwd / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))

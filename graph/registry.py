"""Finds node classes in packages (e.g. `nodes`) and in an optional custom-nodes folder."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable

from .node import Node

log = logging.getLogger(__name__)


class Registry:
    def __init__(self, classes: Iterable[type[Node]] = ()):
        self._nodes: dict[str, type[Node]] = {}
        self.load_errors: dict[str, str] = {}  # module -> message, for custom nodes that failed
        for cls in classes:
            self.add(cls)

    def add(self, cls: type[Node]) -> None:
        name = cls.type_name()
        if name in self._nodes and self._nodes[name] is not cls:
            raise ValueError(f"two nodes are named {name}: {self._nodes[name].__module__} and {cls.__module__}")
        self._nodes[name] = cls

    def add_module(self, module: ModuleType) -> None:
        """Register every Node subclass defined in `module` (not those it imports)."""
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Node) and value is not Node \
                    and value.__module__ == module.__name__ and not value.__name__.startswith("_"):
                self.add(value)

    def add_package(self, package: str) -> None:
        """Import `package` and all its submodules, registering their nodes."""
        pkg = importlib.import_module(package)
        self.add_module(pkg)
        for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=package + "."):
            self.add_module(importlib.import_module(info.name))

    def add_folder(self, folder: str | Path) -> None:
        """Load each `*.py` file or package in a custom-nodes folder; one broken file does not stop the rest."""
        folder = Path(folder)
        if not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            if path.name.startswith(("_", ".")):
                continue
            target = path / "__init__.py" if path.is_dir() else path
            if target.suffix != ".py" or not target.is_file():
                continue
            name = f"loom_custom_nodes.{path.stem}"
            try:
                spec = importlib.util.spec_from_file_location(
                    name, target, submodule_search_locations=[str(path)] if path.is_dir() else None)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
                self.add_module(module)
            except Exception as exc:  # a custom node must not take the server down
                self.load_errors[str(path)] = f"{type(exc).__name__}: {exc}"
                log.warning("custom nodes %s failed to load: %s", path, exc)

    def get(self, name: str) -> type[Node] | None:
        return self._nodes.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._nodes

    def __getitem__(self, name: str) -> type[Node]:
        return self._nodes[name]

    def names(self) -> list[str]:
        return sorted(self._nodes)

    def object_info(self, env=None) -> dict:
        return {name: self._nodes[name].object_info(env) for name in self.names()}

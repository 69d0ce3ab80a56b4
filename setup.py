"""What pyproject.toml cannot say: which files the packages carry.

The editor (web/), the example workflows (workflows/) and the shipped models (assets/) stay where they
are in the checkout and are mapped into the wheel as `loomserver/web`, `loomserver/workflows` and
`nodes/assets`, found at run time by loomserver.paths and nodes.common.asset_dir. The editor's node-graph library is an npm package (web/node_modules, installed
by setup.sh); a build without it runs `npm ci` first, so a wheel never lacks the editor.
"""
import shutil
import subprocess
from pathlib import Path

from setuptools import find_namespace_packages, find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
EDITOR_LIBRARY = ROOT / "web" / "node_modules" / "@comfyorg" / "litegraph" / "dist" / "litegraph.es.js"


def ensure_editor_library() -> None:
    if EDITOR_LIBRARY.is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("building Loom needs the editor's library (web/node_modules): install Node.js and npm, "
                         "or run `npm ci` in web/ first")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ROOT / "web", check=True)


def data_packages(package: str, folder: str) -> list[str]:
    """`package` and its sub-folders as (namespace) packages: setuptools wants every folder that
    carries data files to be a listed package."""
    return [package] + [f"{package}.{name}" for name in find_namespace_packages(where=str(ROOT / folder))]


DATA_FOLDERS = {"loomserver.web": "web", "loomserver.workflows": "workflows", "nodes.assets": "assets"}


class BuildPy(build_py):
    def run(self):
        if not self.editable_mode:  # build/lib is reused between builds: a file removed here must not linger
            shutil.rmtree(self.build_lib, ignore_errors=True)
        super().run()


# Before the package list is made: the library's folders are data packages of loomserver.web, and a
# list made while they were missing leaves them out (setuptools then warns that they are absent).
ensure_editor_library()
setup(
    packages=find_packages(include=["graph", "graph.*", "loomqueue", "loomqueue.*", "nodes", "nodes.*", "loomserver",
                            "loomserver.*"])
    + [name for package, folder in DATA_FOLDERS.items() for name in data_packages(package, folder)],
    package_dir=DATA_FOLDERS,
    package_data={
        "graph": ["*.json"],  # the workflow file schema
        "loomserver.web": ["**/*"],
        # the example workflows (ComfyUI's template browser lists them) and any thumbnail saved beside one
        "loomserver.workflows": ["**/*.json", "**/*.jpg", "**/*.png", "**/*.webp"],
        "nodes.assets": ["**/*"],
    },
    # Only what the page loads (and the library's licence) goes into the wheel.
    exclude_package_data={"loomserver.web": ["node_modules/**/*.map", "node_modules/**/*.d.ts",
                                             "node_modules/**/*.umd.js", "node_modules/**/README.md",
                                             "node_modules/.package-lock.json"]},
    cmdclass={"build_py": BuildPy},
)

"""The wheel as a user gets it: built from this checkout, installed into a fresh virtualenv outside it,
and `loom serve` started from an empty folder: the editor and its library are served, txt2img and the
class grid run through the API, and nothing is written inside the installed packages.

Installing torch and the rest into a fresh venv costs minutes here, so the fast test links the
dependencies the wheel declares (and only those, with their own dependencies) from this environment
into the new venv; a dependency the wheel forgot to declare is missing there. The slow test installs
the wheel with pip and its dependencies resolved from the package index, as a user would.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.server_harness import ROOT

LIBRARY = "node_modules/@comfyorg/litegraph/dist/litegraph.es.js"


def build_wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, cwd=out, capture_output=True)
    (wheel,) = out.glob("loom_diffusion-*.whl")
    return wheel


def declared_closure(wheel: Path) -> list[md.Distribution]:
    """The installed distributions the wheel requires, with what they require in turn (no extras)."""
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    todo = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    seen: dict[str, md.Distribution] = {}
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        dist = md.distribution(req.name)
        assert req.specifier.contains(dist.version, prereleases=True), f"{req} is not met here: {dist.version}"
        seen[name] = dist
        todo += dist.requires or []
    return list(seen.values())


def link_dependencies(dists: list[md.Distribution], layer: Path, venv_site: Path) -> None:
    """Symlink each distribution's top-level files into `layer`, put `layer` on the venv's path."""
    layer.mkdir()
    for dist in dists:
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (layer / top).exists():
                (layer / top).symlink_to(site / top)
    (venv_site / "_loom_test_dependencies.pth").write_text(f"{layer}\n")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def fresh_venv(path: Path) -> tuple[Path, Path]:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    return python, Path(purelib)


def user_env(home: Path) -> dict:
    """A user's environment: no PYTHONPATH into the checkout, their own data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LOOM_"))}
    return {**env, "XDG_DATA_HOME": str(home / "xdg-data"), "HOME": str(home)}


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()


def post_json(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def wait_history(url: str, prompt_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = json.loads(get(f"{url}/history/{prompt_id}")[1])
        if prompt_id in history:
            return history[prompt_id]
        time.sleep(0.2)
    raise TimeoutError(prompt_id)


def small_class_grid() -> dict:
    """workflows/class_grid.json with one sample per class and 10 steps (the same nodes, less work)."""
    wf = json.loads((ROOT / "workflows" / "class_grid.json").read_text())
    sampler = next(n for n in wf["nodes"] if n["type"] == "ClassConditionalSampler")
    sampler["widgets_values"][1] = 1  # count
    sampler["widgets_values"][5] = 10  # steps
    return wf


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """(venv python, its site-packages, the user's home) with the wheel installed and the declared
    dependencies linked in."""
    base = tmp_path_factory.mktemp("wheel")
    python, site = fresh_venv(base / "venv")
    link_dependencies(declared_closure(wheel), base / "deps", site)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    home = base / "home"
    home.mkdir()
    return python, site, home


def test_wheel_carries_the_editor_the_assets_and_the_schema(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ["loomserver/web/index.html", "loomserver/web/js/app.js", f"loomserver/web/{LIBRARY}",
                 "loomserver/web/node_modules/@comfyorg/litegraph/dist/css/litegraph.css",
                 "loomserver/web/node_modules/@comfyorg/litegraph/LICENSE", "graph/workflow.schema.json"]:
        assert path in names, path
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "assets").rglob("*") if p.is_file()}
    assert shipped and {"nodes/" + p for p in shipped} <= names  # every shipped model file, whatever its folder
    examples = {p.relative_to(ROOT).as_posix() for p in (ROOT / "workflows").rglob("*.json")}
    assert examples and {"loomserver/" + p for p in examples} <= names
    assert not any(n.endswith((".map", ".d.ts")) or n.startswith(("tests/", "server.py")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "loom = loomserver.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_loom_serves_the_editor_and_runs_workflows(installed, tmp_path):
    python, site, home = installed
    loom = python.parent / "loom"
    where = subprocess.run([str(python), "-c", "import loomserver, nodes; print(loomserver.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=user_env(home))
    assert Path(where.stdout.strip()).is_relative_to(site), where  # the wheel's copy, not the checkout's
    before = snapshot(site)
    cwd = tmp_path / "empty"
    cwd.mkdir()
    # File problems are reported before anything heavy loads, with exit status 2.
    done = subprocess.run([str(loom), "run", "missing.json"], cwd=cwd, env=user_env(home), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "missing.json" in done.stderr

    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen([str(loom), "serve", "--port", "0"], cwd=cwd, env=user_env(home), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        url = data_dir = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not data_dir:
            assert proc.poll() is None, Path(log.name).read_text()
            for line in Path(log.name).read_text().splitlines():
                url = line.split()[-1] if line.startswith("Loom listening on ") else url
                data_dir = Path(line.split(": ", 1)[1]) if line.startswith("data folder: ") else data_dir
            time.sleep(0.1)
        assert data_dir == home / "xdg-data" / "loom", Path(log.name).read_text()  # the per-user folder

        deadline = time.monotonic() + 300  # torch and the nodes load (slow only on a crowded machine)
        while not json.loads(get(url + "/system_stats")[1])["loom"]["ready"]:
            assert time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.2)
        status, page = get(url + "/")
        assert status == 200 and b"litegraph" in page
        status, library = get(f"{url}/{LIBRARY}")
        assert status == 200 and library == (ROOT / "web" / LIBRARY).read_bytes()

        txt2img = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
        for workflow, prefix in ((txt2img, "txt2img"), (small_class_grid(), "classcond/class_grid")):
            prompt_id = post_json(url + "/prompt", {"prompt": workflow})["prompt_id"]
            entry = wait_history(url, prompt_id)
            assert entry["status"]["status_str"] == "success", entry["status"]
            (image,) = [i for out in entry["outputs"].values() for i in out.get("images", [])]
            assert f"{image['subfolder']}/{image['filename']}".strip("/").startswith(prefix)
            status, png = get(f"{url}/view?filename={image['filename']}&subfolder={image['subfolder']}&type=output")
            assert status == 200 and png.startswith(b"\x89PNG")
            assert (data_dir / "output" / image["subfolder"] / image["filename"]).is_file()
        assert (data_dir / "models" / "tiny-sd" / "model_index.json").is_file()  # the demo model, written there
    finally:
        proc.terminate()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    output = Path(log.name).read_text()
    assert proc.returncode == 0, output
    assert "warn" not in output.lower(), output  # e.g. diffusers' "install accelerate" warning
    assert list(cwd.iterdir()) == []  # an installed Loom keeps nothing in the current directory
    assert snapshot(site) == before  # nor in its packages


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_wheel_installs_with_its_dependencies_from_the_index(wheel, tmp_path):
    """pip resolves and installs every dependency into a fresh venv (minutes: the timing is printed)."""
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    start = time.monotonic()
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True)
    print(f"pip install of the wheel and its dependencies: {time.monotonic() - start:.0f} s")
    subprocess.run([str(python), "-m", "pip", "check"], check=True)
    home = tmp_path / "home"
    home.mkdir()
    done = subprocess.run([str(tmp_path / "venv" / "bin" / "loom"), "run", str(ROOT / "workflows" / "txt2img.json")],
                          cwd=home, env=user_env(home), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.split()[-1]).is_relative_to(home / "xdg-data" / "loom")
    assert "accelerate" not in done.stderr and "warn" not in done.stderr.lower(), done.stderr

"""README's "Python API" example runs as written, in a fresh folder: graph.Loom opens a data folder as
the server does (subfolders, the demo model) and the example makes its image."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.server_harness import ROOT


def readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path):
    (tmp_path / "workflows").mkdir()
    shutil.copy(ROOT / "workflows" / "txt2img.json", tmp_path / "workflows")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True [PosixPath(") and "txt2img_00001_.png" in done.stdout, done.stdout
    assert (tmp_path / "data" / "output" / "txt2img_00001_.png").is_file()
    assert (tmp_path / "data" / "models" / "tiny-sd" / "model_index.json").is_file()  # written as the server does


def test_loom_says_what_it_takes():
    import graph

    with pytest.raises(TypeError, match="a data folder .* or a graph.Env"):
        graph.Loom({"data": 1}, packages=())

"""`python server.py run WORKFLOW.json`: headless, a progress bar, prints where the images went."""
import json
import subprocess
import sys

from PIL import Image

from tests.server_harness import ROOT, TEST_NODES, picture_editor, picture_prompt


def run_cli(tmp_path, workflow, *extra):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow) if not isinstance(workflow, str) else workflow)
    return subprocess.run([sys.executable, str(ROOT / "server.py"), "--data-dir", str(tmp_path / "data"),
                           "--custom-nodes", str(TEST_NODES), "--no-builtin-nodes", "run", str(path), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_run_prints_the_images_and_draws_a_bar(tmp_path):
    out = tmp_path / "out"
    done = run_cli(tmp_path, picture_editor(seed=4, steps=6), "--out", str(out))
    assert done.returncode == 0, done.stderr
    paths = done.stdout.split()
    assert len(paths) == 1 and paths[0].startswith(str(out))
    png = Image.open(paths[0])
    assert json.loads(png.text["workflow"])["nodes"][1]["widgets_values"][0] == 4
    assert "#2 Noise" in done.stderr and "6/6" in done.stderr  # the tqdm bar of the stepping node


def test_run_reports_bad_workflows(tmp_path):
    bad = picture_prompt()
    bad["2"]["inputs"]["steps"] = 0
    done = run_cli(tmp_path, bad)
    assert done.returncode == 2 and "steps" in done.stderr and "#2" in done.stderr
    done = run_cli(tmp_path, "{oops")
    assert done.returncode == 2 and "cannot read" in done.stderr

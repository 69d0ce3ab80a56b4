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


def cli(*args, cwd=ROOT, env=None, timeout=60):
    return subprocess.run([sys.executable, str(ROOT / "server.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_options_go_before_or_after_the_command(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(picture_prompt(steps=2)))
    done = cli("run", str(path), "--data-dir", str(tmp_path / "data"), "--custom-nodes", str(TEST_NODES),
               "--no-builtin-nodes", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0].startswith(str(tmp_path / "out"))
    # a value after the command wins over one before it
    done = cli("--data-dir", str(tmp_path / "ignored"), "run", str(path), "--data-dir", str(tmp_path / "data"),
               "--custom-nodes", str(TEST_NODES), "--no-builtin-nodes")
    assert done.returncode == 0 and done.stdout.startswith(str(tmp_path / "data" / "output")), done.stderr
    assert not (tmp_path / "ignored").exists()


def test_mistakes_are_reported_before_torch_loads(tmp_path):
    """A `torch` that cannot be imported proves nothing heavy loads before these answers."""
    poisoned = tmp_path / "poisoned"
    (poisoned / "torch").mkdir(parents=True)
    (poisoned / "torch" / "__init__.py").write_text("raise ImportError('torch was imported')\n")
    env = {**__import__("os").environ, "PYTHONPATH": f"{poisoned}:{ROOT}"}
    (tmp_path / "bad.json").write_text("{oops")
    (tmp_path / "bad-shape.json").write_text(json.dumps({"nodes": 3, "links": []}))
    cases = [
        (["run", str(tmp_path / "missing.json")], "missing.json: no such file"),
        (["workflow", "check", str(tmp_path / "bad.json")], "neither JSON nor a PNG"),
        (["workflow", "check", str(tmp_path / "bad-shape.json")], "at nodes: 3 is not of type 'array'"),
        (["run", str(tmp_path / "bad.json"), "--device", "gpu"], "--device 'gpu': expected auto, cpu, cuda"),
        (["serve", "--dtype", "half"], "--dtype 'half': expected one of auto, float32"),
        (["run", str(tmp_path / "bad.json"), "--threads", "0"], "--threads 0: give at least 1"),
    ]
    for args, message in cases:
        done = cli("--data-dir", str(tmp_path / "data"), *args, env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: ") and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and "torch was imported" not in done.stderr


def test_device_cuda_without_cuda_is_refused_at_start(tmp_path):
    import torch

    if torch.cuda.is_available():
        return  # nothing to refuse on a CUDA machine
    done = cli("--data-dir", str(tmp_path / "data"), "run", str(ROOT / "workflows" / "txt2img.json"),
               "--device", "cuda", timeout=180)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--device cuda: this machine has no CUDA device" in done.stderr
    assert not (tmp_path / "data" / "models").exists()  # refused before the data folder was touched


def test_a_busy_port_is_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), "--no-builtin-nodes")
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr == (f"error: port {port} on 127.0.0.1 is in use (another Loom server or program): "
                           f"choose another with --port, or --port 0 for any free one\n")


def test_default_data_folder(tmp_path, monkeypatch):
    from loomserver import paths

    checkout = tmp_path / "checkout"
    for name in ("loomserver", "web"):
        (checkout / name).mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    assert paths.default_data_dir(tmp_path) == tmp_path / "data"  # this test runs from a checkout
    monkeypatch.setattr(paths, "SOURCE_ROOT", tmp_path / "site-packages")  # as installed
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.default_data_dir(tmp_path) == tmp_path / "xdg" / "loom"
    assert paths.default_data_dir(checkout) == checkout / "data"  # started inside a checkout


def test_a_misspelt_option_is_named_with_the_closest_one(tmp_path):
    """One line naming the option as typed (not the workflow path after its would-be value), the
    closest known name, and no option is taken for another by abbreviation."""
    for args, message in [
        (["run", "--outt", "x", "wf.json"], "error: unknown option --outt; did you mean --out?"),
        (["--prot", "5"], "error: unknown option --prot; did you mean --port?"),
        (["run", "wf.json", "--dtyp=float32"], "error: unknown option --dtyp; did you mean --dtype?"),
        (["serve", "--por", "0"], "error: unknown option --por; did you mean --port?"),  # no abbreviations
        (["run", "wf.json", "--zzzzzz"], "error: unknown option --zzzzzz (see"),
    ]:
        done = cli("--data-dir", str(tmp_path / "data"), *args)
        assert done.returncode == 2 and done.stderr.startswith(message), (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "usage:" not in done.stderr, done.stderr


def test_a_shipped_example_runs_by_name(tmp_path):
    """An installed Loom has no workflows/ in the current folder: `loom run NAME` finds the shipped
    example; an unknown name lists them. (Checked with --no-builtin-nodes: the file is found and read,
    then refused for its node types, before any model loads.)"""
    from loomserver.paths import example_names, shipped_workflow

    assert {"shapes", "txt2img", "tutorial/cfg_sweep"} <= set(example_names())
    for name in ("shapes", "shapes.json", "workflows/shapes.json"):
        assert shipped_workflow(name) == (ROOT / "workflows" / "shapes.json").resolve()
    assert shipped_workflow("../pyproject.toml") is None and shipped_workflow("nothere") is None
    done = cli("--data-dir", str(tmp_path / "data"), "--no-builtin-nodes", "run", "shapes", cwd=tmp_path)
    assert "the shipped example" in done.stderr and "LoadCheckpoint" in done.stderr, done.stderr
    done = cli("--data-dir", str(tmp_path / "data"), "run", "nothere", cwd=tmp_path)
    assert done.returncode == 2 and "cannot read nothere: no such file, nor a shipped example" in done.stderr
    assert "shapes, step_by_step" in done.stderr and "txt2img" in done.stderr

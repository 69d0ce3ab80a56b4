"""bench/gpu.py --tiny on the CPU: the GPU benchmark's code runs end to end here, so a GPU session
spends its minutes measuring, not debugging. Its figures only mean something on CUDA."""
import importlib.util
import subprocess
import sys

import pytest
import torch

from tests._sd import ROOT


def load_bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_tiny_run_measures_and_matches_the_pipeline(capsys, monkeypatch):
    import nodes.loading.speed

    monkeypatch.setattr(nodes.loading.speed, "COMPILE_OPTIONS", nodes.loading.speed.COMPILE_OPTIONS)  # main() changes it
    threads = torch.get_num_threads()
    try:
        rc = load_bench(monkeypatch).main(["--tiny", "--device", "cpu", "--sections", "pipeline,loom,rerun,parity,memory",
                                "--batches", "1,2"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "pipeline: torch.float32, attention ['AttnProcessor2_0']" in out
    assert "loom: float32, attention ['AttnProcessor2_0']" in out
    for label in ("plain", "+channels_last", "+cudnn_benchmark", "default"):
        for batch in (1, 2):
            assert f"loom {label:<20} batch {batch}:" in out
    assert "ran nodes ['7', '8', '9'], cached ['1', '2', '3', '4', '5', '6']" in out
    assert "parity float32 Loom default                vs pipeline: pixels max abs 0, latents max abs 0 " in out
    assert "memory: needs CUDA" in out


@pytest.mark.slow
@pytest.mark.timeout(1500)  # minutes on a busy 2-core machine: two cold starts and a compile
def test_the_whole_tiny_run_in_a_fresh_process():
    """Every section, the compile setting and the cold starts (fresh processes) included."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--device", "cpu"],
                          capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loom default+compile" in done.stdout and done.stdout.count("cold start to first image") == 2

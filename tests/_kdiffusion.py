"""k-diffusion's samplers (the PyPI package, installed by `setup.sh --test` into .test-deps with
--no-deps) as a reference. Only its `sampling` module is loaded, by file path, beside a stub of the
one `utils` function it uses: the package's __init__ imports torchvision and more, which do not load
beside the CPU torch here."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

VERSION = "0.1.1.post1"
ROOT = Path(__file__).resolve().parent.parent / ".test-deps" / f"k-diffusion-{VERSION}" / "k_diffusion"


def load_sampling():
    """k_diffusion.sampling, or a failed test saying how to install it."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    path = ROOT / "sampling.py"
    if not path.exists():
        pytest.fail(f"k-diffusion {VERSION} is not in {ROOT.parent}: run `./setup.sh --test`")
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(ROOT)]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    package.utils = utils
    sys.modules.update({"k_diffusion": package, "k_diffusion.utils": utils})
    spec = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["k_diffusion.sampling"] = module
    spec.loader.exec_module(module)
    return module

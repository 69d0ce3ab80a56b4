"""The engine factory: a `graph.Loom` with Loom's nodes, as the server, the command line and the Ray
workers all make it. It lives here, below `server.py` and beside the Ray actor, so that nothing
imports the command line."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("loom")


def make_loom(options: Any, env=None, output_dir: str | None = None):
    """The engine with every node loaded; with an empty models folder, the demo model is written first.

    `options` has the attributes of the command line's engine options: data_dir and models_dir (when
    no `env` is given), device, dtype, custom_nodes, builtin_nodes, cache_bytes, verbose_errors."""
    from graph import Env, Loom

    if env is None:
        env = Env.from_data_dir(options.data_dir, options.models_dir, device=options.device, dtype=options.dtype)
    if output_dir:
        env.output_dir = Path(output_dir).resolve()
        env.output_dir.mkdir(parents=True, exist_ok=True)
    packages = ("nodes",) if getattr(options, "builtin_nodes", True) else ()
    if packages:
        ensure_demo_model(env.models_dir)
    return Loom(env, packages=packages, custom_nodes=getattr(options, "custom_nodes", None),
                cache_bytes=getattr(options, "cache_bytes", None),
                verbose_errors=getattr(options, "verbose_errors", False))


def ensure_demo_model(models_dir: Path) -> None:
    """A models folder that holds no model gets the trained shapes model (`shapes64`, first in the
    model lists) and the random `tiny-sd` (small and fast: the example workflows and tests use it)."""
    try:
        from nodes.textcond.model import install_shipped
        from nodes.tiny_model import TINY_NAME, has_models, write_tiny_model
    except ImportError:  # built without the SD nodes
        return
    if has_models(models_dir):
        return
    install_shipped(models_dir)
    write_tiny_model(Path(models_dir) / TINY_NAME)
    log.info("the models folder held no model: wrote the demo models")

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

    `options` has the attributes of the command line's engine options: data_dir, models_dir and
    extra_model_paths_config (when no `env` is given), device, dtype, custom_nodes, builtin_nodes,
    cache_bytes, verbose_errors, and optionally vram_bytes and compile."""
    from dataclasses import replace

    from graph import Env, Loom

    if env is None:
        env = Env.from_data_dir(options.data_dir, options.models_dir, device=options.device, dtype=options.dtype,
                                extra_model_paths=getattr(options, "extra_model_paths_config", None) or ())
    if getattr(options, "compile", False):
        env.speed = replace(env.speed, compile=True)
    if output_dir:
        env.output_dir = Path(output_dir).resolve()
        env.output_dir.mkdir(parents=True, exist_ok=True)
    packages = ("nodes",) if getattr(options, "builtin_nodes", True) else ()
    placement = None
    if packages:
        from nodes.loading.placement import placement_for

        ensure_demo_model(env.models_dir)
        placement = placement_for(env)  # None on the CPU: nothing to move
        if placement is None and getattr(options, "vram_bytes", None) is not None:
            log.info("--vram-bytes has no effect on the CPU: the cache budget (--cache-bytes) covers it")
    return Loom(env, packages=packages, custom_nodes=getattr(options, "custom_nodes", None),
                cache_bytes=getattr(options, "cache_bytes", None),
                verbose_errors=getattr(options, "verbose_errors", False),
                placement=placement, vram_bytes=getattr(options, "vram_bytes", None))


def ensure_demo_model(models_dir: Path) -> None:
    """The built-in model in an empty models folder, as `graph.Loom(DATA_DIR)` writes it too."""
    try:
        from nodes import prepare_models
    except ImportError:  # built without the SD nodes
        return
    prepare_models(models_dir)

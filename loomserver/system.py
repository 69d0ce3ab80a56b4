"""What /system_stats and /models report: versions, memory, devices, readiness, checkpoints."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def system_stats(worker, ready: bool, uptime: float, queue: dict | None = None) -> dict:
    """ComfyUI's /system_stats plus a `loom` section. Touches torch only once the worker has
    imported it (never from the event loop while the import runs). `queue`: {remaining, counters}
    from the store (its counters, e.g. lost_attempts, are kept across restarts)."""
    page = os.sysconf("SC_PAGE_SIZE")
    ram_total, ram_free = page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    torch = sys.modules.get("torch") if ready else None
    devices = [{"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total, "vram_free": ram_free,
                "torch_vram_total": 0, "torch_vram_free": 0}]
    if torch is not None and torch.cuda.is_available():
        devices = [cuda_device(torch, i) for i in range(torch.cuda.device_count())]
    memory = getattr(worker.loom.executor, "memory", None) if ready else None
    loom = {"ready": ready, "load_error": worker.load_error if worker else None, "uptime_s": round(uptime, 3),
            "cache": worker.loom.executor.cache.stats() if ready else None,
            "device_memory": memory.stats() if memory is not None else None}
    if queue is not None:
        loom["queue"] = queue
    if hasattr(worker, "workers"):  # Ray: each worker's device, loaded models and current prompt
        loom["workers"] = worker.workers((queue or {}).get("counters", {}))
    return {"system": {"os": sys.platform, "python_version": sys.version, "embedded_python": False,
                       "ram_total": ram_total, "ram_free": ram_free, "comfyui_version": "loom-0.1.0",
                       "pytorch_version": getattr(torch, "__version__", None), "argv": sys.argv},
            "devices": devices, "loom": loom}


def cuda_device(torch, i: int) -> dict:
    free, total = torch.cuda.mem_get_info(i)
    reserved, allocated = torch.cuda.memory_reserved(i), torch.cuda.memory_allocated(i)
    return {"name": torch.cuda.get_device_name(i), "type": "cuda", "index": i, "vram_total": total,
            "vram_free": free, "torch_vram_total": reserved, "torch_vram_free": reserved - allocated}


def list_checkpoints(env) -> list[str]:
    """What the SD loader lists when its nodes are loaded (extra checkpoint folders included), else the
    entries of the models folder."""
    loaders = sys.modules.get("nodes.loading.loaders")
    if loaders is not None and hasattr(loaders, "checkpoint_choices"):
        return list(loaders.checkpoint_choices(env))
    models_dir = Path(env.models_dir)
    return sorted(p.name for p in models_dir.iterdir() if not p.name.startswith("."))

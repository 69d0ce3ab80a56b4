"""The Ray actor of one worker slot: its own `Loom` (loaded models, executor cache), runs one prompt
at a time with the local worker's `run_item`, and streams the events back.

Ray imports this module on the worker machines; it never imports Ray itself (the server wraps the
class with `ray.remote`). Files: the actor works in a scratch folder of its own (input, output,
temp), so it needs no shared disk; input images come with the prompt, and each image an output node
shows is sent back once, as bytes, with the `executed` event (the server writes it into its own
folders). What a prompt wrote is deleted when the prompt ends; the scratch folder itself when the
actor is closed or its process exits, and, for an actor that was killed, by the next actor started
on that machine (the folder is named after its process id).
"""
from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from argparse import Namespace
from pathlib import Path

from graph.env import Env, UnsafePath
from graph.model_paths import ExtraFolder
from loomqueue.routing import loader_key
from loomqueue.store import Item
from loomqueue.worker import preview_jpeg, run_item, wants_previews

SCRATCH = "loom-actor-"
_SCRATCH_PID = re.compile(re.escape(SCRATCH) + r"(\d+)-")


def sweep_scratch(parent: Path) -> int:
    """Remove the scratch folders in `parent` whose actor process is gone (killed, or its machine
    restarted); returns how many. Folders of living processes are left alone."""
    removed = 0
    for folder in parent.glob(SCRATCH + "*"):
        m = _SCRATCH_PID.match(folder.name)
        if m is None or not folder.is_dir():
            continue
        try:
            os.kill(int(m[1]), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except PermissionError:  # someone else's process
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


class LoomActor:
    def __init__(self, options: dict):
        """`options`: models_dir, extra_model_folders ((kind, path, first) of graph.model_paths.ExtraFolder),
        device, dtype, cache_bytes, custom_nodes, builtin_nodes, verbose_errors, threads (torch CPU threads;
        None: torch's default for the machine, as in the local mode), vram_bytes
        and compile (as the server's --vram-bytes and --compile)."""
        # Ray forces OMP_NUM_THREADS=1 on actors without CPUs; with other thread counts CPU results
        # differ from the local mode's in the last bits. Set before torch is imported.
        from graph.threads import configure_threads

        if not options.get("threads"):
            os.environ.pop("OMP_NUM_THREADS", None)
        configure_threads(options.get("threads"))  # as the local mode: passive waits, physical cores
        from .engine import make_loom

        self.instance = uuid.uuid4().hex  # a restarted actor is a new instance: its files are new
        sweep_scratch(Path(tempfile.gettempdir()))
        self.root = Path(tempfile.mkdtemp(prefix=f"{SCRATCH}{os.getpid()}-"))
        atexit.register(self.close_sync)
        extra = tuple(ExtraFolder(kind, Path(path), first)
                      for kind, path, first in options.get("extra_model_folders", ()))
        env = Env(data_dir=self.root, models_dir=Path(options["models_dir"]), input_dir=self.root / "input",
                  output_dir=self.root / "output", temp_dir=self.root / "temp", extra_model_folders=extra,
                  device=options.get("device", "auto"), dtype=options.get("dtype", "auto"))
        for folder in (env.input_dir, env.output_dir, env.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        args = Namespace(custom_nodes=options.get("custom_nodes"), cache_bytes=options.get("cache_bytes"),
                         verbose_errors=options.get("verbose_errors", False),
                         builtin_nodes=options.get("builtin_nodes", True),
                         vram_bytes=options.get("vram_bytes"), compile=options.get("compile", False))
        self.loom = make_loom(args, env)
        self.env = env
        self.interrupt_flag = threading.Event()
        self.run_lock = threading.Lock()  # a prompt and a between-prompts task never overlap
        self.current: str | None = None
        self.model_sigs: dict[str, str] = {}  # model key -> signature of its loader's cache entry
        self.loads = 0  # loader nodes executed (models loaded) by this instance
        self.runs = 0
        self.sent: set[tuple] = set()  # files already sent to the server

    def close_sync(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    async def close(self) -> None:
        """The server stops: delete the scratch folder (the process is ended by Ray next)."""
        self.close_sync()

    # --- what the server asks -------------------------------------------------------------------
    async def info(self) -> dict:
        return {"instance": self.instance, "pid": os.getpid(), "host": socket.gethostname(),
                "device": self._device(), "models": self.models(), "loads": self.loads, "runs": self.runs,
                "current": self.current, "cache": self.loom.executor.cache.stats()}

    async def interrupt(self, prompt_id: str | None = None) -> bool:
        if self.current is None or (prompt_id is not None and prompt_id != self.current):
            return False
        self.interrupt_flag.set()
        return True

    async def between_prompts(self, task) -> None:
        def locked():
            with self.run_lock:
                task(self.loom)
        await asyncio.to_thread(locked)

    async def run(self, item: dict, inputs: dict):
        """Run one prompt; yields ("event", name, data, files) for every executor event, then
        ("done", result, info). `files` maps (type, subfolder, filename) to bytes for the images
        of an `executed` event not sent before."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        self._write_inputs(inputs)
        item = Item(**item)

        def emit(event: str, data: dict) -> None:
            files = {}
            if event == "preview":
                frame = preview_jpeg(data.get("image"))
                if frame is None:
                    return
                data = {"prompt_id": data.get("prompt_id"), "node": data.get("node"), "jpeg": frame}
            elif event == "executed":
                files = self._files_of(data.get("output") or {})
            elif event == "executing" and data.get("node") is not None:
                if loader_key(item.prompt.get(data["node"], {}), self.loom.registry) is not None:
                    self.loads += 1
            loop.call_soon_threadsafe(queue.put_nowait, ("event", event, data, files))

        def work():
            try:
                with self.run_lock:
                    self.interrupt_flag.clear()
                    self.current = item.id
                    result = run_item(self.loom, item, emit, self.interrupt_flag, previews=wants_previews(item))
                    self._note_models(item.prompt)
            finally:
                self.current = None
                self.runs += 1
                self._clear_outputs()
            loop.call_soon_threadsafe(queue.put_nowait, ("done", result))

        task = loop.run_in_executor(None, work)
        while True:
            message = await queue.get()
            if message[0] == "done":
                break
            yield message
        await task
        yield ("done", message[1], await self.info())

    # --- helpers --------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """The models whose loaded form is in this actor's cache now."""
        cache = self.loom.executor.cache
        return sorted(key for key, sig in self.model_sigs.items() if sig in cache)

    def _note_models(self, prompt: dict) -> None:
        validation = self.loom.validate(prompt)
        if not validation.ok:
            return
        sigs, _ = self.loom.executor.signatures(validation.prompt, validation.order)
        for node_id in validation.order:
            key = loader_key(validation.prompt[node_id], self.loom.registry)
            if key is not None:
                self.model_sigs[key] = sigs[node_id]

    def _clear_outputs(self) -> None:
        """Files of the prompt that ended: sent to the server with their events, not needed here.
        (Names are not reused: the actor's counters live on in its data folder.)"""
        self.sent.clear()
        for folder in (self.env.output_dir, self.env.temp_dir):
            try:
                for entry in folder.iterdir():
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
            except OSError:  # e.g. the scratch folder went with close(): nothing left to clear
                pass

    def _device(self) -> str:
        common = sys.modules.get("nodes.common")  # loaded with the built-in nodes; never import torch here
        if common is None:
            return str(self.env.device)
        device = common.device_of(self.env)
        name = str(device)
        if getattr(device, "type", "") == "cuda":
            import torch

            name += f" ({torch.cuda.get_device_name(device)})"
        return name

    def _write_inputs(self, inputs: dict) -> None:
        """Input images the prompt names, written only when they differ (a rewrite would change the
        file's mtime, hence LoadImage's cache key)."""
        for name, data in inputs.items():
            try:
                path = self.env.safe_path("input", name)
            except UnsafePath:
                continue
            if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{time.monotonic_ns()}")
            tmp.write_bytes(data)
            tmp.replace(path)

    def _files_of(self, ui: dict) -> dict:
        files = {}
        for entry in ui.get("images", []):
            key = (entry.get("type", "output"), entry.get("subfolder", ""), entry.get("filename"))
            if key in self.sent:
                continue
            try:
                files[key] = self.env.safe_path(key[0], key[2], key[1]).read_bytes()
            except (OSError, UnsafePath, TypeError):
                continue
            self.sent.add(key)
        return files

"""`--ray ADDRESS`: the queue runs on Ray actors, one per worker slot, instead of the local worker.

The server stays the only owner of HTTP, the WebSocket and the SQLite queue and history. `RayPool`
offers the local `loomqueue.worker.Worker`'s interface (ready, load_error, loom, wake, interrupt,
between_prompts, stop), so the app does not care which one runs the queue. Its own thread runs an
asyncio loop that routes prompts (loomqueue.routing) to idle actors and relays their event streams;
every store query and file write of that loop runs in a helper thread, so a slow disk never holds
up the relay of another worker's events.

Failures: an actor that dies (or becomes unreachable) loses its attempt, charged by the store's one
rule (`Store.lost`, the same as a server crash): the prompt goes back to the front of the queue, at
most `--ray-attempts` attempts in all, and clients see a fresh execution_start when it runs again.
Ray restarts the actor (max_restarts=-1); tasks are never retried by Ray itself
(max_task_retries=0). An error of the workflow itself is a result, never retried. The first
completion of a prompt wins; a later one is dropped. A clean stop (SIGTERM) interrupts the running
prompts and puts them back at the front without charging the attempt.

Output files: an actor sends each new image with its `executed` event; the server writes it into
its own output (or temp) folder with the next number of its prefix (graph.filenames), so names
never clash across machines, and rewrites the file names in the events and the history.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from graph.filenames import name_counter
from loomqueue.routing import Idle, Policy, Router
from loomqueue.store import Item, Store, failed_result

from .security import is_loopback

log = logging.getLogger("loom.ray")
ROOT = Path(__file__).resolve().parent.parent
_NUMBERED = re.compile(r"^(?P<stem>.*)_(?P<n>\d{5,})_(?P<ext>\.\w+)$")
STOP_WAIT = 5.0  # seconds a clean stop waits for interrupted prompts to end before requeuing them


@dataclass
class Slot:
    """One actor and what the server knows about it."""

    index: int
    actor: Any
    alive: bool = False
    item: Item | None = None
    node: str | None = None
    models: frozenset = frozenset()
    last_used: float = 0.0
    info: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def name(self) -> str:
        return f"ray-{self.index}"


def place_file(data_dir: Path, folder: Path, name: str, data: bytes) -> str:
    """Write `data` into `folder` under a name that is not taken: `stem_NNNNN_.ext` gets the next
    number of its stem (as the savers count), any other name itself, or `base_N.ext` when taken.
    Returns the name."""
    counter = name_counter(data_dir)
    m = _NUMBERED.match(name)
    if m:
        path, f = counter.create(folder, m["stem"] + "_", "_" + m["ext"])
    else:
        folder.mkdir(parents=True, exist_ok=True)
        base, dot, ext = name.rpartition(".")
        try:
            path, f = folder / name, open(folder / name, "xb")
        except FileExistsError:
            path, f = counter.create(folder, (base or ext) + "_", dot + ext if base else "", width=1)
    with f:
        f.write(data)
    return path.name


def loopback_ray_settings(address: str) -> None:
    """Before Ray is imported: a cluster on this machine's loopback keeps this driver on loopback too
    (Ray otherwise advertises and binds the host's network address), and Ray's C++ failure-signal
    handler is left out, so SIGTERM reaches the server's own clean stop."""
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    host = address.rsplit(":", 1)[0] if ":" in address else address
    if is_loopback(host):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's switch: node address = loopback


class RayPool:
    def __init__(self, store: Store, make_loom: Callable[[], Any], relay, args, env):
        self.store, self.make_loom, self.relay, self.args, self.env = store, make_loom, relay, args, env
        self.loom = None
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.slots: list[Slot] = []
        self.policy = Policy(affinity=not getattr(args, "ray_no_affinity", False))
        self.router: Router | None = None
        self._placed: dict[tuple, dict] = {}  # (actor instance, type, subfolder, filename) -> server's entry
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._runs: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._main, name="loom-ray", daemon=True)

    # --- the Worker interface, from any thread -----------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Stop the running prompt `prompt_id`, or every running prompt when none is given."""
        hit = False
        for slot in self.slots:
            item = slot.item
            if item is not None and (prompt_id is None or item.id == prompt_id):
                slot.actor.interrupt.remote(item.id)
                hit = True
        return hit

    def between_prompts(self, task: Callable[[Any], None]) -> None:
        """Run `task(loom)` on every worker between its prompts (e.g. /free), then refresh what it holds."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._between(task), self._loop)

    async def _between(self, task) -> None:
        from ray.exceptions import RayError

        async def one(slot: Slot) -> None:
            try:
                await slot.actor.between_prompts.remote(task)
                info = await slot.actor.info.remote()
            except RayError as exc:
                log.warning("%s: the between-prompts task failed: %s", slot.name, exc)
                return
            slot.info, slot.models = info, frozenset(info["models"])
        await asyncio.gather(*(one(s) for s in self.slots if s.alive))

    def stop(self, timeout: float = STOP_WAIT + 10.0) -> None:
        self.ready.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._begin_stop)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def workers(self, counters: dict[str, int]) -> list[dict]:
        """What /system_stats lists for each worker; `counters` are the store's (kept across restarts)."""
        out = []
        for slot in self.slots:
            info = slot.info
            out.append({"name": slot.name, "alive": slot.alive, "device": info.get("device"),
                        "host": info.get("host"), "pid": info.get("pid"), "models": sorted(slot.models),
                        "model_loads": info.get("loads", 0), "runs": info.get("runs", 0),
                        "current_prompt": slot.item.id if slot.item else None, "current_node": slot.node,
                        "lost_attempts": counters.get(f"lost_attempts.{slot.name}", 0), "cache": info.get("cache"),
                        "error": slot.error})
        return out

    # --- the pool's thread ------------------------------------------------------------------------
    def _main(self) -> None:
        asyncio.run(self._amain())

    async def _amain(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        try:
            self.loom = await asyncio.to_thread(self.make_loom)  # validation and /object_info
            await asyncio.to_thread(self._connect)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("the Ray workers could not start")
            self.ready.set()
            return
        self.router = Router(self.store, self.loom.registry, self.policy)
        self.ready.set()
        watchers = [asyncio.create_task(self._watch(slot)) for slot in self.slots]
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if not self._stopping:
                try:
                    await self._route()
                except Exception:  # e.g. a full disk: keep routing, try again
                    log.exception("routing failed")
        for task in watchers:
            task.cancel()
        await self._finish_stop()

    def _connect(self) -> None:
        args = self.args
        address = args.ray
        loopback_ray_settings(address)
        import ray

        ray.init(address=address, namespace="loom",
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                     p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}})
        resource = args.ray_resource
        total = int(ray.cluster_resources().get(resource, 0))
        count = args.ray_workers or total
        if count < 1:
            raise RuntimeError(f"the Ray cluster offers no {resource!r} resource; start its nodes with "
                               f"GPUs, or with --resources='{{\"{resource}\": N}}'")
        if count > total:
            log.warning("%d workers asked, the cluster offers %d %s now; the others wait for nodes",
                        count, total, resource)
        from .ray_actor import LoomActor

        resources = {"num_gpus": 1} if resource == "GPU" else {"num_cpus": 0, "resources": {resource: 1}}
        remote = ray.remote(LoomActor).options(max_restarts=-1, max_task_retries=0, max_concurrency=16,
                                               **resources)
        # the extra model folders (extra_model_paths.yaml) travel as paths: the same on the workers, as
        # the models folder is without --ray-models-dir
        extra = [(f.kind, str(f.path), f.first) for f in self.env.extra_model_folders]
        options = {"models_dir": str(Path(args.ray_models_dir or self.env.models_dir)), "extra_model_folders": extra,
                   "device": args.device,
                   "dtype": args.dtype, "cache_bytes": args.cache_bytes, "verbose_errors": args.verbose_errors,
                   "custom_nodes": str(Path(args.custom_nodes).resolve()) if args.custom_nodes else None,
                   "builtin_nodes": getattr(args, "builtin_nodes", True), "threads": args.ray_threads,
                   "vram_bytes": getattr(args, "vram_bytes", None), "compile": getattr(args, "compile", False)}
        self.slots = [Slot(i, remote.remote(options)) for i in range(count)]
        log.info("connected to Ray at %s: %d workers on %r", address, count, resource)

    async def _watch(self, slot: Slot) -> None:
        """Wait until the actor answers (started, or restarted by Ray), then let it take prompts."""
        from ray.exceptions import RayActorError, RayError

        while not self._stopping:
            try:
                info = await slot.actor.info.remote()
            except (RayActorError, RayError) as exc:  # e.g. its constructor failed: say so once
                error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                if error != slot.error:
                    log.warning("worker %s is not available: %s", slot.name, error)
                slot.error = error
                await asyncio.sleep(1.0)
                continue
            old = slot.info.get("instance")
            if old is not None and old != info["instance"]:  # restarted: its old files are gone
                self._placed = {k: v for k, v in self._placed.items() if k[0] != old}
            slot.info, slot.models, slot.error, slot.alive = info, frozenset(info["models"]), None, True
            log.info("worker %s ready on %s (%s, pid %s)", slot.name, info["host"], info["device"], info["pid"])
            self._wake.set()
            return

    # --- routing ------------------------------------------------------------------------------------
    async def _route(self) -> None:
        """One routing pass (in a helper thread: it reads and writes the store), then start the runs."""
        idle = {s.name: s for s in self.slots if s.alive and s.item is None}
        if not idle:
            return
        views = [Idle(name, s.models, s.last_used) for name, s in idle.items()]
        for view, item in await asyncio.to_thread(self.router.route, views):
            slot = idle[view.name]
            if self._stopping or not slot.alive or slot.item is not None:  # changed during the pass
                await asyncio.to_thread(self.store.requeue, item.id)
                continue
            slot.item, slot.node, slot.last_used = item, None, time.monotonic()
            self._track(self._run(slot, item))

    def _track(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._runs.add(task)  # keep a reference until it is done
        task.add_done_callback(self._runs.discard)

    def _inputs(self, item: Item) -> dict[str, bytes]:
        """Input images the prompt names (inputs with an upload button), for actors without our disk."""
        files = {}
        for node in item.prompt.values():
            cls = self.loom.registry.get(node.get("class_type"))
            for name, inp in (cls.inputs.items() if cls else ()):
                value = node["inputs"].get(name)
                if getattr(inp, "image_upload", False) and isinstance(value, str):
                    try:
                        files[value] = self.env.safe_path("input", value).read_bytes()
                    except (OSError, ValueError):
                        pass  # the node reports the missing file
        return files

    # --- one attempt --------------------------------------------------------------------------------
    async def _run(self, slot: Slot, item: Item) -> None:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        held: list[dict] = []
        result = info = None
        log.info("prompt %s started on %s (attempt %d)", item.id, slot.name, item.attempts)
        started = time.monotonic()
        try:
            payload = {k: v for k, v in dataclasses.asdict(item).items() if k != "result"}
            stream = slot.actor.run.remote(payload, await asyncio.to_thread(self._inputs, item))
            async for ref in stream:
                message = await ref
                if message[0] == "done":
                    result, info = message[1], message[2]
                else:
                    await self._event(slot, item, held, *message[1:])
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            slot.item, slot.node = None, None
            await self._lost(slot, item, exc)
            return
        except Exception as exc:  # a bug on either side: report it, do not retry
            log.exception("prompt %s failed on %s", item.id, slot.name)
            result = failed_result(item.id, f"the worker failed: {type(exc).__name__}: {exc}", type(exc).__name__)
            self.relay(item.client_id, "execution_error", result["status"]["messages"][0][1])
            held = [{"node": None, "display_node": None, "prompt_id": item.id}]
        finally:
            if slot.item is item:
                slot.item, slot.node = None, None
            self._wake.set()
        if info is not None:
            slot.info, slot.models = info, frozenset(info["models"])
        if result is None:
            result = failed_result(item.id, "the worker's event stream ended without a result", "WorkerLost")
        if self._stopping and not result["status"]["completed"]:
            await asyncio.to_thread(self.store.requeue, item.id)  # stopped by the shutdown: runs after the restart
            return
        if await asyncio.to_thread(self.store.finish, item.id, self._rename(slot, result), True):
            log.info("prompt %s finished on %s: %s in %.2f s", item.id, slot.name,
                     result["status"]["status_str"], time.monotonic() - started)
        else:
            log.warning("prompt %s: attempt %d finished after another one; its result is dropped", item.id,
                        item.attempts)
        self.relay(None, "status", {"queue_remaining": self.store.remaining()})
        for data in held[-1:]:
            self.relay(item.client_id, "executing", data)

    async def _event(self, slot: Slot, item: Item, held: list, event: str, data: dict, files: dict) -> None:
        if event == "executing":
            if data.get("node") is None:
                held.append(data)  # sent after the history is written, as the local worker does
                return
            slot.node = data["node"]
        elif event == "executed":
            if files:
                await asyncio.to_thread(self._place, slot, files)
            data = {**data, "output": self._rename_ui(slot, data.get("output") or {})}
        self.relay(item.client_id, event, data)

    async def _lost(self, slot: Slot, item: Item, exc: Exception) -> None:
        slot.alive, slot.models = False, frozenset()
        if self._stopping:  # the shutdown took the actor: not the prompt's fault, not an attempt
            await asyncio.to_thread(self.store.requeue, item.id)
            return
        what = f"worker {slot.name} was lost ({type(exc).__name__})"
        outcome = await asyncio.to_thread(self.store.lost, item.id, item.attempts, what, slot.name)
        log.warning("prompt %s: %s during attempt %d: %s", item.id, what, item.attempts, outcome or "superseded")
        if outcome == "failed":
            entry = (await asyncio.to_thread(self.store.history, None, item.id)).get(item.id)
            self.relay(item.client_id, "execution_error", entry["status"]["messages"][0][1])
            self.relay(item.client_id, "executing", {"node": None, "display_node": None, "prompt_id": item.id})
        self.relay(None, "status", {"queue_remaining": self.store.remaining()})
        self._track(self._watch(slot))

    # --- output files -------------------------------------------------------------------------------
    def _place(self, slot: Slot, files: dict) -> None:
        instance = slot.info.get("instance")
        for (kind, subfolder, filename), data in files.items():
            try:
                folder = self.env.safe_path(kind, "", subfolder) if subfolder else self.env.folder(kind)
                name = place_file(self.env.data_dir, folder, filename, data)
            except (OSError, ValueError) as exc:
                log.error("cannot write %s from %s: %s", filename, slot.name, exc)
                continue
            self._placed[(instance, kind, subfolder, filename)] = {"filename": name, "subfolder": subfolder,
                                                                  "type": kind}

    def _rename_ui(self, slot: Slot, ui: dict) -> dict:
        instance = slot.info.get("instance")
        images = [self._placed.get((instance, e.get("type", "output"), e.get("subfolder", ""), e.get("filename")), e)
                  for e in ui.get("images", [])]
        return {**ui, "images": images} if "images" in ui else ui

    def _rename(self, slot: Slot, result: dict) -> dict:
        return {**result, "outputs": {n: self._rename_ui(slot, ui) for n, ui in result.get("outputs", {}).items()}}

    # --- shutdown -----------------------------------------------------------------------------------
    def _begin_stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self.interrupt()

    async def _finish_stop(self) -> None:
        """Interrupted prompts end (or STOP_WAIT passes); what still runs goes back to the front of the
        queue uncharged; the actors delete their scratch folders; Ray is left."""
        began = time.monotonic()
        for task in [t for t in self._runs if t.get_coro().__name__ == "_watch"]:
            task.cancel()
        if self._runs:
            await asyncio.wait(set(self._runs), timeout=STOP_WAIT)
        for slot in self.slots:
            if slot.item is not None:
                await asyncio.to_thread(self.store.requeue, slot.item.id)
                slot.item = None
        alive = [s.actor.close.remote() for s in self.slots if s.alive]
        if alive:
            await asyncio.wait([asyncio.ensure_future(ref) for ref in alive], timeout=2.0)
        try:
            import ray

            ray.shutdown()
        except Exception:
            log.exception("ray.shutdown failed")
        log.info("the Ray workers stopped in %.1f s", time.monotonic() - began)

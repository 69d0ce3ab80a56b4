"""The worker: one thread that builds the `Loom` (heavy imports happen here, not at start-up) and
then runs queued prompts from the `Store`, one at a time.

Its interface is small on purpose, so that another host (a Ray actor) can relay the same events:
`emit(client_id, event, data)` receives every executor event of a run, with `preview` carrying
JPEG bytes instead of an image, and the worker's own `status` (queue changed) event.

End of a run: the history row is committed first, then `status`, then `executing` {node: null},
so a client that sees the end can read the history at once.
"""
from __future__ import annotations

import io
import logging
import threading
import time
import traceback
from typing import Any, Callable

from .store import Item, Store, failed_result

log = logging.getLogger(__name__)

Relay = Callable[[str | None, str, dict], None]
PREVIEW_SIZE = 512  # longest side of a preview frame
PREVIEW_METHODS = ("auto", "latent2rgb", "taesd")  # ComfyUI's names; each gives Loom's one latent preview


def preview_jpeg(image: Any, max_size: int = PREVIEW_SIZE) -> bytes | None:
    """JPEG bytes of a PIL image (what a node's preview() returns), or None if it is not one."""
    if not hasattr(image, "save") or not hasattr(image, "convert"):
        return None
    image = image.convert("RGB")
    if max(image.size) > max_size:
        image = image.copy()
        image.thumbnail((max_size, max_size))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def wants_previews(item: Item) -> bool:
    """Previews go to the client that queued the prompt, and only when it asked for them with
    extra_data.preview_method (as ComfyUI's frontend sends it; the server fills in its default)."""
    return item.client_id is not None and (item.extra_data or {}).get("preview_method") in PREVIEW_METHODS


def run_item(loom, item: Item, emit: Callable[[str, dict], None], interrupt: threading.Event,
             previews: bool) -> dict:
    """Run one queued prompt on `loom`; returns its history result {status, outputs, meta}.
    Never raises: a workflow that no longer validates (nodes changed since it was queued) or an
    engine failure becomes an execution_error."""
    from graph.runtime import ValidationFailed

    try:
        result = loom.run(item.workflow, emit=emit, interrupt=interrupt, extra_data=item.extra_data,
                          prompt_id=item.id, previews=previews)
    except ValidationFailed as exc:
        return _failure(item, emit, f"the prompt no longer validates: {exc}", "ValidationFailed")
    except Exception as exc:  # an engine bug must not stop the queue
        log.exception("prompt %s failed outside any node", item.id)
        return _failure(item, emit, f"{type(exc).__name__}: {exc}", type(exc).__name__)
    meta = {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in result.outputs}
    return {"status": {"status_str": "success" if result.ok else "error", "completed": result.ok,
                       "messages": result.messages},
            "outputs": result.outputs, "meta": meta}


def _failure(item: Item, emit, message: str, kind: str) -> dict:
    failed = failed_result(item.id, message, kind)
    emit("execution_start", {"prompt_id": item.id, "timestamp": int(time.time() * 1000)})
    emit("execution_error", failed["status"]["messages"][0][1])
    emit("executing", {"node": None, "display_node": None, "prompt_id": item.id})
    return failed


class Worker:
    """Runs the queue in one thread. `make_loom()` is called in that thread before the first prompt."""

    def __init__(self, store: Store, make_loom: Callable[[], Any], relay: Relay, idle_poll: float = 1.0):
        self.store, self.make_loom, self.relay = store, make_loom, relay
        self.loom = None
        self.ready = threading.Event()  # set once the Loom is built (or failed: see load_error)
        self.load_error: str | None = None
        self.current: Item | None = None
        self.current_node: str | None = None
        self._interrupt = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._tasks: list[Callable[[Any], None]] = []
        self._lock = threading.Lock()
        self._idle_poll = idle_poll
        self._thread = threading.Thread(target=self._main, name="loom-worker", daemon=True)

    # --- control, from any thread -----------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """A prompt was queued."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after interrupting the running prompt, which goes back to the front of the queue."""
        self._stop.set()
        self._interrupt.set()
        self._wake.set()
        self.ready.set()  # nobody waits for a loom that will not be used
        if self._thread.is_alive():
            self._thread.join(timeout)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Stop the running prompt (only if it is `prompt_id`, when given) at its next check."""
        current = self.current
        if current is None or (prompt_id is not None and prompt_id != current.id):
            return False
        self._interrupt.set()
        return True

    def between_prompts(self, task: Callable[[Any], None]) -> None:
        """Run `task(loom)` in the worker thread when no prompt is running (e.g. freeing memory)."""
        with self._lock:
            self._tasks.append(task)
        self._wake.set()

    # --- the thread -------------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self.loom = self.make_loom()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("the node registry failed to load:\n%s", traceback.format_exc())
            self.ready.set()
            return
        self.ready.set()
        while not self._stop.is_set():
            try:
                self._run_tasks()
                item = self.store.claim()
                if item is None:
                    self._wake.wait(self._idle_poll)
                    self._wake.clear()
                    continue
                self._run(item)
            except Exception:  # e.g. a full disk: keep the thread alive, retry later
                log.exception("the worker loop failed")
                self._stop.wait(self._idle_poll)

    def _run_tasks(self) -> None:
        with self._lock:
            tasks, self._tasks = self._tasks, []
        for task in tasks:
            try:
                task(self.loom)
            except Exception:
                log.exception("a between-prompts task failed")

    def _run(self, item: Item) -> None:
        self._interrupt.clear()
        self.current, self.current_node = item, None
        held: list[dict] = []

        def emit(event: str, data: dict) -> None:
            if event == "executing":
                if data.get("node") is None:
                    held.append(data)  # sent after the history is written
                    return
                self.current_node = data["node"]
            elif event == "preview":
                frame = preview_jpeg(data.get("image"))
                if frame is None:
                    return
                data = {"prompt_id": data.get("prompt_id"), "node": data.get("node"), "jpeg": frame}
            self.relay(item.client_id, event, data)

        log.info("prompt %s started (attempt %d)", item.id, item.attempts)
        started = time.monotonic()
        result = run_item(self.loom, item, emit, self._interrupt, previews=wants_previews(item))
        self.current, self.current_node = None, None
        if self._stop.is_set() and not result["status"]["completed"]:
            self.store.requeue(item.id)  # stopped by a shutdown, not by the user: run it after the restart
            log.info("prompt %s was stopped by the shutdown; it runs again after the restart", item.id)
            return
        self.store.finish(item.id, result)
        log.info("prompt %s finished: %s in %.2f s", item.id, result["status"]["status_str"],
                 time.monotonic() - started)
        self.relay(None, "status", {"queue_remaining": self.store.remaining()})
        for data in held[-1:]:
            self.relay(item.client_id, "executing", data)

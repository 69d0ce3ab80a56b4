"""The aiohttp application: ComfyUI's routes (also under /api), the WebSocket, the editor's files.

Start-up answers at once: the engine (graph/, the queue database) is opened in a thread right
after the socket is bound, and the node registry (torch, the nodes) is built by the worker in its
own thread. Routes that need the registry wait for it a little, then answer 503 + Retry-After.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import re
import secrets
import sys
import time
import uuid
from typing import Any, Callable

from aiohttp import web

from . import files, frontend, idempotency, jobs, listing, model_previews, templates, userdata
from .batch import GroupCommit
from .compress import gzip_replies
from .openapi import describe
from .security import Guard, Refused, Runner, is_loopback, json_errors, read_json, reply
from .system import list_checkpoints, system_stats
from .ws import Hub

log = logging.getLogger("loom.server")
JSON_LIMIT = 16 << 20  # a workflow with every node and a large editor layout fits easily
UPLOAD_LIMIT = 32 << 20
PROMPT_ID = re.compile(r"^[\w\-]{1,64}$")
PREVIEW_CHOICES = ("none", "auto", "latent2rgb", "taesd")  # ComfyUI's preview methods
LOCAL_ATTEMPTS = 2  # without Ray: a prompt that was running when the server died runs once more


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise Refused(400, f"'{name}' must be true or false, got {value!r}", "bad_parameter")


def _ids(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Refused(400, f"'{name}' must be a list of prompt ids (strings)", "bad_parameter")
    return value


def preview_method(asked: Any, args) -> str:
    """The prompt's preview method: what the client asked for, or the server's (--preview-method)."""
    if asked in (None, "default"):
        return getattr(args, "preview_method", "none")
    if asked not in PREVIEW_CHOICES:
        raise Refused(400, f"extra_data.preview_method must be one of {', '.join(PREVIEW_CHOICES)} or default, "
                           f"not {asked!r}", "bad_parameter")
    return asked


def _object(body: Any, what: str) -> dict:
    if not isinstance(body, dict):
        raise Refused(400, f"{what} must be a JSON object, got {type(body).__name__}", "invalid_body")
    return body


class LoomServer:
    def __init__(self, args, make_loom: Callable[[Any], Any]):
        self.args, self.make_loom = args, make_loom
        self.loopback = is_loopback(args.listen)
        self.token = args.auth_token or (None if self.loopback else secrets.token_urlsafe(24))
        self.guard = Guard(self.loopback, self.token, args.cors_origin or [])
        self.hub = Hub()
        self.web_dir = frontend.web_root(args)
        self.env = self.store = self.worker = None
        self.unsafe_error: type[Exception] = ValueError
        self.current: dict | None = None  # the node running now, replayed to a client that reconnects
        self.started = time.time()
        self.adds = GroupCommit(lambda rows: self.store.add_many(rows))
        self._core: asyncio.Future | None = None
        self._loom_ready = asyncio.Event()
        self.fatal = asyncio.Event()  # the server cannot work (e.g. its data folder is in use): exit

    # --- life cycle -------------------------------------------------------------------------------
    def _boot(self, loop: asyncio.AbstractEventLoop) -> None:
        """In a thread: import the engine, open the queue, start the worker."""
        from graph.env import Env, UnsafePath
        from loomqueue.store import Store
        from loomqueue.worker import Worker

        self.unsafe_error = UnsafePath
        args = self.args
        self.env = Env.from_data_dir(args.data_dir, args.models_dir, device=args.device, dtype=args.dtype,
                                     extra_model_paths=getattr(args, "extra_model_paths_config", None) or ())
        attempts = max(1, getattr(args, "ray_attempts", 3)) if args.ray else LOCAL_ATTEMPTS
        self.store = Store(self.env.data_dir / "queue.sqlite3", max_attempts=attempts)
        for prompt_id, what in self.store.recovered:
            log.warning("prompt %s was running when the server stopped: %s", prompt_id, what)

        def relay(client_id, event, data):
            loop.call_soon_threadsafe(self._on_event, client_id, event, data)

        if args.ray:  # the queue runs on Ray actors; Ray is imported by the pool's thread only
            from .ray_workers import RayPool

            self.worker = RayPool(self.store, lambda: self.make_loom(self.env), relay, args, self.env)
        else:
            self.worker = Worker(self.store, lambda: self.make_loom(self.env), relay)
        self.worker.start()

    async def on_startup(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self._core = loop.run_in_executor(None, self._boot, loop)
        app["ready_task"] = asyncio.create_task(self._wait_ready())

    async def _wait_ready(self) -> None:
        try:
            await self._core
        except Exception:  # serve() reports it
            self.fatal.set()
            return
        await asyncio.get_running_loop().run_in_executor(None, self.worker.ready.wait)
        self._loom_ready.set()
        if self.worker.load_error is None:
            log.info("nodes loaded: %d types", len(self.worker.loom.registry.names()))

    async def on_cleanup(self, app: web.Application) -> None:
        await self.hub.close_all()
        app["ready_task"].cancel()
        if self.worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)
        if self.store is not None:
            # a clean stop charges no attempt: whatever is still marked running goes back to the front
            for prompt_id in self.store.release_running():
                log.info("prompt %s was stopped by the shutdown; it runs again after the restart", prompt_id)
            self.store.close()

    def _on_event(self, client_id: str | None, event: str, data: dict) -> None:
        if event == "executing":
            self.current = {"client_id": client_id, "data": data} if data.get("node") else None
        self.hub.send(client_id, event, data)

    async def core(self) -> None:
        """Wait until the data folder and queue are open (well under a second after start)."""
        try:
            await asyncio.shield(self._core)
        except Exception as exc:
            raise Refused(503, f"the server could not open its data folder: {exc}", "unavailable") from None

    async def loom(self):
        await self.core()
        try:
            await asyncio.wait_for(self._loom_ready.wait(), getattr(self.args, "ready_wait", 15.0))
        except asyncio.TimeoutError:
            raise Refused(503, "the nodes are still loading; try again shortly", "loading",
                          headers={"Retry-After": "5"}) from None
        if self.worker.load_error:
            raise Refused(503, f"the nodes failed to load: {self.worker.load_error}", "load_failed")
        return self.worker.loom

    async def status_changed(self) -> None:
        self.hub.send(None, "status", {"queue_remaining": self.store.remaining()})  # in memory: no thread hop

    # --- routes -------------------------------------------------------------------------------------
    def routes(self) -> list[tuple[str, str, Callable, str]]:
        return [
            ("get", "/prompt", self.get_prompt, "Number of prompts queued or running"),
            ("post", "/prompt", self.post_prompt, "Validate and queue a workflow (API or editor format)"),
            ("get", "/queue", self.get_queue, "The running and pending prompts"),
            ("post", "/queue", self.post_queue, "Delete pending prompts, or clear the queue"),
            ("post", "/interrupt", self.post_interrupt, "Stop the running prompt (optionally only if it is prompt_id)"),
            ("get", "/history", self.get_history, "Finished prompts with outputs and status"),
            ("get", "/history/{prompt_id}", self.get_history_one, "One finished prompt"),
            ("post", "/history", self.post_history, "Delete history entries, or clear the history"),
            ("get", "/object_info", self.get_object_info, "Every node type: inputs, outputs, category"),
            ("get", "/object_info/{node_class}", self.get_object_info_one, "One node type"),
            ("get", "/view", self.get_view, "A file of the output, input or temp folder"),
            ("post", "/upload/image", self.post_upload, "Upload an image to the input folder"),
            ("get", "/system_stats", self.get_system_stats, "Versions, memory, devices, readiness"),
            ("get", "/models", self.get_models, "Kinds of models (checkpoints)"),
            ("get", "/models/{folder}", self.get_models_folder, "The models of one kind (checkpoints)"),
            ("post", "/free", self.post_free, "Drop cached node outputs and free memory between prompts"),
            ("get", "/ws", self.get_ws, "WebSocket of execution events and preview frames"),
            ("get", "/openapi.json", self.get_openapi, "This description"),
            *jobs.routes(self),
            *userdata.routes(self),
            *frontend.routes(self, UPLOAD_LIMIT),
            *model_previews.routes(self),
            *templates.routes(self),
        ]

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[gzip_replies, json_errors, self.guard.middleware],
                              client_max_size=UPLOAD_LIMIT + (1 << 20))
        for method, path, handler, _ in self.routes():
            app.router.add_route(method.upper(), path, handler)
            if path != "/ws":
                app.router.add_route(method.upper(), "/api" + path, handler)
        app.router.add_route("GET", "/api/ws", self.get_ws)
        app.router.add_route("GET", "/lib/{path:.*}", self.get_lib)
        app.router.add_route("GET", "/{path:.*}", self.get_static)
        app.on_startup.append(self.on_startup)
        app.on_cleanup.append(self.on_cleanup)
        return app

    # --- queue --------------------------------------------------------------------------------------
    async def get_prompt(self, request):
        await self.core()
        return reply({"exec_info": {"queue_remaining": self.store.remaining()}})

    async def post_prompt(self, request):
        body = _object(await read_json(request, JSON_LIMIT), "the request body")
        key, fingerprint = idempotency.request_key(request, body)
        if key is not None:  # a retry: answer from the store, before any validation
            await self.core()
            seen = await asyncio.to_thread(self.store.idempotent, key)
            if seen is not None:
                first_fingerprint, prompt_id, number = seen
                return idempotency.replay(key, prompt_id, number if first_fingerprint == fingerprint else None)
        if body.get("prompt") is None:
            raise Refused(400, "no prompt given: send {\"prompt\": WORKFLOW}", "no_prompt", node_errors={})
        workflow = body["prompt"]
        client_id = body.get("client_id")
        if client_id is not None and (not isinstance(client_id, str) or len(client_id) > 128):
            raise Refused(400, "'client_id' must be a string of at most 128 characters", "bad_parameter")
        extra = body.get("extra_data")
        extra = dict(_object(extra, "'extra_data'")) if extra is not None else {}
        front = _bool(body.get("front", False), "front")
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        if not isinstance(prompt_id, str) or not PROMPT_ID.match(prompt_id):
            raise Refused(400, "'prompt_id' must be 1-64 letters, digits, '-' or '_'", "bad_parameter")
        loom = await self.loom()
        validation = await asyncio.to_thread(loom.validate, workflow, extra_data=extra)
        if not validation.ok:
            return reply(validation.response(), status=400)  # no key is stored: a corrected retry may use it
        if client_id:
            extra["client_id"] = client_id
        extra["preview_method"] = preview_method(extra.get("preview_method"), self.args)
        from loomqueue.routing import model_keys  # imported here: the server starts before the engine loads

        added = await self.adds.add(dict(prompt_id=prompt_id, workflow=workflow, prompt=validation.prompt,
                                         extra_data=extra, outputs=validation.outputs, client_id=client_id,
                                         front=front, models=model_keys(validation.prompt, loom.registry,
                                                                 validation.runnable),
                                         idempotency_key=key, fingerprint=fingerprint))
        if added.status == "id_taken":
            raise Refused(400, f"prompt_id {prompt_id!r} is already used", "bad_parameter")
        if added.status != "queued":  # the same key raced in from another request
            return idempotency.replay(key, added.prompt_id, added.number if added.status == "replayed" else None)
        await self.status_changed()  # before the worker starts it, so clients see status, then execution_start
        self.worker.wake()
        return reply({"prompt_id": prompt_id, "number": added.number, "node_errors": {}})

    async def get_queue(self, request):
        """ComfyUI's whole queue; with max_items (and offset) a page of the pending prompts."""
        limit, offset = listing.count(request, "max_items", None), listing.count(request, "offset", 0)
        await self.core()
        return listing.json_text(await asyncio.to_thread(
            lambda: listing.queue_reply(self.store, limit, offset).encode()))

    async def post_queue(self, request):
        body = _object(await read_json(request, JSON_LIMIT), "the request body")
        await self.core()
        deleted = 0
        if body.get("clear") is not None and _bool(body["clear"], "clear"):
            deleted += await asyncio.to_thread(self.store.delete_pending, None)
        if body.get("delete") is not None:
            deleted += await asyncio.to_thread(self.store.delete_pending, _ids(body["delete"], "delete"))
        await self.status_changed()
        return reply({"deleted": deleted})

    async def post_interrupt(self, request):
        body = _object(await read_json(request, JSON_LIMIT, empty={}), "the request body")
        prompt_id = body.get("prompt_id")
        if prompt_id is not None and not isinstance(prompt_id, str):
            raise Refused(400, "'prompt_id' must be a string", "bad_parameter")
        await self.core()
        return reply({"interrupted": self.worker.interrupt(prompt_id)})

    async def get_history(self, request):
        """ComfyUI's history paging: the newest max_items, or max_items after the offset oldest."""
        max_items = listing.count(request, "max_items", None) or None  # 0: all, as before
        offset = listing.count(request, "offset", None, low=-1)
        await self.core()
        return listing.json_text(await asyncio.to_thread(
            lambda: listing.history_reply(self.store.history_page(max_items, offset)).encode()))

    async def get_history_one(self, request):
        await self.core()
        entries = await asyncio.to_thread(self.store.history_one, request.match_info["prompt_id"])
        return listing.json_text(listing.history_reply(entries).encode())

    async def post_history(self, request):
        body = _object(await read_json(request, JSON_LIMIT), "the request body")
        await self.core()
        deleted = 0
        if body.get("clear") is not None and _bool(body["clear"], "clear"):
            deleted += await asyncio.to_thread(self.store.delete_history, None)
        if body.get("delete") is not None:
            deleted += await asyncio.to_thread(self.store.delete_history, _ids(body["delete"], "delete"))
        return reply({"deleted": deleted})

    # --- nodes and system ---------------------------------------------------------------------------
    async def get_object_info(self, request):
        loom = await self.loom()
        return reply(await asyncio.to_thread(loom.registry.object_info, loom.env))

    async def get_object_info_one(self, request):
        loom = await self.loom()
        name = request.match_info["node_class"]
        cls = loom.registry.get(name)
        if cls is None:
            raise Refused(404, f"no node type named {name!r}", "not_found")
        return reply({name: await asyncio.to_thread(cls.object_info, loom.env)})

    async def get_system_stats(self, request):
        ready = self._loom_ready.is_set() and self.worker is not None and self.worker.load_error is None
        queue = None
        if self._core is not None and self._core.done() and self.store is not None:
            queue = {"remaining": self.store.remaining(), "counters": await asyncio.to_thread(self.store.counters)}
        return reply(system_stats(self.worker, ready, time.time() - self.started, queue))

    async def get_models(self, request):
        return reply(["checkpoints"])

    async def get_models_folder(self, request):
        """The checkpoints the loader offers (ComfyUI's /models/checkpoints)."""
        await self.core()
        if request.match_info["folder"] != "checkpoints":
            raise Refused(404, f"no models folder {request.match_info['folder']!r}; there is 'checkpoints'",
                          "not_found")
        return reply(await asyncio.to_thread(list_checkpoints, self.env))

    async def post_free(self, request):
        body = _object(await read_json(request, JSON_LIMIT, empty={}), "the request body")
        unload = _bool(body.get("unload_models", False), "unload_models")
        free = _bool(body.get("free_memory", False), "free_memory")
        await self.loom()

        def task(loom):
            if unload or free:
                loom.executor.cache.clear()
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()

        self.worker.between_prompts(task)
        return reply({"scheduled": bool(unload or free)})

    # --- files --------------------------------------------------------------------------------------
    async def get_view(self, request):
        await self.core()
        return files.view(self.env, request, self.unsafe_error)

    async def post_upload(self, request):
        await self.core()
        data, filename, fields = await files.read_upload(request, UPLOAD_LIMIT)
        overwrite = _bool(fields.get("overwrite", "false") or "false", "overwrite")
        result = await asyncio.to_thread(files.store_upload, self.env, data, filename, fields.get("type") or "input",
                                         fields.get("subfolder", ""), overwrite, self.unsafe_error)
        return reply(result)

    # --- websocket, description, editor -------------------------------------------------------------
    async def get_ws(self, request):
        await self.core()
        return await self.hub.serve(request, self.store.remaining(), self.current)

    async def get_openapi(self, request):
        return reply(describe(self.routes()))

    async def get_lib(self, request):
        await self.core()
        return files.static(request, self.web_dir / "node_modules", request.match_info["path"], self.unsafe_error)

    async def get_static(self, request):
        await self.core()
        return files.static(request, self.web_dir, request.match_info["path"], self.unsafe_error)


class StartError(Exception):
    """The server cannot start (its port is taken, its data folder in use): one line for the user."""


def check_port(host: str, port: int) -> None:
    """Fail early, before anything loads, when `host:port` cannot be bound."""
    import socket

    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartError(f"cannot listen on {host!r}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
            try:
                sock.bind(address)
            except OSError as exc:
                raise StartError(_bind_problem(host, port, exc)) from None


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    import errno

    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is in use (another Loom server or program): "
                f"choose another with --port, or --port 0 for any free one")
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


async def serve(args, make_loom: Callable[[Any], Any]) -> int:
    """Run the server until SIGINT or SIGTERM; returns the exit status. Raises StartError when the
    port cannot be bound or the data folder is in use; "listening" is printed only once both are ours."""
    import signal

    server = LoomServer(args, make_loom)
    runner = Runner(server.make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.listen, args.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartError(_bind_problem(args.listen, args.port, exc)) from None
    try:
        await asyncio.shield(server._core)
    except Exception as exc:  # the data folder: in use by another server, not writable, ...
        await runner.cleanup()
        raise StartError(f"cannot open the data folder: {exc}") from None
    host, port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in host else host
    # "listening" last: whoever waits for it (a script, the tests) has the other lines by then
    print(f"data folder: {server.env.data_dir}", flush=True)
    if server.token:
        print(f"auth token required: open http://{shown}:{port}/?token={server.token}", flush=True)
    print(f"Loom listening on http://{shown}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(server.fatal.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await runner.cleanup()
    return 1 if server.fatal.is_set() else 0

"""Users, their settings and their files, in ComfyUI's routes and shapes.

Storage, in the data folder: the default user's files are in `user/` (saved workflows in
`user/workflows/`, the official frontend's settings in `user/comfy.settings.json`); another user's in
`users/<id>/`, with the users listed in `users.json` ({id: name}). A request names its user with the
`comfy-user` header, as ComfyUI's frontend sends it; without one it is the default user. Once a user
has been added (POST /users), GET /users lists them, which makes the official frontend ask who is
working, as ComfyUI's --multi-user does.

    GET  /users                      {storage: "server", migrated: true} or {storage, users: {id: name}}
    POST /users {username}           the new user's id
    GET  /settings[/{id}]            all settings, or one value (null when unset)
    POST /settings                   {id: value, ...} merged in; POST /settings/{id} one JSON value
    GET  /userdata?dir=D[&recurse=true][&full_info=true][&split=true]
         names below D (missing D: []), or [{path, size, modified, created}] (ms), or [[path, *parts]]
    GET/POST/DELETE /userdata/{path}, POST /userdata/{path}/move/{dest}[?overwrite][&full_info]

File names are letters, digits, spaces and `.,()+-_` (no `..`, no absolute paths, nothing that
resolves outside the user's folder); written files must be JSON objects or arrays.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import threading
import uuid
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from .files import SANDBOX, unsafe
from .security import Refused, read_body, read_json, reply

DEFAULT_USER = "default"
SETTINGS = "comfy.settings.json"
SEGMENT = re.compile(r"^(?!\.\.)[\w.][\w .,()+\-]{0,126}$")
BODY_LIMIT = 16 << 20
MAX_NAME = 100  # characters of a user name; its id is <name>_<uuid>, a folder name (at most 255 bytes)
MAX_FOLDER = 200
DEFAULTS = {"comfy.templates.json": []}  # what a fresh user has: the frontend's node templates, none
_lock = threading.Lock()  # settings and the users file are read-modify-written


class Users:
    """The users of one data folder and where each one's files are."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.file = self.data_dir / "users.json"

    def all(self) -> dict[str, str]:
        try:
            users = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            users = {}
        return {DEFAULT_USER: DEFAULT_USER, **(users if isinstance(users, dict) else {})}

    def add(self, name: str) -> str:
        name = name.strip() if isinstance(name, str) else ""
        if not name:
            raise Refused(400, "give a user name: {\"username\": NAME}", "bad_parameter")
        if len(name) > MAX_NAME:
            raise Refused(400, f"a user name has at most {MAX_NAME} characters, not {len(name)}", "bad_parameter")
        with _lock:
            users = self.all()
            if name in users.values():
                raise Refused(400, f"the user name {name!r} is taken", "exists")
            user_id = f"{re.sub(r'[^a-zA-Z0-9_-]+', '-', name)}_{uuid.uuid4()}"
            users[user_id] = name
            users.pop(DEFAULT_USER)
            write_atomic(self.file, json.dumps(users, indent=1).encode())
        return user_id

    def root(self, request: web.Request) -> Path:
        """The folder of the request's user (header `comfy-user`)."""
        user = request.headers.get("comfy-user") or DEFAULT_USER
        if user == DEFAULT_USER:
            return self.data_dir / "user"
        if user not in self.all():
            raise Refused(403, f"unknown user {user[:200]!r}", "unknown_user")
        if len(user.encode()) > MAX_FOLDER:  # listed by an older Loom, which took names of any length
            raise Refused(400, f"the user id is longer than {MAX_FOLDER} bytes, too long for a folder name; "
                               "add the user again with a shorter name", "bad_name")
        return self.data_dir / "users" / user


def write_atomic(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="~save-")  # '~': never listed (not a SEGMENT)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def user_path(root: Path, rel: str) -> Path:
    """root/rel for a relative path of allowed names (URL-encoded or not); anything else is refused."""
    from graph.env import UnsafePath, safe_join

    rel = unquote(rel or "").replace("\\", "/").strip("/")
    parts = rel.split("/")
    if not rel or len(parts) > 16 or not all(SEGMENT.match(p) for p in parts):
        raise Refused(400, f"file name {rel!r} is not allowed: use letters, digits, spaces and '.,()+-_', "
                           "in folders of such names", "bad_name")
    try:
        return safe_join(root, *parts)
    except UnsafePath as exc:
        raise unsafe(exc) from None


def file_info(path: Path, base: Path) -> dict:
    st = path.stat()
    return {"path": path.relative_to(base).as_posix(), "size": st.st_size, "modified": int(st.st_mtime * 1000),
            "created": int(st.st_ctime * 1000)}


def listing(folder: Path, recurse: bool, full_info: bool, split: bool) -> list:
    """Files below `folder` (ComfyUI's /userdata listing); a missing folder lists nothing."""
    if not folder.is_dir():
        return []
    found = []
    for dirpath, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if SEGMENT.match(d)) if recurse else []
        for name in sorted(names):
            path = Path(dirpath) / name
            if SEGMENT.match(name) and path.is_file():
                found.append(path)
    if full_info:
        return [file_info(p, folder) for p in found]
    rels = [p.relative_to(folder).as_posix() for p in found]
    return [[r, *r.split("/")] for r in rels] if split else rels


def checked_json(body: bytes) -> bytes:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise Refused(400, f"a user file must be JSON: {type(exc).__name__}: {exc}", "invalid_json") from None
    if not isinstance(value, (dict, list)):
        raise Refused(400, f"a user file must be a JSON object or array, got {type(value).__name__}",
                      "invalid_json")
    return body


def read_settings(root: Path) -> dict:
    try:
        value = json.loads((root / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def update_settings(root: Path, changes: dict) -> None:
    with _lock:
        write_atomic(root / SETTINGS, json.dumps({**read_settings(root), **changes}, indent=1).encode())


def _flag(request, name: str, default: str = "false") -> bool:
    return request.query.get(name, default).lower() == "true"


def routes(server) -> list[tuple]:
    def users() -> Users:
        return Users(server.env.data_dir)

    async def root(request) -> Path:
        await server.core()
        return users().root(request)

    async def get_users(request):
        await server.core()
        known = users().all()
        if len(known) > 1:
            return reply({"storage": "server", "users": known})
        return reply({"storage": "server", "migrated": True})

    async def post_users(request):
        body = await read_json(request, BODY_LIMIT)
        await server.core()
        name = body.get("username") if isinstance(body, dict) else None
        return reply(await asyncio.to_thread(users().add, name))

    async def get_settings(request):
        return reply(read_settings(await root(request)))

    async def get_setting(request):
        return reply(read_settings(await root(request)).get(request.match_info["id"]))

    async def post_settings(request):
        body = await read_json(request, BODY_LIMIT)
        if not isinstance(body, dict):
            raise Refused(400, "settings must be a JSON object {id: value}", "invalid_body")
        await asyncio.to_thread(update_settings, await root(request), body)
        return reply({})

    async def post_setting(request):
        value = await read_json(request, BODY_LIMIT)
        await asyncio.to_thread(update_settings, await root(request), {request.match_info["id"]: value})
        return reply({})

    async def get_listing(request):
        base = await root(request)
        folder = user_path(base, request.query.get("dir", ""))
        return reply(await asyncio.to_thread(listing, folder, _flag(request, "recurse"),
                                             _flag(request, "full_info"), _flag(request, "split")))

    async def get_file(request):
        base = await root(request)
        path = user_path(base, request.match_info["path"])
        if path.is_dir():  # Loom's own short form: GET /userdata/workflows lists the folder
            return reply(await asyncio.to_thread(listing, path, False, False, False))
        if not path.is_file():
            rel = path.relative_to(base).as_posix()
            if rel in DEFAULTS:
                return reply(DEFAULTS[rel])
            raise Refused(404, f"no file {request.match_info['path']!r}", "not_found")
        ctype = "text/css" if path.name.endswith(".css") else "application/json"
        return web.FileResponse(path, headers={**SANDBOX, "Content-Type": ctype})

    async def post_file(request):
        base = await root(request)
        path = user_path(base, request.match_info["path"])
        body = await read_body(request, BODY_LIMIT, "the file")
        if path.exists() and not _flag(request, "overwrite", "true"):
            raise Refused(409, f"{request.match_info['path']!r} exists; pass overwrite=true to replace it", "exists")
        await asyncio.to_thread(write_atomic, path, checked_json(body))
        return reply(file_info(path, base) if _flag(request, "full_info") else path.relative_to(base).as_posix())

    async def move_file(request):
        base = await root(request)
        source = user_path(base, request.match_info["path"])
        dest = user_path(base, request.match_info["dest"])
        if not source.is_file():
            raise Refused(404, f"no file {request.match_info['path']!r}", "not_found")
        if dest.exists() and not _flag(request, "overwrite", "true"):
            raise Refused(409, f"{request.match_info['dest']!r} exists; pass overwrite=true to replace it", "exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, dest)
        return reply(file_info(dest, base) if _flag(request, "full_info") else dest.relative_to(base).as_posix())

    async def delete_file(request):
        path = user_path(await root(request), request.match_info["path"])
        if not path.is_file():
            raise Refused(404, f"no file {request.match_info['path']!r}", "not_found")
        path.unlink()
        return web.Response(status=204)

    return [
        ("get", "/users", get_users, "The users (ComfyUI's shape: storage, migrated or users)"),
        ("post", "/users", post_users, "Add a user (body {username}); returns its id"),
        ("get", "/settings", get_settings, "The user's settings (the official frontend's)"),
        ("get", "/settings/{id}", get_setting, "One setting's value, null when unset"),
        ("post", "/settings", post_settings, "Merge settings {id: value}"),
        ("post", "/settings/{id}", post_setting, "Set one setting (body: its JSON value)"),
        ("get", "/userdata", get_listing, "Files of a user folder (dir=workflows, subgraphs, ...)"),
        ("post", "/userdata/{path:.+}/move/{dest:.+}", move_file, "Move or rename a user file"),
        ("get", "/userdata/{path:.+}", get_file, "A user file (e.g. workflows/NAME.json)"),
        ("post", "/userdata/{path:.+}", post_file, "Save a user file (body: JSON)"),
        ("delete", "/userdata/{path:.+}", delete_file, "Delete a user file"),
    ]

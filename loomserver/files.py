"""Files the server reads and writes for clients: /view, image uploads, the editor.

Every path goes through `safe_join` (via `Env.safe_path`), which resolves symlinks and refuses
anything outside its folder. Served files get `nosniff` and a sandboxing CSP, so an uploaded or
generated file can never run script in the server's origin.
"""
from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import re
import tempfile
import zlib
from pathlib import Path
from urllib.parse import unquote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from .security import Refused

IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}
EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP",
              ".tif": "TIFF", ".tiff": "TIFF"}
UPLOAD_KINDS = ("input", "temp")
SANDBOX = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/css", ".css")


def unsafe(exc: Exception) -> Refused:
    return Refused(403, f"path refused: {exc}", "unsafe_path")


def _str_param(query, name: str, default: str | None = None, required: bool = False) -> str:
    value = query.get(name, default)
    if value is None or (required and not value):
        raise Refused(400, f"query parameter '{name}' is required", "missing_parameter")
    if len(value) > 1024:
        raise Refused(400, f"query parameter '{name}' is too long", "bad_parameter")
    return value


def view(env, request: web.Request, unsafe_error) -> web.FileResponse:
    """GET /view?filename&subfolder&type: a file of the input, output or temp folder."""
    filename = _str_param(request.query, "filename", required=True)
    subfolder = _str_param(request.query, "subfolder", "")
    kind = _str_param(request.query, "type", "output")
    if kind not in ("input", "output", "temp"):
        raise Refused(400, f"type must be input, output or temp, not {kind!r}", "bad_parameter")
    try:
        path = env.safe_path(kind, filename, subfolder)
    except unsafe_error as exc:
        raise unsafe(exc) from None
    if not path.is_file():
        raise Refused(404, f"no file {filename!r} in {kind}/{subfolder}", "not_found")
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.FileResponse(path, headers={**SANDBOX, "Content-Type": ctype, "Cache-Control": "no-cache"})


def _upload_name(name: str, fmt: str) -> str:
    """The client's file name made safe: no folders, a known image extension matching the content."""
    name = unquote(name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = re.sub(r"[\x00-\x1f<>:\"|?*]", "_", name).lstrip(".")[:120] or "upload"
    stem, ext = os.path.splitext(name)
    if EXTENSIONS.get(ext.lower()) != fmt:
        stem, ext = name if ext.lower() not in EXTENSIONS else stem, IMAGE_FORMATS[fmt]
    return (stem or "upload") + ext


def check_image(data: bytes) -> str:
    """The image format of `data`, or Refused if Pillow does not read it as an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise Refused(400, f"the upload is not a readable image: {exc}", "invalid_image") from None
    if fmt not in IMAGE_FORMATS:
        raise Refused(400, f"image format {fmt} is not accepted; use one of {', '.join(IMAGE_FORMATS)}",
                      "invalid_image")
    return fmt


def store_upload(env, data: bytes, filename: str, kind: str, subfolder: str, overwrite: bool, unsafe_error) -> dict:
    """Write an uploaded image; the same content uploaded again reuses the existing file, and a
    different file of the same name gets a content-hash suffix unless `overwrite`."""
    if kind not in UPLOAD_KINDS:
        raise Refused(400, f"type must be one of {', '.join(UPLOAD_KINDS)}, not {kind!r}", "bad_parameter")
    fmt = check_image(data)
    name = _upload_name(filename, fmt)
    digest = hashlib.sha256(data).hexdigest()
    try:
        path = env.safe_path(kind, name, subfolder)
        if path.exists() and not overwrite and _digest(path) != digest:
            stem, ext = os.path.splitext(name)
            name = f"{stem}-{digest[:12]}{ext}"
            path = env.safe_path(kind, name, subfolder)
    except unsafe_error as exc:
        raise unsafe(exc) from None
    if not (path.is_file() and _digest(path) == digest):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return {"name": name, "subfolder": subfolder, "type": kind}


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except OSError:
        return None


async def read_upload(request: web.Request, limit: int) -> tuple[bytes, str, dict]:
    """(image bytes, file name, other form fields) of a multipart upload, at most `limit` bytes."""
    if not request.content_type.startswith("multipart/"):
        raise Refused(400, "expected a multipart/form-data body with an 'image' file", "bad_request")
    try:
        reader = await request.multipart()
        data, filename, fields = None, "", {}
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise Refused(400, "a form field holds a nested multipart body; send the image as a file field",
                              "bad_request")
            if part.name == "image":
                filename = part.filename or "upload"
                data = bytearray()
                while chunk := await part.read_chunk(1 << 16):
                    data += chunk
                    if len(data) > limit:
                        raise Refused(413, f"the image is larger than the limit of {limit} bytes", "too_large")
            elif part.name:
                value = bytearray()
                while chunk := await part.read_chunk(4096):  # a field is short: never read a huge one whole
                    value += chunk
                    if len(value) > 4096:
                        raise Refused(400, f"form field '{part.name}' is too long", "bad_parameter")
                value = part.decode(bytes(value))
                fields[part.name] = value.decode("utf-8", "replace")
    except (ValueError, AssertionError, UnicodeError, RuntimeError, HttpProcessingError, zlib.error) as exc:
        # aiohttp's multipart reader: a bad boundary or part header, an unknown or broken encoding
        reason = str(getattr(exc, "message", "") or exc).strip()
        raise Refused(400, f"malformed multipart body: {reason}", "bad_request") from None
    if data is None:
        raise Refused(400, "the form has no 'image' file field", "missing_parameter")
    return bytes(data), filename, fields


# --- user workflows -------------------------------------------------------------------------------

# --- the editor -------------------------------------------------------------------------------------

PLACEHOLDER = b"""<!doctype html><meta charset="utf-8"><title>Loom</title>
<p>Loom's API server is running; the editor (<code>web/index.html</code>) is not installed.
See <a href="/openapi.json">/openapi.json</a> for the API.</p>"""


COMPRESSIBLE = ("text/", "application/json", "image/svg+xml")
_gzipped: dict[Path, tuple[int, int, bytes]] = {}  # path -> (mtime_ns, size, gzip body) of editor files


def accepts_gzip(request: web.Request) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = part.partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def gzipped(path: Path, stat: os.stat_result) -> bytes:
    """The file gzipped, kept in memory until it changes: the editor's files are few and
    compressing litegraph on every load would cost more than sending it."""
    import gzip

    cached = _gzipped.get(path)
    if cached and cached[:2] == (stat.st_mtime_ns, stat.st_size):
        return cached[2]
    body = gzip.compress(path.read_bytes(), 6, mtime=0)
    _gzipped[path] = (stat.st_mtime_ns, stat.st_size, body)
    return body


def static(request: web.Request, web_dir: Path, rel: str, unsafe_error) -> web.StreamResponse:
    """A file of the editor folder (`web/`); a folder serves its index.html. Text files go
    gzipped to clients that accept it, with an ETag so a reload gets a bodiless 304."""
    from graph.env import safe_join

    try:
        path = safe_join(web_dir, rel) if rel else web_dir.resolve()
    except unsafe_error as exc:
        raise unsafe(exc) from None
    if path.is_dir():
        path = path / "index.html"
    if not path.is_file():
        if rel in ("", "index.html"):
            return web.Response(body=PLACEHOLDER, content_type="text/html")
        raise Refused(404, f"no file /{rel}", "not_found")
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"Content-Type": ctype, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    stat = path.stat()
    if not ctype.startswith(COMPRESSIBLE) or stat.st_size < 1024:
        return web.FileResponse(path, headers=headers)
    headers["Vary"] = "Accept-Encoding"
    if not accepts_gzip(request):
        return web.FileResponse(path, headers=headers)
    headers["ETag"] = etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}-gz"'
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers={k: headers[k] for k in ("ETag", "Vary", "Cache-Control")})
    return web.Response(body=gzipped(path, stat), headers={**headers, "Content-Encoding": "gzip"})

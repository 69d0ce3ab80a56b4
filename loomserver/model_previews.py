"""What the official frontend's model library shows beside a model, as ComfyUI serves it:

    GET /experiment/models/preview/{folder}/{path_index}/{filename}   the model's picture as WebP:
        <name>.<image suffix> or <name>.preview.<image suffix> beside the file, else a cover image in a
        safetensors file's metadata (`ssmd_cover_images`, base64); 404 when there is none
    GET /view_metadata/{folder}?filename=<name>.safetensors           the `__metadata__` of a
        safetensors header as JSON; 404 when the file or its metadata is absent

`folder` is a kind of GET /experiment/models, `path_index` the index of one of its folders. Names
stay inside that folder (403 otherwise, symbolic links included).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import struct
from pathlib import Path

from graph.env import UnsafePath, safe_join

from .frontend import model_folders
from .security import Refused, reply

PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
MAX_HEADER = 8 << 20  # the longest safetensors header read for cover images (ComfyUI's 8 MiB)
MAX_METADATA_HEADER = 1 << 20  # and for /view_metadata (ComfyUI's 1 MiB)


def safetensors_header(path: Path, limit: int) -> dict | None:
    """The JSON header of a safetensors file, or None when it is not one or is longer than `limit`."""
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if size > limit:
                return None
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError):
        return None
    return header if isinstance(header, dict) else None


def _folder(env, kind: str, path_index: str) -> Path:
    folders = model_folders(env)
    if kind not in folders:
        raise Refused(404, f"no model folder {kind!r}; there are {', '.join(folders)}", "not_found")
    try:
        index = int(path_index)
    except ValueError:
        raise Refused(400, f"path_index {path_index!r} is not a number") from None
    if not 0 <= index < len(folders[kind]):
        raise Refused(404, f"{kind} has {len(folders[kind])} folder(s); there is no index {index}", "not_found")
    return folders[kind][index]


def _inside(folder: Path, name: str) -> Path:
    try:
        return safe_join(folder, name)
    except UnsafePath as exc:
        raise Refused(403, f"{name!r} is not a name inside the model folder: {exc}", "forbidden") from None


def preview_image(folder: Path, name: str) -> bytes | None:
    """The model's preview picture, re-encoded as WebP (None: it has none)."""
    path = _inside(folder, name)
    stem = path.with_suffix("") if path.suffix else path
    candidates = [stem.with_name(stem.name + extra + suffix) for extra in ("", ".preview") for suffix in PREVIEW_SUFFIXES]
    pictures = []
    for candidate in candidates:
        try:
            if candidate.is_file():
                pictures.append(safe_join(folder, candidate.relative_to(folder.resolve()).as_posix()))
        except (UnsafePath, ValueError):
            continue  # a link that leads out of the folder
    if path.suffix.lower() == ".safetensors" and path.is_file():
        covers = ((safetensors_header(path, MAX_HEADER) or {}).get("__metadata__") or {}).get("ssmd_cover_images")
        try:
            pictures += [io.BytesIO(base64.b64decode(c)) for c in json.loads(covers or "[]")]
        except (ValueError, TypeError, binascii.Error):
            pass
    from PIL import Image, UnidentifiedImageError

    for picture in pictures[:1]:
        try:
            with Image.open(picture) as image:
                out = io.BytesIO()
                image.save(out, format="WEBP")
                return out.getvalue()
        except (OSError, UnidentifiedImageError):
            return None
    return None


def routes(server) -> list[tuple]:
    async def get_preview(request):
        await server.core()
        name = request.match_info["filename"]
        if not name:
            raise Refused(400, "no file name after the folder and path index")
        folder = _folder(server.env, request.match_info["folder"], request.match_info["path_index"])
        data = await asyncio.to_thread(preview_image, folder, name)
        if data is None:
            raise Refused(404, f"{name!r} has no preview image", "not_found")
        from aiohttp import web

        return web.Response(body=data, content_type="image/webp")

    async def get_view_metadata(request):
        await server.core()
        name = request.query.get("filename", "")
        if not name.endswith(".safetensors"):
            raise Refused(404, "filename must name a .safetensors file", "not_found")
        path = _inside(_folder(server.env, request.match_info["folder"], "0"), name)
        header = await asyncio.to_thread(safetensors_header, path, MAX_METADATA_HEADER) if path.is_file() else None
        if header is None or "__metadata__" not in header:
            raise Refused(404, f"{name!r} is no safetensors file with metadata", "not_found")
        return reply(header["__metadata__"])

    return [
        ("get", "/experiment/models/preview/{folder}/{path_index}/{filename:.*}", get_preview,
         "A model's preview picture (WebP)"),
        ("get", "/view_metadata/{folder}", get_view_metadata, "The metadata of a safetensors model file"),
    ]

"""GET /queue and GET /history in ComfyUI's shapes, built from the store's JSON text.

The store keeps each prompt's API prompt, extra_data and output list as JSON text; these replies
splice that text into the answer instead of decoding it and encoding it again, which was nearly
all of their cost (6.7 s for /queue at 100k pending prompts). Text holding a NaN or an infinity
(which the store's encoder allows and browsers' JSON.parse does not) is the exception: that piece
is decoded and written as strict JSON, as every other reply is.

Paging, both with ComfyUI's parameter names (docs/queue-api.md):
    GET /queue?max_items=N&offset=K   queue_running in full, queue_pending[K:K+N] in run order,
                                      plus "pagination" {offset, limit, total, has_more}
    GET /queue                        the whole queue, exactly ComfyUI's {queue_running, queue_pending}
    GET /history?max_items=N          the newest N, oldest first (as ComfyUI)
    GET /history?max_items=N&offset=K N after skipping the K oldest (as ComfyUI; offset < 0: newest)
"""
from __future__ import annotations

import json
import re

from aiohttp import web

from loomqueue.store import RawEntry

from .security import Refused, dumps


def _strict(text: str) -> str:
    """Stored JSON text as strict JSON: unchanged unless it may hold NaN or Infinity."""
    if "NaN" in text or "Infinity" in text:
        return dumps(json.loads(text))
    return text


def queue_item(entry: RawEntry) -> str:
    """ComfyUI's queue tuple [number, prompt_id, prompt, extra_data, outputs] as JSON text."""
    return (f"[{entry.number},{json.dumps(entry.id)},{_strict(entry.prompt)},{_strict(entry.extra_data)},"
            f"{_strict(entry.outputs)}]")


def history_item(entry: RawEntry) -> str:
    """A history entry {prompt, outputs, status, meta}: the stored result holds the last three."""
    result = _strict(entry.result) if entry.result else "{}"
    rest = result[1:] if result.strip() != "{}" else '"outputs":{},"status":{},"meta":{}}'
    return f'{{"prompt":{queue_item(entry)},{rest}'


def queue_reply(store, limit: int | None, offset: int) -> str:
    """The body of GET /queue; with a page (`limit` given) also its pagination."""
    running, pending, total = store.queue_page(limit, offset)
    body = (f'{{"queue_running":[{",".join(map(queue_item, running))}],'
            f'"queue_pending":[{",".join(map(queue_item, pending))}]')
    if limit is not None:
        page = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(pending) < total}
        body += f',"pagination":{json.dumps(page)}'
    return body + "}"


def history_reply(entries: list[RawEntry]) -> str:
    """The body of GET /history: {prompt_id: entry}, oldest first."""
    return "{" + ",".join(f"{json.dumps(e.id)}:{history_item(e)}" for e in entries) + "}"


def json_text(body: bytes) -> web.Response:
    """A reply of JSON encoded already (in a thread: a whole queue is tens of MB)."""
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def count(request, name: str, default: int | None, low: int = 0) -> int | None:
    """A whole-number query parameter from `low` to 2**62; 400 bad_parameter otherwise."""
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,19}", value) or not low <= int(value) <= 2**62:
        raise Refused(400, f"{name} must be a whole number from {low} to 2**62, not {value!r}", "bad_parameter")
    return int(value)

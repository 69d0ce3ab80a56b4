"""gzip for JSON and text replies, for clients that ask for it (Accept-Encoding: gzip).

Only replies built in memory (web.Response) of at least MIN_SIZE bytes are compressed: the node
list (/object_info), the queue and the history shrink about tenfold; small replies are not worth
the header, and files (/view's images, the editor's assets) are streamed as they are: PNG, JPEG and
WebP are compressed already. aiohttp compresses bodies over 4 KiB in a thread, off the event loop.
"""
from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.web_response import ContentCoding

MIN_SIZE = 1024
TYPES = ("application/json", "text/plain")


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value allows gzip: named (or '*' when it is not) without q=0."""
    weights = {}
    for part in header.lower().split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        q = next((p[2:] for p in params if p.startswith("q=")), "1")
        try:
            weights[coding] = float(q)
        except ValueError:
            weights[coding] = 0.0
    named = weights.get("gzip", weights.get("x-gzip"))
    return (named if named is not None else weights.get("*", 0.0)) > 0


@web.middleware
async def gzip_replies(request: web.Request, handler):
    response = await handler(request)
    if (not isinstance(response, web.Response) or response.prepared or response.content_type not in TYPES
            or hdrs.CONTENT_ENCODING in response.headers or not isinstance(response.body, bytes)
            or len(response.body) < MIN_SIZE):
        return response
    vary = response.headers.get(hdrs.VARY)
    response.headers[hdrs.VARY] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
    if accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, "")):
        response.enable_compression(ContentCoding.gzip)
    return response

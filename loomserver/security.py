"""Who may talk to the server: JSON errors, the token, cross-origin (CSRF) refusal and opt-in CORS.

Defaults: a loopback server needs no token but refuses browser requests from other origins (a web
page must not drive a local GPU server) and Host headers that are not loopback names (DNS
rebinding). A server listening elsewhere requires a token: `Authorization: Bearer TOKEN`,
`?token=TOKEN` (for the WebSocket and for opening the editor, which then sets a same-site cookie)
or that cookie.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
from urllib.parse import urlsplit

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import LineTooLong

log = logging.getLogger(__name__)
COOKIE = "loom_token"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dumps(value) -> str:
    """Strict JSON for browsers: NaN and infinities (e.g. a received_value) become strings."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def reply(data, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


def error(status: int, message: str, kind: str = "bad_request", headers: dict | None = None, **extra) -> web.Response:
    """A JSON error in the shape of ComfyUI's prompt errors: {error: {type, message, details, extra_info}}."""
    body = {"error": {"type": kind, "message": message, "details": extra.pop("details", ""), "extra_info": extra}}
    return reply(body, status=status, headers=headers)


class Refused(Exception):
    """Raise from a handler: becomes a JSON error response with this status."""

    def __init__(self, status: int, message: str, kind: str = "bad_request", headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers, self.extra = status, message, kind, headers or {}, extra


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every failure becomes a JSON body: unknown routes, wrong methods, oversized bodies, bugs."""
    try:
        return await handler(request)
    except Refused as exc:
        return error(exc.status, exc.message, exc.kind, headers=exc.headers, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {404: f"no route for {request.method} {request.path}",
                   405: f"{request.method} is not allowed on {request.path}",
                   413: "the request body is too large"}.get(exc.status, exc.reason)
        return error(exc.status, message, exc.reason.lower().replace(" ", "_"), headers=_extra_headers(exc))
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return error(500, "internal server error (see the server log)", "internal_error")


class _JsonErrorsProtocol(web_protocol.RequestHandler):
    """aiohttp answers what its HTTP parser cannot read (an oversized request line or header, a
    control character in a header value, TLS on the plain port) before any middleware runs, as
    text/plain: this answers those in the same JSON shape as every other error."""

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)  # logs; raises if a reply was started
        if status >= 500:
            text, kind = "internal server error (see the server log)", "internal_error"
        else:
            reason = str(getattr(exc, "message", "") or message or "").strip() or plain.reason
            if isinstance(exc, LineTooLong):
                reason = "the request line or a header is too long"
            text, kind = f"the HTTP request could not be read: {reason[:300]}", "bad_http_request"
        body = {"error": {"type": kind, "message": text, "details": "", "extra_info": {}}}
        response = web.Response(status=status, text=dumps(body), content_type="application/json")
        response.force_close()
        return response


class _JsonErrorsServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonErrorsProtocol(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """web.AppRunner whose connections answer aiohttp's own parser errors in JSON (see above)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # starts the application
        server.__class__ = _JsonErrorsServer  # the same server (a subclass adding no state) making our protocol
        return server


def _extra_headers(exc: web.HTTPException) -> dict:
    return {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after", "www-authenticate")}


class Guard:
    """The security middleware: token, origin checks, CORS headers."""

    def __init__(self, loopback: bool, token: str | None, cors_origins: list[str]):
        self.loopback, self.token = loopback, token
        self.cors = {o.rstrip("/") for o in cors_origins}

    def cors_allows(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.cors or origin.rstrip("/") in self.cors)

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin and "Access-Control-Request-Method" in request.headers:
            if not self.cors_allows(origin):
                raise Refused(403, f"cross-origin requests from {origin} are not allowed", "cross_origin_refused")
            return web.Response(status=204, headers=self._cors_headers(origin, preflight=True))
        self._check_origin(request, origin)
        via_query = self._check_token(request)
        response = await handler(request)
        if self.cors_allows(origin) and not response.prepared:
            response.headers.update(self._cors_headers(origin))
        if via_query and not response.prepared and request.method == "GET":
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
        return response

    def _check_origin(self, request: web.Request, origin: str | None) -> None:
        host = request.host or ""
        if self.loopback and not is_loopback(urlsplit("//" + host).hostname or ""):
            raise Refused(403, f"Host {host!r} is not a loopback name; this server only answers loopback requests",
                          "host_refused")
        if self.cors_allows(origin):
            return
        if origin is not None:
            own = {f"http://{host}", f"https://{host}"}
            if origin.rstrip("/") not in own:
                raise Refused(403, f"cross-origin request from {origin} refused (start the server with "
                                   "--cors-origin to allow it)", "cross_origin_refused")
        elif request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
            raise Refused(403, "cross-site request refused", "cross_origin_refused")

    def _check_token(self, request: web.Request) -> bool:
        """Raise 401 unless the request carries the token; True if it came as ?token= ."""
        if not self.token:
            return False
        auth = request.headers.get("Authorization", "")
        given = [auth[7:].strip()] if auth.lower().startswith("bearer ") else []
        query = request.query.get("token")
        cookie = request.cookies.get(COOKIE)
        for value in given + [query, cookie]:
            if value and hmac.compare_digest(value.encode(), self.token.encode()):
                return value is query
        raise Refused(401, "this server requires a token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN",
                      "unauthorized", headers={"WWW-Authenticate": "Bearer"})

    def _cors_headers(self, origin: str, preflight: bool = False) -> dict:
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                   "Access-Control-Allow-Credentials": "true"}
        if preflight:
            headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
            headers["Access-Control-Max-Age"] = "600"
        return headers


async def read_body(request: web.Request, limit: int, what: str = "the request body") -> bytes:
    """The whole request body, at most `limit` bytes (413 beyond). `content.read(n)` would return
    only what has arrived so far, so a large or slowly sent body is read to its end here."""
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, f"{what} is {request.content_length} bytes; the limit is {limit}", "too_large")
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"{what} is larger than the limit of {limit} bytes", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: web.Request, limit: int, empty=None):
    """The request body as JSON, at most `limit` bytes; `empty` when there is no body."""
    raw = await read_body(request, limit)
    if not raw.strip():
        if empty is not None:
            return empty
        raise Refused(400, "the request body is empty; expected JSON", "invalid_json")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"the request body is not valid JSON: {exc}", "invalid_json") from None
    except RecursionError:
        raise Refused(400, "the request body is nested too deeply", "invalid_json") from None

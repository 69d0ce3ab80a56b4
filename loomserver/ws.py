"""WebSocket clients and the events relayed to them.

Each client has an ordered outbox drained by its own task, so a slow client never holds up the
event loop or the others: preview frames are dropped when its outbox is backed up, and a client
that falls very far behind is disconnected (it can reconnect and read /history).
"""
from __future__ import annotations

import asyncio
import logging
import struct
import uuid

from aiohttp import WSMsgType, web

from .security import dumps

log = logging.getLogger(__name__)
PREVIEW_IMAGE, JPEG = 1, 1  # ComfyUI's binary frame: event type, image type
MAX_BACKLOG = 5000  # messages queued for one client before it is dropped
PREVIEW_BACKLOG = 8  # previews are skipped beyond this backlog


def preview_frame(jpeg: bytes) -> bytes:
    return struct.pack(">II", PREVIEW_IMAGE, JPEG) + jpeg


class Client:
    def __init__(self, sid: str, ws: web.WebSocketResponse):
        self.sid, self.ws = sid, ws
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def put(self, message) -> bool:
        if self.outbox.qsize() >= MAX_BACKLOG:
            return False
        self.outbox.put_nowait(message)
        return True

    async def drain(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None:
                return
            try:
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                else:
                    await self.ws.send_str(dumps(message))
            except (ConnectionError, RuntimeError):
                return


class Hub:
    """Sends `{type, data}` messages; prompt events go to the client that queued the prompt, or to
    everyone when it gave no client_id (as ComfyUI does); `status` goes to everyone."""

    def __init__(self):
        self.clients: dict[str, Client] = {}

    def send(self, sid: str | None, event: str, data: dict) -> None:
        """Called on the event loop for each worker event."""
        if event == "preview":
            client = self.clients.get(sid) if sid else None
            if client is not None and client.outbox.qsize() < PREVIEW_BACKLOG:
                client.put(preview_frame(data["jpeg"]))
            return
        message = {"type": event, "data": data}
        if event == "status":
            message = {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": data["queue_remaining"]}}}}
            targets = list(self.clients.values())
        elif sid is None:
            targets = list(self.clients.values())
        else:
            targets = [self.clients[sid]] if sid in self.clients else []
        for client in targets:
            if not client.put(message):
                log.warning("ws client %s is too far behind; disconnecting it", client.sid)
                asyncio.ensure_future(client.ws.close(code=1013, message=b"too slow"))

    async def serve(self, request: web.Request, queue_remaining: int, current: dict | None) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        if len(sid) > 128:
            sid = uuid.uuid4().hex
        old = self.clients.get(sid)
        if old is not None:  # a reconnect replaces the old socket
            old.outbox.put_nowait(None)
        client = self.clients[sid] = Client(sid, ws)
        client.put({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": queue_remaining}},
                                               "sid": sid}})
        if current is not None and current.get("client_id") == sid:
            client.put({"type": "executing", "data": current["data"]})
        client.task = asyncio.create_task(client.drain())
        try:
            async for msg in ws:  # clients send nothing we need; reading keeps the socket alive
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self.clients.get(sid) is client:
                del self.clients[sid]
            client.outbox.put_nowait(None)
            await client.task
        return ws

    async def close_all(self) -> None:
        await asyncio.gather(*(c.ws.close(code=1001, message=b"server shutdown") for c in list(self.clients.values())),
                             return_exceptions=True)

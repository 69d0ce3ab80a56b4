"""Start the real server as a subprocess on a free loopback port and talk to it with aiohttp."""
from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
TEST_NODES = ROOT / "tests" / "custom_nodes"


class ServerProc:
    def __init__(self, data_dir: Path, *args: str, custom_nodes: bool = True, web_dir: Path | None = None,
                 log_path: Path | None = None):
        self.data_dir, self.args = Path(data_dir), list(args)
        if custom_nodes:  # the test nodes only: no torch import, a quick start
            self.args += ["--custom-nodes", str(TEST_NODES), "--no-builtin-nodes"]
        if web_dir is not None:
            self.args += ["--web-dir", str(web_dir)]
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.started_at = 0.0
        self.log_path = log_path or self.data_dir.parent / f"{self.data_dir.name}-server.log"

    def start(self, timeout: float = 20.0) -> "ServerProc":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "--port", "0",
                                      "--data-dir", str(self.data_dir), *self.args],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        offset = self.log.tell()
        while time.monotonic() - self.started_at < timeout:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            for line in text.splitlines():
                if line.startswith("Loom listening on "):
                    self.url = line.split()[-1]
                    self.token_line = next((l for l in text.splitlines() if "?token=" in l), "")
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.02)
        raise TimeoutError(f"server did not start:\n{self.output()}")

    @contextlib.contextmanager
    def running(self, timeout: float = 300.0):
        """Started, ready (within `timeout`) and stopped when the block ends: a test module's server."""
        self.start()
        try:
            self.wait_ready(timeout=timeout)
            yield self
        finally:
            self.stop()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def wait_ready(self, timeout: float = 120.0, headers: dict | None = None) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            req = urllib.request.Request(self.url + "/system_stats", headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as r:
                loom = json.load(r)["loom"]
            if loom["ready"]:
                return
            if loom["load_error"]:
                raise RuntimeError(loom["load_error"])
            time.sleep(0.1)
        raise TimeoutError(f"nodes did not load:\n{self.output()}")

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if hasattr(self, "log"):
            self.log.close()


def run(coro):
    return asyncio.run(coro)


def picture_prompt(seed: int = 1, steps: int = 4, delay: float = 0.0, size: int = 16, prefix: str = "loom") -> dict:
    """Pattern -> Noise -> Invert -> SavePicture, in the API format."""
    return {
        "1": {"class_type": "Pattern", "inputs": {"size": size}},
        "2": {"class_type": "Noise", "inputs": {"picture": ["1", 0], "seed": seed, "steps": steps, "delay": delay}},
        "3": {"class_type": "Invert", "inputs": {"picture": ["2", 0]}},
        "4": {"class_type": "SavePicture", "inputs": {"picture": ["3", 0], "filename_prefix": prefix}},
    }


def picture_editor(seed: int = 1, steps: int = 4, delay: float = 0.0) -> dict:
    """The same workflow as the editor saves it (litegraph), with a seed control value."""
    def node(i, type_, inputs=(), outputs=(), widgets=()):
        return {"id": i, "type": type_, "pos": [i * 200, 0], "size": [180, 80], "mode": 0, "flags": {}, "order": i,
                "inputs": [{"name": n, "type": "PICTURE", "link": l} for n, l in inputs],
                "outputs": [{"name": "picture", "type": "PICTURE", "links": l} for l in outputs],
                "properties": {}, "widgets_values": list(widgets)}
    return {
        "last_node_id": 4, "last_link_id": 3, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [node(1, "Pattern", outputs=[[1]], widgets=[16]),
                  node(2, "Noise", [("picture", 1)], [[2]], [seed, "fixed", steps, delay]),
                  node(3, "Invert", [("picture", 2)], [[3]]),
                  node(4, "SavePicture", [("picture", 3)], widgets=["loom"])],
        "links": [[1, 1, 0, 2, 0, "PICTURE"], [2, 2, 0, 3, 0, "PICTURE"], [3, 3, 0, 4, 0, "PICTURE"]],
    }


class WsLog:
    """A WebSocket client that records every message, text as dicts and binary frames as bytes."""

    def __init__(self, session: aiohttp.ClientSession, url: str, client_id: str, **kwargs):
        self.session, self.url, self.client_id, self.kwargs = session, url, client_id, kwargs
        self.messages: list = []
        self._new = asyncio.Event()

    async def __aenter__(self):
        self.ws = await self.session.ws_connect(f"{self.url}/ws?clientId={self.client_id}", **self.kwargs)
        self._task = asyncio.create_task(self._read())
        await self.wait_for(lambda m: m["type"] == "status")
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()
        self._task.cancel()

    async def _read(self):
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self.messages.append(msg.data)
            self._new.set()

    async def wait_for(self, match, timeout: float = 30.0, start: int = 0):
        """The first message from index `start` on that `match`es (dicts only)."""
        async def find():
            i = start
            while True:
                while i < len(self.messages):
                    m = self.messages[i]
                    i += 1
                    if isinstance(m, dict) and match(m):
                        return m
                self._new.clear()
                await self._new.wait()
        return await asyncio.wait_for(find(), timeout)

    async def until_done(self, prompt_id: str, timeout: float = 60.0) -> list:
        """Every message of `prompt_id` (and binary frames) up to its `executing` null."""
        await self.wait_for(lambda m: m["type"] == "executing" and m["data"]["node"] is None
                            and m["data"]["prompt_id"] == prompt_id, timeout)
        return self.of(prompt_id)

    def of(self, prompt_id: str) -> list:
        out, inside = [], False
        for m in self.messages:
            if isinstance(m, bytes):
                if inside:
                    out.append(m)
                continue
            pid = m["data"].get("prompt_id")
            if pid == prompt_id:
                inside = True
                out.append(m)
                if m["type"] == "executing" and m["data"]["node"] is None:
                    inside = False
            elif m["type"] == "status" and inside:
                out.append(m)
        return out


def types(messages: list) -> list[str]:
    return ["<binary>" if isinstance(m, bytes) else m["type"] for m in messages]


async def post_prompt(session, url: str, prompt, client_id: str | None = None, **body) -> dict:
    async with session.post(url + "/prompt", json={"prompt": prompt, "client_id": client_id, **body}) as r:
        data = await r.json()
        assert r.status == 200, data
        return data


async def history_of(session, url: str, prompt_id: str) -> dict:
    async with session.get(f"{url}/history/{prompt_id}") as r:
        return (await r.json()).get(prompt_id)



async def wait_history(session, url: str, prompt_id: str, timeout: float = 60.0) -> dict:
    """The history entry of `prompt_id` once it is finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = await history_of(session, url, prompt_id)
        if entry is not None:
            return entry
        await asyncio.sleep(0.05)
    raise TimeoutError(f"prompt {prompt_id} did not finish")

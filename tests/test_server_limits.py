"""Requests from outside (issue 24): bodies are read whole up to their limit however they arrive,
and every refusal is a JSON 4xx in ComfyUI's error shape, aiohttp's own parser errors too."""
import asyncio
import json
import socket
import time

import aiohttp
import pytest

from tests.server_harness import ServerProc, run
from tests.test_engine import chain_prompt

MB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProc(tmp_path_factory.mktemp("limits") / "data").start()
    yield proc
    proc.stop()


def prompt_body(size: int) -> bytes:
    """A valid /prompt body of about `size` bytes: data carried along, as an embedded image would be."""
    return json.dumps({"prompt": chain_prompt(), "extra_data": {"extra_pnginfo": {"note": "x" * size}}}).encode()


def raw_request(url: str, head: bytes, body_parts=(), pause: float = 0.0) -> tuple[int, dict, bytes]:
    """Send a request over a plain socket (in parts, `pause` s apart); the status, headers and body."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head)
        for part in body_parts:
            time.sleep(pause)
            sock.sendall(part)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            top, sep, rest = data.partition(b"\r\n\r\n")
            length = [l for l in top.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if sep and length and len(rest) >= int(length[0].split(b":")[1]):
                break
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def json_error(headers: dict, body: bytes) -> dict:
    assert headers["content-type"].startswith("application/json"), (headers, body[:200])
    error = json.loads(body)["error"]
    assert set(error) == {"type", "message", "details", "extra_info"} and error["message"]
    return error


@pytest.mark.parametrize("size", [1 * MB, 10 * MB])
def test_large_valid_bodies_are_read_whole(server, size):
    """Before: anything over about 400 KB was 'not valid JSON: Unterminated string' (a partial read)."""
    body = prompt_body(size)

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/prompt", data=body, headers={"Content-Type": "application/json"}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["node_errors"] == {}
            async with s.post(server.url + "/userdata/workflows/big.json", data=body) as r:
                assert r.status == 200, await r.text()
            async with s.get(server.url + "/userdata/workflows/big.json") as r:
                assert await r.read() == body
            async with s.post(server.url + "/settings", data=json.dumps({"Big.Setting": "y" * size})) as r:
                assert r.status == 200, await r.text()
            async with s.get(server.url + "/settings/Big.Setting") as r:
                assert await r.json() == "y" * size
    run(main())


def test_a_body_sent_slowly_in_small_chunks(server):
    """With a Content-Length, in 64 pieces 20 ms apart; and chunked, without one."""
    body = prompt_body(MB)
    step = len(body) // 64 + 1
    head = (f"POST /prompt HTTP/1.1\r\nHost: {server.url.split('//')[1]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    status, headers, reply = raw_request(server.url, head, [body[i:i + step] for i in range(0, len(body), step)],
                                         pause=0.02)
    assert status == 200, reply[:300]
    assert json.loads(reply)["node_errors"] == {}

    async def chunks():
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]
            await asyncio.sleep(0.0005)

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/userdata/workflows/slow.json", data=chunks()) as r:
                assert r.status == 200, await r.text()
            async with s.get(server.url + "/userdata/workflows/slow.json") as r:
                assert await r.read() == body
    run(main())


def test_a_chunked_body_over_the_limit_is_413(server):
    async def chunks():
        for _ in range(17):
            yield b" " * MB

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/settings", data=chunks()) as r:
                assert r.status == 413 and (await r.json())["error"]["type"] == "too_large"
    run(main())


def test_long_user_names(server):
    """Before: POST /users took a 300-character name, and every write as that user was a 500."""
    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/users", json={"username": "u" * 300}) as r:
                assert r.status == 400 and "at most 100 characters" in (await r.json())["error"]["message"]
            async with s.post(server.url + "/users", json={"username": "v" * 100}) as r:
                assert r.status == 200
                user = await r.json()
            async with s.post(server.url + "/userdata/workflows/a.json", json={}, headers={"comfy-user": user}) as r:
                assert r.status == 200, await r.text()
            # a user an older Loom added with a name too long for a folder: refused, not a 500
            users = server.data_dir / "users.json"
            listed = json.loads(users.read_text())
            long_id = "w" * 300 + "_0"
            users.write_text(json.dumps({**listed, long_id: "w" * 300}))
            for method, path in [("POST", "/userdata/workflows/a.json"), ("POST", "/settings"),
                                 ("GET", "/userdata?dir=workflows"), ("GET", "/settings")]:
                async with s.request(method, server.url + path, json={}, headers={"comfy-user": long_id}) as r:
                    assert r.status == 400, (path, await r.text())
                    assert (await r.json())["error"]["type"] == "bad_name"
    run(main())


MULTIPART = {
    "no boundary": ("multipart/form-data", b"--abc\r\n\r\nx\r\n--abc--\r\n"),
    "empty boundary": ("multipart/form-data; boundary=", b"--abc\r\n\r\nx\r\n--abc--\r\n"),
    "wrong boundary": ("multipart/form-data; boundary=zzz", b"--abc\r\n\r\nx\r\n--abc--\r\n"),
    "unterminated": ("multipart/form-data; boundary=abc",
                     b'--abc\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\nabc'),
    "broken part header": ("multipart/form-data; boundary=abc", b"--abc\r\nBroken header line\r\n\r\nx\r\n--abc--\r\n"),
    "nested multipart": ("multipart/form-data; boundary=abc",
                         b'--abc\r\nContent-Type: multipart/mixed; boundary=zz\r\nContent-Disposition: form-data; '
                         b'name="image"\r\n\r\n--zz\r\n\r\nx\r\n--zz--\r\n--abc--\r\n'),
    "unknown transfer encoding": ("multipart/form-data; boundary=abc",
                                  b'--abc\r\nContent-Disposition: form-data; name="type"\r\n'
                                  b"Content-Transfer-Encoding: bogus\r\n\r\nx\r\n--abc--\r\n"),
    "broken deflate field": ("multipart/form-data; boundary=abc",
                             b'--abc\r\nContent-Disposition: form-data; name="type"\r\nContent-Encoding: deflate\r\n\r\n'
                             b"not deflate\r\n--abc--\r\n"),
    "huge field": ("multipart/form-data; boundary=abc",
                   b'--abc\r\nContent-Disposition: form-data; name="type"\r\n\r\n' + b"x" * 100_000 + b"\r\n--abc--\r\n"),
}


@pytest.mark.parametrize("case", MULTIPART)
def test_broken_multipart_uploads_are_400(server, case):
    """Before: a broken part header, a nested multipart and an unknown transfer encoding were 500s."""
    ctype, body = MULTIPART[case]

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/upload/image", data=body, headers={"Content-Type": ctype}) as r:
                assert r.status == 400, await r.text()
                json_error(r.headers, await r.read())
    run(main())


@pytest.mark.parametrize("head,needle", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: {host}\r\n\r\n", "too long"),
    (b"GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", "too long"),
    (b"POST /prompt HTTP/1.1\r\nHost: {host}\r\nIdempotency-Key: a\x01b\r\nContent-Length: 2\r\n\r\n{}",
     "Invalid header value char"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "HTTPS"),
])
def test_http_parser_errors_are_json(server, head, needle):
    """Before: aiohttp's own plain-text 400s (they never reach the middlewares)."""
    status, headers, body = raw_request(server.url, head.replace(b"{host}", server.url.split("//")[1].encode()))
    assert status == 400
    error = json_error(headers, body)
    assert error["type"] == "bad_http_request" and needle in error["message"], error


def server_rss(server) -> int:
    for line in open(f"/proc/{server.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no VmRSS")


def test_a_subgraph_bomb_is_refused_fast_with_flat_memory(server):
    """Before: no answer after 120 s and the server's memory past 1.6 GB."""
    from tests.test_workflow_limits import nested

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.get(server.url + "/object_info") as r:  # the nodes are loaded
                assert r.status == 200
            before = server_rss(server)
            start = time.perf_counter()
            async with s.post(server.url + "/prompt", json={"prompt": nested(11, 10)}) as r:
                seconds = time.perf_counter() - start
                assert r.status == 400
                body = await r.json()
            grown = server_rss(server) - before
        assert "subgraph 'Level 10' (node 2) alone expands to 10,000,000,000 nodes" in body["error"]["message"]
        assert seconds < 5 and grown < 16 * MB, (seconds, grown)  # wall time on a possibly busy machine
    run(main())


def test_the_official_frontends_default_workflow_gets_missing_node_types(server):
    """The body ComfyUI's frontend 1.58.1 posts for its default workflow (two node types Loom lacks).
    Before: 400 "at node 68: 'class_type' is a required property" with node_errors {}."""
    from tests.test_workflow_limits import FRONTEND_REQUEST

    body = {**json.loads(FRONTEND_REQUEST.read_text()), "client_id": "abc"}

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/prompt", json=body) as r:
                assert r.status == 400
                reply = await r.json()
        assert reply["error"]["type"] == "missing_node_type"
        assert reply["error"]["message"] == "node types not installed: EmptySD3LatentImage, ModelSamplingAuraFlow"
        assert {k: e["class_type"] for k, e in reply["node_errors"].items()} == \
            {"68": "EmptySD3LatentImage", "69": "ModelSamplingAuraFlow"}
    run(main())

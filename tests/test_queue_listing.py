"""GET /queue and /history paged as docs/queue-api.md says, in ComfyUI's shapes, and gzip for the
JSON replies of clients that ask for it (a real server with the test nodes)."""
import asyncio
import gzip
import io
import json

import aiohttp
import pytest

from loomqueue.store import RawEntry
from loomserver import listing
from loomserver.compress import accepts_gzip
from tests.server_harness import ServerProc, picture_prompt, post_prompt, run, wait_history


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProc(tmp_path_factory.mktemp("listing") / "data").start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


async def get(s, url, **params):
    async with s.get(url, params=params) as r:
        body = await r.json()
        assert r.status == 200, body
        return body


def test_queue_whole_and_paged(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            slow = await post_prompt(s, server.url, picture_prompt(seed=1, steps=50, delay=0.1), client_id="c1")
            ids = [(await post_prompt(s, server.url, picture_prompt(seed=10 + i)))["prompt_id"] for i in range(5)]
            for _ in range(100):  # until the slow one runs
                whole = await get(s, server.url + "/queue")
                if whole["queue_running"]:
                    break
                await asyncio.sleep(0.05)
            assert set(whole) == {"queue_running", "queue_pending"}  # ComfyUI's reply, nothing added
            [running] = whole["queue_running"]
            assert running[1] == slow["prompt_id"] and running[2]["2"]["inputs"]["seed"] == 1
            assert running[3]["client_id"] == "c1" and running[4] == ["4"]
            assert [e[1] for e in whole["queue_pending"]] == ids
            assert [e[2]["2"]["inputs"]["seed"] for e in whole["queue_pending"]] == [10, 11, 12, 13, 14]

            page = await get(s, server.url + "/api/queue", max_items="2", offset="1")
            assert page["queue_running"] == whole["queue_running"]
            assert page["queue_pending"] == whole["queue_pending"][1:3]
            assert page["pagination"] == {"offset": 1, "limit": 2, "total": 5, "has_more": True}
            last = await get(s, server.url + "/queue", max_items="10", offset="3")
            assert [e[1] for e in last["queue_pending"]] == ids[3:] and not last["pagination"]["has_more"]
            for bad in ({"max_items": "-1"}, {"offset": "x"}, {"max_items": "1.5"}):
                async with s.get(server.url + "/queue", params=bad) as r:
                    assert r.status == 400 and (await r.json())["error"]["type"] == "bad_parameter"

            async with s.post(server.url + "/queue", json={"clear": True}) as r:
                assert (await r.json())["deleted"] == 5
            async with s.post(server.url + "/interrupt", json={}) as r:
                assert r.status == 200
            await wait_history(s, server.url, slow["prompt_id"])
    run(main())


def test_history_pages_as_comfyui(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            for i in range(4):
                done = await post_prompt(s, server.url, picture_prompt(seed=100 + i))
                await wait_history(s, server.url, done["prompt_id"])
            everything = await get(s, server.url + "/history")
            order = list(everything)  # oldest first
            assert len(order) >= 4 and order[-1] == done["prompt_id"]
            newest = await get(s, server.url + "/history", max_items="2")
            assert list(newest) == order[-2:]
            assert await get(s, server.url + "/history", max_items="2", offset="-1") == newest
            assert list(await get(s, server.url + "/history", max_items="2", offset="1")) == order[1:3]
            assert list(await get(s, server.url + "/history", offset=str(len(order) - 1))) == order[-1:]
            entry = everything[done["prompt_id"]]
            assert set(entry) == {"prompt", "outputs", "status", "meta"}
            assert entry["prompt"][1] == done["prompt_id"] and entry["status"]["status_str"] == "success"
            assert entry["outputs"]["4"]["images"][0]["filename"].endswith(".png")
            assert await get(s, server.url + "/history/" + done["prompt_id"]) == {done["prompt_id"]: entry}
            assert await get(s, server.url + "/history/nope") == {}
    run(main())


def test_json_replies_are_gzipped_for_clients_that_ask(server):
    async def main():
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            async with s.get(server.url + "/object_info", headers={"Accept-Encoding": "gzip, deflate, br"}) as r:
                assert r.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in r.headers["Vary"]
                zipped = await r.read()
            async with s.get(server.url + "/object_info", headers={"Accept-Encoding": "identity"}) as r:
                assert "Content-Encoding" not in r.headers
                plain = await r.read()
            async with s.get(server.url + "/object_info", skip_auto_headers=["Accept-Encoding"]) as r:
                assert "Content-Encoding" not in r.headers and await r.read() == plain
            assert json.loads(gzip.decompress(zipped)) == json.loads(plain) and len(zipped) < len(plain) / 3
            assert "Pattern" in json.loads(plain)
            async with s.get(server.url + "/prompt", headers={"Accept-Encoding": "gzip"}) as r:
                assert "Content-Encoding" not in r.headers  # a few bytes: not worth it
                assert "exec_info" in json.loads(await r.read())
            form = aiohttp.FormData()
            form.add_field("image", noise_png(), filename="noise.png", content_type="image/png")
            async with s.post(server.url + "/upload/image", data=form) as r:
                uploaded = await r.json()
            async with s.get(server.url + "/view", params={"filename": uploaded["name"], "type": "input"},
                             headers={"Accept-Encoding": "gzip"}) as r:
                body = await r.read()
                assert r.status == 200 and "Content-Encoding" not in r.headers  # PNG: compressed already
                assert body == noise_png()
    run(main())


def noise_png() -> bytes:
    import random

    from PIL import Image

    image = Image.frombytes("RGB", (64, 64), random.Random(0).randbytes(64 * 64 * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_accept_encoding_is_read_with_its_weights():
    assert accepts_gzip("gzip") and accepts_gzip("deflate, GZIP;q=0.5") and accepts_gzip("*")
    assert not accepts_gzip("") and not accepts_gzip("identity") and not accepts_gzip("br")
    assert not accepts_gzip("gzip;q=0") and not accepts_gzip("*, gzip;q=0") and not accepts_gzip("gzip;q=x")


def test_spliced_entries_are_strict_json():
    """Stored text may hold NaN (Python's encoder writes it); a reply never does."""
    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in a reply"))

    plain = RawEntry(3, "a", '{"1":{"inputs":{"x":0.5}}}', '{"client_id":"c"}', '["1"]',
                     '{"status":{"completed":true},"outputs":{},"meta":{}}')
    assert strict(listing.history_reply([plain])) == {"a": {
        "prompt": [3, "a", {"1": {"inputs": {"x": 0.5}}}, {"client_id": "c"}, ["1"]],
        "status": {"completed": True}, "outputs": {}, "meta": {}}}
    odd = RawEntry(4, 'b"', '{"1":{"inputs":{"x":NaN,"y":-Infinity}}}', "{}", "[]", '{"status":{"v":Infinity}}')
    reply = strict(listing.history_reply([odd]))
    assert reply['b"']["prompt"][2]["1"]["inputs"] == {"x": "nan", "y": "-inf"}
    assert reply['b"']["status"] == {"v": "inf"}
    assert strict(listing.queue_item(odd))[1] == 'b"'

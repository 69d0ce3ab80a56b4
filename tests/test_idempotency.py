"""POST /prompt with an Idempotency-Key (ComfyUI's API v2 semantics): the same key and body give the
first request's prompt (replayed, never queued twice), another body with that key is 422
idempotency_key_reuse, and the keys survive a crash of the server."""
import asyncio
import json
import sqlite3

import aiohttp

from tests.server_harness import ServerProc, picture_prompt, run, wait_history


async def post(session, url, body, key=None, raw: bytes | None = None):
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key is not None else {})}
    async with session.post(url + "/prompt", data=raw if raw is not None else json.dumps(body), headers=headers) as r:
        return r.status, r.headers.get("Idempotency-Replayed"), await r.json()


def pending_ids(data_dir):
    with sqlite3.connect(data_dir / "queue.sqlite3") as db:
        return [r[0] for r in db.execute("SELECT id FROM prompts ORDER BY number")]


def test_idempotent_submits(tmp_path):
    data = tmp_path / "data"
    server = ServerProc(data).start()
    body = {"prompt": picture_prompt(seed=5), "client_id": "c1", "extra_data": {"tag": "x"}}
    try:
        server.wait_ready()

        async def main():
            async with aiohttp.ClientSession() as s:
                status, replayed, first = await post(s, server.url, body, "key-1")
                assert status == 200 and replayed is None and first["node_errors"] == {}
                # the same body written another way (key order, white space) is the same request
                raw = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
                status, replayed, again = await post(s, server.url, None, "key-1", raw=raw)
                assert (status, replayed, again) == (200, "true", first)

                other = {**body, "prompt": picture_prompt(seed=6)}
                status, _, refused = await post(s, server.url, other, "key-1")
                assert status == 422 and refused["error"]["type"] == "idempotency_key_reuse"
                assert first["prompt_id"] in refused["error"]["message"]

                # a request that fails validation stores no key: the corrected retry is queued
                broken = {"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}
                assert (await post(s, server.url, broken, "key-2"))[0] == 400
                status, replayed, fixed = await post(s, server.url, body, "key-2")
                assert status == 200 and replayed is None and fixed["prompt_id"] != first["prompt_id"]

                # ten clients retrying at once with one key queue one prompt
                racing = {"prompt": picture_prompt(seed=7)}
                answers = await asyncio.gather(*(post(s, server.url, racing, "key-3") for _ in range(10)))
                assert {a[0] for a in answers} == {200} and len({a[2]["prompt_id"] for a in answers}) == 1
                assert sorted(a[1] or "" for a in answers) == [""] + ["true"] * 9

                for bad in ("", "x" * 256, "k\u00e9y"):
                    async with s.post(server.url + "/prompt", json=body,
                                      headers={"Idempotency-Key": bad.encode("utf-8").decode("latin-1")}) as r:
                        assert r.status == 400, bad
                # without a key, the same body is a new prompt each time (ComfyUI's behaviour)
                plain = [(await post(s, server.url, body))[2]["prompt_id"] for _ in range(2)]
                assert plain[0] != plain[1]
                for pid in (first["prompt_id"], fixed["prompt_id"], answers[0][2]["prompt_id"], *plain):
                    await wait_history(s, server.url, pid)
                return first, answers[0][2]["prompt_id"], plain
        first, racing_id, plain = run(main())
        assert len(pending_ids(data)) == 5  # first, fixed, the racing one, two without a key
        server.kill()  # the keys are in the queue file, written with their prompts

        restarted = ServerProc(data).start()
        try:
            restarted.wait_ready()

            async def after():
                async with aiohttp.ClientSession() as s:
                    return await post(s, restarted.url, body, "key-1")
            assert run(after()) == (200, "true", first)
        finally:
            restarted.stop()
        assert len(pending_ids(data)) == 5
    finally:
        server.stop()

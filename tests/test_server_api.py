"""The HTTP and WebSocket API against a real server process, on the pure-Python picture nodes."""
import io
import json
import uuid

import aiohttp
import pytest
from PIL import Image

from tests.server_harness import (ServerProc, WsLog, history_of, picture_editor, picture_prompt, post_prompt, run,
                                  wait_history,
                                  types)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProc(tmp_path_factory.mktemp("api") / "data").start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


PREVIEWS = {"preview_method": "auto"}  # previews are sent only to a client that asks (ComfyUI's extra_data)


def png_bytes(color=(255, 0, 0), size=(8, 8), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def core_sequence(messages):
    """Message types without status and binary frames, executing/executed with their node."""
    out = []
    for m in messages:
        if isinstance(m, bytes) or m["type"] == "status":
            continue
        node = m["data"].get("node") if m["type"] in ("executing", "executed") else None
        out.append(f"{m['type']}:{node}" if m["type"] in ("executing", "executed") else m["type"])
    return out


def test_ws_sequence_caching_and_formats(server):
    async def main():
        async with aiohttp.ClientSession() as s, WsLog(s, server.url, "alice") as ws:
            assert ws.messages[0]["data"]["sid"] == "alice"
            assert "queue_remaining" in ws.messages[0]["data"]["status"]["exec_info"]

            # cold run, API format: every node runs, 4 progress steps of the "sampler"
            first = await post_prompt(s, server.url, picture_prompt(seed=11), "alice", extra_data=PREVIEWS)
            msgs = await ws.until_done(first["prompt_id"])
            assert core_sequence(msgs) == [
                "execution_start", "execution_cached", "executing:1", "executing:2",
                "progress", "progress", "progress", "progress", "executing:3", "executing:4", "executed:4",
                "execution_success", "executing:None"]
            assert types(msgs)[-3:] == ["execution_success", "status", "executing"]
            progress = [m["data"] for m in msgs if not isinstance(m, bytes) and m["type"] == "progress"]
            assert [(p["value"], p["max"], p["node"]) for p in progress] == [(i, 4, "2") for i in (1, 2, 3, 4)]
            cached = next(m for m in msgs if not isinstance(m, bytes) and m["type"] == "execution_cached")
            assert cached["data"]["nodes"] == []
            frames = [m for m in msgs if isinstance(m, bytes)]
            assert 1 <= len(frames) < 4, len(frames)  # throttled: fewer frames than steps
            assert frames[0][:8] == b"\x00\x00\x00\x01\x00\x00\x00\x01" and frames[0][8:10] == b"\xff\xd8"
            assert Image.open(io.BytesIO(frames[0][8:])).size == (16, 16)

            # identical re-run from the editor format: everything cached, the save node reported
            second = await post_prompt(s, server.url, picture_editor(seed=11), "alice")
            msgs = await ws.until_done(second["prompt_id"])
            cached = next(m for m in msgs if m["type"] == "execution_cached")
            assert sorted(cached["data"]["nodes"]) == ["1", "2", "3", "4"]
            assert core_sequence(msgs) == ["execution_start", "execution_cached", "executed:4",
                                           "execution_success", "executing:None"]

            # changed seed: the "sampler", "decoder" and saver re-run, the "model" does not
            third = await post_prompt(s, server.url, picture_editor(seed=12), "alice")
            msgs = await ws.until_done(third["prompt_id"])
            assert [m["data"]["node"] for m in msgs if not isinstance(m, bytes) and m["type"] == "executing"] \
                == ["2", "3", "4", None]
            assert next(m for m in msgs if m["type"] == "execution_cached")["data"]["nodes"] == ["1"]

            # history is written before the end is announced, and /view serves the PNG with both chunks
            entry = await history_of(s, server.url, third["prompt_id"])
            assert entry["status"]["status_str"] == "success" and entry["status"]["completed"]
            assert entry["prompt"][1] == third["prompt_id"] and entry["prompt"][4] == ["4"]
            image = entry["outputs"]["4"]["images"][0]
            async with s.get(server.url + "/view", params=image) as r:
                assert r.status == 200 and r.content_type == "image/png"
                png = Image.open(io.BytesIO(await r.read()))
            assert json.loads(png.text["prompt"])["2"]["inputs"]["seed"] == 12
            carried = json.loads(png.text["workflow"])  # the editor workflow as a Loom file (graph.workflow)
            assert (carried.pop("format"), carried.pop("format_version"), carried.pop("models")) == ("loom-workflow", 1, [])
            assert carried == picture_editor(seed=12)
            async with s.get(server.url + "/api/history", params={"max_items": "2"}) as r:
                assert list(await r.json()) == [second["prompt_id"], third["prompt_id"]]
    run(main())


def test_api_format_carries_extra_pnginfo_and_other_clients_see_nothing(server):
    workflow = {"nodes": [], "note": "the editor JSON the client sends along"}

    async def main():
        async with aiohttp.ClientSession() as s, WsLog(s, server.url, "bob") as bob, \
                WsLog(s, server.url, "carol") as carol:
            done = await post_prompt(s, server.url, picture_prompt(seed=99, prefix="extra"), "bob",
                                     extra_data={"extra_pnginfo": {"workflow": workflow}, **PREVIEWS})
            msgs = await bob.until_done(done["prompt_id"])
            assert any(isinstance(m, bytes) for m in msgs)
            entry = await history_of(s, server.url, done["prompt_id"])
            async with s.get(server.url + "/api/view", params=entry["outputs"]["4"]["images"][0]) as r:
                png = Image.open(io.BytesIO(await r.read()))
            assert json.loads(png.text["workflow"]) == workflow
            assert json.loads(png.text["prompt"])["4"]["inputs"]["filename_prefix"] == "extra"
            # carol gets status broadcasts but neither bob's events nor his previews
            assert all(isinstance(m, dict) and m["type"] == "status" for m in carol.messages)
    run(main())


def test_queue_history_and_prompt_routes(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            pid = "my-own-id-" + uuid.uuid4().hex[:8]
            body = await post_prompt(s, server.url, picture_prompt(seed=5), prompt_id=pid)
            assert body["prompt_id"] == pid and isinstance(body["number"], int) and body["node_errors"] == {}
            async with s.post(server.url + "/prompt", json={"prompt": picture_prompt(), "prompt_id": pid}) as r:
                assert r.status == 400  # ids are unique
            assert (await wait_history(s, server.url, pid))["status"]["status_str"] == "success"
            async with s.get(server.url + "/prompt") as r:
                assert (await r.json()) == {"exec_info": {"queue_remaining": 0}}
            async with s.get(server.url + "/queue") as r:
                assert (await r.json()) == {"queue_running": [], "queue_pending": []}
            async with s.post(server.url + "/history", json={"delete": [pid]}) as r:
                assert (await r.json())["deleted"] == 1
            assert await history_of(s, server.url, pid) is None
            async with s.get(server.url + "/history/nope") as r:
                assert r.status == 200 and (await r.json()) == {}
    run(main())


def test_object_info_models_free_openapi(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.get(server.url + "/object_info") as r:
                info = await r.json()
            noise = info["Noise"]
            assert noise["input"]["required"]["seed"][1]["control_after_generate"] is True
            assert noise["output"] == ["PICTURE"] and info["SavePicture"]["output_node"] is True
            async with s.get(server.url + "/api/object_info/Noise") as r:
                assert (await r.json()) == {"Noise": noise}
            (server.data_dir / "models" / "some-model").mkdir(exist_ok=True)
            async with s.get(server.url + "/models") as r:
                assert await r.json() == ["checkpoints"]
            async with s.get(server.url + "/api/models/checkpoints") as r:
                assert await r.json() == ["some-model"]
            async with s.post(server.url + "/free", json={"unload_models": True}) as r:
                assert r.status == 200
            async with s.get(server.url + "/openapi.json") as r:
                doc = await r.json()
            assert doc["openapi"].startswith("3.")
            for path in ("/prompt", "/api/prompt", "/queue", "/history/{prompt_id}", "/view", "/upload/image",
                         "/userdata/{path}", "/ws", "/system_stats", "/free", "/interrupt", "/object_info/{node_class}"):
                assert path in doc["paths"], path
            assert doc["paths"]["/prompt"]["post"]["requestBody"]["content"]["application/json"]["schema"]["required"] \
                == ["prompt"]
    run(main())


def test_upload_is_checked_and_deduplicated(server):
    async def upload(s, data, name, **fields):
        form = aiohttp.FormData()
        form.add_field("image", data, filename=name, content_type="image/png")
        for k, v in fields.items():
            form.add_field(k, v)
        async with s.post(server.url + "/upload/image", data=form) as r:
            return r.status, await r.json()

    async def main():
        async with aiohttp.ClientSession() as s:
            red, blue = png_bytes((255, 0, 0)), png_bytes((0, 0, 255))
            status, first = await upload(s, red, "pic.png")
            assert status == 200 and first == {"name": "pic.png", "subfolder": "", "type": "input"}
            assert (await upload(s, red, "pic.png"))[1]["name"] == "pic.png"  # same bytes: same file
            status, other = await upload(s, blue, "pic.png")  # same name, other bytes: kept apart
            assert status == 200 and other["name"].startswith("pic-") and other["name"].endswith(".png")
            assert (await upload(s, blue, "pic.png"))[1]["name"] == other["name"]
            assert (await upload(s, blue, "pic.png", overwrite="true"))[1]["name"] == "pic.png"
            async with s.get(server.url + "/view", params={"filename": "pic.png", "type": "input"}) as r:
                assert await r.read() == blue
            status, sub = await upload(s, png_bytes(fmt="JPEG"), "../../evil.png", subfolder="masks")
            assert status == 200 and sub == {"name": "evil.jpg", "subfolder": "masks", "type": "input"}
            assert (server.data_dir / "input" / "masks" / "evil.jpg").is_file()
            status, err = await upload(s, b"<html>not an image</html>", "x.png")
            assert status == 400 and err["error"]["type"] == "invalid_image"
            status, err = await upload(s, red, "x.png", subfolder="../../..")
            assert status == 403 and err["error"]["type"] == "unsafe_path"
            status, err = await upload(s, red, "x.png", type="output")
            assert status == 400
    run(main())


def test_userdata_workflows(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            wf = picture_editor(seed=3)
            async with s.post(server.url + "/userdata/workflows/My flow (1).json", json=wf) as r:
                assert r.status == 200 and await r.json() == "workflows/My flow (1).json"
            async with s.post(server.url + "/api/userdata/workflows%2Fsecond.json", data=json.dumps(wf)) as r:
                assert r.status == 200
            async with s.post(server.url + "/userdata/workflows/second.json?overwrite=false", json=wf) as r:
                assert r.status == 409
            for listing in ("/userdata?dir=workflows", "/userdata/workflows"):
                async with s.get(server.url + listing) as r:
                    assert await r.json() == ["My flow (1).json", "second.json"]
            async with s.get(server.url + "/userdata/workflows%2FMy%20flow%20(1).json") as r:
                assert json.loads(await r.read()) == wf
            async with s.delete(server.url + "/userdata/workflows/second.json") as r:
                assert r.status == 204
            async with s.get(server.url + "/userdata/workflows/second.json") as r:
                assert r.status == 404
    run(main())


BIG = b'{"prompt": "' + b"x" * (17 << 20) + b'"}'


@pytest.mark.parametrize("method,path,body,status,kind", [
    ("POST", "/prompt", b"{not json", 400, "invalid_json"),
    ("POST", "/prompt", b"", 400, "invalid_json"),
    ("POST", "/prompt", b"[1, 2]", 400, "invalid_body"),
    ("POST", "/prompt", b'"text"', 400, "invalid_body"),
    ("POST", "/prompt", b"{}", 400, "no_prompt"),
    ("POST", "/prompt", b'{"prompt": 5}', 400, "invalid_prompt"),
    ("POST", "/prompt", b'{"prompt": [1]}', 400, "invalid_prompt"),
    ("POST", "/prompt", b'{"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}', 400, "prompt_no_outputs"),
    ("POST", "/prompt", json.dumps({"prompt": picture_prompt(), "client_id": 5}).encode(), 400, "bad_parameter"),
    ("POST", "/prompt", json.dumps({"prompt": picture_prompt(), "extra_data": []}).encode(), 400, "invalid_body"),
    ("POST", "/prompt", json.dumps({"prompt": picture_prompt(), "front": "soon"}).encode(), 400, "bad_parameter"),
    ("POST", "/prompt", json.dumps({"prompt": picture_prompt(), "prompt_id": "../x"}).encode(), 400, "bad_parameter"),
    ("POST", "/prompt", BIG, 413, "too_large"),
    ("POST", "/prompt", b'{"prompt": ' + b"[" * 100_000, 400, "invalid_json"),
    ("POST", "/prompt", b'{"prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "invalid_json"),
    ("POST", "/prompt", json.dumps({"prompt": {**picture_prompt(), "1": {"class_type": "Pattern", "inputs": {
        "size": float("nan")}}}}).encode(), 400, "prompt_outputs_failed_validation"),
    ("POST", "/api/prompt", b"{not json", 400, "invalid_json"),
    ("DELETE", "/prompt", b"", 405, "method_not_allowed"),
    ("GET", "/no/such/route", b"", 404, "not_found"),
    ("GET", "/api/no-such-route", b"", 404, "not_found"),
    ("POST", "/queue", b'{"delete": "abc"}', 400, "bad_parameter"),
    ("POST", "/queue", b"[]", 400, "invalid_body"),
    ("POST", "/history", b'{"clear": "maybe"}', 400, "bad_parameter"),
    ("POST", "/interrupt", b"[]", 400, "invalid_body"),
    ("POST", "/interrupt", b'{"prompt_id": 7}', 400, "bad_parameter"),
    ("POST", "/free", b'{"unload_models": 3}', 400, "bad_parameter"),
    ("GET", "/history?max_items=-1", b"", 400, "bad_parameter"),
    ("GET", "/view", b"", 400, "missing_parameter"),
    ("GET", "/view?filename=a.png&type=secret", b"", 400, "bad_parameter"),
    ("GET", "/view?filename=missing.png", b"", 404, "not_found"),
    ("GET", "/object_info/Nope", b"", 404, "not_found"),
    ("GET", "/models/nope", b"", 404, "not_found"),
    ("POST", "/upload/image", b"{}", 400, "bad_request"),
    ("GET", "/userdata?dir=..%2Fqueue.sqlite3", b"", 400, "bad_name"),
    ("GET", "/userdata?dir=", b"", 400, "bad_name"),
    ("GET", "/userdata/workflows%2F..%2F..%2Fqueue.sqlite3", b"", 400, "bad_name"),
    ("POST", "/userdata/workflows/..%2F..%2Fevil.json", b"{}", 400, "bad_name"),
    ("POST", "/userdata/workflows/..hidden.json", b"{}", 400, "bad_name"),
    ("POST", "/userdata/workflows/a.json", b"not json", 400, "invalid_json"),
    ("POST", "/userdata/workflows/a.json", b"1", 400, "invalid_json"),
    ("POST", "/userdata/workflows/a.json", b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
    ("GET", "/userdata/other/a.json", b"", 404, "not_found"),
])
def test_bad_input_gets_json_4xx(server, method, path, body, status, kind):
    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.request(method, server.url + path, data=body,
                                 headers={"Content-Type": "application/json"}) as r:
                assert r.status == status, await r.text()
                data = json.loads(await r.text(), parse_constant=lambda c: pytest.fail(f"{c} in the reply"))
                assert data["error"]["type"] == kind and data["error"]["message"]
    run(main())


def test_validation_errors_name_node_and_input(server):
    prompt = picture_prompt()
    prompt["2"]["inputs"]["steps"] = "many"
    prompt["1"]["inputs"]["size"] = 9999
    prompt["5"] = {"class_type": "SavePicture", "inputs": {"picture": ["9", 0]}}

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/prompt", json={"prompt": prompt}) as r:
                assert r.status == 400
                body = await r.json()
            assert body["error"]["type"] == "prompt_outputs_failed_validation"
            assert body["node_errors"]["2"]["errors"][0]["type"] == "invalid_input_type"
            assert body["node_errors"]["2"]["errors"][0]["extra_info"]["input_name"] == "steps"
            assert body["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
            assert body["node_errors"]["5"]["errors"][0]["type"] == "bad_linked_input"
            async with s.get(server.url + "/queue") as r:
                assert (await r.json())["queue_pending"] == []
    run(main())


FAILING = {
    "1": {"class_type": "Number", "inputs": {"value": 1.0}},
    "2": {"class_type": "Fail", "inputs": {"x": ["1", 0]}},
    "3": {"class_type": "ToText", "inputs": {"x": ["2", 0]}},
    "4": {"class_type": "Show", "inputs": {"text": ["3", 0]}},
}


async def failing_run(url: str) -> tuple[dict, dict]:
    async with aiohttp.ClientSession() as s, WsLog(s, url, "err") as ws:
        pid = (await post_prompt(s, url, FAILING, "err"))["prompt_id"]
        msgs = [m for m in await ws.until_done(pid) if isinstance(m, dict)]
        assert [m["type"] for m in msgs][-3:] == ["execution_error", "status", "executing"]
        return msgs[-3]["data"], await wait_history(s, url, pid)


def test_node_failure_is_reported_without_traceback(server):
    error, entry = run(failing_run(server.url))
    assert (error["node_id"], error["node_type"], error["exception_type"]) == ("2", "Fail", "RuntimeError")
    assert error["exception_message"] == "this node always fails" and error["traceback"] == []
    assert entry["status"]["status_str"] == "error" and entry["status"]["messages"][-1][0] == "execution_error"


def test_verbose_errors_include_the_traceback(tmp_path):
    proc = ServerProc(tmp_path / "data", "--verbose-errors").start()
    try:
        proc.wait_ready()
        error, _ = run(failing_run(proc.url))
        assert any("this node always fails" in line for line in error["traceback"])
    finally:
        proc.stop()


def test_no_previews_unless_asked(server):
    """A client that treats any binary frame as its image must get none unless it asks for previews."""
    async def main():
        async with aiohttp.ClientSession() as s, WsLog(s, server.url, "plain") as ws:
            for seed, extra in enumerate(({}, {"preview_method": "none"}, {"preview_method": "default"})):
                done = await post_prompt(s, server.url, picture_prompt(seed=310 + seed, steps=8), "plain",
                                         extra_data=extra)
                msgs = await ws.until_done(done["prompt_id"])
                assert "progress" in types(msgs) and "<binary>" not in types(msgs), extra
            asked = await post_prompt(s, server.url, picture_prompt(seed=32, steps=8), "plain",
                                      extra_data={"preview_method": "latent2rgb"})
            assert "<binary>" in types(await ws.until_done(asked["prompt_id"]))
            async with s.post(server.url + "/prompt", json={"prompt": picture_prompt(), "client_id": "plain",
                                                            "extra_data": {"preview_method": "fancy"}}) as r:
                assert r.status == 400 and "preview_method" in (await r.json())["error"]["message"]
    run(main())

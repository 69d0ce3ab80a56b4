"""A full txt2img run on the tiny demo model through the server: the WebSocket sequence, previews,
the cache across re-runs from the editor format, and the saved PNG's metadata."""
import io
import json
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from tests.server_harness import ServerProc, WsLog, history_of, post_prompt, run

ROOT = Path(__file__).resolve().parent.parent
TXT2IMG = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
STEPS = TXT2IMG["6"]["inputs"]["steps"] = 4  # the sequence is the same at 20; fewer keeps the suite quick


def to_editor(prompt: dict, object_info: dict) -> dict:
    """The editor (litegraph) form of an API prompt: links as link records, widgets by position,
    'fixed' after each seed widget, as the editor saves it."""
    nodes, links = [], []
    for node_id, node in prompt.items():
        info = object_info[node["class_type"]]
        specs = {**info["input"]["required"], **info["input"].get("optional", {})}
        order = info["input_order"]["required"] + info["input_order"].get("optional", [])
        inputs, widgets = [], []
        for name in order:
            value = node["inputs"].get(name)
            spec = specs[name]
            is_widget = isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
            if isinstance(value, list):
                links.append([len(links) + 1, int(value[0]), value[1], int(node_id), len(inputs), "*"])
                inputs.append({"name": name, "type": spec[0] if not is_widget else "*", "link": len(links)})
            elif is_widget:
                widgets.append(value if value is not None else spec[1].get("default"))
                if spec[1].get("control_after_generate"):
                    widgets.append("fixed")
        nodes.append({"id": int(node_id), "type": node["class_type"], "pos": [0, 0], "size": [200, 100],
                      "mode": 0, "inputs": inputs, "outputs": [], "widgets_values": widgets, "properties": {}})
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # ready once it has written the tiny model into the empty models folder
    with ServerProc(tmp_path_factory.mktemp("sd") / "data", custom_nodes=False).running() as proc:
        yield proc


def test_txt2img_on_the_tiny_model(server):
    assert (server.data_dir / "models" / "tiny-sd" / "model_index.json").is_file()

    async def main():
        async with aiohttp.ClientSession() as s, WsLog(s, server.url, "sd") as ws:
            async with s.get(server.url + "/object_info") as r:
                info = await r.json()

            # cold run, API format
            first = await post_prompt(s, server.url, TXT2IMG, "sd", extra_data={"preview_method": "auto"})
            msgs = await ws.until_done(first["prompt_id"], timeout=240)
            text = [m for m in msgs if isinstance(m, dict)]
            kinds = [m["type"] for m in text]
            assert kinds[:2] == ["execution_start", "execution_cached"] and text[1]["data"]["nodes"] == []
            assert kinds[-4:] == ["executed", "execution_success", "status", "executing"]
            assert text[-4]["data"]["node"] == "10" and text[-4]["data"]["output"]["images"]
            ran = [m["data"]["node"] for m in text if m["type"] == "executing"]
            assert sorted(ran[:-1], key=int) == [str(i) for i in range(1, 11)] and ran[-1] is None
            assert ran.index("8") < ran.index("9") < ran.index("10")
            progress = [m["data"] for m in text if m["type"] == "progress"]
            assert [(p["value"], p["max"], p["node"]) for p in progress] == [(i, STEPS, "8") for i in range(1, STEPS + 1)]
            at = {m["data"]["node"]: i for i, m in enumerate(text) if m["type"] == "executing"}
            assert all(at["8"] < i < at["9"] for i, k in enumerate(kinds) if k == "progress")  # during the sampler
            frames = [m for m in msgs if isinstance(m, bytes)]
            assert frames and all(f[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x01" for f in frames)
            assert Image.open(io.BytesIO(frames[-1][8:])).format == "JPEG"

            # the same workflow from the editor: everything cached
            editor = to_editor(TXT2IMG, info)
            second = await post_prompt(s, server.url, editor, "sd")
            msgs = [m for m in await ws.until_done(second["prompt_id"]) if isinstance(m, dict)]
            assert sorted(next(m for m in msgs if m["type"] == "execution_cached")["data"]["nodes"], key=int) \
                == [str(i) for i in range(1, 11)]
            assert [m["type"] for m in msgs if m["type"] not in ("status",)] == [
                "execution_start", "execution_cached", "executed", "execution_success", "executing"]

            # a new seed: only the noise, the sampler, the decoder and the saver run again
            editor = to_editor({**TXT2IMG, "7": {**TXT2IMG["7"], "inputs": {**TXT2IMG["7"]["inputs"], "seed": 43}}},
                               info)
            third = await post_prompt(s, server.url, editor, "sd")
            msgs = [m for m in await ws.until_done(third["prompt_id"], timeout=240) if isinstance(m, dict)]
            assert [m["data"]["node"] for m in msgs if m["type"] == "executing"] == ["7", "8", "9", "10", None]

            entry = await history_of(s, server.url, third["prompt_id"])
            image = entry["outputs"]["10"]["images"][0]
            async with s.get(server.url + "/view", params=image) as r:
                assert r.status == 200
                png = Image.open(io.BytesIO(await r.read()))
            assert png.size == (64, 64)
            assert json.loads(png.text["prompt"])["7"]["inputs"]["seed"] == 43
            carried = json.loads(png.text["workflow"])  # the editor workflow as a Loom file naming its model
            assert (carried.pop("format"), carried.pop("format_version")) == ("loom-workflow", 1)
            assert [m["name"] for m in carried.pop("models")] == ["tiny-sd"]
            assert carried == editor
    run(main())


def test_image_compare_ui_output_in_the_executed_event_and_history(server):
    """ImageCompare's UI output is ComfyUI's {a_images, b_images}, in the WebSocket `executed` event and
    in /history, and each file is served by /view."""
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0xFF0000}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "ImageCompare", "inputs": {"image_a": ["1", 0], "image_b": ["2", 0]}}}

    async def main():
        async with aiohttp.ClientSession() as s, WsLog(s, server.url, "compare") as ws:
            queued = await post_prompt(s, server.url, prompt, "compare")
            msgs = [m for m in await ws.until_done(queued["prompt_id"]) if isinstance(m, dict)]
            [executed] = [m["data"] for m in msgs if m["type"] == "executed"]
            assert executed["node"] == "3" and set(executed["output"]) == {"a_images", "b_images"}
            entry = await history_of(s, server.url, queued["prompt_id"])
            assert entry["outputs"]["3"] == executed["output"]
            colours = []
            for key in ("a_images", "b_images"):
                [ref] = executed["output"][key]
                async with s.get(server.url + "/view", params=ref) as r:
                    assert r.status == 200 and ref["type"] == "temp"
                    colours.append(Image.open(io.BytesIO(await r.read())).convert("RGB").getpixel((0, 0)))
            assert colours == [(255, 0, 0), (0, 255, 255)]
    run(main())

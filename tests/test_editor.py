"""The browser editor in real headless Chromium (Debian's), driven by Playwright's async API,
against the real server started on a free loopback port.

Screenshots of each state go to test-artifacts/editor/ (not committed).
"""
from __future__ import annotations

import asyncio
import json
import shutil
from io import BytesIO
from pathlib import Path

import aiohttp
import pytest

from tests.editor_harness import ARTIFACTS, ROOT, Editor, editor_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEFAULT_TYPES = ["LoadCheckpoint", "Tokenize", "Tokenize", "EncodeText", "EncodeText", "MakeNoiseLatents",
                 "SetScheduler", "Sample", "VAEDecode", "SaveImage"]


# ---- the server and the browser ------------------------------------------------------------------

@pytest.fixture(scope="module")
def loop():
    # the current loop of the thread: Playwright's handlers look it up, and a test module that ran
    # asyncio.run() before this one leaves the thread without one
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, artifacts, request):
    from nodes.textcond.model import install_shipped

    data = tmp_path_factory.mktemp("editor") / "data"
    args = []
    try:  # the suite's shared tiny model, when the suite has one, beside the shipped shapes64
        tiny = Path(request.getfixturevalue("tiny_sd"))  # (the tutorial workflows use it)
        models = data.parent / "models"
        shutil.copytree(tiny, models / tiny.name)
        install_shipped(models)
        args = ["--models-dir", str(models)]
    except pytest.FixtureLookupError:
        pass  # the server writes the demo models into its empty models folder
    srv = editor_server(data, args).start(timeout=60)
    try:
        srv.wait_ready()
    except BaseException:
        srv.stop()
        raise
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(loop):
    from playwright.async_api import async_playwright

    assert Path(CHROMIUM).exists(), "the editor tests need Debian's chromium: ./setup.sh --test installs it"
    assert (ROOT / "web" / "node_modules" / "@comfyorg" / "litegraph").is_dir(), \
        "the editor needs web/node_modules: ./setup.sh runs npm ci"

    pw = loop.run_until_complete(async_playwright().start())
    browser = loop.run_until_complete(pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS))
    yield browser
    loop.run_until_complete(browser.close())
    loop.run_until_complete(pw.stop())


@pytest.fixture(scope="module", autouse=True)
def artifacts():
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)


def open_editor(loop, browser, server, width: int, height: int):
    """A fresh browser context (empty storage) on the editor; checks after the test that the page
    logged no error beyond those the test allowed."""
    context = loop.run_until_complete(browser.new_context(viewport={"width": width, "height": height}))
    page = loop.run_until_complete(context.new_page())
    ed = loop.run_until_complete(Editor(page, server.url + "/").open())
    ed.size = f"{width}x{height}"
    yield ed
    loop.run_until_complete(context.close())
    assert [e for e in ed.errors if not any(a in e for a in ed.allowed)] == [], "the page logged errors"


@pytest.fixture
def editor(loop, browser, server):
    yield from open_editor(loop, browser, server, 1440, 860)


SIZES = ["1280x800", "1024x768"]


@pytest.fixture
def window(loop, browser, server, request):
    """The editor in a window of the size the test is parametrized with (indirect)."""
    yield from open_editor(loop, browser, server, *map(int, request.param.split("x")))


def run(loop, coro, timeout=120):  # generous: a loaded CI machine renders slowly
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def linked(nodes: list[dict], dst_id: int, input_name: str) -> int | None:
    node = next(n for n in nodes if n["id"] == dst_id)
    return next(i["link"] for i in node["inputs"] if i["name"] == input_name)


# ---- the tests -------------------------------------------------------------------------------------

def test_page_loads_with_the_default_workflow(loop, editor):
    async def body():
        nodes = await editor.nodes()
        assert sorted(n["type"] for n in nodes) == sorted(DEFAULT_TYPES)
        # every required socket input of the default graph is wired, each to an output of its own type
        for node in nodes:
            for inp in node["inputs"]:
                if inp["optional"]:
                    continue
                assert inp["link"] is not None, f"{node['type']}.{inp['name']} is not linked"
        links = await editor.js("() => loom.graph.serialize().links")
        types = {(n["id"], i): o["type"] for n in nodes for i, o in enumerate(n["outputs"])}
        for _, src, slot, dst, dslot, type_ in links:
            assert types[(src, slot)] == type_
            dst_node = next(n for n in nodes if n["id"] == dst)
            assert dst_node["inputs"][dslot]["type"] == type_
        ckpt = next(n for n in nodes if n["type"] == "LoadCheckpoint")
        assert "shapes64" in ckpt["widgets"].values()  # the trained built-in model, when the server has it
        # the palette lists every server node, and its search filters them
        palette = await editor.page.locator(".palette-item").all_text_contents()
        assert len(palette) >= len(set(DEFAULT_TYPES))
        await editor.page.fill("#palette-search", "decode")
        found = await editor.page.locator(".palette-item").all_text_contents()
        assert "VAEDecode" in found and "Sample" not in found and "LoadCheckpoint" not in found, found
        await editor.shot("01-loaded")
        await editor.page.locator("#graph-canvas").focus()
        await editor.page.keyboard.press("?")
        assert await editor.page.locator("#help").is_visible()
        assert await editor.page.locator("#help kbd").count() >= 15
        await editor.shot("02-help")

    run(loop, body())


def test_add_nodes_link_by_dragging_refuse_incompatible_undo(loop, editor):
    async def body():
        page = editor.page
        await page.click("#new-btn")
        assert await editor.nodes() == []
        # drag two nodes from the palette onto the canvas
        await page.drag_and_drop(".palette-item[data-type=LoadCheckpoint]", "#graph-canvas", target_position={"x": 150, "y": 200})
        await page.drag_and_drop(".palette-item[data-type=VAEDecode]", "#graph-canvas", target_position={"x": 550, "y": 220})
        # and one from the search popup of a double-click on empty canvas
        box = await page.locator("#graph-canvas").bounding_box()
        await editor.shown_after(lambda: page.mouse.dblclick(box["x"] + 560, box["y"] + 480),
                                 "#search-popup:not([hidden])")
        await page.keyboard.type("saveimage")
        await page.keyboard.press("Enter")
        nodes = await editor.nodes()
        assert sorted(n["type"] for n in nodes) == ["LoadCheckpoint", "SaveImage", "VAEDecode"]
        [ckpt], [decode], [save] = [await editor.node_ids(t) for t in ("LoadCheckpoint", "VAEDecode", "SaveImage")]

        # an incompatible link (UNET into LATENT) is refused
        latent_in = next(i["name"] for n in nodes if n["id"] == decode for i in n["inputs"] if i["type"] == "LATENT")
        await editor.drag_link(ckpt, "unet", decode, latent_in)
        assert linked(await editor.nodes(), decode, latent_in) is None
        # compatible ones are made
        await editor.drag_link(ckpt, "vae", decode, "vae")
        decode_out = next(n for n in await editor.nodes() if n["id"] == decode)["outputs"][0]["name"]
        save_in = next(n for n in await editor.nodes() if n["id"] == save)["inputs"][0]["name"]
        await editor.drag_link(decode, decode_out, save, save_in)
        nodes = await editor.nodes()
        assert linked(nodes, decode, "vae") is not None and linked(nodes, save, save_in) is not None
        links = await editor.js("() => loom.graph.serialize().links.map(l => l[5]).sort()")
        assert links == ["IMAGE", "VAE"]
        await editor.shot("03-linked")

        # undo removes the last link, redo puts it back; select all + delete empties the graph
        await page.locator("#graph-canvas").focus()
        await page.keyboard.press("Control+z")
        assert linked(await editor.nodes(), save, save_in) is None
        await page.keyboard.press("Control+y")
        assert linked(await editor.nodes(), save, save_in) is not None
        await page.locator("#help-btn").focus()  # the canvas keys work wherever the focus is (but in text fields)
        await page.keyboard.press("Control+a")
        await page.keyboard.press("Control+g")
        assert await editor.js("() => loom.graph._groups.length") == 1
        await editor.shot("04-grouped")
        await page.keyboard.press("Delete")
        assert await editor.nodes() == []
        await page.keyboard.press("Control+z")
        assert len(await editor.nodes()) == 3
        # clicks hit-test the nodes the canvas drew last: a restore draws at once, so a click before
        # the next frame finds the restored nodes (redo and undo in one task leave no frame between)
        assert await editor.js("""() => { loom.undo.redo(); loom.undo.undo();
            const drawn = loom.canvas.visible_nodes;
            return drawn.length === 3 && drawn.every(n => loom.graph.getNodeById(n.id) === n) }""")

        # copy and paste a node; zoom with the wheel
        await page.mouse.click(*await editor.title_xy(ckpt))  # selects only this node
        assert await editor.js("() => Object.keys(loom.canvas.selected_nodes).map(Number)") == [ckpt]
        await page.keyboard.press("Control+c")
        await page.mouse.move(box["x"] + 300, box["y"] + 600)
        await page.keyboard.press("Control+v")
        assert [n["type"] for n in await editor.nodes()].count("LoadCheckpoint") == 2
        scale = await editor.js("() => loom.canvas.ds.scale")
        await page.mouse.wheel(0, -300)
        assert await editor.js("() => loom.canvas.ds.scale") > scale
        assert not [w for w in editor.warnings if "Pointer cancel" in w]  # palette drags are not a pointer error

    run(loop, body())


def test_queue_default_workflow_shows_progress_then_image(loop, editor, server):
    async def body():
        page = editor.page
        [sample] = await editor.node_ids("Sample")
        [save] = await editor.node_ids("SaveImage")
        [scheduler] = await editor.node_ids("SetScheduler")
        await editor.set_widget(scheduler, "steps", 3)  # keeps the test short on a busy CPU
        assert next(n for n in await editor.nodes() if n["id"] == scheduler)["widgets"]["steps"] == 3
        await editor.js("""() => {
            window.seen = {progress: [], previews: 0};
            loom.api.addEventListener("progress", (e) => {
                const node = loom.graph.getNodeById(Number(e.detail.node));
                seen.progress.push({value: e.detail.value, max: e.detail.max, node: node?.id,
                    drawn: node?.progress, running: !!node?.loom.running,
                    bar: parseFloat(document.querySelector("#overall .bar").style.width)});
            });
            loom.api.addEventListener("preview", () => seen.previews++);
        }""")
        [noise] = await editor.node_ids("MakeNoiseLatents")
        seed = next(n for n in await editor.nodes() if n["id"] == noise)["widgets"]["seed"]
        await page.click("#queue-btn")
        await page.wait_for_function("seen.progress.length > 0", timeout=100000)
        await editor.shot("05-running")
        await editor.wait_for_image(save)
        await page.wait_for_selector("#gallery-grid img", state="attached")
        await editor.shot("06-done")
        seen = await editor.js("seen")
        steps = seen["progress"]
        assert all(p["node"] == sample and p["running"] for p in steps), steps
        assert all(abs(p["drawn"] - p["value"] / p["max"]) < 1e-9 for p in steps)
        assert steps[-1]["value"] == steps[-1]["max"]
        bars = [p["bar"] for p in steps]
        assert bars == sorted(bars) and 0 < bars[-1] <= 100
        # the end of the prompt (executing: null) may come just after the image
        await page.wait_for_function("document.querySelector('#overall .label').textContent.endsWith('done')", timeout=10000)
        assert await editor.js("() => document.querySelector('#overall .bar').style.width") == "100%"
        # after the run no node is left highlighted
        assert await editor.js("() => loom.graph._nodes.every(n => !n.loom.running && !n.progress)")
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/history") as r:
                history = await r.json()
        [entry] = history.values()
        assert entry["status"]["status_str"] == "success"
        # the run used the seed shown when Queue was pressed; the widget then moved on (randomize)
        assert entry["prompt"][2][str(noise)]["inputs"]["seed"] == seed
        assert next(n for n in await editor.nodes() if n["id"] == noise)["widgets"]["seed"] != seed
        [image] = [img for out in entry["outputs"].values() for img in out.get("images", [])]
        src = await editor.js(f"() => loom.graph.getNodeById({save}).loom.images[0].src")
        assert image["filename"] in src
        await page.click("[data-pane=history-pane]")
        await page.wait_for_selector("#history-list .status-success")
        await editor.shot("07-history")

    run(loop, body(), timeout=200)


def test_cancel_interrupts_the_running_workflow(loop, editor):
    async def body():
        page = editor.page
        [scheduler] = await editor.node_ids("SetScheduler")
        await editor.set_widget(scheduler, "steps", 200)
        await editor.js("""() => {
            window.ends = [];
            loom.execution.addEventListener("end", (e) => ends.push(e.detail.status));
        }""")
        await page.click("#queue-btn")
        await page.wait_for_function("() => loom.graph._nodes.some(n => n.progress > 0)", timeout=100000)
        await editor.shot("07a-before-cancel")
        await page.click("#interrupt-btn")
        await page.wait_for_function("ends.length > 0", timeout=30000)
        assert await editor.js("ends") == ["interrupted"]
        assert (await page.locator("#overall .label").text_content()).endswith("interrupted")
        assert await editor.js("() => loom.graph._nodes.every(n => !n.loom.running && !n.progress)")
        await page.wait_for_selector(".toast:has-text('interrupted')")
        await page.wait_for_timeout(300)  # preview frames still on their way must not bring it back
        assert await page.locator("#live-preview").is_hidden()
        await page.click("[data-pane=history-pane]")
        row = page.locator("#history-list li.status-cancelled").first
        await row.wait_for()
        assert "cancelled" in await row.text_content()
        await editor.shot("07b-cancelled")

    run(loop, body(), timeout=150)


def test_run_error_is_shown_on_the_failing_node(loop, editor):
    async def body():
        page = editor.page
        [scheduler], [sample] = await editor.node_ids("SetScheduler"), await editor.node_ids("Sample")
        await editor.set_widget(scheduler, "steps", 2)
        await editor.set_widget(sample, "start_step", 5)  # valid alone, but past the end of 2 steps
        await page.click("#queue-btn")
        await page.wait_for_function(f"() => loom.graph.getNodeById({sample}).has_errors", timeout=100000)
        messages = await editor.js(f"() => loom.graph.getNodeById({sample}).loom.errors.messages")
        assert len(messages) == 1 and "start step 5" in messages[0], messages
        await page.wait_for_selector(".toast.error:has-text('Run failed in node')")
        await page.wait_for_function("document.querySelector('#overall .label').textContent.endsWith('failed')")
        await page.click("[data-pane=history-pane]")
        reason = page.locator("#history-list li.status-error .reason").first
        await reason.wait_for()
        assert "start step 5" in await reason.text_content()  # the history says why the run failed
        await editor.shot("07c-run-error")
        # the width widget keeps to its step of 8
        [noise] = await editor.node_ids("MakeNoiseLatents")
        await editor.set_widget(noise, "width", 60)
        assert next(n for n in await editor.nodes() if n["id"] == noise)["widgets"]["width"] == 64

    run(loop, body(), timeout=150)


def test_history_is_one_request_of_summaries(loop, editor, server):
    """The page reads queue and history once, as light job summaries; a run's workflow is fetched
    only when the run is opened."""
    async def body():
        page = editor.page
        await page.wait_for_function("loom.panels.loaded && !loom.panels.inFlight")  # this page's own read is done
        seen: list[str] = []
        page.on("request", lambda r: seen.append(r.url.split("/", 3)[3]))
        await reload(editor)
        await page.click("[data-pane=history-pane]")
        await page.wait_for_selector("#history-list li.status-success")
        await page.wait_for_timeout(500)
        reads = [u for u in seen if u.startswith(("history", "api/history", "queue", "api/queue", "api/jobs"))]
        assert len(reads) == 1 and reads[0].startswith("api/jobs?"), reads
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/{reads[0]}") as r:
                listing = await r.text()
        assert '"workflow"' not in listing and "extra_pnginfo" not in listing  # summaries only
        await page.locator("#history-list li.status-success button:has-text('Load')").first.click()
        await page.wait_for_function("document.title.startsWith('run #')")
        assert any(u.startswith("api/jobs/") for u in seen)
        assert sorted(n["type"] for n in await editor.nodes()) == sorted(DEFAULT_TYPES)
        await editor.shot("07d-history-loaded")

    run(loop, body())


def _output_png(server) -> tuple[bytes, dict]:
    import urllib.parse
    import urllib.request

    from PIL import Image

    with urllib.request.urlopen(server.url + "/history") as r:
        history = json.load(r)
    refs = [img for entry in history.values() for out in entry["outputs"].values() for img in out.get("images", [])]
    assert refs, "test_queue_default_workflow_shows_progress_then_image makes the image this test drops"
    with urllib.request.urlopen(server.url + "/view?" + urllib.parse.urlencode(refs[0])) as r:
        data = r.read()
    return data, json.loads(Image.open(BytesIO(data)).text["workflow"])


def test_dropped_png_restores_its_graph(loop, editor, server):
    data, workflow = _output_png(server)

    async def body():
        await editor.page.click("#new-btn")
        await editor.drop_file("loom_00001.png", data, "image/png")
        await editor.page.wait_for_function("loom.graph._nodes.length > 0")
        nodes = await editor.nodes()
        assert sorted((n["id"], n["type"]) for n in nodes) == sorted((n["id"], n["type"]) for n in workflow["nodes"])
        by_id = {n["id"]: n for n in nodes}
        for saved in workflow["nodes"]:
            values = [v for v in saved.get("widgets_values", []) if v is not None]
            assert [v for v in by_id[saved["id"]]["widgets"].values()][:len(values)] == values
        got = await editor.js("() => loom.graph.serialize().links")
        assert sorted(map(tuple, got)) == sorted(map(tuple, workflow["links"]))
        await editor.shot("08-dropped-png")

    run(loop, body())


def comfy_style_workflow(object_info: dict) -> dict:
    """A workflow as ComfyUI's frontend saves it (format 0.4, links as arrays, a group, extra.ds)."""
    def widgets(type_, **values):
        out = []
        for group in ("required", "optional"):
            for name, spec in object_info[type_]["input"].get(group, {}).items():
                head, opts = spec[0], (spec[1] if len(spec) > 1 else {})
                if isinstance(head, list) or head in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                    default = head[0] if isinstance(head, list) else opts.get("default")
                    out.append(values.get(name, default))
                    if opts.get("control_after_generate"):
                        out.append("fixed")
        return out

    return {
        "id": "5b2c9b1e-6f0a-4d7e-9d8e-1a2b3c4d5e6f", "revision": 0, "last_node_id": 15, "last_link_id": 3,
        "nodes": [
            {"id": 4, "type": "LoadCheckpoint", "pos": [40, 120], "size": [260, 160], "flags": {}, "order": 0,
             "mode": 0, "inputs": [],
             "outputs": [{"name": o, "type": t, "links": [1] if t == "VAE" else None}
                         for o, t in zip(object_info["LoadCheckpoint"]["output_name"], object_info["LoadCheckpoint"]["output"])],
             "properties": {"Node name for S&R": "LoadCheckpoint"}, "widgets_values": widgets("LoadCheckpoint")},
            {"id": 9, "type": "VAEDecode", "pos": [420, 140], "size": [200, 60], "flags": {}, "order": 1, "mode": 0,
             "inputs": [{"name": "vae", "type": "VAE", "link": 1}, {"name": "latents", "type": "LATENT", "link": None}],
             "outputs": [{"name": "images", "type": "IMAGE", "links": [3]}], "properties": {}},
            {"id": 12, "type": "SaveImage", "pos": [700, 140], "size": [300, 280], "flags": {}, "order": 2, "mode": 0,
             "title": "Keep this one",
             "inputs": [{"name": object_info["SaveImage"]["input_order"]["required"][0], "type": "IMAGE", "link": 3}],
             "outputs": [], "properties": {}, "widgets_values": widgets("SaveImage", filename_prefix="from_comfy")},
            {"id": 15, "type": "Note", "pos": [40, 340], "size": [300, 120], "flags": {}, "order": 3, "mode": 0,
             "inputs": [], "outputs": [], "properties": {}, "widgets_values": ["The VAE decodes latents."],
             "color": "#432", "bgcolor": "#653"},
        ],
        "links": [[1, 4, [t for t in object_info["LoadCheckpoint"]["output"]].index("VAE"), 9, 0, "VAE"],
                  [3, 9, 0, 12, 0, "IMAGE"]],
        "groups": [{"id": 1, "title": "Decode and save", "bounding": [400, 40, 640, 420], "color": "#3f789e",
                    "font_size": 24, "flags": {}}],
        "config": {}, "extra": {"ds": {"scale": 0.9, "offset": [10, 20]}, "frontendVersion": "1.28.0"},
        "version": 0.4,
    }


def test_dropped_comfyui_workflow_json_loads(loop, editor, server):
    async def body():
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/object_info") as r:
                info = await r.json()
        workflow = comfy_style_workflow(info)
        await editor.drop_file("comfy_workflow.json", json.dumps(workflow).encode(), "application/json")
        await editor.page.wait_for_function("loom.graph._nodes.length === 4")
        nodes = {n["id"]: n for n in await editor.nodes()}
        assert {i: n["type"] for i, n in nodes.items()} == {4: "LoadCheckpoint", 9: "VAEDecode", 12: "SaveImage", 15: "Note"}
        assert nodes[15]["widgets"] == {"text": "The VAE decodes latents."}
        assert await editor.page.locator(".toast.error").count() == 0  # every node type is known
        assert linked(list(nodes.values()), 9, "vae") == 1 and linked(list(nodes.values()), 12, nodes[12]["inputs"][0]["name"]) == 3
        assert "from_comfy" in nodes[12]["widgets"].values()
        assert await editor.js("() => [loom.graph._groups.length, loom.graph._groups[0].title]") == [1, "Decode and save"]
        assert await editor.js("() => loom.graph.getNodeById(12).title") == "Keep this one"
        assert await editor.js("() => document.title") == "comfy_workflow · Loom"
        await editor.shot("09-dropped-json")

        # the same workflow in the newer schema (version 1: links as objects, a state block)
        v1 = {k: v for k, v in workflow.items() if k not in ("last_node_id", "last_link_id", "links")}
        v1.update(version=1, state={"lastGroupId": 1, "lastNodeId": 15, "lastLinkId": 3, "lastRerouteId": 0},
                  links=[dict(zip(["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"], link))
                         for link in workflow["links"]])
        await editor.page.click("#new-btn")
        await editor.drop_file("comfy_v1.json", json.dumps(v1).encode(), "application/json")
        await editor.page.wait_for_function("loom.graph._nodes.length === 4")
        assert sorted(map(tuple, await editor.js("() => loom.graph.serialize().links"))) == \
            sorted(map(tuple, workflow["links"]))

    run(loop, body())


def test_dropped_png_with_compressed_itxt_workflow_loads(loop, editor, server):
    """Our PNG reader also reads zlib-compressed iTXt chunks (as other tools write them)."""
    from PIL import Image, PngImagePlugin

    async def body():
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/object_info") as r:
                workflow = comfy_style_workflow(await r.json())
        workflow["nodes"][2]["title"] = "Größe ✓"  # UTF-8 survives
        info = PngImagePlugin.PngInfo()
        info.add_itxt("workflow", json.dumps(workflow), zip=True)
        buf = BytesIO()
        Image.new("RGB", (8, 8), "red").save(buf, "PNG", pnginfo=info)
        await editor.drop_file("itxt.png", buf.getvalue(), "image/png")
        await editor.page.wait_for_function("loom.graph._nodes.length === 4")
        assert await editor.js("() => loom.graph.getNodeById(12).title") == "Größe ✓"

    run(loop, body())


def test_dropped_api_format_json_is_laid_out(loop, editor):
    async def body():
        nodes = {n["type"]: n for n in await editor.nodes()}
        vae_slot = [o["type"] for o in nodes["LoadCheckpoint"]["outputs"]].index("VAE")
        prompt = {"1": {"class_type": "LoadCheckpoint", "inputs": {"model": "tiny-sd"}},
                  "2": {"class_type": "VAEDecode", "inputs": {"vae": ["1", vae_slot]}},
                  "3": {"class_type": "SaveImage", "inputs": {nodes["SaveImage"]["inputs"][0]["name"]: ["2", 0],
                                                              "filename_prefix": "api"},
                        "_meta": {"title": "Save API"}}}
        await editor.drop_file("api.json", json.dumps(prompt).encode(), "application/json")
        await editor.page.wait_for_function("loom.graph._nodes.length === 3")
        got = await editor.nodes()
        assert sorted(n["type"] for n in got) == ["LoadCheckpoint", "SaveImage", "VAEDecode"]
        assert sorted(await editor.js("() => loom.graph.serialize().links.map(l => l[5])")) == ["IMAGE", "VAE"]
        save = next(n for n in got if n["type"] == "SaveImage")
        assert save["widgets"]["filename_prefix"] == "api"
        # laid out left to right in link order, without overlaps
        xs = await editor.js("() => Object.fromEntries(loom.graph._nodes.map(n => [n.type, n.pos[0]]))")
        assert xs["LoadCheckpoint"] < xs["VAEDecode"] < xs["SaveImage"]
        await editor.shot("09b-dropped-api-json")

    run(loop, body())


def test_save_on_the_server_and_open_from_the_saved_list(loop, editor):
    async def body():
        page = editor.page
        page.once("dialog", lambda d: asyncio.ensure_future(d.accept("my txt2img")))
        await page.click("#save-server-btn")
        await page.wait_for_selector(".toast:has-text('Saved my txt2img.json')")
        await page.click("[data-pane=workflows-pane]")
        await page.click("#workflow-list a:has-text('my txt2img')")
        await page.wait_for_function("document.title.startsWith('my txt2img')")
        await page.click("#new-btn")
        assert await editor.nodes() == []
        await page.click("#workflow-list a:has-text('my txt2img')")
        await page.wait_for_function("loom.graph._nodes.length > 0")
        assert sorted(n["type"] for n in await editor.nodes()) == sorted(DEFAULT_TYPES)
        await editor.shot("11-saved-workflows")

    run(loop, body())


def test_upload_an_image_into_load_image(loop, editor):
    from PIL import Image

    async def body():
        page = editor.page
        await page.click("#new-btn")
        await page.dblclick(".palette-item[data-type=LoadImage]")
        [node] = await editor.node_ids("LoadImage")
        buf = BytesIO()
        Image.new("RGB", (24, 16), "green").save(buf, "PNG")
        async with page.expect_file_chooser() as chooser:
            await page.mouse.click(*await editor.widget_xy(node, "upload image"))
        await (await chooser.value).set_files({"name": "green.png", "mimeType": "image/png", "buffer": buf.getvalue()})
        await page.wait_for_function(f"""() => {{ const img = loom.graph.getNodeById({node}).loom.images[0];
            return img && img.complete && img.naturalWidth === 24 }}""")
        assert next(n for n in await editor.nodes() if n["id"] == node)["widgets"]["image"] == "green.png"
        # the button holds no value: the saved widgets_values are the image name alone
        assert await editor.js(f"() => loom.graph.serialize().nodes.find(n => n.id === {node}).widgets_values") == ["green.png"]
        await editor.shot("12-uploaded")

    run(loop, body())


def test_bad_graph_error_is_shown_on_the_right_node(loop, editor):
    async def body():
        page = editor.page
        workflow = await editor.js("() => loom.graph.serialize()")
        nodes = {n["type"]: n for n in workflow["nodes"]}
        sample, ckpt = nodes["Sample"], nodes["LoadCheckpoint"]
        # cut the link into Sample's latents, and name a model that does not exist
        latents = next(i for i in sample["inputs"] if i["type"] == "LATENT")
        cut = latents["link"]
        latents["link"] = None
        workflow["links"] = [link for link in workflow["links"] if link[0] != cut]
        for node in workflow["nodes"]:
            for out in node.get("outputs", []):
                out["links"] = [l for l in (out.get("links") or []) if l != cut]
        ckpt["widgets_values"][0] = "no-such-model"
        await editor.drop_file("broken.json", json.dumps(workflow).encode(), "application/json")
        await page.wait_for_function("document.title.startsWith('broken')")
        editor.allowed.append("status of 400 (Bad Request)")  # the browser logs the refused POST /prompt
        async with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST",
                                        timeout=60000) as refused:
            await page.click("#queue-btn")
        response = await refused.value
        assert response.status == 400
        assert sorted((await response.json())["node_errors"]) == sorted([str(sample["id"]), str(ckpt["id"])])
        await page.wait_for_selector("#errors-panel:not([hidden])")
        # the marks land with the panel; wait for them so a slow page cannot race the read below
        try:
            await page.wait_for_function("loom.graph._nodes.filter(n => n.loom?.errors).length >= 2", timeout=30000)
        except Exception:
            raise AssertionError(f"marks: {await editor.js('() => loom.graph._nodes.filter(n => n.loom?.errors).map(n => n.id)')}, "
                                 f"panel: {await page.locator('#errors-panel').text_content()}")
        errors = await editor.js("""() => Object.fromEntries(loom.graph._nodes.filter(n => n.loom.errors)
            .map(n => [n.id, {inputs: Object.keys(n.loom.errors.inputs), has_errors: n.has_errors,
                              slots: (n.inputs ?? []).filter(s => s.hasErrors).map(s => s.name)}]))""")
        model_input = next(name for name, value in
                           (await editor.js(f"() => loom.graph.getNodeById({ckpt['id']}).widgets.map(w => [w.name, w.value])"))
                           if value == "no-such-model")
        assert errors == {
            str(sample["id"]): {"inputs": [latents["name"]], "has_errors": True, "slots": [latents["name"]]},
            str(ckpt["id"]): {"inputs": [model_input], "has_errors": True, "slots": []},
        }
        panel = await page.locator("#errors-panel").text_content()
        assert latents["name"] in panel and model_input in panel, panel
        await editor.shot("10-errors")
        # fixing the graph and queuing again clears the marks
        await page.click("#default-btn")
        assert await editor.js("() => loom.graph._nodes.every(n => !n.loom.errors && !n.has_errors)")
        assert await page.locator("#errors-panel").is_hidden()

    run(loop, body())


def test_text_output_is_drawn_on_its_node(loop, editor):
    """The tokens tutorial: ShowTokens' table arrives in `executed` and is drawn on the node."""
    async def body():
        workflow = (ROOT / "workflows" / "tutorial" / "tokens.json").read_bytes()
        await editor.drop_file("tokens.json", workflow, "application/json")
        await editor.page.wait_for_function("loom.graph.findNodesByType('ShowTokens').length === 1")
        [show] = await editor.node_ids("ShowTokens")
        await editor.page.click("#queue-btn")
        await editor.page.wait_for_function(f"() => loom.graph.getNodeById({show}).loom.text?.length > 2",
                                            timeout=100000)
        lines = await editor.js(f"() => loom.graph.getNodeById({show}).loom.text")
        assert any("<|startoftext|>" in line for line in lines), lines[:5]
        height = await editor.js(f"() => loom.graph.getNodeById({show}).size[1]")
        assert height > 100  # grown to show the table
        await editor.shot("12-text-output")

    run(loop, body(), timeout=150)


# ---- the editor people would rather use (issue 16) -------------------------------------------------

async def node_sizes(ed) -> dict:
    return {n: s for n, s in await ed.js("() => loom.graph._nodes.map(n => [n.id, [...n.size]])")}


async def reload(ed):
    await ed.page.reload()
    await ed.page.wait_for_selector("body[data-ready=true]", state="attached", timeout=30000)


@pytest.mark.parametrize("window", SIZES, indirect=True)
def test_type_a_prompt_on_the_node_and_run(loop, window, server):
    ed = window

    async def body():
        page = ed.page
        [positive, _], [scheduler], [save] = [await ed.node_ids(t) for t in ("Tokenize", "SetScheduler", "SaveImage")]
        # the prompt is a text area on its node: click, type; Enter is a new line, Escape leaves the field
        field = ed.text_area(positive, "text")
        await field.click()
        await page.keyboard.press("Control+a")
        await page.keyboard.type("a lighthouse at dusk")
        await page.keyboard.press("Enter")
        await page.keyboard.type("oil on canvas")
        await page.keyboard.press("Escape")
        assert await ed.js("() => document.activeElement.tagName") != "TEXTAREA"
        prompt = "a lighthouse at dusk\noil on canvas"
        text_of = lambda nodes: next(n for n in nodes if n["id"] == positive)["widgets"]["text"]
        assert text_of(await ed.nodes()) == prompt
        # the typing was one edit: one undo brings the old prompt back (on the node too), redo the new
        shown = f"""() => {{ const areas = [...document.querySelectorAll('#dom-widgets textarea[data-node="{positive}"]')];
            return areas.length === 1 && areas[0].value === loom.graph.getNodeById({positive}).widgets[0].value; }}"""
        await page.keyboard.press("Control+z")
        assert text_of(await ed.nodes()) != prompt
        await page.wait_for_function(shown)
        await page.keyboard.press("Control+y")
        assert text_of(await ed.nodes()) == prompt
        await page.wait_for_function(shown)
        # a single-line value is typed in place: Escape drops the edit, Enter keeps it
        await page.mouse.click(*await ed.widget_xy(scheduler, "steps"))
        await page.locator("#dom-widgets input.inline-edit").fill("50")
        await page.keyboard.press("Escape")
        assert await page.locator("#dom-widgets input.inline-edit").count() == 0
        await ed.set_widget(scheduler, "steps", 2)
        steps = next(n for n in await ed.nodes() if n["id"] == scheduler)["widgets"]["steps"]
        assert steps == 2
        await ed.shot(f"20-{ed.size}-prompt-typed")
        sizes = await node_sizes(ed)
        await page.click("#queue-btn")
        await ed.wait_for_image(save)
        prompt_id = await ed.js("() => [...loom.execution.prompts.keys()].at(-1)")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/history/{prompt_id}") as r:
                entry = (await r.json())[prompt_id]
        assert entry["status"]["status_str"] == "success"
        assert entry["prompt"][2][str(positive)]["inputs"]["text"] == prompt
        await ed.shot(f"21-{ed.size}-prompt-run")
        # a run never resizes a node, and a reload keeps every size and the typed prompt
        assert await node_sizes(ed) == sizes
        await reload(ed)
        assert await node_sizes(ed) == sizes
        assert await ed.text_area(positive, "text").input_value() == prompt
        await ed.shot(f"22-{ed.size}-reloaded")

    run(loop, body(), timeout=200)


@pytest.mark.parametrize("window", SIZES, indirect=True)
def test_panels_hide_and_the_canvas_takes_the_window(loop, window):
    ed = window

    async def body():
        page = ed.page
        width = int(ed.size.split("x")[0])
        # a first visit on a window of these sizes leaves the run panel closed, the node list open
        assert await page.locator("#palette").is_visible() and not await page.locator("#sidebar").is_visible()
        assert await ed.js("loom.canvas.ds.scale") > 0.5  # the default graph fits with readable text
        await ed.shot(f"23-{ed.size}-default-view")
        [sample] = await ed.node_ids("Sample")
        x_before = (await ed.title_xy(sample))[0]
        await page.click("#toggle-palette")
        await page.wait_for_function(f"loom.canvasEl.clientWidth === {width} && loom.canvasEl.width === {width}")
        assert abs((await ed.title_xy(sample))[0] - x_before) < 1  # the graph stays where it was on the screen
        topbar = await page.locator("#topbar").bounding_box()
        canvas = await page.locator("#graph-canvas").bounding_box()
        assert canvas["width"] == width and abs(canvas["y"] - topbar["height"]) < 1
        assert topbar["height"] < 50  # one row of buttons, none wrapped
        await page.keyboard.press(".")
        assert not await ed.js("loom.canvas.low_quality")
        await ed.shot(f"24-{ed.size}-panels-hidden")
        await reload(ed)  # remembered
        assert await ed.js("loom.canvasEl.clientWidth") == width
        assert not await page.locator("#palette").is_visible() and not await page.locator("#sidebar").is_visible()
        await page.keyboard.press("[")
        await page.keyboard.press("]")
        assert await page.locator("#palette").is_visible() and await page.locator("#sidebar").is_visible()
        assert await ed.js("loom.canvasEl.clientWidth") == width - 220 - 280

    run(loop, body())


def twenty_node_prompt() -> dict:
    """Two txt2img pipelines side by side, in the API format: 20 nodes."""
    one = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    prompt = {}
    for offset in (0, 10):
        for key, node in one.items():
            inputs = {name: [str(int(v[0]) + offset), v[1]] if isinstance(v, list) else v for name, v in node["inputs"].items()}
            prompt[str(int(key) + offset)] = {**node, "inputs": inputs}
    return prompt


@pytest.mark.parametrize("window", SIZES, indirect=True)
def test_fitting_a_20_node_workflow_keeps_titles_and_widgets_drawn(loop, window):
    ed = window

    async def body():
        page = ed.page
        await ed.drop_file("twenty.json", json.dumps(twenty_node_prompt()).encode(), "application/json")
        await page.wait_for_function("loom.graph._nodes.length === 20")
        for panels in ("shown", "hidden"):
            if panels == "hidden":
                for panel in ("palette", "sidebar"):
                    await ed.js(f"loom.layout.toggle('{panel}', false)")
            await page.keyboard.press(".")
            texts = await ed.drawn_texts()
            state = await ed.js("""() => ({low: loom.canvas.low_quality, scale: loom.canvas.ds.scale,
                visible: loom.canvas.visible_nodes.map(n => n.title)})""")
            assert not state["low"] and state["scale"] >= 0.35, state
            assert state["visible"] and all(title in texts for title in state["visible"]), (state, texts)
            assert "steps" in texts and "guidance_scale" in texts  # widgets are drawn with their labels
            if panels == "hidden":  # the whole graph fits readably in the window
                assert len(state["visible"]) == 20, state
            await ed.shot(f"25-{ed.size}-twenty-nodes-{panels}")

    run(loop, body())


@pytest.mark.parametrize("window", SIZES, indirect=True)
def test_every_node_menu_entry_works(loop, window):
    ed = window

    async def body():
        page = ed.page
        [sample], [positive, _] = await ed.node_ids("Sample"), await ed.node_ids("Tokenize")
        node = lambda expr: ed.js(f"() => {{ const n = loom.graph.getNodeById({sample}); return {expr}; }}")
        entries = await ed.node_menu(sample)
        assert entries == ["Rename", "Bypass", "Mute", "Convert to Subgraph", "Resize", "Collapse", "Pin", "Colors",
                           "Shapes", "Clone", "Remove"], entries
        await ed.shot(f"26-{ed.size}-node-menu")
        await (await ed.shown_after(lambda: ed.pick_menu("Rename"), tries=1)).fill("My sampler")
        await page.keyboard.press("Enter")
        assert await node("n.title") == "My sampler"
        title = await ed.title_xy(sample)
        field = await ed.shown_after(lambda: page.mouse.dblclick(*title))  # the title bar renames too
        await field.fill("Sampler two")
        await page.keyboard.press("Escape")
        assert await node("n.title") == "My sampler"
        for entry, mode in (("Bypass", 4), ("Mute", 2)):
            await ed.node_menu(sample)
            await ed.pick_menu(entry)
            assert await node("n.mode") == mode
            assert f"✓ {entry}" in await ed.node_menu(sample)
            await ed.pick_menu(f"✓ {entry}")
            assert await node("n.mode") == 0
        width = await node("n.size[0]")
        await ed.js(f"loom.graph.getNodeById({sample}).setSize([{width + 60}, 400])")
        await ed.node_menu(sample)
        await ed.pick_menu("Resize")  # back to the size its content needs
        assert await node("n.size[0]") < width + 60 and await node("n.size[1]") < 400
        for entry, flag, back in (("Collapse", "n.collapsed", "Expand"), ("Pin", "n.pinned", "Unpin")):
            await ed.node_menu(sample)
            await ed.pick_menu(entry)
            assert await node(flag)
            await ed.node_menu(sample)
            await ed.pick_menu(back)
            assert not await node(flag)
        await ed.node_menu(sample)
        await ed.pick_menu("Colors")
        await ed.pick_menu("red")
        assert await node("n.color") is not None
        await ed.node_menu(sample)
        await ed.pick_menu("Shapes")
        await ed.pick_menu("box")
        assert await node("n.renderingShape") == 1
        count = len(await ed.nodes())
        await ed.node_menu(sample)
        await ed.pick_menu("Clone")
        assert len(await ed.nodes()) == count + 1
        clone = max(n["id"] for n in await ed.nodes())
        await ed.node_menu(clone)
        await ed.pick_menu("Remove")
        assert len(await ed.nodes()) == count

        # a subgraph: made from a node, saved with its definition, opened, left, kept on reload
        links = await ed.js("() => loom.graph.links.size")
        await ed.node_menu(positive)
        await ed.pick_menu("Convert to Subgraph")
        saved = await ed.js("() => loom.graph.serialize()")
        [definition] = saved["definitions"]["subgraphs"]
        assert [n["type"] for n in definition["nodes"]] == ["Tokenize"]
        holder = next(n for n in saved["nodes"] if n["type"] == definition["id"])
        assert len(saved["nodes"]) == count and await ed.js("() => loom.graph.links.size") == links
        assert await ed.node_menu(holder["id"]) == ["Open subgraph", *entries]
        await ed.pick_menu("Open subgraph")
        await page.wait_for_selector("#breadcrumbs:not([hidden])")
        assert await ed.js("() => loom.canvas.graph !== loom.graph && loom.canvas.graph._nodes.map(n => n.type)") == ["Tokenize"]
        await page.wait_for_function("document.querySelectorAll('#dom-widgets textarea:not([hidden])').length === 1")
        await ed.shot(f"27-{ed.size}-subgraph-open")
        await page.click("#breadcrumbs button")
        assert await ed.js("() => loom.canvas.graph === loom.graph")
        assert await page.locator("#breadcrumbs").is_hidden()
        await reload(ed)
        again = await ed.js("() => loom.graph.serialize()")
        assert [s["id"] for s in again["definitions"]["subgraphs"]] == [definition["id"]]
        assert any(n["type"] == definition["id"] for n in again["nodes"])

        # the canvas menu
        box = await page.locator("#graph-canvas").bounding_box()
        empty = (box["x"] + 12, box["y"] + box["height"] - 12)
        await page.mouse.click(*empty, button="right")
        canvas_entries = [e for e in await page.locator(".litecontextmenu .litemenu-entry").all_text_contents() if e]
        assert canvas_entries == ["Add Node", "Add Group", "Fit view", "Show node ids"], canvas_entries
        await ed.pick_menu("Show node ids")
        assert f"#{sample}" in await ed.drawn_texts()
        await page.mouse.click(*empty, button="right")
        await ed.pick_menu("Add Group")
        assert await ed.js("() => loom.graph._groups.length") == 1
        group_title = await ed.js("""() => { const g = loom.graph._groups[0];
            const [x, y] = loom.canvas.ds.convertOffsetToCanvas([g.pos[0] + 30, g.pos[1] + 10]);
            const r = loom.canvasEl.getBoundingClientRect(); return [r.left + x, r.top + y]; }""")
        for entry in ("Color", "Remove"):  # the group's own menu
            await page.mouse.click(*group_title, button="right")
            await ed.pick_menu("Edit Group")
            await ed.pick_menu(entry)
            if entry == "Color":
                await ed.pick_menu("red")
                assert await ed.js("() => loom.graph._groups[0].color") is not None
        assert await ed.js("() => loom.graph._groups.length") == 0
        await page.mouse.click(*empty, button="right")
        await ed.pick_menu("Fit view")
        await page.mouse.click(*empty, button="right")
        await ed.pick_menu("Add Node")
        await ed.pick_menu("latent")
        offered = await page.locator(".litecontextmenu").last.locator(".litemenu-entry").all_text_contents()
        titles = await ed.js("""() => [...document.querySelectorAll(".palette-category")]
            .filter((d) => d.querySelector("summary").textContent === "latent")
            .flatMap((d) => [...d.querySelectorAll(".palette-item")].map((i) => i.textContent))""")
        await ed.pick_menu(next(t for t in offered if t in titles))  # a node, not a sub-category
        assert len(await ed.nodes()) == count + 1

    run(loop, body())


def test_a_workflow_with_a_subgraph_runs(loop, editor):
    """Convert to Subgraph, then Queue: the server expands the saved definitions (ComfyUI's format)
    and the run's nodes show on the subgraph node that holds them."""
    async def body():
        page = editor.page
        [scheduler], [save] = await editor.node_ids("SetScheduler"), await editor.node_ids("SaveImage")
        await editor.set_widget(scheduler, "steps", 2)
        held = [n["id"] for n in await editor.nodes() if n["type"] in ("Tokenize", "EncodeText")][:2]
        await editor.js(f"() => loom.canvas.selectItems({held}.map((id) => loom.graph.getNodeById(id)))")
        await editor.node_menu(held[0])
        await editor.pick_menu("Convert to Subgraph")
        assert len(await editor.js("() => loom.graph.serialize().definitions.subgraphs[0].nodes")) == 2
        await page.click("#queue-btn")
        await page.wait_for_function("""() => document.querySelector('#errors-panel:not([hidden])')
            || loom.graph._nodes.some((n) => n.loom?.images?.length)""", timeout=100000)
        assert await page.locator("#errors-panel").is_hidden(), await page.locator("#errors-panel").text_content()
        await editor.wait_for_image(save)
        await editor.shot("27b-subgraph-ran")

    run(loop, body(), timeout=200)


def test_tooltips_optional_inputs_and_node_ids(loop, editor):
    async def body():
        page = editor.page
        [noise], [sample] = await editor.node_ids("MakeNoiseLatents"), await editor.node_ids("Sample")
        # optional sockets are hollow, required ones filled
        shapes = await editor.js(f"() => loom.graph.getNodeById({noise}).inputs.map(i => [i.name, i.shape ?? null])")
        assert dict(shapes)["image"] == 7 and dict(shapes)["unet"] != 7, shapes

        async def hover(xy) -> str:
            await page.mouse.move(xy[0] + 40, xy[1] + 40)
            await page.mouse.move(*xy)
            await page.wait_for_selector("#tooltip:not([hidden])")
            return await page.locator("#tooltip").text_content()

        assert "LATENT · optional" in await hover(await editor.slot_xy(noise, "image", True))
        assert "img2img" in await page.locator("#tooltip").text_content()  # the input's tooltip from /object_info
        await editor.shot("28-tooltip-input")
        assert "steps past the schedule's end" in await hover(await editor.widget_xy(sample, "end_step"))
        assert "denoising loop" in await hover(await editor.title_xy(sample))  # the node's description
        await editor.shot("29-tooltip-node")
        # node ids: off by default, then drawn on every node (the I key), remembered
        ids = [f"#{n['id']}" for n in await editor.nodes()]
        assert not set(ids) & set(await editor.drawn_texts())
        await page.locator("#graph-canvas").focus()
        await page.keyboard.press("i")
        assert set(ids) <= set(await editor.drawn_texts())
        await editor.shot("30-node-ids")
        await reload(editor)
        assert set(ids) <= set(await editor.drawn_texts())

    run(loop, body())


def test_a_prompt_the_model_cannot_read_is_marked_on_its_node(loop, editor):
    """"a cat" on shapes64: the run's warning (a word its vocabulary lacks) is an amber ⚠ in the text
    node's title bar with the message in its tooltip; a run of a prompt the model knows clears it."""
    async def body():
        page = editor.page
        [positive, _], [scheduler], [save] = [await editor.node_ids(t) for t in ("Tokenize", "SetScheduler", "SaveImage")]
        await editor.set_widget(scheduler, "steps", 2)

        warned = f"loom.graph.getNodeById({positive}).loom.warnings?.length"
        done = "document.querySelector('#overall .label').textContent.endsWith('done')"

        async def run_prompt(text: str, until: str):
            await editor.text_area(positive, "text").fill(text)
            await page.click("#queue-btn")
            await page.wait_for_function(f"() => {until} && {done}", timeout=100000)

        await run_prompt("a cat", f"{warned} === 1")
        assert "⚠ 1" in await editor.drawn_texts()
        xy = await editor.title_xy(positive)
        await page.mouse.move(xy[0] + 40, xy[1] + 40)
        await page.mouse.move(*xy)
        await page.wait_for_selector("#tooltip:not([hidden])")
        assert "cat (ca+t)" in await page.locator("#tooltip").text_content()
        await editor.shot("31-prompt-warning")
        await run_prompt("a red circle", f"!{warned}")  # cleared when the node runs again
        assert "⚠ 1" not in await editor.drawn_texts()
        await editor.wait_for_image(save)

    run(loop, body(), timeout=200)


def test_new_nodes_are_placed_apart_and_the_search_shows_descriptions(loop, editor):
    async def body():
        page = editor.page
        await page.click("#new-btn")
        for _ in range(3):
            await page.dblclick(".palette-item[data-type=EncodeText]")
        rects = await editor.js("() => loom.graph._nodes.map(n => [...n.boundingRect])")
        assert len(rects) == 3
        for i, a in enumerate(rects):
            for b in rects[i + 1:]:
                assert not (a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]), rects
        # with a node selected the next one goes beside it
        first = (await editor.node_ids("EncodeText"))[0]
        await page.mouse.click(*await editor.title_xy(first))
        await page.dblclick(".palette-item[data-type=Sample]")
        [sample] = await editor.node_ids("Sample")
        placed = await editor.js(f"""() => {{ const a = loom.graph.getNodeById({first}), b = loom.graph.getNodeById({sample});
            return [a.pos[0] + a.size[0], b.pos[0]]; }}""")
        assert placed[1] > placed[0], placed
        await editor.shot("31-placed")
        box = await page.locator("#graph-canvas").bounding_box()
        await editor.shown_after(lambda: page.mouse.dblclick(box["x"] + 30, box["y"] + box["height"] - 30),
                                 "#search-popup:not([hidden])")
        await page.keyboard.type("noise")
        descriptions = await page.locator("#search-popup li .desc").all_text_contents()
        assert descriptions and all(descriptions), descriptions
        await editor.shot("32-search-descriptions")
        await page.keyboard.press("Escape")

    run(loop, body())


def test_unknown_node_types_are_red_and_kept(loop, editor, server):
    async def body():
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/object_info") as r:
                workflow = comfy_style_workflow(await r.json())
        workflow["nodes"].append({"id": 20, "type": "NoSuchNode", "pos": [40, 520], "size": [220, 80], "flags": {},
                                  "order": 4, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                                  "widgets_values": [1, "x"]})
        editor.allowed.append("NoSuchNode")  # litegraph may log the type it cannot make
        await editor.drop_file("unknown.json", json.dumps(workflow).encode(), "application/json")
        await editor.page.wait_for_selector(".toast.error:has-text('shown in red')")
        node = await editor.js("""() => { const n = loom.graph.getNodeById(20);
            return {color: n.color, title: n.title, saved: loom.graph.serialize().nodes.find(s => s.id === 20)}; }""")
        assert node["color"] == "#8f2d2d" and node["title"] == "NoSuchNode"
        assert node["saved"]["type"] == "NoSuchNode" and node["saved"]["widgets_values"] == [1, "x"]
        await editor.shot("33-unknown-node")

    run(loop, body())


def test_static_files_are_gzipped_and_revalidated(server):
    import gzip
    import urllib.error
    import urllib.request

    path = "/lib/@comfyorg/litegraph/dist/litegraph.es.js"
    raw = (ROOT / "web" / "node_modules" / "@comfyorg" / "litegraph" / "dist" / "litegraph.es.js").read_bytes()
    with urllib.request.urlopen(urllib.request.Request(server.url + path, headers={"Accept-Encoding": "gzip, br"})) as r:
        body, headers = r.read(), r.headers
    assert headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == raw and len(body) < len(raw) / 3
    req = urllib.request.Request(server.url + path, headers={"Accept-Encoding": "gzip", "If-None-Match": headers["ETag"]})
    with pytest.raises(urllib.error.HTTPError) as err:  # urllib raises on 304
        urllib.request.urlopen(req)
    assert err.value.code == 304
    with urllib.request.urlopen(server.url + path) as r:  # a client that does not ask gets the file as it is
        assert r.headers.get("Content-Encoding") is None and r.read() == raw


def test_comfyuis_dynamic_inputs_in_the_editor(loop, editor, server):
    """ResizeImageMaskNode's resize_type (a dynamic combo) shows the chosen option's widgets right after
    it, named as ComfyUI's API names them, and keeps a template's values; BatchImagesNode's sockets grow."""
    import comfyui_workflow_templates_json
    from PIL import Image as PILImage

    folder = Path(comfyui_workflow_templates_json.__file__).parent / "templates"

    async def body():
        template = (folder / "utility_image_stitch.json").read_bytes()
        for node in json.loads(template)["nodes"]:  # its pictures, so the LoadImage nodes show them
            if node["type"] == "LoadImage":
                PILImage.new("RGB", (8, 8)).save(server.data_dir / "input" / node["widgets_values"][0])
        await editor.drop_file("utility_image_stitch.json", template, "application/json")
        await editor.page.wait_for_function("loom.graph.findNodesByType('ResizeImageMaskNode').length === 1")
        [resize] = await editor.node_ids("ResizeImageMaskNode")
        values = lambda: editor.js(f"() => loom.graph.getNodeById({resize}).serialize().widgets_values")  # noqa: E731
        names = lambda: editor.js(f"() => loom.graph.getNodeById({resize}).widgets.map(w => w.name)")  # noqa: E731
        saved = next(n for n in json.loads(template)["nodes"] if n["type"] == "ResizeImageMaskNode")
        assert await values() == saved["widgets_values"]
        assert await names() == ["resize_type", "resize_type.width", "resize_type.height", "resize_type.crop",
                                 "scale_method"]
        await editor.js(f"""() => {{ const w = loom.graph.getNodeById({resize}).widgets[0];
            w.value = 'scale longer dimension'; w.callback(w.value); }}""")
        assert await names() == ["resize_type", "resize_type.longer_size", "scale_method"]
        await editor.js(f"""() => {{ const w = loom.graph.getNodeById({resize}).widgets[0];
            w.value = 'match size'; w.callback(w.value); }}""")
        inputs = await editor.js(f"() => loom.graph.getNodeById({resize}).inputs.map(i => i.name)")
        assert inputs == ["input", "resize_type.match"]

        await editor.page.click("#new-btn")
        await editor.js("""() => { const n = loom.addNode('BatchImagesNode', [400, 100]);
            const e = loom.addNode('EmptyImage', [50, 100]);
            e.connect(0, n, 0); e.connect(0, n, 1); window._batch = n.id; }""")
        sockets = await editor.js("() => loom.graph.getNodeById(window._batch).inputs.map(i => i.name)")
        assert sockets == ["images.image0", "images.image1", "images.image2"]
        await editor.js("() => { const n = loom.graph.getNodeById(window._batch); "
                        "loom.graph.findNodesByType('EmptyImage')[0].connect(0, n, 2); }")
        assert len(await editor.js("() => loom.graph.getNodeById(window._batch).inputs")) == 4

    run(loop, body())


def test_image_compare_shows_both_sides(loop, editor):
    """ImageCompare's a_images and b_images (ComfyUI's UI keys) are drawn side by side on the node."""
    async def body():
        await editor.page.click("#new-btn")
        await editor.js("""() => { const e = loom.addNode('EmptyImage', [50, 100]);
            const inv = loom.addNode('ImageInvert', [50, 400]);
            const c = loom.addNode('ImageCompare', [450, 100]);
            e.connect(0, inv, 0); e.connect(0, c, 0); inv.connect(0, c, 1); window._compare = c.id; }""")
        await editor.page.click("#queue-btn")
        await editor.page.wait_for_function("() => loom.graph.getNodeById(window._compare).loom.compare === true",
                                            timeout=60000)
        refs = await editor.js("() => loom.graph.getNodeById(window._compare).loom.images.map(i => JSON.parse(i.dataset.ref))")
        assert [r["type"] for r in refs] == ["temp", "temp"] and refs[0]["filename"] != refs[1]["filename"]
        await editor.shot("31-image-compare")

    run(loop, body())

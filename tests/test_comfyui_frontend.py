"""ComfyUI's official frontend (the comfyui-frontend-package wheel) served by Loom with --frontend
comfyui, in Debian's headless Chromium: it starts with no failed request (but the optional user.css)
and no page error, lists Loom's nodes, runs an SD 1.5 workflow file and shows the job in its queue
panel; a subgraph it makes is flattened by Loom exactly as by the frontend itself.
Screenshots go to test-artifacts/comfyui-frontend/."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.server_harness import ROOT, ServerProc, post_prompt, wait_history

pytest.importorskip("comfyui_frontend_package")
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "comfyui-frontend"
FIXTURE = ROOT / "tests" / "fixtures" / "comfy" / "txt2img_ui.json"
OPTIONAL = ("/user.css", "/api/userdata/user.css")  # a user stylesheet, 404 on ComfyUI too when there is none


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sd):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    srv = ServerProc(tmp_path_factory.mktemp("comfyui-frontend") / "data", "--frontend", "comfyui",
                     "--models-dir", str(Path(tiny_sd).parent), custom_nodes=False,
                     log_path=ARTIFACTS / "server.log").start(timeout=60)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def sd15_file(tmp_path: Path) -> Path:
    """A ComfyUI SD 1.5 txt2img file naming SD 1.5's checkpoint (and hinting where to get it)."""
    wf = json.loads(FIXTURE.read_text())
    loader = next(n for n in wf["nodes"] if n["type"] == "CheckpointLoaderSimple")
    loader["widgets_values"] = ["v1-5-pruned-emaonly-fp16.safetensors"]
    loader["properties"]["models"] = [{"name": "v1-5-pruned-emaonly-fp16.safetensors", "directory": "checkpoints",
                                       "url": "https://example.invalid/v1-5-pruned-emaonly-fp16.safetensors"}]
    path = tmp_path / "sd15_txt2img.json"
    path.write_text(json.dumps(wf))
    return path


def test_official_frontend_runs_a_workflow_on_loom(server, tmp_path):
    asyncio.run(drive(server, sd15_file(tmp_path)))


async def drive(server, workflow_file: Path):
    from playwright.async_api import async_playwright

    failed, errors = [], []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("response", lambda r: failed.append(f"{r.status} {r.request.method} {r.url}")
                if r.status >= 400 and not r.url.replace(server.url, "").startswith(OPTIONAL) else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            await page.goto(server.url + "/")
            await page.wait_for_function("window.app?.graph !== undefined", timeout=90000)
            await page.get_by_role("dialog").get_by_text("Templates").first.wait_for(timeout=30000)
            await page.screenshot(path=str(ARTIFACTS / "01-start.png"))  # the template browser opens first
            await page.keyboard.press("Escape")
            await page.get_by_role("button", name="Run", exact=True).wait_for(timeout=30000)
            assert await page.locator("canvas#graph-canvas").is_visible()

            # the node library lists Loom's nodes, its own stage nodes too
            await page.get_by_role("button", name="Node Library (n)").click()
            search = page.get_by_placeholder("Search Nodes...")
            await search.fill("MakeNoiseLatents")
            await page.get_by_text("MakeNoiseLatents").first.wait_for(timeout=10000)
            await page.screenshot(path=str(ARTIFACTS / "02-node-library.png"))
            await search.fill("")

            # open the SD 1.5 file, choose the model that is here, Run: the image lands on SaveImage
            await page.set_input_files("#comfy-file-input", str(workflow_file))
            await page.wait_for_function("app.graph._nodes.some(n => n.type === 'SaveImage')", timeout=20000)
            await page.evaluate("""() => { const loader = app.graph._nodes.find(n => n.type === 'CheckpointLoaderSimple');
                                           const w = loader.widgets[0]; w.value = 'tiny-sd'; w.callback?.(w.value); }""")
            await page.get_by_role("button", name="Run", exact=True).click()
            await page.wait_for_function("app.nodeOutputs?.['9']?.images?.length > 0", timeout=120000)
            image = await page.evaluate("() => app.nodeOutputs['9'].images[0]")
            assert image["type"] == "output" and image["filename"].startswith("ComfyUI_")
            await page.evaluate("() => app.canvas.centerOnNode(app.graph._nodes.find(n => n.type === 'SaveImage'))")
            await page.wait_for_timeout(1000)
            await page.screenshot(path=str(ARTIFACTS / "03-ran.png"))

            # the queue panel (GET /api/jobs) shows the finished job with its picture
            await page.get_by_role("button", name="Expand job queue").click()
            await page.get_by_text(image["filename"]).first.wait_for(timeout=10000)
            await page.screenshot(path=str(ARTIFACTS / "04-queue.png"))

            # a subgraph made by the frontend: Loom flattens the saved file exactly as the frontend does
            made = await page.evaluate("""async () => {
                const g = app.graph;
                const inner = g._nodes.filter(n => ["KSampler", "CLIPTextEncode"].includes(n.type));
                g.convertToSubgraph(new Set(inner));
                const { workflow, output } = await app.graphToPrompt();
                return { workflow, output };
            }""")
        except BaseException:
            await page.screenshot(path=str(ARTIFACTS / "failure.png"))
            raise
        finally:
            await browser.close()
    assert not failed, failed
    assert not errors, errors
    assert made["workflow"]["definitions"]["subgraphs"]
    async with aiohttp.ClientSession() as s:
        done = await post_prompt(s, server.url, made["workflow"])  # the saved UI file itself
        entry = await wait_history(s, server.url, done["prompt_id"], timeout=120)
    assert entry["status"]["status_str"] == "success", entry["status"]
    flattened = entry["prompt"][2]
    assert {k: (v["class_type"], v["inputs"]) for k, v in flattened.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in made["output"].items()}
    assert entry["outputs"]["9"]["images"][0]["filename"].startswith("ComfyUI_")


@pytest.fixture(scope="module")
def zimage_server(tmp_path_factory):
    """A server whose models folder holds the tiny Z-Image files under the names the frontend's
    default workflow asks for."""
    from nodes.families.zimage.tiny import write_comfy_files

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    models = tmp_path_factory.mktemp("zimage-models")
    write_comfy_files(models, seed=0)
    srv = ServerProc(tmp_path_factory.mktemp("comfyui-frontend-zimage") / "data", "--frontend", "comfyui",
                     "--models-dir", str(models), custom_nodes=False,
                     log_path=ARTIFACTS / "server-zimage.log").start(timeout=60)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_official_frontend_runs_its_default_workflow_unchanged(zimage_server):
    """The frontend's own default graph (Z-Image-Turbo: 1024 px, res_multistep, 8 steps), queued as it
    is: Run gives an image on its SaveImage."""
    asyncio.run(run_default(zimage_server))


async def run_default(server):
    from playwright.async_api import async_playwright

    errors = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            await page.goto(server.url + "/")
            await page.wait_for_function("window.app?.graph !== undefined", timeout=90000)
            await page.get_by_role("dialog").get_by_text("Templates").first.wait_for(timeout=30000)
            await page.keyboard.press("Escape")
            await page.get_by_role("button", name="Run", exact=True).wait_for(timeout=30000)
            await page.evaluate("() => app.loadGraphData()")  # no argument: the frontend's own default graph
            await page.wait_for_function("app.graph._nodes.length > 0", timeout=20000)
            types = await page.evaluate("() => app.graph._nodes.map(n => n.type)")
            assert {"EmptySD3LatentImage", "ModelSamplingAuraFlow", "UNETLoader"} <= set(types), types
            await page.get_by_role("button", name="Run", exact=True).click()
            await page.wait_for_function("app.nodeOutputs?.['9']?.images?.length > 0", timeout=240000)
            image = await page.evaluate("() => app.nodeOutputs['9'].images[0]")
            await page.screenshot(path=str(ARTIFACTS / "05-zimage-default.png"))
        except BaseException:
            await page.screenshot(path=str(ARTIFACTS / "failure-zimage.png"))
            raise
        finally:
            await browser.close()
    assert not errors, errors
    assert image["type"] == "output" and image["filename"].startswith("ComfyUI")

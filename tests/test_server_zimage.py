"""The official frontend's default workflow (Z-Image-Turbo) POSTed to the real server, with the tiny
Z-Image files under ComfyUI's names in its models folder: it runs to a saved image. The captured body
(tests/fixtures/comfy/frontend_default_request.json) comes from a frontend that did not know
EmptySD3LatentImage and ModelSamplingAuraFlow (no class_type on nodes 68 and 69); posted here as a
frontend that knows them sends it, with a 64 px latent to stay fast."""
import json

import aiohttp
import pytest

from tests.server_harness import ServerProc, WsLog, history_of, post_prompt, run
from tests.test_zimage import FRONTEND_REQUEST


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from nodes.families.zimage.tiny import write_comfy_files

    data = tmp_path_factory.mktemp("zimage") / "data"
    write_comfy_files(data / "models", seed=0)
    with ServerProc(data, custom_nodes=False).running() as proc:
        yield proc


def test_the_frontends_default_workflow_runs_to_an_image(server):
    body = json.loads(FRONTEND_REQUEST.read_text())
    prompt = body["prompt"]
    prompt["68"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    prompt["69"] = {"class_type": "ModelSamplingAuraFlow",
                    "inputs": {"model": ["66", 0], "shift": prompt["69"]["inputs"]["UNKNOWN"]}}

    async def main():
        async with aiohttp.ClientSession() as s, WsLog(s, server.url, "zimage") as ws:
            reply = await post_prompt(s, server.url, prompt, "zimage", extra_data=body.get("extra_data", {}))
            messages = [m for m in await ws.until_done(reply["prompt_id"], timeout=240) if isinstance(m, dict)]
            assert "execution_success" in [m["type"] for m in messages], messages[-3:]
            history = await history_of(s, server.url, reply["prompt_id"])
        images = history["outputs"]["9"]["images"]
        assert len(images) == 1 and (server.data_dir / "output" / images[0]["filename"]).is_file()
    run(main())


def test_the_captured_body_unchanged_asks_for_a_reload(server):
    """The captured body as it is (a page older than these node types): 400, reload the page."""
    body = {**json.loads(FRONTEND_REQUEST.read_text()), "client_id": "zimage"}

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/prompt", json=body) as r:
                assert r.status == 400
                reply = await r.json()
        assert reply["error"]["message"].startswith("the page that sent this prompt is out of date: reload it")
        assert set(reply["node_errors"]) == {"68", "69"}
    run(main())

"""The flux_schnell_full_text_to_image template (ComfyUI's API prompt of it, subgraphs expanded, 32 px,
2 steps) POSTed to the real server with the tiny Flux.1 files under ComfyUI's names in its models
folder: it runs to a saved image; a DualCLIPLoader type that no family loads is a 400 naming the input."""
import json

import aiohttp
import pytest

from tests.server_harness import ServerProc, WsLog, history_of, post_prompt, run


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from nodes.families.flux.tiny import write_comfy_files

    data = tmp_path_factory.mktemp("flux") / "data"
    write_comfy_files(data / "models", seed=0)
    with ServerProc(data, custom_nodes=False).running() as proc:
        yield proc


def template_prompt(name: str) -> dict:
    pytest.importorskip("comfyui_workflow_templates_json")
    from importlib import resources

    from graph import Registry
    from graph.formats import to_api

    template = json.loads((resources.files("comfyui_workflow_templates_json") / "templates" / f"{name}.json").read_text())
    registry = Registry()
    registry.add_package("nodes")
    prompt = to_api(template, registry)
    for node in prompt.values():
        if node["class_type"] == "EmptySD3LatentImage":
            node["inputs"].update(width=32, height=32)
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    return prompt


def test_a_flux_template_runs_to_an_image(server):
    prompt = template_prompt("flux_schnell_full_text_to_image")
    save = next(k for k, v in prompt.items() if v["class_type"] == "SaveImage")

    async def main():
        async with aiohttp.ClientSession() as s, WsLog(s, server.url, "flux") as ws:
            reply = await post_prompt(s, server.url, prompt, "flux")
            messages = [m for m in await ws.until_done(reply["prompt_id"], timeout=240) if isinstance(m, dict)]
            assert "execution_success" in [m["type"] for m in messages], messages[-3:]
            history = await history_of(s, server.url, reply["prompt_id"])
        images = history["outputs"][save]["images"]
        assert len(images) == 1 and (server.data_dir / "output" / images[0]["filename"]).is_file()
    run(main())


def test_an_unknown_clip_type_is_refused_by_name(server):
    prompt = template_prompt("flux_schnell_full_text_to_image")
    loader = next(k for k, v in prompt.items() if v["class_type"] == "DualCLIPLoader")
    prompt[loader]["inputs"]["type"] = "hunyuan_video"

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/prompt", json={"prompt": prompt, "client_id": "flux"}) as r:
                assert r.status == 400
                reply = await r.json()
        errors = reply["node_errors"][loader]["errors"]
        assert any("hunyuan_video" in e["message"] + e.get("details", "") and "flux" in e["message"] + e.get("details", "")
                   for e in errors), errors
    run(main())

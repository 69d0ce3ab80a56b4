"""The routes ComfyUI's official frontend calls besides the core API: users, settings, user files,
extensions, features, model folders, templates, in ComfyUI's shapes (on a real server process)."""
import io
import json
from importlib.util import find_spec

import aiohttp
import pytest
from PIL import Image

from tests.server_harness import ServerProc, run


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("front")
    web = root / "site"
    (web / "extensions" / "core").mkdir(parents=True)
    (web / "extensions" / "core" / "widgets.js").write_text("export {}")
    (web / "index.html").write_text("<!doctype html>")
    models = root / "data" / "models"
    (models / "embeddings").mkdir(parents=True)
    (models / "embeddings" / "easynegative.safetensors").write_bytes(b"x" * 10)
    (models / "tiny.safetensors").write_bytes(b"y" * 20)
    proc = ServerProc(root / "data", web_dir=web).start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


async def get(s, url, **headers):
    async with s.get(url, headers=headers) as r:
        assert r.status == 200, (url, await r.text())
        return await r.json()


def test_start_routes_in_comfyui_shapes(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            api = server.url + "/api"
            assert await get(s, api + "/extensions") == ["/extensions/core/widgets.js"]
            features = await get(s, api + "/features")
            assert features["supports_preview_metadata"] is False and features["max_upload_size"] > 0
            assert await get(s, api + "/i18n") == {}
            assert await get(s, api + "/embeddings") == ["easynegative"]
            folders = await get(s, api + "/experiment/models")
            assert [f["name"] for f in folders] == ["checkpoints", "embeddings"]
            assert folders[0]["folders"] == [str((server.data_dir / "models").resolve())]
            [tiny] = [m for m in await get(s, api + "/experiment/models/checkpoints") if m["name"] == "tiny.safetensors"]
            assert tiny["pathIndex"] == 0 and tiny["size"] == 20 and tiny["modified"] > 0
            async with s.get(api + "/experiment/models/nope") as r:
                assert r.status == 404
            paths = await get(s, api + "/internal/folder_paths")
            assert paths["embeddings"] == [str((server.data_dir / "models" / "embeddings").resolve())]
            assert await get(s, api + "/global_subgraphs") == {}
    run(main())


def test_users_and_their_settings(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            api = server.url + "/api"
            assert await get(s, api + "/users") == {"storage": "server", "migrated": True}
            assert await get(s, api + "/settings") == {}
            async with s.post(api + "/settings/Comfy.Locale", json="fr") as r:
                assert r.status == 200
            async with s.post(api + "/settings", json={"Comfy.ColorPalette": "light", "Comfy.Locale": "en"}) as r:
                assert r.status == 200
            assert await get(s, api + "/settings") == {"Comfy.Locale": "en", "Comfy.ColorPalette": "light"}
            assert await get(s, api + "/settings/Comfy.Locale") == "en"
            assert await get(s, api + "/settings/Comfy.Unset") is None
            stored = json.loads((server.data_dir / "user" / "comfy.settings.json").read_text())
            assert stored["Comfy.ColorPalette"] == "light"

            async with s.post(api + "/users", json={"username": "Ann Lee"}) as r:
                ann = await r.json()
            assert ann.startswith("Ann-Lee_")
            async with s.post(api + "/users", json={"username": "Ann Lee"}) as r:
                assert r.status == 400  # names are unique
            assert await get(s, api + "/users") == {"storage": "server", "users": {"default": "default", ann: "Ann Lee"}}
            # each user has their own settings and files
            async with s.post(api + "/settings/Comfy.Locale", json="ja", headers={"comfy-user": ann}) as r:
                assert r.status == 200
            assert await get(s, api + "/settings/Comfy.Locale", **{"comfy-user": ann}) == "ja"
            assert await get(s, api + "/settings/Comfy.Locale") == "en"
            async with s.post(api + "/userdata/workflows%2Fmine.json", json={"nodes": []},
                              headers={"comfy-user": ann}) as r:
                assert await r.json() == "workflows/mine.json"
            assert (server.data_dir / "users" / ann / "workflows" / "mine.json").is_file()
            assert await get(s, api + "/userdata?dir=workflows") == []
            async with s.get(api + "/settings", headers={"comfy-user": "mallory"}) as r:
                assert r.status == 403 and (await r.json())["error"]["type"] == "unknown_user"
    run(main())


def test_user_files_list_move_and_defaults(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            api = server.url + "/api"
            assert await get(s, api + "/userdata?dir=subgraphs") == []  # a folder not made yet
            assert await get(s, api + "/userdata/comfy.templates.json") == []  # the frontend's node templates
            for name in ("workflows%2Fa.json", "workflows%2Fdeep%2Fb.json", "workflows%2F.index.json"):
                async with s.post(f"{api}/userdata/{name}?overwrite=true&full_info=true", json={"n": name}) as r:
                    info = await r.json()
                    assert r.status == 200 and info["size"] > 0 and info["modified"] > 1e12, info
            assert info["path"] == "workflows/.index.json"
            listed = await get(s, api + "/userdata?dir=workflows&recurse=true&split=false&full_info=true")
            assert sorted(i["path"] for i in listed) == [".index.json", "a.json", "deep/b.json"]
            assert await get(s, api + "/userdata?dir=workflows") == [".index.json", "a.json"]
            assert await get(s, api + "/userdata?dir=workflows&recurse=true&split=true") == \
                [[".index.json", ".index.json"], ["a.json", "a.json"], ["deep/b.json", "deep", "b.json"]]
            async with s.post(api + "/userdata/workflows%2Fa.json/move/workflows%2Fdeep%2Fb.json?overwrite=false") as r:
                assert r.status == 409
            async with s.post(api + "/userdata/workflows%2Fa.json/move/workflows%2Fc.json") as r:
                assert await r.json() == "workflows/c.json"
            assert await get(s, api + "/userdata/workflows%2Fc.json") == {"n": "workflows%2Fa.json"}
            async with s.get(api + "/userdata/workflows%2Fa.json") as r:
                assert r.status == 404
    run(main())


def test_templates(server):
    """The package's templates are listed only when their files (workflow and pictures) are all
    installed, so the template browser never shows a broken picture; every workflow file loads."""
    core = pytest.importorskip("comfyui_workflow_templates_core")

    async def main():
        async with aiohttp.ClientSession() as s:
            index = await get(s, server.url + "/templates/index.json")
            assert all({"moduleName", "title", "templates"} <= set(c) and c["templates"] for c in index)
            listed = [t for c in index for t in c["templates"]]
            if find_spec("comfyui_workflow_templates_media_image"):  # the full package: pictures too
                assert any(t["mediaType"] == "image" for t in listed)
            for t in listed[:: max(1, len(listed) // 25)]:  # what is listed is served, picture included
                async with s.get(f"{server.url}/templates/{t['name']}.json") as r:
                    assert r.status == 200 and "nodes" in await r.json()
                async with s.get(f"{server.url}/templates/{t['name']}-1.{t['mediaSubtype']}") as r:
                    assert r.status == 200
            template = next(iter(core.iter_templates())).template_id  # listed or not, its workflow loads
            async with s.get(f"{server.url}/templates/{template}.json") as r:
                assert r.status == 200 and "nodes" in await r.json()
            async with s.get(server.url + "/templates/nope.json") as r:
                assert r.status == 404
            modules = await get(s, server.url + "/api/workflow_templates")
            assert "txt2img" in modules["loom"] and "tutorial/cfg_sweep" in modules["loom"]
            workflow = await get(s, server.url + "/api/workflow_templates/loom/txt2img.json")
            assert workflow["version"] == 0.4 and len(workflow["nodes"]) == 10 and workflow["links"]
            for name in modules["loom"]:  # every listed workflow has a thumbnail: a drawing of its graph
                async with s.get(f"{server.url}/api/workflow_templates/loom/{name}.jpg") as r:
                    assert r.status == 200 and r.content_type == "image/jpeg", name
                    picture = Image.open(io.BytesIO(await r.read()))
                assert picture.size == (512, 384)
                colours = picture.convert("RGB").getcolors(1 << 16)
                assert colours is None or len(colours) > 8, name  # boxes, titles and links, not a blank
            for bad in ("loom/txt2img.exe", "loom/nope.jpg", "other/txt2img.jpg", "loom/../setup.jpg"):
                async with s.get(f"{server.url}/api/workflow_templates/{bad}") as r:
                    assert r.status == 404, bad
    run(main())


def test_model_library_previews_and_metadata(server, tmp_path):
    """The model library's picture and metadata routes, as ComfyUI answers them: a picture beside the
    model (or its safetensors cover image) as WebP, the header's __metadata__, 404 when there is
    none, 403 for a name that leaves the folder (symbolic links included)."""
    import base64
    import os

    from safetensors.torch import save_file
    import torch

    models = server.data_dir / "models"
    Image.new("RGB", (4, 3), "red").save(models / "tiny.preview.png")
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), "blue").save(buf, format="PNG")
    meta = {"ssmd_cover_images": json.dumps([base64.b64encode(buf.getvalue()).decode()]), "title": "covered"}
    save_file({"w": torch.zeros(1)}, str(models / "covered.safetensors"), metadata=meta)
    save_file({"w": torch.zeros(1)}, str(models / "plain.safetensors"))
    outside = tmp_path / "secret.png"
    Image.new("RGB", (1, 1)).save(outside)
    os.symlink(outside, models / "linked.png")

    async def main():
        async with aiohttp.ClientSession() as s:
            api = server.url + "/api/experiment/models/preview/checkpoints/0/"
            for name, size in (("tiny.safetensors", (4, 3)), ("covered.safetensors", (2, 2))):
                async with s.get(api + name) as r:
                    assert r.status == 200 and r.content_type == "image/webp", name
                    assert Image.open(io.BytesIO(await r.read())).size == size
            for url, status in ((api + "plain.safetensors", 404), (api + "linked.safetensors", 404),
                                (api + "..%2F..%2Fsecret.png", 403), (api[:-2] + "7/tiny.safetensors", 404),
                                (api[:-2] + "x/tiny.safetensors", 400), (api.replace("checkpoints", "nope") + "a", 404)):
                async with s.get(url) as r:
                    assert r.status == status, (url, await r.text())
            meta_url = server.url + "/api/view_metadata/checkpoints"
            assert (await get(s, meta_url + "?filename=covered.safetensors"))["title"] == "covered"
            for query in ("?filename=plain.safetensors", "?filename=tiny.ckpt", "?filename=missing.safetensors", ""):
                async with s.get(meta_url + query) as r:
                    assert r.status == 404, query
    run(main())

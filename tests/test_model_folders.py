"""Model folders as ComfyUI users keep them: checkpoints reached through symlinks (files and folders,
pointing inside or outside the models folder), broken links and link loops, and the extra model
folders of ComfyUI's extra_model_paths.yaml (--extra-model-paths-config). /view keeps refusing links
that leave output/input/temp."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from graph import Env, ModelPathsError, ModelStore
from graph.model_paths import ExtraFolder, read_extra_model_paths
from tests.server_harness import ServerProc, run, wait_history

ROOT = Path(__file__).resolve().parent.parent
TXT2IMG = json.loads((ROOT / "tests" / "fixtures" / "comfy" / "txt2img_api.json").read_text())
# names CheckpointLoaderSimple offers in the layout below, each reached through a link or the yaml
LINKED = ["out-file.safetensors", "out-folder", "in-file.safetensors", "in-folder", "ext/tiny.safetensors",
          "comfy-tiny.safetensors"]

COMFY_YAML = """\
comfyui:
    base_path: ../comfy           # relative to this file's folder
    checkpoints: models/checkpoints/
    text_encoders: |
        models/text_encoders/
        models/clip/
    unet: models/unet
other:
    is_default: true
    loras: ~/my-loras
    vae: vae-here
empty:
"""


# --- the yaml format (no server, no torch) --------------------------------------------------------
def test_comfyui_yaml_format(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "extra_model_paths.yaml"
    path.write_text(COMFY_YAML)
    found = read_extra_model_paths(path)
    comfy = tmp_path / "comfy" / "models"
    assert found == [
        ExtraFolder("checkpoints", comfy / "checkpoints"),
        ExtraFolder("text_encoders", comfy / "text_encoders"), ExtraFolder("text_encoders", comfy / "clip"),
        ExtraFolder("diffusion_models", comfy / "unet"),  # ComfyUI's legacy name
        ExtraFolder("loras", tmp_path / "home" / "my-loras", True),  # ~ expanded
        ExtraFolder("vae", tmp_path / "cfg" / "vae-here", True),  # no base_path: the yaml's folder
    ]
    env = Env.from_data_dir(tmp_path / "data", extra_model_paths=[path])
    models = env.models_dir
    assert env.model_folders("checkpoints") == [models / "checkpoints", comfy / "checkpoints"]
    assert env.model_folders("clip") == [models / "text_encoders", models / "clip", comfy / "text_encoders",
                                         comfy / "clip"]
    assert env.model_folders("loras") == [tmp_path / "home" / "my-loras", models / "loras"]  # is_default: first

    # every kind's loader reads them through the same place: a LoRA and a UNet of the yaml's folders
    from nodes.loading.model_files import kind_path, list_kind

    for folder, name in ((tmp_path / "home" / "my-loras", "style.safetensors"), (comfy / "unet", "u.safetensors")):
        folder.mkdir(parents=True)
        (folder / name).write_bytes(b"w")
    (models / "loras").mkdir()
    (models / "loras" / "style.safetensors").write_bytes(b"mine")
    assert list_kind(env, "loras") == ["style.safetensors"]
    assert kind_path(env, "loras", "style.safetensors") == tmp_path / "home" / "my-loras" / "style.safetensors"
    assert list_kind(env, "diffusion_models") == ["u.safetensors"]
    assert kind_path(env, "diffusion_models", "u.safetensors", "UNETLoader") == comfy / "unet" / "u.safetensors"
    with pytest.raises(FileNotFoundError, match=f"'v.safetensors' is not in models/diffusion_models or "
                                                f"models/unet or {comfy / 'unet'}"):
        kind_path(env, "diffusion_models", "v.safetensors", "UNETLoader")


def test_python_api_takes_the_yaml(tmp_path):
    from graph import Loom

    (tmp_path / "comfy" / "checkpoints").mkdir(parents=True)
    (tmp_path / "comfy" / "checkpoints" / "c.safetensors").write_bytes(b"c")
    (tmp_path / "extra.yaml").write_text("comfy:\n  base_path: comfy\n  checkpoints: checkpoints\n")
    for loom in (Loom(tmp_path / "data", packages=(), extra_model_paths=[tmp_path / "extra.yaml"]),
                 Loom(Env.from_data_dir(tmp_path / "data2"), packages=(), extra_model_paths=[tmp_path / "extra.yaml"])):
        assert loom.env.model_folders("checkpoints")[-1] == tmp_path / "comfy" / "checkpoints"
        found = loom.models.path_of("c.safetensors", "checkpoints")  # the pre-flight check's store
        assert found == tmp_path / "comfy" / "checkpoints" / "c.safetensors"
        assert loom.models.relative_name(found) == "c.safetensors"
    with pytest.raises(ModelPathsError, match="no such file"):
        Loom(tmp_path / "data", packages=(), extra_model_paths=[tmp_path / "missing.yaml"])


@pytest.mark.parametrize("text, message", [
    (None, "no such file"),
    ("comfyui: [a, b\n", r"not valid YAML \(line 2\)"),
    ("- checkpoints\n", "expected sections"),
    ("comfyui: models/checkpoints\n", "section 'comfyui' must be a mapping"),
    ("comfyui:\n  checkpoints: 3\n", "comfyui.checkpoints must be a folder path"),
    ("comfyui:\n  base_path: [a]\n  vae: v\n", "comfyui.base_path must be a folder path"),
    ("comfyui:\n  is_default: maybe\n", "comfyui.is_default must be true or false"),
])
def test_bad_yaml_is_one_clear_line(tmp_path, text, message):
    path = tmp_path / "extra.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ModelPathsError, match=message) as err:
        read_extra_model_paths(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("make", ["missing", "malformed", "wrong types", "a folder"])
def test_bad_yaml_exits_2_at_start(tmp_path, make):
    path = tmp_path / "extra.yaml"
    if make == "malformed":
        path.write_text("comfyui:\n  checkpoints: [\n")
    elif make == "wrong types":
        path.write_text("comfyui:\n  checkpoints: {a: 1}\n")
    elif make == "a folder":
        path.mkdir()
    for command in (["run", str(ROOT / "workflows" / "txt2img.json")], ["serve", "--port", "0"]):
        proc = subprocess.run([sys.executable, str(ROOT / "server.py"), *command, "--data-dir", str(tmp_path / "d"),
                               "--extra-model-paths-config", str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --extra-model-paths-config: "), proc.stderr
        assert str(path) in lines[0]


# --- links, without torch -------------------------------------------------------------------------
def test_links_are_followed_and_named_where_found(tmp_path):
    """ModelStore (the pre-flight check behind POST /prompt) finds linked models by name and never
    fails naming them; broken links are not found; a link loop ends."""
    models, outside = tmp_path / "models", tmp_path / "outside"
    (models / "checkpoints").mkdir(parents=True)
    (outside / "sub").mkdir(parents=True)
    (outside / "a.safetensors").write_bytes(b"a")
    (outside / "sub" / "b.safetensors").write_bytes(b"b")
    os.symlink(outside / "a.safetensors", models / "checkpoints" / "a.safetensors")
    os.symlink(outside, models / "checkpoints" / "ext")
    os.symlink(tmp_path / "nowhere.safetensors", models / "checkpoints" / "broken.safetensors")
    os.symlink(models, models / "checkpoints" / "loop")
    os.symlink("self.safetensors", models / "checkpoints" / "self.safetensors")  # a link to itself
    store = ModelStore(models)
    path = store.path_of("a.safetensors", "checkpoints")
    assert path == models / "checkpoints" / "a.safetensors"
    assert store.relative_name(path) == "checkpoints/a.safetensors"
    assert store.relative_name(store.path_of("b.safetensors")) == "checkpoints/ext/sub/b.safetensors"
    assert store.path_of("broken.safetensors", "checkpoints") is None
    assert store.path_of("../outside/a.safetensors") is None  # names still cannot leave the folder
    assert store.path_of("a.safetensors", "../outside") is None  # nor directories (a workflow's models list)
    import hashlib

    assert store.relative_name(store.find_by_sha256(hashlib.sha256(b"b").hexdigest())).endswith("b.safetensors")

    from nodes.loading.model_files import kind_path, list_kind, stat_fingerprint

    env = Env.from_data_dir(tmp_path / "data", models_dir=models)
    names = list_kind(env, "checkpoints")
    assert {"a.safetensors", "ext/a.safetensors", "ext/sub/b.safetensors"} <= set(names)
    assert "broken.safetensors" not in names and "self.safetensors" not in names
    assert not any(n.startswith("loop/checkpoints/") for n in names)  # a folder above is not entered again
    found = kind_path(env, "checkpoints", "ext/sub/b.safetensors")
    assert found == models / "checkpoints" / "ext" / "sub" / "b.safetensors"
    with pytest.raises(FileNotFoundError, match="not in models/checkpoints or models"):
        kind_path(env, "checkpoints", "broken.safetensors")
    fingerprint = stat_fingerprint(models / "checkpoints" / "ext")  # the linked folder's files
    assert [rel for rel, *_ in fingerprint] == ["a.safetensors", "sub/b.safetensors"]
    assert fingerprint[0][2] == 1


# --- through the server, on the tiny model --------------------------------------------------------
@pytest.fixture(scope="module")
def layout(tmp_path_factory, tiny_sd):
    """A models folder whose checkpoints are links (to files and folders, inside and outside it), a
    broken link and a loop; a ComfyUI install's models folder named by an extra_model_paths.yaml."""
    from nodes.loading.ldm_layout import write_single_file

    base = tmp_path_factory.mktemp("linked")
    outside, models, comfy = base / "outside", base / "data" / "models", base / "comfy" / "models"
    for folder in (outside, models / "checkpoints", models / "store", comfy / "checkpoints"):
        folder.mkdir(parents=True)
    single = outside / "tiny.safetensors"
    write_single_file(tiny_sd, single)
    ckpt = models / "checkpoints"
    os.symlink(single, ckpt / "out-file.safetensors")  # a file outside
    os.symlink(tiny_sd, ckpt / "out-folder")  # a diffusers folder outside
    os.link(single, models / "store" / "tiny.safetensors")
    os.symlink(models / "store" / "tiny.safetensors", ckpt / "in-file.safetensors")  # a file inside
    os.symlink(Path("..") / "tiny-sd", ckpt / "in-folder")  # a folder inside, by a relative link
    shutil.copytree(tiny_sd, models / "tiny-sd")
    os.symlink(outside, ckpt / "ext")  # a folder of checkpoints outside
    os.symlink(base / "gone.safetensors", ckpt / "broken.safetensors")
    os.symlink(ckpt, ckpt / "loop")
    os.link(single, comfy / "checkpoints" / "comfy-tiny.safetensors")
    (base / "extra_model_paths.yaml").write_text("comfyui:\n  base_path: comfy\n  checkpoints: models/checkpoints\n")
    (base / "data" / "output").mkdir(parents=True)
    (base / "secret.txt").write_text("top secret")
    os.symlink(base / "secret.txt", base / "data" / "output" / "leak.txt")
    os.symlink(outside, base / "data" / "output" / "linked")
    return base


@pytest.fixture(scope="module")
def server(layout):
    with ServerProc(layout / "data", "--extra-model-paths-config", str(layout / "extra_model_paths.yaml"),
                    custom_nodes=False).running() as proc:
        yield proc


def prompt_for(name: str) -> dict:
    wf = json.loads(json.dumps(TXT2IMG))
    wf["4"]["inputs"]["ckpt_name"] = name
    wf["3"]["inputs"]["steps"] = 1
    wf["9"]["inputs"]["filename_prefix"] = "linked"
    return wf


def test_linked_models_are_listed_and_run(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.get(server.url + "/object_info/CheckpointLoaderSimple") as r:
                choices = (await r.json())["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
            assert set(LINKED) <= set(choices), choices
            assert "broken.safetensors" not in choices
            async with s.get(server.url + "/object_info/LoadCheckpoint") as r:
                loom_choices = (await r.json())["LoadCheckpoint"]["input"]["required"]["model"][0]
            assert {"checkpoints/out-file.safetensors", "comfy-tiny.safetensors"} <= set(loom_choices)
            async with s.get(server.url + "/models/checkpoints") as r:  # ComfyUI's model list
                assert "comfy-tiny.safetensors" in await r.json()
            async with s.get(server.url + "/api/experiment/models/checkpoints") as r:  # its frontend's library
                entries = {e["name"]: e for e in await r.json()}
            assert entries["comfy-tiny.safetensors"]["pathIndex"] == 1
            assert entries["checkpoints/out-folder"]["size"] > 1000  # a linked folder's files, followed
            ids = []
            for name in LINKED:
                async with s.post(server.url + "/prompt", json={"prompt": prompt_for(name)}) as r:
                    body = await r.json()
                    assert r.status == 200, (name, body)
                    ids.append(body["prompt_id"])
            for name, prompt_id in zip(LINKED, ids):
                entry = await wait_history(s, server.url, prompt_id, timeout=240)
                assert entry["status"]["status_str"] == "success", (name, entry["status"])
                assert entry["outputs"]["9"]["images"]
    run(main())


def test_broken_link_is_a_clear_400(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/prompt", json={"prompt": prompt_for("broken.safetensors")}) as r:
                return r.status, await r.json()
    status, body = run(main())
    assert status == 400, body
    assert "broken.safetensors" in json.dumps(body["node_errors"]["4"])


@pytest.mark.parametrize("params", [
    {"filename": "leak.txt"},  # a link to a file outside output
    {"filename": "tiny.safetensors", "subfolder": "linked"},  # a link to a folder outside output
    {"filename": "comfy-tiny.safetensors", "subfolder": "../../comfy/models/checkpoints"},
])
def test_view_still_refuses_links_out_of_output(server, params):
    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.get(server.url + "/view", params=params) as r:
                return r.status, await r.read()
    status, body = run(main())
    assert status == 403, body
    assert b"top secret" not in body

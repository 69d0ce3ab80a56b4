"""Workflow files on small pure-Python nodes: format, migration, schema, pre-flight, PNG, CLI."""
import copy
import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import jsonschema
import pytest
from PIL import Image, PngImagePlugin

import server
from graph import Combo, Env, In, Loom, Node, Out, Registry, String, WorkflowError, read_workflow_file, to_api
from graph.models import ModelStore
from graph.workflow import SCHEMA_PATH, canonical, kind_of
from tests.test_engine import HERE, chain_prompt, editor_version

SEEN_EXTRA = []


def model_names(env):
    return sorted(p.name for p in env.models_dir.iterdir()) if env else []


class LoadModel(Node):
    """Names a model; outputs its name."""
    name = Combo(model_names, model=True)
    outputs = (Out("STRING", "name"),)

    def run(self, ctx):
        SEEN_EXTRA.append(ctx.extra_data)
        return self.name


class Join(Node):
    a = In("STRING")
    b = String("")
    input_aliases = {"first": "a"}
    outputs = (Out("STRING", "text"),)

    def run(self, ctx):
        return self.a + self.b


@pytest.fixture
def registry():
    reg = Registry([LoadModel, Join])
    reg.add_folder(HERE / "custom_nodes")
    return reg


@pytest.fixture
def loom(tmp_path, registry):
    env = Env.from_data_dir(tmp_path / "data")
    (env.models_dir / "alpha.safetensors").write_bytes(b"alpha weights")
    folder = env.models_dir / "tiny"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "w.bin").write_bytes(b"unet")
    (folder / "model_index.json").write_text("{}")
    return Loom(env, registry=registry)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_workflow(name="alpha.safetensors"):
    """LoadModel -> Join -> Show, as the editor saves it."""
    wf = editor_version()
    wf["nodes"] += [
        {"id": 20, "type": "LoadModel", "pos": [0, 200], "size": [200, 60], "mode": 0, "inputs": [],
         "outputs": [{"name": "name", "type": "STRING", "links": [20]}], "widgets_values": [name]},
        {"id": 21, "type": "Join", "pos": [300, 200], "size": [200, 60], "mode": 0,
         "inputs": [{"name": "a", "type": "STRING", "link": 20}],
         "outputs": [{"name": "text", "type": "STRING", "links": [21]}], "widgets_values": ["!"]},
        {"id": 22, "type": "Show", "pos": [600, 200], "size": [200, 60], "mode": 0,
         "inputs": [{"name": "text", "type": "STRING", "link": 21}]},
    ]
    wf["links"] += [[20, 20, 0, 21, 0, "STRING"], [21, 21, 0, 22, 0, "STRING"]]
    wf["groups"] = [{"title": "models", "bounding": [0, 180, 820, 120], "color": "#3f789e", "font_size": 24}]
    return wf


def as_version_1(wf):
    """The same workflow as litegraph's version-1 serialiser writes it."""
    v1 = copy.deepcopy(wf)
    v1["version"] = 1
    v1["state"] = {"lastNodeId": v1.pop("last_node_id"), "lastLinkId": v1.pop("last_link_id"),
                   "lastGroupId": 1, "lastRerouteId": 1}
    v1["links"] = [dict(zip(["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"], link))
                   for link in v1["links"]]
    v1["links"][0]["parentId"] = 1
    v1["reroutes"] = [{"id": 1, "pos": [5, 5], "linkIds": [1]}]
    return v1


# --- format, migration, schema ------------------------------------------------------------------

def test_canonical_file_follows_the_published_schema_and_is_stable():
    wf = canonical(model_workflow())
    jsonschema.validate(wf, json.loads(SCHEMA_PATH.read_text()))
    assert (wf["format"], wf["format_version"], wf["version"]) == ("loom-workflow", 1, 0.4)
    assert wf["groups"][0]["title"] == "models" and wf["nodes"][-1]["pos"] == [600, 200]
    assert canonical(wf) == wf
    assert kind_of(wf) == "loom-1"


def test_version_1_and_0_4_migrate_to_the_same_workflow(registry):
    old, new = canonical(model_workflow()), canonical(as_version_1(model_workflow()))
    assert new["links"] == old["links"] and new["nodes"] == old["nodes"]
    assert (new["last_node_id"], new["last_link_id"]) == (11, 7)
    assert new["extra"]["reroutes"] == [{"id": 1, "pos": [5, 5], "linkIds": [1]}]
    assert new["extra"]["linkExtensions"] == [{"id": 1, "parentId": 1}]
    assert to_api(as_version_1(model_workflow()), registry) == to_api(model_workflow(), registry)


def test_legacy_quirks_are_migrated():
    wf = model_workflow()
    wf["nodes"][0]["pos"] = {"0": 10, "1": 20}
    wf["links"].insert(1, None)
    wf["links"][0] = [1.0, 1, 0, 3, 0]  # integral float, no type
    wf["models"] = [{"name": "alpha.safetensors", "url": "https://example.invalid/a", "directory": "checkpoints",
                     "hash": "AB" * 32, "hash_type": "sha256"}]
    wf["nodes"][-3]["properties"] = {"models": [{"name": "extra.safetensors", "directory": "loras"}]}
    out = canonical(wf)
    assert out["nodes"][0]["pos"] == [10, 20]
    assert out["links"][0] == [1, 1, 0, 3, 0, "*"] and None not in out["links"]
    assert out["models"] == [
        {"name": "alpha.safetensors", "sha256": "ab" * 32, "directory": "checkpoints", "url": "https://example.invalid/a"},
        {"name": "extra.safetensors", "sha256": None, "directory": "loras"}]


@pytest.mark.parametrize("bad, expected", [
    ({"nodes": [{"id": 1}], "links": []}, "at nodes[0]: 'type' is a required property"),
    ({"nodes": [{"id": 1, "type": "A", "pos": "x"}]}, "at nodes[0].pos:"),
    ({"nodes": [], "links": [[1, 2, "0", 3, 0]]}, "at links[0][2]: '0' is not of type 'integer'"),
    ({"nodes": [], "version": 1, "links": [{"id": 1, "origin_id": 1}]}, "'origin_slot' is a required property"),
    ({"1": {"inputs": 3}}, "at node 1: 'class_type' is a required property"),
    ({"format": "loom-workflow", "format_version": 2, "nodes": []}, "made by a newer Loom"),
    ({"format": "other", "format_version": 1}, "unknown workflow format 'other'"),
    ([1, 2], "must be a JSON object, got an array"),
])
def test_malformed_files_get_a_message_with_the_place(registry, bad, expected):
    with pytest.raises(WorkflowError) as err:
        to_api(bad, registry)
    assert expected in str(err.value)


def test_save_names_every_model_with_its_sha256_and_loads_back(loom):
    saved = loom.save(model_workflow())
    assert saved["models"] == [{"name": "alpha.safetensors", "sha256": sha(b"alpha weights")}]
    text = json.dumps(saved)
    assert loom.load(json.loads(text)).prompt == loom.load(model_workflow()).prompt
    assert loom.run(json.loads(text)).outputs["22"] == {"text": ["alpha.safetensors!"]}


def test_run_embeds_the_saved_workflow(loom):
    SEEN_EXTRA.clear()
    loom.run(as_version_1(model_workflow()))
    embedded = SEEN_EXTRA[0]["extra_pnginfo"]["workflow"]
    assert embedded == loom.save(as_version_1(model_workflow()))
    assert embedded["models"][0]["sha256"] == sha(b"alpha weights")
    SEEN_EXTRA.clear()
    loom.executor.cache.clear()
    loom.run(model_workflow(), extra_data={"extra_pnginfo": {"workflow": {"posted": True}}})
    assert SEEN_EXTRA[0]["extra_pnginfo"]["workflow"] == {"posted": True}  # what a client posts wins
    SEEN_EXTRA.clear()
    loom.executor.cache.clear()
    loom.run(loom.load(model_workflow()).prompt, extra_data={"extra_pnginfo": {"workflow": model_workflow()}})
    assert SEEN_EXTRA[0]["extra_pnginfo"]["workflow"] == loom.save(model_workflow())  # a posted editor workflow becomes a Loom file


def test_input_aliases_are_renamed_in_both_formats(registry):
    api = {"1": {"class_type": "Number", "inputs": {"value": 1}},
           "2": {"class_type": "Join", "inputs": {"first": ["1", 0], "b": "x"}},
           "3": {"class_type": "Join", "inputs": {"first": ["1", 0], "a": ["2", 0]}}}  # the real name wins
    prompt = to_api(api, registry)
    assert prompt["2"]["inputs"] == {"a": ["1", 0], "b": "x"}
    assert prompt["3"]["inputs"] == {"first": ["1", 0], "a": ["2", 0]}
    wf = model_workflow()
    wf["nodes"][-2]["inputs"][0]["name"] = "first"
    assert to_api(wf, registry)["21"]["inputs"] == {"a": ["20", 0], "b": "!"}


# --- pre-flight ---------------------------------------------------------------------------------

def test_preflight_reports_every_missing_node_type_and_model_at_once(loom):
    wf = model_workflow(name="renamed.safetensors")
    wf["nodes"] += [
        {"id": 30, "type": "ImpactWildcard", "inputs": [], "widgets_values": ["lora_x.safetensors", 0.8]},
        {"id": 31, "type": "ImpactWildcard", "inputs": [], "widgets_values": {"ckpt": "other.ckpt"}},
        {"id": 32, "type": "FancyUpscale", "inputs": [], "mode": 0, "widgets_values": []},
        {"id": 33, "type": "FancyUpscale", "inputs": [], "mode": 2, "widgets_values": ["muted.pt"]},
    ]
    (loom.env.models_dir / "changed.bin").write_bytes(b"new content")
    (loom.env.models_dir / "changed-v1.bin").write_bytes(b"old content")
    wf["models"] = [{"name": "renamed.safetensors", "sha256": sha(b"alpha weights")},
                    {"name": "changed.bin", "sha256": sha(b"old content")},
                    {"name": "tiny", "sha256": "0" * 64}]
    v = loom.validate(wf)
    report = v.preflight
    assert report.missing_nodes == {"FancyUpscale": ["32"], "ImpactWildcard": ["30", "31"]}
    status = {m.name: (m.status, m.nodes, m.found_as) for m in report.models}
    assert status == {"renamed.safetensors": ("missing", ["20"], "alpha.safetensors"),
                      "lora_x.safetensors": ("missing", ["30"], None),
                      "other.ckpt": ("missing", ["31"], None),
                      "changed.bin": ("different", [], "changed-v1.bin"),
                      "tiny": ("different", [], None)}
    details = v.error["details"]
    for needle in ("'FancyUpscale' is not installed (node 32)", "'ImpactWildcard' is not installed (nodes 30, 31)",
                   "'renamed.safetensors'", "here as 'alpha.safetensors'", "'lora_x.safetensors'", "'other.ckpt'",
                   "'changed.bin' is in the models folder but its sha256",
                   "the file the workflow names is here as 'changed-v1.bin'"):
        assert needle in details
    assert "models not found: renamed.safetensors, lora_x.safetensors, other.ckpt" in v.error["message"]
    assert [e["type"] for e in v.node_errors["20"]["errors"]] == ["value_not_in_list", "model_not_found"]
    assert v.response()["error"]["extra_info"]["preflight"]["missing_nodes"]["FancyUpscale"] == ["32"]


def test_hash_mismatch_alone_is_a_warning(loom):
    wf = model_workflow()
    wf["models"] = [{"name": "alpha.safetensors", "sha256": "1" * 64}]
    v = loom.validate(wf)
    assert v.ok and v.preflight.models[0].status == "different"


def test_model_hashes_are_cached_by_path_mtime_and_size(loom):
    store = loom.models
    path = loom.env.models_dir / "alpha.safetensors"
    assert store.sha256(path) == sha(b"alpha weights") and store.bytes_hashed == 13
    assert store.sha256(path) == sha(b"alpha weights") and store.bytes_hashed == 13
    again = ModelStore(loom.env.models_dir, store.cache_file)  # a restarted server reads the cache file
    assert again.sha256(path) == sha(b"alpha weights") and again.bytes_hashed == 0
    path.write_bytes(b"alpha weights, fine-tuned")
    assert again.sha256(path) == sha(b"alpha weights, fine-tuned") and again.bytes_hashed == 25


def test_folder_hash_is_sha256sum_of_its_sorted_files(loom):
    lines = f"{sha(b'{}')}  model_index.json\n{sha(b'unet')}  unet/w.bin\n"
    assert loom.models.sha256(loom.env.models_dir / "tiny") == sha(lines.encode())
    assert loom.models.find_by_sha256(sha(lines.encode())) == loom.env.models_dir / "tiny"


def test_model_names_from_other_machines_are_found(loom):
    sub = loom.env.models_dir / "checkpoints"
    sub.mkdir()
    (sub / "sd15.safetensors").write_bytes(b"x")
    store = loom.models
    assert store.path_of("sd15.safetensors", "checkpoints") == sub / "sd15.safetensors"
    assert store.path_of("SD1.5\\sd15.safetensors") == sub / "sd15.safetensors"  # saved on Windows
    assert store.path_of("../alpha.safetensors") is None


# --- PNG ----------------------------------------------------------------------------------------

def png_with(chunks: dict, how: str = "tEXt") -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        if how == "tEXt":
            info.add_text(key, value)
        elif how == "zTXt":
            info.add_text(key, value, zip=True)
        else:
            info.add_itxt(key, value, zip=True)
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def text_chunk_after_pixels(png: bytes, key: str, value: str) -> bytes:
    body = key.encode("latin-1") + b"\0" + value.encode("latin-1")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    end = png.rindex(b"IEND") - 4
    return png[:end] + chunk + png[end:]


@pytest.mark.parametrize("how", ["tEXt", "zTXt", "iTXt", "after-pixels"])
def test_png_chunks_are_read_back_and_run(loom, tmp_path, how):
    prompt, wf = chain_prompt(), model_workflow()
    if how == "after-pixels":
        data = text_chunk_after_pixels(png_with({}), "prompt", json.dumps(prompt))
        data = text_chunk_after_pixels(data, "workflow", json.dumps(wf))
    else:
        data = png_with({"prompt": json.dumps(prompt), "workflow": json.dumps(wf)}, how)
    (tmp_path / "x.png").write_bytes(data)
    loaded = read_workflow_file(tmp_path / "x.png")
    assert loaded["prompt"] == prompt
    assert loaded["extra_data"]["extra_pnginfo"]["workflow"] == wf
    SEEN_EXTRA.clear()
    result = loom.run(loaded)  # the prompt runs; the workflow travels on to the next image
    assert result.outputs["6"] == {"text": ["9.00"]}


def test_png_without_workflow_or_broken(tmp_path, loom):
    (tmp_path / "plain.png").write_bytes(png_with({"parameters": "a cat"}))
    with pytest.raises(WorkflowError, match=r"no 'prompt' or 'workflow' text chunk \(text chunks: parameters\)"):
        read_workflow_file(tmp_path / "plain.png")
    (tmp_path / "cut.png").write_bytes(png_with({"prompt": "{}"})[:40])
    with pytest.raises(WorkflowError, match="not a readable PNG"):
        read_workflow_file(tmp_path / "cut.png")
    (tmp_path / "bad.png").write_bytes(png_with({"prompt": "{oops"}))
    with pytest.raises(WorkflowError, match="'prompt' text chunk of bad.png is not valid JSON"):
        read_workflow_file(tmp_path / "bad.png")


def test_extract_and_check_commands(tmp_path, loom, capsys):
    wf = as_version_1(model_workflow())
    image = tmp_path / "shared.png"
    image.write_bytes(png_with({"prompt": json.dumps(loom.load(wf).prompt), "workflow": json.dumps(wf)}))
    out = tmp_path / "extracted.json"
    args = ["--data-dir", str(loom.env.data_dir), "--custom-nodes", str(HERE / "custom_nodes")]
    assert server.main(["workflow", "extract", str(image), "--out", str(out)]) == 0
    extracted = json.loads(out.read_text())
    assert extracted == canonical(wf)
    assert server.main(["workflow", "extract", str(image), "--api"]) == 0
    assert json.loads(capsys.readouterr().out) == loom.load(wf).prompt
    assert server.main(args + ["workflow", "check", str(out)]) == 2  # LoadModel is not in this registry
    assert "node type 'LoadModel' is not installed (node 20)" in capsys.readouterr().err
    assert server.main(["workflow", "extract", str(out)]) == 2
    assert "extracted.json is not a PNG image" in capsys.readouterr().err

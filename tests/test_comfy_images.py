"""ComfyUI's image and mask nodes (nodes/comfy/images.py, nodes/comfy/masks.py): what each computes on
small tensors, the DynamicCombo / Autogrow inputs in API prompts and editor files, the output nodes'
UI data, and the current templates they complete."""
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from graph import Env, Loom, Registry
from graph.formats import load
from nodes.comfy import images as ci
from nodes.comfy import masks as cm
from nodes.common import call


def run(node, **inputs):
    return call(node, None, **inputs)


@pytest.fixture(scope="module")
def loom(tmp_path_factory):
    torch.set_num_threads(1)
    return Loom(Env.from_data_dir(tmp_path_factory.mktemp("data"), device="cpu", dtype="float32"))


def ramp_image(h=6, w=8, c=3):
    return torch.arange(h * w * c, dtype=torch.float32).reshape(1, h, w, c) / (h * w * c)


# --- masks ------------------------------------------------------------------------------------------

def test_mask_conversions():
    image = ramp_image(c=4)
    assert torch.equal(run(cm.ImageToMask, image=image, channel="green"), image[..., 1])
    assert torch.equal(run(cm.ImageToMask, image=image, channel="alpha"), image[..., 3])
    with pytest.raises(ValueError, match="no alpha channel"):
        run(cm.ImageToMask, image=image[..., :3], channel="alpha")
    mask = image[..., 0]
    grey = run(cm.MaskToImage, mask=mask)
    assert grey.shape == (1, 6, 8, 3) and all(torch.equal(grey[..., k], mask) for k in range(3))
    assert torch.equal(run(cm.InvertMask, mask=mask), 1.0 - mask)
    solid = run(cm.SolidMask, value=0.25, width=5, height=3)
    assert solid.shape == (1, 3, 5) and torch.all(solid == 0.25)
    assert torch.equal(run(cm.ThresholdMask, mask=torch.tensor([[[0.2, 0.5, 0.7]]]), value=0.5),
                       torch.tensor([[[0.0, 0.0, 1.0]]]))


def test_grow_mask_grows_by_a_cross_or_a_square_and_shrinks_back():
    dot = torch.zeros(1, 7, 7)
    dot[0, 3, 3] = 1.0
    cross = run(cm.GrowMask, mask=dot, expand=1, tapered_corners=True)
    assert cross.sum() == 5 and cross[0, 2, 2] == 0 and cross[0, 2, 3] == 1
    square = run(cm.GrowMask, mask=dot, expand=2, tapered_corners=False)
    assert torch.equal(square[0, 1:6, 1:6], torch.ones(5, 5)) and square.sum() == 25
    assert torch.equal(run(cm.GrowMask, mask=square, expand=-2, tapered_corners=False), dot)


def test_feather_mask_ramps_from_the_edges():
    out = run(cm.FeatherMask, mask=torch.ones(1, 4, 10), left=4, top=0, right=0, bottom=2)
    assert torch.allclose(out[0, 1, :5], torch.tensor([0.25, 0.5, 0.75, 1.0, 1.0]))
    # ComfyUI's far-edge ramp indexes pixel -k: row 0 gets 1/2, the last row 2/2 (kept for parity)
    assert torch.allclose(out[0, :, 6], torch.tensor([0.5, 1.0, 1.0, 1.0]))


@pytest.mark.parametrize("operation,expected", [("multiply", 0.25), ("add", 1.0), ("subtract", 0.75),
                                                ("and", 0.0), ("or", 1.0), ("xor", 1.0)])
def test_mask_composite_at_an_offset(operation, expected):
    destination, source = torch.ones(1, 4, 4), torch.full((1, 3, 3), 0.25)  # "and"/"or"/"xor" round: 1 and 0
    out = run(cm.MaskComposite, destination=destination, source=source, x=2, y=1, operation=operation)
    assert torch.all(out[0, 1:4, 2:4] == expected)  # the overlap (the source is cut at the edge)
    assert torch.all(out[0, 0] == 1) and torch.all(out[0, :, :2] == 1)  # outside: unchanged
    assert destination.min() == 1  # the input is left as it is


# --- images -----------------------------------------------------------------------------------------

def test_invert_empty_and_batches():
    image = ramp_image()
    assert torch.equal(run(ci.ImageInvert, image=image), 1.0 - image)
    empty = run(ci.EmptyImage, width=3, height=2, batch_size=2, color=0xFF8000)
    assert empty.shape == (2, 2, 3, 3) and torch.equal(empty[0, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))
    batch = torch.cat([image * k for k in range(4)])
    assert torch.equal(run(ci.ImageFromBatch, image=batch, batch_index=-2, length=5), batch[2:])
    assert torch.equal(run(ci.ImageFromBatch, image=batch, batch_index=9, length=1), batch[3:])
    assert torch.equal(run(ci.RepeatImageBatch, image=batch[:2], amount=3), batch[:2].repeat(3, 1, 1, 1))


def test_blur_keeps_flat_images_and_spreads_an_impulse_symmetrically():
    flat = torch.full((1, 9, 9, 3), 0.3)
    assert torch.allclose(run(ci.ImageBlur, image=flat, blur_radius=2, sigma=1.0), flat, atol=1e-6)  # float sums
    impulse = torch.zeros(1, 9, 9, 1)
    impulse[0, 4, 4] = 1.0
    out = run(ci.ImageBlur, image=impulse, blur_radius=2, sigma=0.5)[0, ..., 0]
    assert out.shape == (9, 9) and abs(out.sum().item() - 1.0) < 1e-5
    assert torch.allclose(out, out.flip(0)) and torch.allclose(out, out.T) and out[4, 4] == out.max()
    assert out[4, 6] > 0 and out[4, 7] == 0  # radius 2: nothing beyond two pixels


@pytest.mark.parametrize("mode,f", [("normal", lambda a, b: b), ("multiply", lambda a, b: a * b),
                                    ("screen", lambda a, b: 1 - (1 - a) * (1 - b)),
                                    ("difference", lambda a, b: (a - b).clamp(0, 1))])
def test_blend(mode, f):
    a, b = torch.full((1, 2, 2, 3), 0.6), torch.full((1, 2, 2, 3), 0.3)
    out = run(ci.ImageBlend, image1=a, image2=b, blend_factor=0.5, blend_mode=mode)
    assert torch.allclose(out, (0.5 * a + 0.5 * f(a, b)).clamp(0, 1))


def test_composite_masked_pastes_at_xy_through_the_mask():
    destination, source = torch.zeros(1, 4, 4, 3), torch.ones(1, 2, 2, 3)
    out = run(ci.ImageCompositeMasked, destination=destination, source=source, x=1, y=2, resize_source=False)
    assert out[0, ..., 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
    half = run(ci.ImageCompositeMasked, destination=destination, source=source, x=3, y=3, resize_source=False,
               mask=torch.full((1, 2, 2), 0.5))
    assert half[0, 3, 3, 0] == 0.5 and half[0, ..., 0].sum() == 0.5  # only the corner overlaps


def test_pad_for_outpaint():
    image = torch.ones(1, 16, 16, 3)
    padded, mask = run(ci.ImagePadForOutpaint, image=image, left=8, top=0, right=0, bottom=0, feathering=4)
    assert padded.shape == (1, 16, 24, 3) and torch.all(padded[:, :, :8] == 0.5) and torch.all(padded[:, :, 8:] == 1)
    assert mask.shape == (1, 16, 24) and torch.all(mask[0, :, :8] == 1)
    # within `feathering` of the padded (left) side: ((4 - distance) / 4)^2, 0 beyond
    assert torch.allclose(mask[0, 5, 8:14], torch.tensor([1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]))


def test_stitch():
    a, b = torch.zeros(1, 4, 6, 3), torch.ones(1, 2, 2, 3)
    right = run(ci.ImageStitch, image1=a, image2=b, direction="right", match_image_size=True, spacing_width=0,
                spacing_color="white")
    assert right.shape == (1, 4, 10, 3) and right[0, :, :6].max() == 0 and right[0, :, 6:].min() > 0.99
    up = run(ci.ImageStitch, image1=a, image2=b, direction="up", match_image_size=False, spacing_width=2,
             spacing_color="red")
    assert up.shape == (1, 8, 6, 3)  # b (padded to a's width), a red strip, a
    assert up[0, 2, 0].tolist() == [1.0, 0.0, 0.0]
    assert up[0, 0, 0].tolist() == [0.0, 0.0, 0.0] and up[0, 0, 2].tolist() == [1.0, 1.0, 1.0]  # b centred, black padding
    # (ComfyUI pads with the spacing colour when it is white or black, else black)
    assert torch.equal(run(ci.ImageStitch, image1=a, direction="right", match_image_size=True, spacing_width=0,
                           spacing_color="white"), a)


def test_resize_and_pad_and_max_dimension():
    image = torch.zeros(1, 50, 100, 3)
    out = run(ci.ResizeAndPadImage, image=image, target_width=64, target_height=64, padding_color="white",
              interpolation="area")
    assert out.shape == (1, 64, 64, 3) and torch.all(out[0, 16:48] == 0) and torch.all(out[0, :16] == 1)
    scaled = run(ci.ImageScaleToMaxDimension, image=image, upscale_method="bilinear", largest_size=40)
    assert scaled.shape == (1, 20, 40, 3)


@pytest.mark.parametrize("kind,options,size", [
    ("scale dimensions", {"width": 30, "height": 0, "crop": "center"}, (15, 30)),
    ("scale by multiplier", {"multiplier": 0.5}, (10, 20)),
    ("scale longer dimension", {"longer_size": 10}, (5, 10)),
    ("scale shorter dimension", {"shorter_size": 10}, (10, 20)),
    ("scale width", {"width": 8}, (4, 8)),
    ("scale height", {"height": 8}, (8, 16)),
    ("scale total pixels", {"megapixels": 0.0003}, (13, 25)),  # 314 pixels: scale sqrt(314 / 800)
    ("scale to multiple", {"multiple": 16}, (16, 32)),
])
def test_resize_image_mask_node_resizes_images_and_masks(kind, options, size):
    image, mask = torch.rand(2, 20, 40, 3), torch.rand(1, 20, 40)
    dotted = {f"resize_type.{k}": v for k, v in options.items()}
    for x in (image, mask):
        out = run(ci.ResizeImageMaskNode, input=x, resize_type=kind, scale_method="bilinear", **dotted)
        assert out.shape[1:3] == size and out.ndim == x.ndim and out.shape[0] == x.shape[0]


def test_resize_image_mask_node_matches_another_size():
    out = run(ci.ResizeImageMaskNode, input=torch.rand(1, 20, 40), resize_type="match size", scale_method="area",
              **{"resize_type.match": torch.rand(1, 8, 8, 3), "resize_type.crop": "center"})
    assert out.shape == (1, 8, 8)


def test_batch_images_resizes_to_the_first_and_adds_alpha():
    first, second = torch.zeros(1, 8, 8, 3), torch.ones(1, 4, 6, 4)
    out = run(ci.BatchImagesNode, **{"images.image0": first, "images.image1": second})
    assert out.shape == (2, 8, 8, 4) and torch.all(out[0, ..., 3] == 1) and torch.all(out[1] == 1)


def test_join_image_with_alpha():
    image, mask = torch.rand(2, 4, 4, 3), torch.rand(1, 2, 2)
    out = run(ci.JoinImageWithAlpha, image=image, alpha=mask)
    assert out.shape == (1, 4, 4, 4) and torch.equal(out[..., :3], image[:1])
    assert torch.allclose(out[0, ..., 3], 1 - torch.nn.functional.interpolate(mask[:, None], size=(4, 4),
                                                                             mode="bilinear")[0, 0])


def test_canny_finds_the_edges_of_a_square():
    image = torch.zeros(1, 32, 32, 3)
    image[:, 8:24, 8:24] = 1.0
    edges = run(ci.Canny, image=image, low_threshold=0.4, high_threshold=0.8)
    assert edges.shape == image.shape and torch.equal(edges[..., 0], edges[..., 2])
    assert set(edges.unique().tolist()) == {0.0, 1.0}
    assert edges[0, 10:22, 10:22].max() == 0 and edges[0, :4].max() == 0  # inside and far outside: none
    assert edges[0, 6:10, 12:20].max() == 1 and edges[0, 12:20, 22:26].max() == 1  # top and right sides


# --- through Loom: API prompts, editor files, UI output ------------------------------------------------

def save_input(loom, name, h=24, w=32):
    rgba = np.random.default_rng(0).integers(0, 256, (h, w, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(loom.env.input_dir / name)


def test_image_compare_shows_both_images(loom):
    save_input(loom, "a.png")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "ImageCompare", "inputs": {"image_a": ["1", 0], "image_b": ["2", 0]}}}
    result = loom.run(prompt)
    assert result.ok, result.error
    shown = result.outputs["3"]
    assert set(shown) == {"a_images", "b_images"}
    a, b = (np.asarray(Image.open(loom.env.temp_dir / shown[k][0]["filename"]), np.int32) for k in shown)
    assert shown["a_images"][0]["type"] == "temp" and np.array_equal(a, 255 - b)


def read_png16(path):
    """The samples of a 16-bit PNG with filter 0 rows (what png16 writes), and its tEXt keys."""
    data, pos, idat, texts = path.read_bytes(), 8, b"", []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        elif kind == b"tEXt":
            texts.append(body.split(b"\0")[0].decode())
        pos += 12 + n
    channels = {0: 1, 2: 3, 6: 4}[color]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * channels * 2)
    assert depth == 16 and not rows[:, 0].any()
    return rows[:, 1:].copy().view(">u2").reshape(h, w, channels), texts


def test_save_image_advanced_writes_8_and_16_bit_png_and_refuses_exr(loom):
    save_input(loom, "b.png")
    base = {"1": {"class_type": "LoadImage", "inputs": {"image": "b.png"}}}

    def saved(bits):
        prompt = {**base, "2": {"class_type": "SaveImageAdvanced", "inputs": {
            "images": ["1", 0], "filename_prefix": f"adv{bits}", "format": "png", "format.bit_depth": f"{bits}-bit",
            "format.input_color_space": "sRGB"}}}
        result = loom.run(prompt)
        assert result.ok, result.error
        [path] = loom.image_paths(result)
        return path, result.values["2"][0]

    path8, image = saved(8)
    assert np.array_equal(np.asarray(Image.open(path8)), (image[0].numpy() * 255).round().astype(np.uint8))
    path16, _ = saved(16)
    samples, texts = read_png16(path16)
    assert "prompt" in texts
    assert np.array_equal(samples, (image[0].clamp(0, 1) * 65535).to(torch.int32).numpy())
    exr = {**base, "2": {"class_type": "SaveImageAdvanced", "inputs": {
        "images": ["1", 0], "filename_prefix": "x", "format": "exr"}}}
    validation = loom.validate(exr)
    [error] = validation.node_errors["2"]["errors"]
    assert error["type"] == "custom_validation_failed" and "'exr'" in error["message"] and \
        error["extra_info"]["input_name"] == "format"


def test_dynamic_combo_widgets_of_editor_files_follow_the_chosen_option(loom):
    def node(kind, values, inputs=()):
        return {"id": 1, "type": kind, "mode": 0, "inputs": list(inputs), "outputs": [], "widgets_values": values}

    def converted(n):
        return load({"nodes": [n], "links": [], "version": 0.4}, loom.registry).prompt["1"]["inputs"]

    assert converted(node("SaveImageAdvanced", ["x", "avif", "auto", "HDR", 20, "animated", 12.0, 3])) == {
        "filename_prefix": "x", "format": "avif", "format.bit_depth": "auto", "format.input_color_space": "HDR",
        "format.crf": 20, "format.save_mode": "animated", "format.save_mode.fps": 12.0,
        "format.save_mode.loop_count": 3}
    assert converted(node("ResizeImageMaskNode", ["scale longer dimension", 2048, "lanczos"])) == {
        "resize_type": "scale longer dimension", "resize_type.longer_size": 2048, "scale_method": "lanczos"}
    # the editor back from the API prompt: the chosen option's widgets after the combo
    from graph.formats import api_to_editor
    editor = api_to_editor({"1": {"class_type": "ResizeImageMaskNode", "inputs": {
        "resize_type": "scale dimensions", "resize_type.width": 64, "resize_type.height": 32,
        "resize_type.crop": "disabled", "scale_method": "area"}}}, loom.registry)
    assert editor["nodes"][0]["widgets_values"] == ["scale dimensions", 64, 32, "disabled", "area"]


def test_object_info_carries_comfyuis_dynamic_inputs():
    registry = Registry()
    registry.add_package("nodes")
    resize = registry.get("ResizeImageMaskNode").object_info()["input"]["required"]["resize_type"]
    assert resize[0] == "COMFY_DYNAMICCOMBO_V3"
    options = {o["key"]: list(o["inputs"]["required"]) for o in resize[1]["options"]}
    assert options == {"scale dimensions": ["width", "height", "crop"], "scale by multiplier": ["multiplier"],
                       "scale longer dimension": ["longer_size"], "scale shorter dimension": ["shorter_size"],
                       "scale width": ["width"], "scale height": ["height"], "scale total pixels": ["megapixels"],
                       "match size": ["match", "crop"], "scale to multiple": ["multiple"]}
    grow = registry.get("BatchImagesNode").object_info()["input"]["required"]["images"]
    assert grow == ["COMFY_AUTOGROW_V3", {"template": {"input": {"required": {"image": ["IMAGE", {}]}},
                                                       "prefix": "image", "min": 2, "max": 50}}]


def test_autogrow_needs_its_first_slots(loom):
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
              "2": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["1", 0]}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    validation = loom.validate(prompt)
    assert [e["extra_info"]["input_name"] for e in validation.node_errors["2"]["errors"]] == ["images.image1"]
    prompt["2"]["inputs"]["images.image3"] = ["1", 0]
    prompt["2"]["inputs"]["images.image1"] = ["1", 0]
    result = loom.run(prompt)
    assert result.ok and result.values["3"] == () and len(result.outputs["3"]["images"]) == 3


# --- ComfyUI's current templates ----------------------------------------------------------------------

def templates_folder():
    import comfyui_workflow_templates_json
    from pathlib import Path

    return Path(comfyui_workflow_templates_json.__file__).parent / "templates"


@pytest.mark.parametrize("name", ["basic_mask_operations_and_compositing", "utility_image_stitch",
                                  "utility_interpolation_image_upscale"])
def test_current_templates_these_nodes_complete_run(loom, name):
    prompt = load(json.loads((templates_folder() / f"{name}.json").read_text()), loom.registry).prompt
    for node in prompt.values():
        if node["class_type"] == "LoadImage" and not (loom.env.input_dir / node["inputs"]["image"]).exists():
            save_input(loom, node["inputs"]["image"], 48, 64)
        if node["class_type"] == "ResizeImageMaskNode":  # 2048 x 2048 is slow on a shared CPU
            node["inputs"].update({"resize_type.width": 96, "resize_type.height": 96})
    result = loom.run(prompt)
    assert result.ok, result.error
    assert result.outputs and all(any(files for files in shown.values()) for shown in result.outputs.values())

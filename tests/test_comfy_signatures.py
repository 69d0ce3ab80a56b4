"""ComfyUI-named nodes have ComfyUI's exact inputs (names, order, types) and outputs, so clients that
build calls from /object_info work; Loom's older input names still load; LoadImage's MASK is ComfyUI's."""
import numpy as np
import pytest
import torch
from PIL import Image

from graph import Env, Loom

# ComfyUI's declarations (its nodes.py): required inputs in order with their types, and outputs.
COMFY = {
    "CheckpointLoaderSimple": ([("ckpt_name", "COMBO")], ["MODEL", "CLIP", "VAE"]),
    "CLIPTextEncode": ([("text", "STRING"), ("clip", "CLIP")], ["CONDITIONING"]),
    "EmptyLatentImage": ([("width", "INT"), ("height", "INT"), ("batch_size", "INT")], ["LATENT"]),
    "KSampler": ([("model", "MODEL"), ("seed", "INT"), ("steps", "INT"), ("cfg", "FLOAT"), ("sampler_name", "COMBO"),
                  ("scheduler", "COMBO"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT"), ("denoise", "FLOAT")], ["LATENT"]),
    "KSamplerAdvanced": ([("model", "MODEL"), ("add_noise", "COMBO"), ("noise_seed", "INT"), ("steps", "INT"),
                          ("cfg", "FLOAT"), ("sampler_name", "COMBO"), ("scheduler", "COMBO"),
                          ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT"),
                          ("start_at_step", "INT"), ("end_at_step", "INT"), ("return_with_leftover_noise", "COMBO")],
                         ["LATENT"]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], ["IMAGE"]),
    "VAEEncode": ([("pixels", "IMAGE"), ("vae", "VAE")], ["LATENT"]),
    "LoadImage": ([("image", "COMBO")], ["IMAGE", "MASK"]),
    "SaveImage": ([("images", "IMAGE"), ("filename_prefix", "STRING")], []),
    "PreviewImage": ([("images", "IMAGE")], []),
}


@pytest.fixture(scope="module")
def loom(tiny_sd, tmp_path_factory):
    torch.set_num_threads(1)
    env = Env.from_data_dir(tmp_path_factory.mktemp("data"), models_dir=tiny_sd.parent, device="cpu", dtype="float32")
    return Loom(env)


@pytest.fixture(scope="module")
def object_info(loom):
    return loom.registry.object_info(loom.env)  # what GET /object_info serves


def kind(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


@pytest.mark.parametrize("name", sorted(COMFY))
def test_comfyui_named_nodes_have_comfyuis_signature(object_info, name):
    info = object_info[name]
    inputs, outputs = COMFY[name]
    order = info["input_order"]["required"]
    assert [(n, kind(info["input"]["required"][n])) for n in order] == inputs
    assert info["output"] == outputs and info["output_name"] == outputs


def positional(object_info, class_type: str, *args) -> dict:
    """How a client that knows only /object_info calls a node: arguments in input_order."""
    return {"class_type": class_type, "inputs": dict(zip(object_info[class_type]["input_order"]["required"], args))}


def test_positional_client_round_trips_an_image_through_the_vae(loom, object_info):
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[16:48, 16:48] = (250, 20, 20)
    Image.fromarray(pixels).save(loom.env.input_dir / "square.png")
    prompt = {
        "1": positional(object_info, "CheckpointLoaderSimple", "tiny-sd"),
        "2": positional(object_info, "LoadImage", "square.png"),
        "3": positional(object_info, "VAEEncode", ["2", 0], ["1", 2]),
        "4": positional(object_info, "VAEDecode", ["3", 0], ["1", 2]),
        "5": positional(object_info, "SaveImage", ["4", 0], "roundtrip"),
    }
    assert prompt["4"]["inputs"] == {"samples": ["3", 0], "vae": ["1", 2]}
    validation = loom.validate(prompt)
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    [path] = loom.image_paths(result)
    assert Image.open(path).size == (64, 64)


def test_loom_files_with_the_old_input_names_still_run(loom):
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
              "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
              "3": {"class_type": "VAEDecode", "inputs": {"vae": ["1", 2], "latents": ["2", 0]}},
              "4": {"class_type": "VAEEncode", "inputs": {"vae": ["1", 2], "image": ["3", 0]}},
              "5": {"class_type": "VAEDecode", "inputs": {"vae": ["1", 2], "latents": ["4", 0]}},
              "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}}
    validation = loom.validate(prompt)
    assert validation.ok, validation.response()
    assert validation.prompt["3"]["inputs"] == {"samples": ["2", 0], "vae": ["1", 2]}
    assert validation.prompt["4"]["inputs"] == {"pixels": ["3", 0], "vae": ["1", 2]}
    assert loom.run(validation).ok


def load_image(loom, name: str):
    validation = loom.validate({"1": {"class_type": "LoadImage", "inputs": {"image": name}}}, outputs=["1"])
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    return result.values["1"]


def test_load_image_mask_is_comfyuis(loom):
    rgba = np.zeros((24, 40, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = np.linspace(0, 255, 40).astype(np.uint8)[None, :]
    Image.fromarray(rgba, "RGBA").save(loom.env.input_dir / "alpha.png")
    image, mask = load_image(loom, "alpha.png")
    assert image.shape == (1, 24, 40, 3) and mask.shape == (1, 24, 40) and mask.dtype == torch.float32
    assert torch.allclose(mask[0], 1.0 - torch.from_numpy(rgba[..., 3].astype(np.float32) / 255.0))

    Image.fromarray(rgba[..., :3]).save(loom.env.input_dir / "opaque.jpg")
    image, mask = load_image(loom, "opaque.jpg")
    assert image.shape == (1, 24, 40, 3) and mask.shape == (1, 64, 64) and not mask.any()  # no alpha: 64x64 zeros

    palette = Image.fromarray(rgba[..., 0]).convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    palette.save(loom.env.input_dir / "keyed.png", transparency=palette.info["transparency"])
    _, mask = load_image(loom, "keyed.png")
    assert mask.shape == (1, 24, 40) and mask[0, 0, 0] == 1.0

    frames = [Image.new("RGB", (16, 8), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(loom.env.input_dir / "anim.gif", save_all=True, append_images=frames[1:])
    image, mask = load_image(loom, "anim.gif")
    assert image.shape == (3, 8, 16, 3) and mask.shape == (3, 64, 64)

"""ComfyUI-named nodes have ComfyUI's exact inputs (names, order, types, required or optional) and
outputs (types and names), so clients that build calls from /object_info work; Loom's older input
names still load; LoadImage's MASK is ComfyUI's."""
import numpy as np
import pytest
import torch
from PIL import Image

from graph import Env, Loom

# ComfyUI's declarations (nodes.py; comfy_extras/nodes_clip_sdxl.py, nodes_custom_sampler.py,
# nodes_post_processing.py, nodes_primitive.py, nodes_upscale_model.py), read from its source:
# name -> (required inputs, optional inputs, outputs), each "name:TYPE" in order; an output named
# after its type is written as the type alone.
COMFY = {
    # loaders
    "CheckpointLoaderSimple": ("ckpt_name:COMBO", "", "MODEL CLIP VAE"),
    "UNETLoader": ("unet_name:COMBO weight_dtype:COMBO", "", "MODEL"),
    "CLIPLoader": ("clip_name:COMBO type:COMBO", "device:COMBO", "CLIP"),
    "DualCLIPLoader": ("clip_name1:COMBO clip_name2:COMBO type:COMBO", "device:COMBO", "CLIP"),
    "VAELoader": ("vae_name:COMBO", "", "VAE"),
    "LoraLoader": ("model:MODEL clip:CLIP lora_name:COMBO strength_model:FLOAT strength_clip:FLOAT", "",
                   "MODEL CLIP"),
    "LoraLoaderModelOnly": ("model:MODEL lora_name:COMBO strength_model:FLOAT", "", "MODEL"),
    "ControlNetLoader": ("control_net_name:COMBO", "", "CONTROL_NET"),
    "UpscaleModelLoader": ("model_name:COMBO", "", "UPSCALE_MODEL"),
    # conditioning
    "CLIPTextEncode": ("text:STRING clip:CLIP", "", "CONDITIONING"),
    "CLIPSetLastLayer": ("clip:CLIP stop_at_clip_layer:INT", "", "CLIP"),
    "CLIPTextEncodeSDXL": ("clip:CLIP width:INT height:INT crop_w:INT crop_h:INT target_width:INT "
                           "target_height:INT text_g:STRING text_l:STRING", "", "CONDITIONING"),
    "CLIPTextEncodeSDXLRefiner": ("ascore:FLOAT width:INT height:INT text:STRING clip:CLIP", "", "CONDITIONING"),
    "ConditioningCombine": ("conditioning_1:CONDITIONING conditioning_2:CONDITIONING", "", "CONDITIONING"),
    "ConditioningAverage": ("conditioning_to:CONDITIONING conditioning_from:CONDITIONING "
                            "conditioning_to_strength:FLOAT", "", "CONDITIONING"),
    "ConditioningSetArea": ("conditioning:CONDITIONING width:INT height:INT x:INT y:INT strength:FLOAT", "",
                            "CONDITIONING"),
    "ConditioningSetMask": ("conditioning:CONDITIONING mask:MASK strength:FLOAT set_cond_area:COMBO", "",
                            "CONDITIONING"),
    "ConditioningZeroOut": ("conditioning:CONDITIONING", "", "CONDITIONING"),
    "ControlNetApply": ("conditioning:CONDITIONING control_net:CONTROL_NET image:IMAGE strength:FLOAT", "",
                        "CONDITIONING"),
    "ControlNetApplyAdvanced": ("positive:CONDITIONING negative:CONDITIONING control_net:CONTROL_NET image:IMAGE "
                                "strength:FLOAT start_percent:FLOAT end_percent:FLOAT", "vae:VAE",
                                "CONDITIONING:positive CONDITIONING:negative"),
    "InpaintModelConditioning": ("positive:CONDITIONING negative:CONDITIONING vae:VAE pixels:IMAGE mask:MASK "
                                 "noise_mask:BOOLEAN", "",
                                 "CONDITIONING:positive CONDITIONING:negative LATENT:latent"),
    # latents
    "EmptyLatentImage": ("width:INT height:INT batch_size:INT", "", "LATENT"),
    "VAEDecode": ("samples:LATENT vae:VAE", "", "IMAGE"),
    "VAEEncode": ("pixels:IMAGE vae:VAE", "", "LATENT"),
    "VAEEncodeForInpaint": ("pixels:IMAGE vae:VAE mask:MASK grow_mask_by:INT", "", "LATENT"),
    "SetLatentNoiseMask": ("samples:LATENT mask:MASK", "", "LATENT"),
    "LatentUpscale": ("samples:LATENT upscale_method:COMBO width:INT height:INT crop:COMBO", "", "LATENT"),
    "LatentUpscaleBy": ("samples:LATENT upscale_method:COMBO scale_by:FLOAT", "", "LATENT"),
    "RepeatLatentBatch": ("samples:LATENT amount:INT", "", "LATENT"),
    "LatentFromBatch": ("samples:LATENT batch_index:INT length:INT", "", "LATENT"),
    # sampling
    "KSampler": ("model:MODEL seed:INT steps:INT cfg:FLOAT sampler_name:COMBO scheduler:COMBO "
                 "positive:CONDITIONING negative:CONDITIONING latent_image:LATENT denoise:FLOAT", "", "LATENT"),
    "KSamplerAdvanced": ("model:MODEL add_noise:COMBO noise_seed:INT steps:INT cfg:FLOAT sampler_name:COMBO "
                         "scheduler:COMBO positive:CONDITIONING negative:CONDITIONING latent_image:LATENT "
                         "start_at_step:INT end_at_step:INT return_with_leftover_noise:COMBO", "", "LATENT"),
    "KSamplerSelect": ("sampler_name:COMBO", "", "SAMPLER"),
    "BasicScheduler": ("model:MODEL scheduler:COMBO steps:INT denoise:FLOAT", "", "SIGMAS"),
    "KarrasScheduler": ("steps:INT sigma_max:FLOAT sigma_min:FLOAT rho:FLOAT", "", "SIGMAS"),
    "SDTurboScheduler": ("model:MODEL steps:INT denoise:FLOAT", "", "SIGMAS"),
    "BetaSamplingScheduler": ("model:MODEL steps:INT alpha:FLOAT beta:FLOAT", "", "SIGMAS"),
    "SamplerER_SDE": ("solver_type:COMBO max_stage:INT eta:FLOAT s_noise:FLOAT", "", "SAMPLER"),
    "RandomNoise": ("noise_seed:INT", "", "NOISE"),
    "DisableNoise": ("", "", "NOISE"),
    "CFGGuider": ("model:MODEL positive:CONDITIONING negative:CONDITIONING cfg:FLOAT", "", "GUIDER"),
    "BasicGuider": ("model:MODEL conditioning:CONDITIONING", "", "GUIDER"),
    "SamplerCustom": ("model:MODEL add_noise:BOOLEAN noise_seed:INT cfg:FLOAT positive:CONDITIONING "
                      "negative:CONDITIONING sampler:SAMPLER sigmas:SIGMAS latent_image:LATENT", "",
                      "LATENT:output LATENT:denoised_output"),
    "SamplerCustomAdvanced": ("noise:NOISE guider:GUIDER sampler:SAMPLER sigmas:SIGMAS latent_image:LATENT", "",
                              "LATENT:output LATENT:denoised_output"),
    # images
    "LoadImage": ("image:COMBO", "", "IMAGE MASK"),
    "SaveImage": ("images:IMAGE filename_prefix:STRING", "", ""),
    "PreviewImage": ("images:IMAGE", "", ""),
    "ImageScale": ("image:IMAGE upscale_method:COMBO width:INT height:INT crop:COMBO", "", "IMAGE"),
    "ImageScaleBy": ("image:IMAGE upscale_method:COMBO scale_by:FLOAT", "", "IMAGE"),
    "ImageScaleToTotalPixels": ("image:IMAGE upscale_method:COMBO megapixels:FLOAT resolution_steps:INT", "",
                                "IMAGE"),
    "ImageUpscaleWithModel": ("upscale_model:UPSCALE_MODEL image:IMAGE", "", "IMAGE"),
    # image and mask nodes (nodes.py; comfy_extras/nodes_images.py, nodes_mask.py, nodes_post_processing.py,
    # nodes_compositing.py, nodes_canny.py, nodes_image_compare.py). ComfyUI's V3 dynamic inputs keep their
    # types: COMFY_DYNAMICCOMBO_V3 (the chosen option's inputs are `<name>.<input>`), COMFY_AUTOGROW_V3
    # (`images.image0`, ...). ResizeImageMaskNode's MatchType input is "IMAGE,MASK" here and its output "*"
    # (either kind), where ComfyUI writes COMFY_MATCHTYPE_V3 for both.
    "ImageInvert": ("image:IMAGE", "", "IMAGE"),
    "EmptyImage": ("width:INT height:INT batch_size:INT color:INT", "", "IMAGE"),
    "ImageBlur": ("image:IMAGE blur_radius:INT sigma:FLOAT", "", "IMAGE"),
    "ImageBlend": ("image1:IMAGE image2:IMAGE blend_factor:FLOAT blend_mode:COMBO", "", "IMAGE"),
    "ImageCompositeMasked": ("destination:IMAGE source:IMAGE x:INT y:INT resize_source:BOOLEAN", "mask:MASK",
                             "IMAGE"),
    "ImagePadForOutpaint": ("image:IMAGE left:INT top:INT right:INT bottom:INT feathering:INT", "", "IMAGE MASK"),
    "ImageFromBatch": ("image:IMAGE batch_index:INT length:INT", "", "IMAGE"),
    "RepeatImageBatch": ("image:IMAGE amount:INT", "", "IMAGE"),
    "BatchImagesNode": ("images:COMFY_AUTOGROW_V3", "", "IMAGE"),
    "ImageStitch": ("image1:IMAGE direction:COMBO match_image_size:BOOLEAN spacing_width:INT spacing_color:COMBO",
                    "image2:IMAGE", "IMAGE"),
    "ResizeAndPadImage": ("image:IMAGE target_width:INT target_height:INT padding_color:COMBO interpolation:COMBO", "",
                          "IMAGE"),
    "ImageScaleToMaxDimension": ("image:IMAGE upscale_method:COMBO largest_size:INT", "", "IMAGE"),
    "ResizeImageMaskNode": ("input:IMAGE,MASK resize_type:COMFY_DYNAMICCOMBO_V3 scale_method:COMBO", "", "*:resized"),
    "JoinImageWithAlpha": ("image:IMAGE alpha:MASK", "", "IMAGE"),
    "Canny": ("image:IMAGE low_threshold:FLOAT high_threshold:FLOAT", "", "IMAGE"),
    "ImageCompare": ("compare_view:IMAGECOMPARE", "image_a:IMAGE image_b:IMAGE", ""),
    "SaveImageAdvanced": ("images:IMAGE filename_prefix:STRING format:COMFY_DYNAMICCOMBO_V3", "", "IMAGE:images"),
    "ImageToMask": ("image:IMAGE channel:COMBO", "", "MASK"),
    "MaskToImage": ("mask:MASK", "", "IMAGE"),
    "InvertMask": ("mask:MASK", "", "MASK"),
    "SolidMask": ("value:FLOAT width:INT height:INT", "", "MASK"),
    "ThresholdMask": ("mask:MASK value:FLOAT", "", "MASK"),
    "GrowMask": ("mask:MASK expand:INT tapered_corners:BOOLEAN", "", "MASK"),
    "FeatherMask": ("mask:MASK left:INT top:INT right:INT bottom:INT", "", "MASK"),
    "MaskComposite": ("destination:MASK source:MASK x:INT y:INT operation:COMBO", "", "MASK"),
    "MaskPreview": ("mask:MASK", "", ""),
    "GLIGENLoader": ("gligen_name:COMBO", "", "GLIGEN"),
    "InstructPixToPixConditioning": ("positive:CONDITIONING negative:CONDITIONING vae:VAE pixels:IMAGE", "",
                                     "CONDITIONING:positive CONDITIONING:negative LATENT:latent"),
    "GLIGENTextBoxApply": ("conditioning_to:CONDITIONING clip:CLIP gligen_textbox_model:GLIGEN text:STRING width:INT "
                           "height:INT x:INT y:INT", "", "CONDITIONING"),
    # primitives
    "PrimitiveInt": ("value:INT", "", "INT"),
    "PrimitiveFloat": ("value:FLOAT", "", "FLOAT"),
    "PrimitiveString": ("value:STRING", "", "STRING"),
    "PrimitiveStringMultiline": ("value:STRING", "", "STRING"),
    "PrimitiveBoolean": ("value:BOOLEAN", "", "BOOLEAN"),
}
# ComfyUI's fixed choices where a client or a saved workflow relies on them.
COMFY_CHOICES = {
    ("LatentUpscale", "upscale_method"): ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"],
    ("LatentUpscaleBy", "upscale_method"): ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"],
    ("LatentUpscale", "crop"): ["disabled", "center"],
    ("ImageScale", "upscale_method"): ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],
    ("ImageScaleBy", "upscale_method"): ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],
    ("ImageScaleToTotalPixels", "upscale_method"): ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],
    ("ImageScale", "crop"): ["disabled", "center"],
    ("KSamplerAdvanced", "add_noise"): ["enable", "disable"],
    ("KSamplerAdvanced", "return_with_leftover_noise"): ["disable", "enable"],
    ("ConditioningSetMask", "set_cond_area"): ["default", "mask bounds"],
    ("UNETLoader", "weight_dtype"): ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],
    ("CLIPLoader", "device"): ["default", "cpu"],
    ("ImageBlend", "blend_mode"): ["normal", "multiply", "screen", "overlay", "soft_light", "difference"],
    ("ImageStitch", "direction"): ["right", "down", "left", "up"],
    ("ImageStitch", "spacing_color"): ["white", "black", "red", "green", "blue"],
    ("ResizeAndPadImage", "interpolation"): ["area", "bicubic", "nearest-exact", "bilinear", "lanczos"],
    ("ResizeImageMaskNode", "scale_method"): ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],
    ("ImageToMask", "channel"): ["red", "green", "blue", "alpha"],
    ("MaskComposite", "operation"): ["multiply", "add", "subtract", "and", "or", "xor"],
    ("DualCLIPLoader", "device"): ["default", "cpu"],
}
# The core nodes of today's templates (comfy_extras/nodes_logic.py, nodes_preview_any.py, nodes_images.py,
# nodes_resolution.py, nodes_math.py, nodes_number_convert.py, nodes_string.py). ComfyUI's Autogrow groups
# (`values`) are Loom's 26 inputs values.a .. values.z; its MatchType (the switch) is Loom's `*`.
LETTERS = "abcdefghijklmnopqrstuvwxyz"
COMFY.update({
    "ComfySwitchNode": ("switch:BOOLEAN", "on_false:* on_true:*", "*:output"),
    "CustomCombo": ("choice:COMBO", "", "STRING INT:INDEX"),
    "PreviewAny": ("source:*", "", "STRING"),
    "GetImageSize": ("image:IMAGE", "", "INT:width INT:height INT:batch_size"),
    "ResolutionSelector": ("aspect_ratio:COMBO megapixels:FLOAT multiple:INT minimum:INT", "", "INT:width INT:height"),
    "ComfyMathExpression": ("expression:STRING values.a:FLOAT,INT,BOOLEAN",
                            " ".join(f"values.{c}:FLOAT,INT,BOOLEAN" for c in LETTERS[1:]), "FLOAT INT BOOLEAN:BOOL"),
    "ComfyNumberConvert": ("value:INT,FLOAT,STRING,BOOLEAN", "", "FLOAT INT"),
    "StringFormat": ("f_string:STRING", " ".join(f"values.{c}:*" for c in LETTERS), "STRING"),
    "StringConcatenate": ("string_a:STRING string_b:STRING delimiter:STRING", "", "STRING"),
    "StringSubstring": ("string:STRING start:INT end:INT", "", "STRING"),
    "StringLength": ("string:STRING", "", "INT:length"),
    "CaseConverter": ("string:STRING mode:COMBO", "", "STRING"),
    "StringTrim": ("string:STRING mode:COMBO", "", "STRING"),
    "StringReplace": ("string:STRING find:STRING replace:STRING", "", "STRING"),
    "StringContains": ("string:STRING substring:STRING case_sensitive:BOOLEAN", "", "BOOLEAN:contains"),
    "StringCompare": ("string_a:STRING string_b:STRING mode:COMBO case_sensitive:BOOLEAN", "", "BOOLEAN"),
    "RegexMatch": ("string:STRING regex_pattern:STRING case_insensitive:BOOLEAN multiline:BOOLEAN dotall:BOOLEAN", "",
                   "BOOLEAN:matches"),
    "RegexExtract": ("string:STRING regex_pattern:STRING mode:COMBO case_insensitive:BOOLEAN multiline:BOOLEAN "
                     "dotall:BOOLEAN group_index:INT", "", "STRING"),
    "RegexReplace": ("string:STRING regex_pattern:STRING replace:STRING",
                     "case_insensitive:BOOLEAN multiline:BOOLEAN dotall:BOOLEAN count:INT", "STRING"),
    "JsonExtractString": ("json_string:STRING key:STRING", "", "STRING"),
    "ConvertDictionaryToString": ("dictionary:DICT indent:INT", "", "STRING"),
    "ConvertArrayToString": ("array:ARRAY indent:INT", "", "STRING"),
})
COMFY_CHOICES.update({
    ("ResolutionSelector", "aspect_ratio"): ["1:1 (Square)", "3:2 (Photo)", "4:3 (Standard)", "16:9 (Widescreen)",
                                             "21:9 (Ultrawide)", "2:3 (Portrait Photo)", "3:4 (Portrait Standard)",
                                             "9:16 (Portrait Widescreen)"],
    ("CaseConverter", "mode"): ["UPPERCASE", "lowercase", "Capitalize", "Title Case"],
    ("StringTrim", "mode"): ["Both", "Left", "Right"],
    ("StringCompare", "mode"): ["Starts With", "Ends With", "Equal"],
    ("RegexExtract", "mode"): ["First Match", "All Matches", "First Group", "All Groups"],
})
# ComfyUI's output nodes among them, and its lazy inputs.
COMFY_OUTPUT_NODES = {"PreviewAny", "CreateBoundingBoxes"}
COMFY_LAZY = {("ComfySwitchNode", "on_false"), ("ComfySwitchNode", "on_true")}
# comfy_extras/nodes_custom_sampler.py's sigma lists (nodes.comfy.sigmas)
COMFY.update({
    "ManualSigmas": ("sigmas:STRING", "", "SIGMAS"),
    "SetFirstSigma": ("sigmas:SIGMAS sigma:FLOAT", "", "SIGMAS"),
    "SplitSigmas": ("sigmas:SIGMAS step:INT", "", "SIGMAS:high_sigmas SIGMAS:low_sigmas"),
    "SplitSigmasDenoise": ("sigmas:SIGMAS denoise:FLOAT", "", "SIGMAS:high_sigmas SIGMAS:low_sigmas"),
    "FlipSigmas": ("sigmas:SIGMAS", "", "SIGMAS"),
})
# comfy_extras/nodes_sd3.py and nodes_model_advanced.py: the flow-matching nodes (nodes.comfy.flow)
COMFY.update({
    "EmptySD3LatentImage": ("width:INT height:INT batch_size:INT", "", "LATENT"),
    "ModelSamplingSD3": ("model:MODEL shift:FLOAT", "", "MODEL"),
    "ModelSamplingAuraFlow": ("model:MODEL shift:FLOAT", "sampling:COMBO", "MODEL"),
})
# comfy_extras/nodes_flux.py and nodes_edit_model.py: conditioning of flux transformers and edit models (nodes.comfy.edit)
COMFY.update({
    "FluxGuidance": ("conditioning:CONDITIONING guidance:FLOAT", "", "CONDITIONING"),
    "FluxDisableGuidance": ("conditioning:CONDITIONING", "", "CONDITIONING"),
    "ReferenceLatent": ("conditioning:CONDITIONING", "latent:LATENT", "CONDITIONING"),
    "FluxKontextMultiReferenceLatentMethod": ("conditioning:CONDITIONING reference_latents_method:COMBO", "",
                                              "CONDITIONING"),
    "FluxKontextImageScale": ("image:IMAGE", "", "IMAGE"),
})
COMFY_CHOICES[("FluxKontextMultiReferenceLatentMethod", "reference_latents_method")] = ["offset", "index", "uxo/uno",
                                                                                    "index_timestep_zero"]
# Flux.2 (issue 22, nodes.comfy.flux2): comfy_extras/nodes_flux.py's empty latent and schedule
COMFY.update({
    "EmptyFlux2LatentImage": ("width:INT height:INT batch_size:INT", "", "LATENT"),
    "Flux2Scheduler": ("steps:INT width:INT height:INT", "", "SIGMAS"),
})
# Flux.1 (nodes.families.flux): comfy_extras/nodes_model_advanced.py's ModelSamplingFlux (nodes.comfy.flow),
# nodes_flux.py's CLIPTextEncodeFlux (nodes.comfy.flux)
COMFY.update({
    "ModelSamplingFlux": ("model:MODEL max_shift:FLOAT base_shift:FLOAT width:INT height:INT", "", "MODEL"),
    "CLIPTextEncodeFlux": ("clip:CLIP clip_l:STRING t5xxl:STRING guidance:FLOAT", "", "CONDITIONING"),
})
# SD 3.5 (comfy_extras/nodes_sd3.py, nodes_slg.py): nodes.comfy.loaders, nodes.comfy.sd3
COMFY.update({
    "TripleCLIPLoader": ("clip_name1:COMBO clip_name2:COMBO clip_name3:COMBO", "device:COMBO", "CLIP"),
    "CLIPTextEncodeSD3": ("clip:CLIP clip_l:STRING clip_g:STRING t5xxl:STRING empty_padding:COMBO", "",
                          "CONDITIONING"),
    "SkipLayerGuidanceDiTSimple": ("model:MODEL double_layers:STRING single_layers:STRING start_percent:FLOAT "
                                   "end_percent:FLOAT", "", "MODEL"),
    "SkipLayerGuidanceDiT": ("model:MODEL double_layers:STRING single_layers:STRING scale:FLOAT start_percent:FLOAT "
                             "end_percent:FLOAT rescaling_scale:FLOAT", "", "MODEL"),
    "SkipLayerGuidanceSD3": ("model:MODEL layers:STRING scale:FLOAT start_percent:FLOAT end_percent:FLOAT", "",
                             "MODEL"),
})
COMFY_CHOICES[("CLIPTextEncodeSD3", "empty_padding")] = ["none", "empty_prompt"]
COMFY_CHOICES[("TripleCLIPLoader", "device")] = ["default", "cpu"]
# Flux.1 editing (kontext helper): comfy_extras/nodes_differential_diffusion.py (nodes.comfy.differential)
COMFY.update({
    "DifferentialDiffusion": ("model:MODEL", "strength:FLOAT", "MODEL"),
})
# Chroma and HiDream (issue 22): comfy_extras/nodes_cond.py's T5TokenizerOptions (nodes.comfy.text_options),
# comfy_extras/nodes_hidream.py's QuadrupleCLIPLoader (nodes.comfy.loaders), nodes_custom_sampler.py's
# DualCFGGuider (nodes.comfy.sampling)
COMFY.update({
    "T5TokenizerOptions": ("clip:CLIP min_padding:INT min_length:INT", "", "CLIP"),
    "QuadrupleCLIPLoader": ("clip_name1:COMBO clip_name2:COMBO clip_name3:COMBO clip_name4:COMBO", "", "CLIP"),
    "DualCFGGuider": ("model:MODEL cond1:CONDITIONING cond2:CONDITIONING negative:CONDITIONING cfg_conds:FLOAT "
                      "cfg_cond2_negative:FLOAT style:COMBO", "", "GUIDER"),
})
COMFY_CHOICES[("DualCFGGuider", "style")] = ["regular", "nested"]
# Qwen-Image: comfy_extras/nodes_qwen.py (nodes.comfy.qwen_image) and nodes_cfg.py's CFGNorm (nodes.comfy.cfg_norm)
COMFY.update({
    "TextEncodeQwenImageEdit": ("clip:CLIP prompt:STRING", "vae:VAE image:IMAGE", "CONDITIONING"),
    "TextEncodeQwenImageEditPlus": ("clip:CLIP prompt:STRING", "vae:VAE image1:IMAGE image2:IMAGE image3:IMAGE",
                                    "CONDITIONING"),
    "CFGNorm": ("model:MODEL strength:FLOAT", "pre_cfg:BOOLEAN", "MODEL:patched_model"),
})
# comfy_extras' bounding-box canvas and DrawBBoxes (beside the RT-DETR/RF-DETR detectors): nodes.comfy.boxes
COMFY.update({
    "CreateBoundingBoxes": ("width:INT height:INT editor_state:BOUNDING_BOXES",
                            "background:IMAGE bboxes:BOUNDING_BOX,ARRAY,STRING last_incoming:BOUNDING_BOXES",
                            "IMAGE:preview BOUNDING_BOX:bboxes ARRAY:elements"),
    "DrawBBoxes": ("bboxes:BOUNDING_BOX", "image:IMAGE", "IMAGE:out_image"),
})
# Loom's own stage nodes (their own names and signatures; not ComfyUI's). AddNoise is Loom's
# forward-process node of the tutorial, whose name ComfyUI's custom-sampling AddNoise (model, noise,
# sigmas, latent_image) also has: a known clash, listed apart so it stays visible.
LOOM_OWN = {
    "AddNoiseToImage", "ApplyControlNet", "ApplyLora", "EncodeText", "EncodeTextSDXL", "ExampleImage", "ImageGrid",
    "InpaintConditioning", "LoadCheckpoint", "LoadControlNet", "LoadTextEncoder", "LoadUNet", "LoadUpscaleModel",
    "LoadVAE", "MakeNoiseLatents", "PreviewLatent", "PreviewLatentChannels", "ResizeImage", "ResizeLatent", "Sample",
    "SetAestheticScore", "SetScheduler", "SetSizeConditioning", "ShowTensorInfo", "ShowTokens", "Tokenize",
    "UNetStep", "UpscaleWithModel"}
NAME_CLASHES = {"AddNoise"}


def declared(spec: str) -> list[tuple[str, str]]:
    return [tuple(item.split(":")) for item in spec.split()]


def outputs_of(spec: str) -> list[tuple[str, str]]:
    """(type, name) of each output; "TYPE:name", or the type alone when the name is the type."""
    return [(kind, name or kind) for kind, _, name in (item.partition(":") for item in spec.split())]


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
    required, optional, outputs = COMFY[name]
    for part, spec in (("required", required), ("optional", optional)):
        order = info["input_order"][part]
        assert [(n, kind(info["input"][part][n])) for n in order] == declared(spec), part
    assert list(zip(info["output"], info["output_name"])) == outputs_of(outputs)
    for (node, input_name), choices in COMFY_CHOICES.items():
        if node == name:
            spec = {**info["input"]["required"], **info["input"]["optional"]}[input_name]
            assert spec[0] == choices, input_name
    if name in {n for n, _ in COMFY_LAZY} | COMFY_OUTPUT_NODES:
        assert info["output_node"] == (name in COMFY_OUTPUT_NODES)
        specs = {**info["input"]["required"], **info["input"]["optional"]}
        assert {(name, i) for i, spec in specs.items() if spec[1].get("lazy")} == {x for x in COMFY_LAZY if x[0] == name}


def test_every_node_is_comfyuis_or_loom_own(object_info):
    """A node of Loom's own modules either has a ComfyUI name (and is in COMFY) or is a stage node;
    a node added without being sorted here fails."""
    ours = {name for name, info in object_info.items()
            if info["python_module"].startswith("nodes.")
            and not info["python_module"].startswith(("nodes.textcond.", "nodes.classcond."))}
    assert ours == set(COMFY) | LOOM_OWN | NAME_CLASHES


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


def test_inpaint_nodes_take_their_earlier_input_names(loom):
    """VAEEncodeForInpaint's `image` and SetLatentNoiseMask's `latents` (their names before they took
    ComfyUI's) load as `pixels` and `samples`."""
    Image.fromarray(np.zeros((64, 64, 4), np.uint8), "RGBA").save(loom.env.input_dir / "masked.png")
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "masked.png"}},
              "3": {"class_type": "VAEEncodeForInpaint",
                    "inputs": {"vae": ["1", 2], "image": ["2", 0], "mask": ["2", 1], "grow_mask_by": 6}},
              "4": {"class_type": "SetLatentNoiseMask", "inputs": {"latents": ["3", 0], "mask": ["2", 1]}},
              "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
              "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}}
    validation = loom.validate(prompt)
    assert validation.ok, validation.response()
    assert validation.prompt["3"]["inputs"] == {"pixels": ["2", 0], "vae": ["1", 2], "mask": ["2", 1],
                                                "grow_mask_by": 6}
    assert validation.prompt["4"]["inputs"] == {"samples": ["3", 0], "mask": ["2", 1]}
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

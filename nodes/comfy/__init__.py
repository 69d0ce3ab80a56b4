"""ComfyUI's nodes under their own names, inputs and outputs (tests/test_comfy_signatures.py holds
ComfyUI's declarations), composed from Loom's stage nodes: core (checkpoints, prompts, KSampler),
loaders, sampling (custom sampling) and ksampling (ComfyUI's sampler maths), flow, sigmas, scaling,
images, masks, boxes, logic, strings, utils, primitives, gligen, instructpix2pix."""

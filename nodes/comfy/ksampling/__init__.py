"""ComfyUI's sampling, for ComfyUI's nodes (KSampler, KSamplerAdvanced, SamplerCustom*): the same
noise streams, sigma schedules and sampler maths as ComfyUI, so a workflow and seed give ComfyUI's
picture. Loom's own stage nodes (Sample, UNetStep) keep diffusers' schedulers and semantics.

- noise.py: starting noise (one generator for the batch), default and Brownian-tree noise samplers
- schedules.py: ComfyUI's schedulers (normal, karras, ..., kl_optimal) and KSampler's sigma rules
- samplers.py: the samplers as plain k-diffusion-style functions
- denoiser.py: the model's sigma table and Loom's guided UNet as a denoiser D(x, sigma)
- ksampler.py: one run of a sampler node
"""

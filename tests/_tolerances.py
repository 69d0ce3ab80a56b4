"""Stated tolerances for comparisons of two paths that do not run the same operations on the same
memory. Everywhere else a parity test asserts exactly 0 (same operations in the same order). Images
are float32 in [0, 1]; one 8-bit level is 3.9e-3, so both bounds are far below anything visible and
far above what a real mistake (a wrong weight, schedule or step) changes, which is 1e-3 or more."""

# A single-file checkpoint's tensors are views into the file's one buffer, at other byte offsets than
# the same weights read from a diffusers folder (bit-identical values, same strides). torch's
# vectorised CPU kernels (AVX-512 here) split their loops by the data's alignment, so sums round
# differently: SDXL single file vs folder measured 2.7e-6 on an AMD EPYC, and exactly 0 once both
# models' weights are copied to freshly allocated (aligned) memory. Bound: 20x the measured value.
SINGLE_FILE_ATOL = 5e-5

# SIGMAS handed to a sampler are float32 (ComfyUI's type); a scheduler that makes its own Karras
# sigmas keeps them in float64 until it has derived the UNet's timesteps, so the timesteps derived
# back from the handed-in float32 sigmas differ by one float32 ulp (7.6e-6 at t ~ 60): measured
# 3.6e-7 (euler) and 5.1e-7 (heun) in the decoded image on an AMD EPYC. Bound: 20x the measured value.
HANDED_SIGMAS_ATOL = 1e-5


def single_file_atol(model_name: str) -> float:
    """0 for a model read from a folder by the same code on both sides, the stated bound for a single file."""
    return SINGLE_FILE_ATOL if model_name.endswith((".safetensors", ".ckpt")) else 0.0

"""Loom's built-in nodes, one module per stage of Stable Diffusion."""

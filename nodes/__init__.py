"""Loom's built-in nodes, one module per stage of Stable Diffusion."""


def prepare_models(models_dir) -> None:
    """Write the built-in demo model into a models folder that holds no model (called by the server
    and by `graph.Loom(DATA_DIR)`), so a fresh data folder can run the example workflows."""
    import logging

    from .tiny_model import ensure_tiny_model

    if ensure_tiny_model(models_dir):
        logging.getLogger("loom").info("the models folder held no model: wrote the tiny demo model")

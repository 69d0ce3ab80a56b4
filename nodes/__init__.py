"""Loom's built-in nodes. Here: the stage nodes, one module per stage of diffusion (text, conditioning,
latent, denoiser, sampling, schedulers, image, inpaint, controlnet, scaling, lora). Beside them:
families/ (what each model family is), loading/ (model files and loaders), comfy/ (ComfyUI-named
nodes), inspect/ (inspection nodes), classcond/ and textcond/ (the tutorial's trained models)."""


def prepare_models(models_dir) -> None:
    """The built-in models in a models folder that holds no model (called by the server and by
    `graph.Loom(DATA_DIR)`): the trained text-to-image model `shapes64` (first in the model lists,
    the default) and the random `tiny-sd` (small and fast: the example workflows and tests use it)."""
    import logging
    from pathlib import Path

    from .textcond.model import install_shipped
    from .loading.tiny import TINY_NAME, has_models, write_tiny_model

    if has_models(models_dir):
        return
    install_shipped(models_dir)
    write_tiny_model(Path(models_dir) / TINY_NAME)
    logging.getLogger("loom").info("the models folder held no model: wrote the demo models")

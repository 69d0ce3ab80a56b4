"""Shared fixtures. Heavy imports stay inside fixtures so tests that do not use them stay fast."""
import pytest


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A tiny SD 1.x diffusers folder (nodes.tiny_model, random weights), written once per session.
    Its parent is a models folder that holds only it."""
    from nodes.tiny_model import TINY_NAME, write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / TINY_NAME)

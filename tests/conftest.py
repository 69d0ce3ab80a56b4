"""Shared fixtures. Heavy imports stay inside fixtures so tests that do not use them stay fast."""
import os

import pytest

from graph.threads import configure_threads

configure_threads()  # passive OpenMP waits before torch loads: the test machine's cores are shared


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the tests marked slow (or LOOM_SLOW=1)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes; runs with --runslow or LOOM_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("LOOM_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or LOOM_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A tiny SD 1.x diffusers folder (nodes.loading.tiny, random weights), written once per session.
    Its parent is a models folder that holds only it."""
    from nodes.loading.tiny import TINY_NAME, write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / TINY_NAME)

"""What diffusers and transformers print on their own, cut to what a Loom user needs.

Loom shows its own progress (tqdm on the command line, events on the WebSocket), so transformers'
per-model "Loading weights" / "Writing model shards" bars are turned off. transformers 5 also warns,
whenever diffusers' SD pipeline module is imported, that its CLIP image processor falls back to the
PIL backend without torchvision: that is the backend SD's safety-checker preprocessing has always
used, and Loom never calls it, so that one message is dropped. Every other warning still shows.
"""
from __future__ import annotations

import logging

DROPPED = ("requires torchvision (not installed); falling back to",)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in DROPPED)


def quiet_libraries() -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    logger = logging.getLogger("transformers.utils.import_utils")  # where the fallback notice is logged
    if not any(isinstance(f, _DropNoise) for f in logger.filters):
        logger.addFilter(_DropNoise())

"""A tqdm progress bar fed by executor events, for headless runs on the command line."""
from __future__ import annotations

from tqdm import tqdm


class TqdmProgress:
    """Call with (event, data): one bar per node that reports steps, and a line per finished output."""

    def __init__(self, prompt: dict, file=None):
        self.prompt, self.file = prompt, file
        self.bar: tqdm | None = None
        self.node: str | None = None

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __call__(self, event: str, data: dict) -> None:
        if event == "progress":
            if self.bar is None or self.node != data["node"]:
                self._close()
                self.node = data["node"]
                title = self.prompt.get(self.node, {}).get("class_type", self.node)
                self.bar = tqdm(total=data["max"], desc=f"#{self.node} {title}", unit="step", file=self.file)
            self.bar.n = data["value"]
            self.bar.refresh()
        elif event in ("executing", "execution_success", "execution_error", "execution_interrupted"):
            if event != "executing" or data.get("node") != self.node:
                self._close()

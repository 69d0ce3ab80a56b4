#!/usr/bin/env bash
# Sets up a fresh machine: a virtualenv in .venv with Loom installed, the editor's npm packages,
# and with --test the test tools (Playwright for Python driving Debian's chromium).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
# OpenAI CLIP's BPE merges (for single-file SD 1.x checkpoints, which carry no tokenizer) ship in this
# wheel; only the data file is read (nodes/clip_bpe.py), so its torchvision dependency is not needed.
.venv/bin/python -m pip install -q --no-deps open_clip_torch==3.3.0
if [ -f web/package-lock.json ] && [ ! -d web/node_modules ]; then
  (cd web && npm ci --silent --no-audit --no-fund)
fi
if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  SUDO=$(command -v sudo >/dev/null && [ "$(id -u)" != 0 ] && echo sudo || true)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi

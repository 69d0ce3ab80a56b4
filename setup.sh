#!/usr/bin/env bash
# Sets up a fresh machine: a virtualenv in .venv with Loom installed, the editor's npm packages,
# and with --test the test tools (Playwright for Python driving Debian's chromium).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The editor's library first: Loom's build packages it (setup.py would otherwise run npm ci itself).
if [ -f web/package-lock.json ] && [ ! -d web/node_modules ]; then
  (cd web && npm ci --silent --no-audit --no-fund)
fi
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
# OpenAI CLIP's BPE merges (for single-file SD 1.x checkpoints, which carry no tokenizer) ship in this
# wheel; only the data file is read (nodes/loading/clip_bpe.py), so its torchvision dependency is not needed.
.venv/bin/python -m pip install -q --no-deps open_clip_torch==3.3.0
# Upscale models load through spandrel. Its wheel declares torchvision, whose PyPI builds do not load
# beside the CPU torch here; Loom imports spandrel without it (nodes/scaling.py), so no deps are pulled.
.venv/bin/python -m pip install -q --no-deps spandrel==0.4.2
if [ "${1:-}" = "--test" ]; then
  # ComfyUI's workflow templates 0.1.48 (the last release with the classic SD templates) for
  # tests/test_templates.py, in a folder of their own: the venv may hold the current release.
  .venv/bin/python -m pip install -q --no-deps --upgrade --target .test-deps/comfyui-workflow-templates-0.1.48 \
    comfyui-workflow-templates==0.1.48
  # k-diffusion's samplers: the reference of tests/test_ksampling.py. Its wheel declares torchvision and
  # more, which do not load beside the CPU torch here; the tests load only its sampling module.
  .venv/bin/python -m pip install -q --no-deps --upgrade --target .test-deps/k-diffusion-0.1.1.post1 \
    k-diffusion==0.1.1.post1
fi
if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  SUDO=$(command -v sudo >/dev/null && [ "$(id -u)" != 0 ] && echo sudo || true)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi

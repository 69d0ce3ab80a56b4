#!/usr/bin/env bash
# Everything issue 17 measures on a CUDA machine, in one call of the device tool.
#
#   here, once:   bash bench/gpu_run.sh --fetch-wheels    # packages the GPU image lacks, into .whl/ (ignored)
#   device tool:  run(command="bash bench/gpu_run.sh", carry=[".whl"], timeout_s=600)
#
# On the GPU machine it installs the wheels (no network there), runs bench/gpu.py, then the tests
# that concern the GPU, then the whole suite with the GPU visible (`pytest -x -q`), each under a time
# limit so that all fit in one call. Logs go to $OUT (the device tool brings them back): env.log,
# bench.log, tests-gpu.log, tests.log. Extra arguments go to bench/gpu.py (e.g. --sections loom,parity).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=(diffusers==0.42.1 transformers==5.23.0 importlib_metadata==10.2.0 jsonschema==4.26.0
        jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 regex==2026.11.19
        open_clip_torch==3.3.0)
if [ "${1:-}" = "--fetch-wheels" ]; then
  PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
  exec "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
fi
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "no wheels: run 'bash bench/gpu_run.sh --fetch-wheels' here and carry .whl" | tee "$OUT/env.log"; exit 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import sys, torch, diffusers, transformers; print(sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/env.log"
[ "${SKIP_BENCH:-0}" = 1 ] || timeout "${BENCH_SECONDS:-300}" python3 bench/gpu.py "$@" 2>&1 | tee "$OUT/bench.log"
timeout "${GPU_TEST_SECONDS:-75}" python3 -m pytest -q -rs tests/test_cuda.py tests/test_device_memory.py \
  tests/test_speed.py 2>&1 | tee "$OUT/tests-gpu.log"
# The whole suite, spread over 8 processes (pytest-xdist is on the image). Ray and Chromium are not
# there; those tests are about neither the GPU nor its speed. What the time limit leaves unrun can
# follow in a second call: SKIP_BENCH=1 TEST_SECONDS=500 bash bench/gpu_run.sh
SKIP=(--ignore=tests/test_ray.py --ignore=tests/test_ray_cluster.py --ignore=tests/test_editor.py)
timeout "${TEST_SECONDS:-180}" python3 -m pytest -x -q -n "${WORKERS:-8}" "${SKIP[@]}" 2>&1 | tee "$OUT/tests.log"

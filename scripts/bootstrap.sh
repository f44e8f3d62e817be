#!/usr/bin/env bash
# Fresh-machine setup: a virtual environment in .venv with the CPU torch, the build tools, and mdanet-sdk
# built (native ops included) against that very torch. Idempotent: re-running it only rebuilds the package.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned or isolated build would pull a multi-GB CUDA build.
python -m pip install -q "torch==${MDANET_TORCH_VERSION:-2.13.0}"
python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja
# --no-build-isolation: the native extension must be built against the torch installed above.
python -m pip install -q --no-build-isolation -e ".[dev]"

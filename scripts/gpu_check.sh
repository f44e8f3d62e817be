#!/usr/bin/env bash
# The one-command GPU check (issue 17), sized for one short slot on one H100/H200 (< 8 min by default): build the
# CUDA kernels against the installed CUDA torch, run the gpu-marked tests, compare the native CUDA ops with the
# reference at every paper-preset call, export and validate Torch-TensorRT fp16 artefacts, benchmark eager fp32 /
# eager bf16+channels_last / torch.compile / TensorRT fp16 at batch 1, 16, 64 on 256² slices, and segment a
# phantom set end to end. One JSON ($OUT/gpu-check.json when $OUT is set, else build/gpu-check/gpu-check.json),
# rewritten as results arrive; a summary table at the end. Each step has its own time limit and a failing step
# does not stop the others. Options: --help (e.g. --dry-run on a CPU, --skip build, --limit bench=200).
#
#   scripts/gpu_check.sh [options]        env: PYTHON (default: .venv/bin/python when present, else python)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
exec "$PYTHON" -m mdanet_sdk.bench.gpu_check "$@"

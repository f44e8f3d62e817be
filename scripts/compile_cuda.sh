#!/usr/bin/env bash
# Compile-check the CUDA code on any machine with nvcc, GPU or not, CUDA torch or not:
#   1. every csrc/cuda/*.cu to object code for each architecture (default sm_80 and sm_90), warnings as errors;
#   2. the torch glue csrc/cuda/register.cpp, syntax only, against the installed torch's c10/cuda headers
#      (skipped when python cannot import torch). CPU torch wheels ship those headers but not the one that
#      CMake generates for CUDA builds, cuda_cmake_macros.h; a stand-in for it is written to OUT_DIR.
# The real CUDA build (linking, running) happens in CMake when torch has CUDA.
#
#   scripts/compile_cuda.sh [OUT_DIR]        (default build/cuda-check)
#   env: NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc), MDANET_CUDA_ARCHS (default "80;90"),
#        PYTHON (default: python)
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$NVCC" ]; then
  echo "compile_cuda.sh: nvcc not found (set NVCC)" >&2
  exit 127
fi
OUT=${1:-build/cuda-check}
ARCHS=${MDANET_CUDA_ARCHS:-80;90}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"

gencode=()
for arch in ${ARCHS//;/ }; do
  gencode+=(-gencode "arch=compute_${arch},code=sm_${arch}")
done

# One nvcc per file, in parallel.
pids=()
for src in csrc/cuda/*.cu; do
  "$NVCC" -std=c++17 -O3 -Icsrc/include "${gencode[@]}" -Xcompiler -Wall,-Wextra --Werror all-warnings \
    -c "$src" -o "$OUT/$(basename "${src%.cu}").o" &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done

if torch_dir=$("$PYTHON" -c "import os, torch; print(os.path.dirname(torch.__file__))" 2>/dev/null); then
  # The toolkit's include directory as nvcc itself sees it (nvcc may be a wrapper script elsewhere).
  cuda_include=$("$NVCC" --dryrun -c csrc/cuda/graph_conv.cu -o "$OUT/dryrun.o" 2>&1 |
    sed -n 's/^#\$ INCLUDES="-I\([^"]*\)".*/\1/p' | head -n 1)
  mkdir -p "$OUT/stub/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$OUT/stub/c10/cuda/impl/cuda_cmake_macros.h"
  "${CXX:-c++}" -std=c++17 -fsyntax-only -Wall -Wextra -Wno-unused-parameter -Werror \
    -isystem "$torch_dir/include" -isystem "$torch_dir/include/torch/csrc/api/include" -isystem "$OUT/stub" \
    -isystem "$cuda_include" -Icsrc/include csrc/cuda/register.cpp || status=1
else
  echo "compile_cuda.sh: torch not importable with $PYTHON, register.cpp not checked" >&2
fi
exit $status

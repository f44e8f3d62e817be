// Kernels that check the emulator itself (tests/test_cuda_emulation.py): a barrier that is needed, the same code
// without it, a barrier in divergent code, warp shuffles and atomics. Built through the same rewrite as csrc/cuda.
#include <cuda_runtime.h>

#include "common.cuh"

namespace {

// Reverses each block's slice of `data` through shared memory; `sync` = 0 drops the barrier (a race).
__global__ void reverse_kernel(float* data, int sync) {
  __shared__ float buffer[1024];
  const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  buffer[threadIdx.x] = data[i];
  if (sync) {
    __syncthreads();
  }
  data[i] = buffer[blockDim.x - 1 - threadIdx.x];
}

// Only the first half of the block reaches the barrier: undefined on a GPU, a reported deadlock here.
__global__ void divergent_barrier_kernel(float* data) {
  if (threadIdx.x < blockDim.x / 2) {
    __syncthreads();
  }
  data[threadIdx.x] = 1.0f;
}

// out[0] += Σ data over all threads: xor-butterfly in each warp (every lane ends with the warp's sum, checked
// against lane 0's through __shfl_sync), one atomicAdd per warp.
__global__ void warp_total_kernel(const double* data, double* out, int* mismatches) {
  const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  double value = data[i];
  for (int mask = 16; mask > 0; mask /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, mask);
  }
  if (__shfl_sync(0xffffffffu, value, 0) != value) {
    atomicAdd(mismatches, 1);
  }
  if (threadIdx.x % 32 == 0) {
    atomicAdd(out, value);
  }
}

// Each thread reads data[offset .. offset + 4) as one 16-byte access (csrc/cuda/common.cuh load_vec): misaligned
// unless offset is a multiple of 4.
__global__ void vector_load_kernel(const float* data, int offset, float* out) {
  const auto x = mdanet::cuda::detail::load_vec<4>(data + offset);
  out[threadIdx.x] = x.v[threadIdx.x % 4];
}

}  // namespace

extern "C" {

int emu_selftest_vector_load(const float* data, int offset, float* out) {
  vector_load_kernel<<<1, 32>>>(data, offset, out);
  return static_cast<int>(cudaGetLastError());
}


int emu_selftest_reverse(float* data, unsigned int blocks, unsigned int threads, int sync) {
  reverse_kernel<<<blocks, threads>>>(data, sync);
  return static_cast<int>(cudaGetLastError());
}

int emu_selftest_divergent_barrier(float* data, unsigned int threads) {
  divergent_barrier_kernel<<<1, threads>>>(data);
  return static_cast<int>(cudaGetLastError());
}

int emu_selftest_warp_total(const double* data, double* out, int* mismatches, unsigned int blocks,
                            unsigned int threads) {
  warp_total_kernel<<<blocks, threads, 0, nullptr>>>(data, out, mismatches);
  return static_cast<int>(cudaGetLastError());
}

}  // extern "C"

// Helpers shared by the plain CUDA kernels: dtype dispatch, conversions to the accumulation type, vector loads,
// warp and block sums.
#pragma once

#include "mdanet/kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

// Checks that a vector access is aligned. A no-op on the GPU (a misaligned vector access is a launch error there);
// the CPU emulation (tests/cuda_emulation) defines it to report the access the way the GPU would.
#ifndef MDANET_ASSERT_ALIGNED
#define MDANET_ASSERT_ALIGNED(pointer, bytes) ((void)0)
#endif

namespace mdanet::cuda::detail {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kWarps = kThreads / kWarp;
constexpr int kVectorBytes = 16;  // one 128-bit load or store per lane

// Accumulation type: float for fp32/fp16/bf16, double for fp64.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

// Elements of T in one 128-bit access: 4 fp32, 2 fp64, 8 fp16/bf16.
template <typename T>
constexpr int kVec = kVectorBytes / static_cast<int>(sizeof(T));

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x) {
  return static_cast<T>(x);
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) {
  return __float2half(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }
__device__ __forceinline__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

// V consecutive elements as one aligned object, so that a copy is one vector load or store (as torch's
// aligned_vector): 16 bytes for the features, 16 or 32 (two accesses) for their acc workspaces.
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// One aligned V-element access at p (V == 1: a plain scalar access).
template <int V, typename T>
__device__ __forceinline__ Vec<T, V> load_vec(const T* p) {
  MDANET_ASSERT_ALIGNED(p, sizeof(Vec<T, V>));
  return *reinterpret_cast<const Vec<T, V>*>(p);
}
template <int V, typename T>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, V>& x) {
  MDANET_ASSERT_ALIGNED(p, sizeof(Vec<T, V>));
  *reinterpret_cast<Vec<T, V>*>(p) = x;
}

// The V values a lane owns in a tile of kWarp·V consecutive elements starting at `tile`, of which the first `valid`
// exist. Vector form: the lane's V neighbours, one aligned access (the caller guarantees alignment and that `valid`
// is a multiple of V). Scalar form (misaligned or odd sizes): elements lane, lane + 32, ..., so that each load
// instruction of the warp still reads 32 consecutive elements. Missing elements read as 0.
template <bool kVector, int V, typename T, typename A>
__device__ __forceinline__ void load_lane(const T* tile, int lane, int valid, A (&out)[V]) {
  if constexpr (kVector) {
    if (lane * V < valid) {
      const Vec<T, V> x = load_vec<V>(tile + lane * V);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        out[j] = to_acc(x.v[j]);
      }
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        out[j] = A(0);
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int i = j * kWarp + lane;
      out[j] = i < valid ? to_acc(tile[i]) : A(0);
    }
  }
}

// Writes a lane's V values (the layout of load_lane) to the existing elements of the tile.
template <bool kVector, int V, typename T, typename A>
__device__ __forceinline__ void store_lane(T* tile, int lane, int valid, const A (&in)[V]) {
  if constexpr (kVector) {
    if (lane * V < valid) {
      Vec<T, V> x;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        x.v[j] = from_acc<T>(in[j]);
      }
      store_vec<V>(tile + lane * V, x);
    }
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int i = j * kWarp + lane;
      if (i < valid) {
        tile[i] = from_acc<T>(in[j]);
      }
    }
  }
}

// Position in the tile of a lane's j-th value (the layout of load_lane).
template <bool kVector, int V>
__device__ __forceinline__ int lane_element(int lane, int j) {
  return kVector ? lane * V + j : j * kWarp + lane;
}

// Sum of `value` over the warp, in every lane; a fixed butterfly, so the same inputs give the same bits.
template <typename A>
__device__ __forceinline__ A warp_sum(A value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Sum of `value` over the block (blockDim.x a multiple of 32, at most 1024); the result is valid in thread 0.
// The order of the additions depends only on the thread index, so it is reproducible.
template <typename A>
__device__ A block_sum(A value) {
  __shared__ A warp_sums[32];
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    warp_sums[warp] = value;
  }
  __syncthreads();
  if (warp == 0) {
    value = lane < static_cast<int>(blockDim.x / 32) ? warp_sums[lane] : A(0);
    for (int offset = 16; offset > 0; offset /= 2) {
      value += __shfl_down_sync(0xffffffffu, value, offset);
    }
  }
  return value;
}

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n elements.
inline unsigned int blocks_for(int64_t n) {
  return static_cast<unsigned int>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20));
}

// Whether `pointer` may be accessed `bytes` at a time (null pointers count as aligned: they are not accessed).
inline bool aligned(const void* pointer, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(pointer) % bytes == 0;
}

// Bytes of one element of `dtype`.
inline int element_size(DType dtype) { return dtype == DType::kFloat64 ? 8 : dtype == DType::kFloat32 ? 4 : 2; }

// Calls fn(T{}) with T the element type of `dtype`; returns fn's cudaError_t as int.
template <typename Fn>
int dispatch(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32:
      return fn(float{});
    case DType::kFloat64:
      return fn(double{});
    case DType::kFloat16:
      return fn(__half{});
    case DType::kBFloat16:
      return fn(__nv_bfloat16{});
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace mdanet::cuda::detail

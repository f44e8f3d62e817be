// Test-only CUDA-on-CPU shim: lets the real csrc/cuda/*.cu kernel bodies compile with g++ and run on the host.
//
// Execution model (cuda_cpu_runtime.cpp): each block runs on one host worker thread as blockDim cooperative
// fibers (ucontext), one per CUDA thread. A fiber runs until it reaches a barrier (__syncthreads, or the warp
// barrier inside a shuffle), so every barrier is a real rendezvous: a thread that reads shared memory before the
// writer's barrier sees the old value, and a barrier that not every thread of the block (or warp) reaches is
// reported as a deadlock instead of hanging. Who passes a barrier first is set by a policy (lanes round-robin up
// or down, or the highest warp running ahead into the next phase), so the tests can vary the interleaving a
// missing barrier would depend on. Blocks run on a few worker threads at once, so atomicAdd is
// genuinely contended. `__shared__` variables are `static thread_local`: one copy per worker thread, i.e. per
// running block, shared by its fibers, left over from the previous block (uninitialised, as on a GPU).
//
// Kernel launches: the test harness rewrites `kernel<<<grid, block, shmem, stream>>>(args)` into
// `::cuda_emu::Launch(grid, block, shmem, stream)(kernel, args)`; nothing else of the source is changed.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>

// ---- qualifiers ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

// ---- runtime types ----
struct CUstream_st;
typedef CUstream_st* cudaStream_t;  // the same spelling as mdanet/kernels.h and the CUDA runtime

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

// The built-in index variables: per host thread, set by the scheduler before it resumes a fiber.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace cuda_emu {

// Runtime entry points (cuda_cpu_runtime.cpp). Out of line on purpose: the compiler must assume that a barrier
// changes every global, so threadIdx and shared memory are re-read after it.
void block_barrier();
void warp_barrier(unsigned int mask);
unsigned int lane_id();
unsigned char* shuffle_slot(unsigned int lane);  // this warp's exchange buffer, 8 bytes per lane
void fail(const char* message);                   // ends the launch with cudaErrorLaunchFailure
void run_grid(dim3 grid, dim3 block, std::size_t shmem, const std::function<void()>& body);
cudaError_t take_last_error();
void set_last_error(cudaError_t error);
// A vector access of `bytes` at `pointer` (MDANET_ASSERT_ALIGNED in csrc/cuda/common.cuh): fails the launch when
// misaligned, as the GPU does ("misaligned address"); counts the 16-byte-or-wider ones (emu_vector_accesses).
void check_aligned(const void* pointer, std::size_t bytes);

// `kernel<<<grid, block, shmem, stream>>>(args...)` after the harness's rewrite. The arguments are converted to the
// kernel's parameter types once, as the CUDA runtime copies them at launch, and every fiber calls the kernel.
struct Launch {
  dim3 grid, block;
  std::size_t shmem;
  Launch(dim3 g, dim3 b, std::size_t s = 0, cudaStream_t = nullptr) : grid(g), block(b), shmem(s) {}

  template <typename... P, typename... A>
  void operator()(void (*kernel)(P...), A&&... args) const {
    static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
    const std::tuple<std::decay_t<P>...> params(static_cast<std::decay_t<P>>(args)...);
    run_grid(grid, block, shmem, [&] { std::apply(kernel, params); });
  }
};

}  // namespace cuda_emu

inline cudaError_t cudaGetLastError() { return cuda_emu::take_last_error(); }
inline const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "emulated CUDA error";
}

// The kernels' alignment hook (csrc/cuda/common.cuh), checked here instead of ignored.
#define MDANET_ASSERT_ALIGNED(pointer, bytes) ::cuda_emu::check_aligned((pointer), (bytes))

// ---- synchronisation, warp shuffles, atomics, loads ----
inline void __syncthreads() { cuda_emu::block_barrier(); }
inline void __syncwarp(unsigned int mask = 0xffffffffu) { cuda_emu::warp_barrier(mask); }

namespace cuda_emu {
// Every lane of the warp deposits `value`, then reads the slot of lane `source(lane)`; the two warp barriers make
// the exchange a rendezvous (the second keeps a fast lane's next shuffle from overwriting a slot still being read).
template <typename T, typename Source>
T shuffle(unsigned int mask, T value, int width, Source source) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle of an unsupported type");
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
    fail("shuffle width must be a power of two in [1, 32]");
  }
  const unsigned int lane = lane_id();
  std::memcpy(shuffle_slot(lane), &value, sizeof(T));
  warp_barrier(mask);
  const unsigned int base = lane & ~static_cast<unsigned int>(width - 1);
  const int src = source(static_cast<int>(lane - base));
  T out = value;  // CUDA: a source outside the lane's width-segment returns the lane's own value
  if (src >= 0 && src < width) {
    if (((mask >> (base + src)) & 1u) == 0) {
      fail("shuffle reads a lane that is not in the mask");
    }
    std::memcpy(&out, shuffle_slot(base + static_cast<unsigned int>(src)), sizeof(T));
  }
  warp_barrier(mask);
  return out;
}
}  // namespace cuda_emu

template <typename T>
T __shfl_sync(unsigned int mask, T value, int src_lane, int width = 32) {
  return cuda_emu::shuffle(mask, value, width, [&](int) { return src_lane % width; });
}
template <typename T>
T __shfl_down_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
  return cuda_emu::shuffle(mask, value, width, [&](int lane) { return lane + static_cast<int>(delta); });
}
template <typename T>
T __shfl_up_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
  return cuda_emu::shuffle(mask, value, width, [&](int lane) { return lane - static_cast<int>(delta); });
}
template <typename T>
T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = 32) {
  return cuda_emu::shuffle(mask, value, width, [&](int lane) { return lane ^ lane_mask; });
}

template <typename T>
T atomicAdd(T* address, T value) {
  static_assert(std::is_arithmetic_v<T>, "atomicAdd of an unsupported type");
  T old;
  __atomic_load(address, &old, __ATOMIC_RELAXED);
  T desired;
  do {
    desired = old + value;
  } while (!__atomic_compare_exchange(address, &old, &desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}

template <typename T>
T __ldg(const T* address) {
  return *address;
}

// ---- math ----
// __expf is an approximate hardware exp on a GPU (2 + 1.16·|x| ulp); here it is the exact one.
inline float __expf(float x) { return std::exp(x); }
using std::exp;

// ---- half and bfloat16: 16-bit storage with the CUDA conversions (round to nearest even) ----
namespace cuda_emu {
std::uint16_t float_to_half_bits(float value);
float half_bits_to_float(std::uint16_t bits);
std::uint16_t float_to_bfloat16_bits(float value);
float bfloat16_bits_to_float(std::uint16_t bits);
}  // namespace cuda_emu

struct __half {
  std::uint16_t bits = 0;
  __half() = default;
  __half(float value) : bits(cuda_emu::float_to_half_bits(value)) {}  // NOLINT: implicit, as in cuda_fp16.h
  operator float() const { return cuda_emu::half_bits_to_float(bits); }
};
struct __nv_bfloat16 {
  std::uint16_t bits = 0;
  __nv_bfloat16() = default;
  __nv_bfloat16(float value) : bits(cuda_emu::float_to_bfloat16_bits(value)) {}  // NOLINT: as in cuda_bf16.h
  operator float() const { return cuda_emu::bfloat16_bits_to_float(bits); }
};
static_assert(sizeof(__half) == 2 && sizeof(__nv_bfloat16) == 2, "16-bit storage, as torch's half/bfloat16");

inline float __half2float(__half x) { return static_cast<float>(x); }
inline __half __float2half(float x) { return __half(x); }
inline float __bfloat162float(__nv_bfloat16 x) { return static_cast<float>(x); }
inline __nv_bfloat16 __float2bfloat16(float x) { return __nv_bfloat16(x); }

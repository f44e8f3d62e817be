// mdanet::dasc_gate on CUDA: plain kernels over raw pointers (declared in mdanet/kernels.h).
//
// Forward: one thread per pixel reduces over the channels to 1 + sigmoid(s) (coalesced along pixels), then one
// block per (image, channel) row writes (f_m1 - f_m2) * scale. Backward has the same two shapes, with the
// per-channel sums of the weight gradient reduced per block and added atomically.
#include "common.cuh"

namespace mdanet::cuda {
namespace {

using namespace detail;

// Per pixel p = (b, i): s = c + Σ v_d (f_m1 - f_m2) + Σ v_de f_de; writes scale = 1 + sigmoid(s). When `grad`
// is given (backward), also gs = att (1 - att) Σ grad (f_m1 - f_m2) and adds Σ gs to coef_grad_c.
template <typename T>
__global__ void pixel_kernel(DascShape d, const T* __restrict__ f_m1, const T* __restrict__ f_m2,
                             const T* __restrict__ f_de, const acc_t<T>* __restrict__ coef,
                             const T* __restrict__ grad, acc_t<T>* __restrict__ scale, acc_t<T>* __restrict__ gs,
                             acc_t<T>* __restrict__ coef_grad_c) {
  using A = acc_t<T>;
  const int64_t total = d.batch * d.pixels;
  // Uniform trip count for every thread of the block, so block_sum below is reached by all of them.
  const int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t base = start; base < total; base += step) {
    const int64_t p = base + threadIdx.x;
    A gs_value = 0;
    if (p < total) {
      const int64_t b = p / d.pixels, i = p % d.pixels;
      const int64_t offset = b * d.channels * d.pixels + i;
      const T* x1 = f_m1 + offset;
      const T* x2 = f_m2 + offset;
      const T* xe = f_de + b * d.de_channels * d.pixels + i;
      A s = coef[d.channels + d.de_channels];
      A dot = 0;
      for (int64_t c = 0; c < d.channels; ++c) {
        const A fd = to_acc(x1[c * d.pixels]) - to_acc(x2[c * d.pixels]);
        s += coef[c] * fd;
        if (grad != nullptr) {
          dot += to_acc(grad[offset + c * d.pixels]) * fd;
        }
      }
      for (int64_t c = 0; c < d.de_channels; ++c) {
        s += coef[d.channels + c] * to_acc(xe[c * d.pixels]);
      }
      const A att = sigmoid(s);
      scale[p] = A(1) + att;
      if (grad != nullptr) {
        gs_value = dot * att * (A(1) - att);
        gs[p] = gs_value;
      }
    }
    if (grad != nullptr) {
      const A block_total = block_sum(gs_value);
      if (threadIdx.x == 0) {
        atomicAdd(coef_grad_c, block_total);
      }
      __syncthreads();  // warp_sums of block_sum is reused by the next iteration
    }
  }
}

// One block per row (b, c) of f_m1/f_m2: out = (f_m1 - f_m2) * scale.
template <typename T>
__global__ void apply_kernel(DascShape d, const T* __restrict__ f_m1, const T* __restrict__ f_m2,
                             const acc_t<T>* __restrict__ scale, T* __restrict__ out) {
  const int64_t row = blockIdx.x, b = row / d.channels;
  const int64_t offset = row * d.pixels;
  const acc_t<T>* sc = scale + b * d.pixels;
  for (int64_t i = threadIdx.x; i < d.pixels; i += blockDim.x) {
    out[offset + i] = from_acc<T>((to_acc(f_m1[offset + i]) - to_acc(f_m2[offset + i])) * sc[i]);
  }
}

// One block per row (b, c) of f_m1/f_m2: grad_m1 = grad * scale + gs * v_d[c], grad_m2 = -grad_m1, and
// Σ gs (f_m1 - f_m2) added to coef_grad[c].
template <typename T>
__global__ void backward_d_kernel(DascShape d, const T* __restrict__ grad, const T* __restrict__ f_m1,
                                  const T* __restrict__ f_m2, const acc_t<T>* __restrict__ coef,
                                  const acc_t<T>* __restrict__ scale, const acc_t<T>* __restrict__ gs,
                                  T* __restrict__ grad_m1, T* __restrict__ grad_m2, acc_t<T>* __restrict__ coef_grad) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x, b = row / d.channels, c = row % d.channels;
  const int64_t offset = row * d.pixels;
  const A v = coef[c];
  const A* sc = scale + b * d.pixels;
  const A* g = gs + b * d.pixels;
  A sum = 0;
  for (int64_t i = threadIdx.x; i < d.pixels; i += blockDim.x) {
    const A fd = to_acc(f_m1[offset + i]) - to_acc(f_m2[offset + i]);
    const A value = to_acc(grad[offset + i]) * sc[i] + g[i] * v;
    grad_m1[offset + i] = from_acc<T>(value);
    grad_m2[offset + i] = from_acc<T>(-value);
    sum += g[i] * fd;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) {
    atomicAdd(coef_grad + c, sum);
  }
}

// One block per row (b, c) of f_de: grad_de = gs * v_de[c], and Σ gs f_de added to coef_grad[C + c].
template <typename T>
__global__ void backward_de_kernel(DascShape d, const T* __restrict__ f_de, const acc_t<T>* __restrict__ coef,
                                   const acc_t<T>* __restrict__ gs, T* __restrict__ grad_de,
                                   acc_t<T>* __restrict__ coef_grad) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x, b = row / d.de_channels, c = row % d.de_channels;
  const int64_t offset = row * d.pixels;
  const A v = coef[d.channels + c];
  const A* g = gs + b * d.pixels;
  A sum = 0;
  for (int64_t i = threadIdx.x; i < d.pixels; i += blockDim.x) {
    grad_de[offset + i] = from_acc<T>(g[i] * v);
    sum += g[i] * to_acc(f_de[offset + i]);
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) {
    atomicAdd(coef_grad + d.channels + c, sum);
  }
}

}  // namespace

int dasc_gate_forward(DType dtype, DascShape shape, const void* f_m1, const void* f_m2, const void* f_de,
                      const void* coef, void* scale, void* out, cudaStream_t stream) {
  if (shape.batch * shape.pixels == 0 || shape.channels == 0) {
    return cudaSuccess;
  }
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    pixel_kernel<T><<<blocks_for(shape.batch * shape.pixels), kThreads, 0, stream>>>(
        shape, static_cast<const T*>(f_m1), static_cast<const T*>(f_m2), static_cast<const T*>(f_de),
        static_cast<const A*>(coef), nullptr, static_cast<A*>(scale), nullptr, nullptr);
    apply_kernel<T><<<static_cast<unsigned int>(shape.batch * shape.channels), kThreads, 0, stream>>>(
        shape, static_cast<const T*>(f_m1), static_cast<const T*>(f_m2), static_cast<const A*>(scale),
        static_cast<T*>(out));
    return static_cast<int>(cudaGetLastError());
  });
}

int dasc_gate_backward(DType dtype, DascShape shape, const void* grad, const void* f_m1, const void* f_m2,
                       const void* f_de, const void* coef, void* scale, void* gs, void* grad_m1, void* grad_m2,
                       void* grad_de, void* grad_coef, cudaStream_t stream) {
  // With channels == 0 but de_channels > 0, grad_de still has elements: they are written (zeros, as gs is 0).
  if (shape.batch * shape.pixels == 0 || shape.channels + shape.de_channels == 0) {
    return cudaSuccess;
  }
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    A* coef_grad = static_cast<A*>(grad_coef);
    pixel_kernel<T><<<blocks_for(shape.batch * shape.pixels), kThreads, 0, stream>>>(
        shape, static_cast<const T*>(f_m1), static_cast<const T*>(f_m2), static_cast<const T*>(f_de),
        static_cast<const A*>(coef), static_cast<const T*>(grad), static_cast<A*>(scale), static_cast<A*>(gs),
        coef_grad + shape.channels + shape.de_channels);
    if (shape.channels > 0) {
      backward_d_kernel<T><<<static_cast<unsigned int>(shape.batch * shape.channels), kThreads, 0, stream>>>(
          shape, static_cast<const T*>(grad), static_cast<const T*>(f_m1), static_cast<const T*>(f_m2),
          static_cast<const A*>(coef), static_cast<const A*>(scale), static_cast<const A*>(gs),
          static_cast<T*>(grad_m1), static_cast<T*>(grad_m2), coef_grad);
    }
    if (shape.de_channels > 0) {
      backward_de_kernel<T><<<static_cast<unsigned int>(shape.batch * shape.de_channels), kThreads, 0, stream>>>(
          shape, static_cast<const T*>(f_de), static_cast<const A*>(coef), static_cast<const A*>(gs),
          static_cast<T*>(grad_de), coef_grad);
    }
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace mdanet::cuda

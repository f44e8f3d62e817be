// mdanet::graph_conv on CUDA: the elementwise epilogues (declared in mdanet/kernels.h); the matrix products
// are cuBLAS calls made by the torch glue (csrc/cuda/register.cpp through csrc/common.cpp).
//
// Index math: 32-bit where the element count (plus one grid stride) fits, 64-bit otherwise; no division per
// element (the epilogue steps each thread's (node, feature) pair by the grid stride's own decomposition).
#include "common.cuh"

#include <limits>

namespace mdanet::cuda {
namespace {

using namespace detail;

// A grid-stride walk over (batch·nodes, features) in I: the stride, and the stride as (nodes, features) steps.
template <typename I>
struct Walk {
  I numel, nodes, features, stride, step_m, step_e;
};

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads) bias_relu_kernel(Walk<I> w, T* __restrict__ q,
                                                             const acc_t<T>* __restrict__ a_bias,
                                                             const acc_t<T>* __restrict__ w_rowsum,
                                                             const acc_t<T>* __restrict__ w_bias) {
  using A = acc_t<T>;
  I idx = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= w.numel) {
    return;
  }
  I e = idx % w.features, m = (idx / w.features) % w.nodes;  // once per thread
  for (; idx < w.numel; idx += w.stride) {
    const A y = to_acc(q[idx]) + w_bias[e] - a_bias[m] * w_rowsum[e];
    q[idx] = from_acc<T>(y <= A(0) ? A(0) : y);  // a NaN stays NaN, as in torch.relu
    e += w.step_e;
    m += w.step_m;
    if (e >= w.features) {
      e -= w.features;
      ++m;
    }
    if (m >= w.nodes) {  // m < 2·nodes here, so one subtraction is the modulo
      m -= w.nodes;
    }
  }
}

// V elements per thread and step (one 128-bit access when V > 1); `count` = numel / V.
template <typename T, typename I, int V>
__global__ void __launch_bounds__(kThreads) relu_mask_kernel(I count, const T* __restrict__ grad,
                                                             const T* __restrict__ out, T* __restrict__ grad_y) {
  using A = acc_t<T>;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I k = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; k < count; k += stride) {
    const Vec<T, V> g = load_vec<V>(grad + k * V), o = load_vec<V>(out + k * V);
    Vec<T, V> r;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      // As torch's ReLU backward (threshold_backward): the gradient passes where out is NaN.
      r.v[j] = to_acc(o.v[j]) <= A(0) ? from_acc<T>(A(0)) : g.v[j];
    }
    store_vec<V>(grad_y + k * V, r);
  }
}

// Whether a grid-stride loop over n elements with this many blocks stays within int32 (n + stride).
bool fits_int32(int64_t n, unsigned int blocks) {
  return n + static_cast<int64_t>(blocks) * kThreads <= std::numeric_limits<int32_t>::max();
}

template <typename T, typename I>
void launch_bias_relu(int64_t numel, int64_t nodes, int64_t features, T* q, const acc_t<T>* a_bias,
                      const acc_t<T>* w_rowsum, const acc_t<T>* w_bias, cudaStream_t stream) {
  const unsigned int blocks = blocks_for(numel);
  const int64_t stride = static_cast<int64_t>(blocks) * kThreads;
  const Walk<I> w{static_cast<I>(numel),  static_cast<I>(nodes),
                  static_cast<I>(features), static_cast<I>(stride),
                  static_cast<I>((stride / features) % nodes), static_cast<I>(stride % features)};
  bias_relu_kernel<T, I><<<blocks, kThreads, 0, stream>>>(w, q, a_bias, w_rowsum, w_bias);
}

template <typename T, typename I, int V>
void launch_relu_mask(int64_t numel, const T* grad, const T* out, T* grad_y, cudaStream_t stream) {
  relu_mask_kernel<T, I, V><<<blocks_for(numel / V), kThreads, 0, stream>>>(static_cast<I>(numel / V), grad, out,
                                                                            grad_y);
}

}  // namespace

int graph_conv_bias_relu(DType dtype, int64_t batch, int64_t nodes, int64_t features, void* q,
                         const void* a_bias, const void* w_rowsum, const void* w_bias, cudaStream_t stream) {
  const int64_t numel = batch * nodes * features;
  if (numel == 0) {
    return cudaSuccess;
  }
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    T* values = static_cast<T*>(q);
    const A* bias = static_cast<const A*>(a_bias);
    const A* rowsum = static_cast<const A*>(w_rowsum);
    const A* wb = static_cast<const A*>(w_bias);
    if (fits_int32(numel, blocks_for(numel))) {
      launch_bias_relu<T, int32_t>(numel, nodes, features, values, bias, rowsum, wb, stream);
    } else {
      launch_bias_relu<T, int64_t>(numel, nodes, features, values, bias, rowsum, wb, stream);
    }
    return static_cast<int>(cudaGetLastError());
  });
}

int graph_conv_relu_mask(DType dtype, int64_t numel, const void* grad, const void* out, void* grad_y,
                         cudaStream_t stream) {
  if (numel == 0) {
    return cudaSuccess;
  }
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    const T* g = static_cast<const T*>(grad);
    const T* o = static_cast<const T*>(out);
    T* y = static_cast<T*>(grad_y);
    const bool vector = numel % V == 0 && aligned(g, kVectorBytes) && aligned(o, kVectorBytes) &&
                        aligned(y, kVectorBytes);
    const bool small = fits_int32(numel, blocks_for(numel));
    if (vector && small) {
      launch_relu_mask<T, int32_t, V>(numel, g, o, y, stream);
    } else if (vector) {
      launch_relu_mask<T, int64_t, V>(numel, g, o, y, stream);
    } else if (small) {
      launch_relu_mask<T, int32_t, 1>(numel, g, o, y, stream);
    } else {
      launch_relu_mask<T, int64_t, 1>(numel, g, o, y, stream);
    }
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace mdanet::cuda

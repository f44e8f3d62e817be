// mdanet::graph_conv on CUDA: the elementwise epilogues (declared in mdanet/kernels.h); the matrix products
// are cuBLAS calls made by the torch glue (csrc/cuda/register.cpp through csrc/common.cpp).
#include "common.cuh"

namespace mdanet::cuda {
namespace {

using namespace detail;

template <typename T>
__global__ void bias_relu_kernel(int64_t numel, int64_t nodes, int64_t features, T* __restrict__ q,
                                 const acc_t<T>* __restrict__ a_bias, const acc_t<T>* __restrict__ w_rowsum,
                                 const acc_t<T>* __restrict__ w_bias) {
  using A = acc_t<T>;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < numel;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = idx % features, m = (idx / features) % nodes;
    const A y = to_acc(q[idx]) + w_bias[e] - a_bias[m] * w_rowsum[e];
    q[idx] = from_acc<T>(y <= A(0) ? A(0) : y);  // a NaN stays NaN, as in torch.relu
  }
}

template <typename T>
__global__ void relu_mask_kernel(int64_t numel, const T* __restrict__ grad, const T* __restrict__ out,
                                 T* __restrict__ grad_y) {
  using A = acc_t<T>;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < numel;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // As torch's ReLU backward (threshold_backward): the gradient passes where out is NaN.
    grad_y[idx] = to_acc(out[idx]) <= A(0) ? from_acc<T>(A(0)) : grad[idx];
  }
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
    bias_relu_kernel<T><<<blocks_for(numel), kThreads, 0, stream>>>(
        numel, nodes, features, static_cast<T*>(q), static_cast<const A*>(a_bias), static_cast<const A*>(w_rowsum),
        static_cast<const A*>(w_bias));
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
    relu_mask_kernel<T><<<blocks_for(numel), kThreads, 0, stream>>>(
        numel, static_cast<const T*>(grad), static_cast<const T*>(out), static_cast<T*>(grad_y));
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace mdanet::cuda

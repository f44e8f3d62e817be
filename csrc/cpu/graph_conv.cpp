// mdanet::graph_conv on the CPU: the two matrix products come from ATen (BLAS); the two node-feature
// biases and the ReLU run as one vectorised epilogue pass over the product, in place.
#include "mdanet/ops.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

namespace mdanet {
namespace {

template <typename scalar_t>
void bias_relu_kernel(scalar_t* q, int64_t rows, int64_t nodes, int64_t features,
                      const at::opmath_type<scalar_t>* a_bias, const at::opmath_type<scalar_t>* w_rowsum,
                      const at::opmath_type<scalar_t>* w_bias) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, features));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const acc_t node_bias = a_bias[r % nodes];
      scalar_t* row = q + r * features;
#pragma omp simd
      for (int64_t e = 0; e < features; ++e) {
        const acc_t y = static_cast<acc_t>(row[e]) + w_bias[e] - node_bias * w_rowsum[e];
        row[e] = static_cast<scalar_t>(y <= acc_t(0) ? acc_t(0) : y);  // a NaN stays NaN, as in torch.relu
      }
    }
  });
}

template <typename scalar_t>
void relu_mask_kernel(const scalar_t* grad, const scalar_t* out, scalar_t* grad_y, int64_t numel) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, numel, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      // Where the output is NaN the gradient passes, as torch's ReLU backward does (and the CUDA kernel).
      grad_y[i] = static_cast<acc_t>(out[i]) <= acc_t(0) ? scalar_t(0) : grad[i];
    }
  });
}

void bias_relu_cpu(at::Tensor& q, const at::Tensor& a_bias, const at::Tensor& w_rowsum, const at::Tensor& w_bias) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "mdanet::graph_conv", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    bias_relu_kernel<scalar_t>(q.mutable_data_ptr<scalar_t>(), q.size(0) * q.size(1), q.size(1), q.size(2),
                               a_bias.const_data_ptr<acc_t>(), w_rowsum.const_data_ptr<acc_t>(),
                               w_bias.const_data_ptr<acc_t>());
  });
}

at::Tensor relu_mask_cpu(const at::Tensor& grad, const at::Tensor& out) {
  at::Tensor grad_y = at::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "mdanet::graph_conv_backward", [&] {
    relu_mask_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(),
                               grad_y.mutable_data_ptr<scalar_t>(), grad.numel());
  });
  return grad_y;
}

at::Tensor graph_conv_cpu(const at::Tensor& g, const at::Tensor& a, const at::Tensor& a_bias, const at::Tensor& w,
                          const at::Tensor& w_bias) {
  return graph_conv_forward(g, a, a_bias, w, w_bias, bias_relu_cpu);
}

GraphGrads graph_conv_backward_cpu(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& g,
                                   const at::Tensor& a, const at::Tensor& a_bias, const at::Tensor& w,
                                   const at::Tensor& w_bias) {
  return graph_conv_backward(grad, out, g, a, a_bias, w, w_bias, relu_mask_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(mdanet, CPU, m) {
  m.impl("graph_conv", &graph_conv_cpu);
  m.impl("graph_conv_backward", &graph_conv_backward_cpu);
}

}  // namespace mdanet

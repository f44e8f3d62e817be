// TORCH_LIBRARY_IMPL(mdanet, CUDA): torch glue over the plain kernels of mdanet/kernels.h. Built only against a
// CUDA-enabled torch (it needs ATen's CUDA headers); the math around the kernels is csrc/common.cpp's.
#include "mdanet/kernels.h"
#include "mdanet/ops.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

namespace mdanet {
namespace {

cuda::DType kernel_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return cuda::DType::kFloat32;
    case at::kDouble:
      return cuda::DType::kFloat64;
    case at::kHalf:
      return cuda::DType::kFloat16;
    case at::kBFloat16:
      return cuda::DType::kBFloat16;
    default:
      TORCH_CHECK(false, "mdanet CUDA kernels support float32, float64, float16 and bfloat16, got ", type);
  }
}

void check_launch(int status, const char* kernel) {
  TORCH_CHECK(status == cudaSuccess, kernel, " failed to launch: ",
              cudaGetErrorString(static_cast<cudaError_t>(status)));
}

cuda::DascShape shape_of(const DascDims& d) { return {d.batch, d.channels, d.de_channels, d.pixels}; }

// The kernels' acc workspace (mdanet/kernels.h), from torch's caching allocator (256-byte aligned).
at::Tensor dasc_workspace(const DascDims& d, const at::Tensor& features, bool backward, bool deterministic) {
  const std::size_t bytes = cuda::dasc_gate_workspace_bytes(kernel_dtype(features.scalar_type()), shape_of(d),
                                                            backward, deterministic);
  return at::empty({static_cast<int64_t>(bytes)}, features.options().dtype(at::kByte));
}

void dasc_forward_cuda(const DascDims& d, const at::Tensor& f_m1, const at::Tensor& f_m2, const at::Tensor& f_de,
                       const at::Tensor& coef, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(f_m1.device());
  at::Tensor workspace = dasc_workspace(d, f_m1, false, false);
  check_launch(cuda::dasc_gate_forward(kernel_dtype(f_m1.scalar_type()), shape_of(d), f_m1.const_data_ptr(),
                                       f_m2.const_data_ptr(), f_de.const_data_ptr(), coef.const_data_ptr(),
                                       workspace.mutable_data_ptr(), out.mutable_data_ptr(),
                                       c10::cuda::getCurrentCUDAStream()),
               "mdanet::dasc_gate");
}

void dasc_backward_cuda(const DascDims& d, const at::Tensor& grad, const at::Tensor& f_m1, const at::Tensor& f_m2,
                        const at::Tensor& f_de, const at::Tensor& coef, at::Tensor& grad_m1, at::Tensor& grad_m2,
                        at::Tensor& grad_de, at::Tensor& grad_coef) {
  // Under torch.use_deterministic_algorithms the coefficient gradients are summed in a fixed order (bitwise
  // reproducible); otherwise with float atomics, whose order varies in the last bits from run to run.
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const c10::cuda::CUDAGuard guard(f_m1.device());
  at::Tensor workspace = dasc_workspace(d, f_m1, true, deterministic);
  check_launch(cuda::dasc_gate_backward(kernel_dtype(f_m1.scalar_type()), shape_of(d), grad.const_data_ptr(),
                                        f_m1.const_data_ptr(), f_m2.const_data_ptr(), f_de.const_data_ptr(),
                                        coef.const_data_ptr(), workspace.mutable_data_ptr(),
                                        grad_m1.mutable_data_ptr(), grad_m2.mutable_data_ptr(),
                                        grad_de.mutable_data_ptr(), grad_coef.mutable_data_ptr(), deterministic,
                                        c10::cuda::getCurrentCUDAStream()),
               "mdanet::dasc_gate_backward");
}

void bias_relu_cuda(at::Tensor& q, const at::Tensor& a_bias, const at::Tensor& w_rowsum, const at::Tensor& w_bias) {
  const c10::cuda::CUDAGuard guard(q.device());
  check_launch(cuda::graph_conv_bias_relu(kernel_dtype(q.scalar_type()), q.size(0), q.size(1), q.size(2),
                                          q.mutable_data_ptr(), a_bias.const_data_ptr(), w_rowsum.const_data_ptr(),
                                          w_bias.const_data_ptr(), c10::cuda::getCurrentCUDAStream()),
               "mdanet::graph_conv");
}

at::Tensor relu_mask_cuda(const at::Tensor& grad, const at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(grad.device());
  at::Tensor grad_y = at::empty_like(grad);
  check_launch(cuda::graph_conv_relu_mask(kernel_dtype(grad.scalar_type()), grad.numel(), grad.const_data_ptr(),
                                          out.const_data_ptr(), grad_y.mutable_data_ptr(),
                                          c10::cuda::getCurrentCUDAStream()),
               "mdanet::graph_conv_backward");
  return grad_y;
}

at::Tensor dasc_gate_cuda(const at::Tensor& f_m1, const at::Tensor& f_m2, const at::Tensor& f_de,
                          const at::Tensor& w_d, const at::Tensor& w_de, const at::Tensor& b_in,
                          const at::Tensor& w_att, const at::Tensor& b_att) {
  return dasc_gate_forward(f_m1, f_m2, f_de, w_d, w_de, b_in, w_att, b_att, dasc_forward_cuda);
}

DascGrads dasc_gate_backward_cuda(const at::Tensor& grad, const at::Tensor& f_m1, const at::Tensor& f_m2,
                                  const at::Tensor& f_de, const at::Tensor& w_d, const at::Tensor& w_de,
                                  const at::Tensor& b_in, const at::Tensor& w_att, const at::Tensor& b_att) {
  return dasc_gate_backward(grad, f_m1, f_m2, f_de, w_d, w_de, b_in, w_att, b_att, dasc_backward_cuda);
}

at::Tensor graph_conv_cuda(const at::Tensor& g, const at::Tensor& a, const at::Tensor& a_bias, const at::Tensor& w,
                           const at::Tensor& w_bias) {
  return graph_conv_forward(g, a, a_bias, w, w_bias, bias_relu_cuda);
}

GraphGrads graph_conv_backward_cuda(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& g,
                                    const at::Tensor& a, const at::Tensor& a_bias, const at::Tensor& w,
                                    const at::Tensor& w_bias) {
  return graph_conv_backward(grad, out, g, a, a_bias, w, w_bias, relu_mask_cuda);
}

}  // namespace

TORCH_LIBRARY_IMPL(mdanet, CUDA, m) {
  m.impl("dasc_gate", &dasc_gate_cuda);
  m.impl("dasc_gate_backward", &dasc_gate_backward_cuda);
  m.impl("graph_conv", &graph_conv_cuda);
  m.impl("graph_conv_backward", &graph_conv_backward_cuda);
}

}  // namespace mdanet

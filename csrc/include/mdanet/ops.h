// Device-independent halves of the mdanet ops: input checks and the small weight-level algebra, around the
// device kernels that each backend (csrc/cpu, csrc/cuda/register.cpp) passes in. One implementation of the
// math around the kernels, whatever the device.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>

namespace mdanet {

// Sizes of one dasc_gate call (H*W flattened to `pixels`).
struct DascDims {
  int64_t batch;
  int64_t channels;     // C of f_m1/f_m2
  int64_t de_channels;  // C_de of f_de
  int64_t pixels;       // H*W
  // Features and output are channels_last (NHWC: a pixel's channels contiguous) rather than NCHW; only for
  // kernels that read that layout (dasc_gate_forward's reads_channels_last).
  bool channels_last = false;
};

// Fills `out` (B, C, H, W), contiguous (or channels_last with dims.channels_last), from features in that layout
// and `coef` = [v_d, v_de, c] in the
// accumulation dtype (see dasc_coefficients).
using DascForwardKernel = void (*)(const DascDims& dims, const at::Tensor& f_m1, const at::Tensor& f_m2,
                                   const at::Tensor& f_de, const at::Tensor& coef, at::Tensor& out);

// Fills grad_m1, grad_m2 (B, C, H, W), grad_de (B, C_de, H, W) and grad_coef (C + C_de + 1,), the gradient of
// [v_d, v_de, c]; all outputs are allocated (grad_coef zeroed) and contiguous.
using DascBackwardKernel = void (*)(const DascDims& dims, const at::Tensor& grad, const at::Tensor& f_m1,
                                    const at::Tensor& f_m2, const at::Tensor& f_de, const at::Tensor& coef,
                                    at::Tensor& grad_m1, at::Tensor& grad_m2, at::Tensor& grad_de,
                                    at::Tensor& grad_coef);

// In place on q (B, M, E): q = max(q + w_bias[e] - a_bias[m] * w_rowsum[e], 0); the vectors are in the
// accumulation dtype of q.
using GraphBiasReluKernel = void (*)(at::Tensor& q, const at::Tensor& a_bias, const at::Tensor& w_rowsum,
                                     const at::Tensor& w_bias);

// grad * (out > 0), contiguous, same shape and dtype as grad.
using GraphReluMaskKernel = at::Tensor (*)(const at::Tensor& grad, const at::Tensor& out);

using DascGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor>;
using GraphGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// mdanet::dasc_gate on one backend: checks, collapses θ1·θ2 and θ1·θ3 to the vectors v_d, v_de and the
// constant c, and runs `kernel`. The output has f_m1's memory format (suggest_memory_format): a kernel that
// reads channels_last (`reads_channels_last`) gets channels_last features as they are; otherwise they are
// copied to NCHW and the output back.
at::Tensor dasc_gate_forward(const at::Tensor& f_m1, const at::Tensor& f_m2, const at::Tensor& f_de,
                             const at::Tensor& w_d, const at::Tensor& w_de, const at::Tensor& b_in,
                             const at::Tensor& w_att, const at::Tensor& b_att, DascForwardKernel kernel,
                             bool reads_channels_last = false);

// mdanet::dasc_gate_backward on one backend: the feature gradients from `kernel`, then the weight gradients
// by the chain rule through v_d = w_dᵀ w_att, v_de = w_deᵀ w_att, c = w_att·b_in + b_att.
DascGrads dasc_gate_backward(const at::Tensor& grad, const at::Tensor& f_m1, const at::Tensor& f_m2,
                             const at::Tensor& f_de, const at::Tensor& w_d, const at::Tensor& w_de,
                             const at::Tensor& b_in, const at::Tensor& w_att, const at::Tensor& b_att,
                             DascBackwardKernel kernel);

// mdanet::graph_conv on one backend: q = (I - A)(G Wᵀ) by two matrix products, then `epilogue`.
at::Tensor graph_conv_forward(const at::Tensor& g, const at::Tensor& a, const at::Tensor& a_bias,
                              const at::Tensor& w, const at::Tensor& w_bias, GraphBiasReluKernel epilogue);

// mdanet::graph_conv_backward on one backend: `mask` through the ReLU, then matrix products.
GraphGrads graph_conv_backward(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& g,
                               const at::Tensor& a, const at::Tensor& a_bias, const at::Tensor& w,
                               const at::Tensor& w_bias, GraphReluMaskKernel mask);

}  // namespace mdanet

// Launchers of the plain CUDA kernels of the mdanet ops (csrc/cuda/*.cu).
//
// Plain C++ over raw pointers and a cudaStream_t, with no torch types, so the .cu files build with nvcc
// alone (scripts/compile_cuda.sh compiles them on machines without a CUDA torch) and the kernels can be
// reused outside PyTorch (e.g. by a TensorRT plugin). The torch glue in csrc/cuda/register.cpp allocates
// the tensors and passes their data pointers.
//
// Layouts: every tensor is contiguous. Features are NCHW with H*W flattened to `pixels`; graphs are (B, M, E).
// "acc" pointers hold the accumulation type of the feature dtype: float for fp32/fp16/bf16, double for fp64.
#pragma once

#include <cstddef>
#include <cstdint>

// The CUDA runtime's own spelling of the stream type, so this header needs no CUDA include.
struct CUstream_st;
typedef CUstream_st* cudaStream_t;

namespace mdanet::cuda {

// Element type of the feature tensors; the launchers dispatch on it.
enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Sizes of one DASC gate call: f_m1/f_m2 (batch, channels, pixels), f_de (batch, de_channels, pixels).
struct DascShape {
  int64_t batch;
  int64_t channels;
  int64_t de_channels;
  int64_t pixels;
};

// Bytes of the acc workspace one DASC call needs (forward: backward = false); a function of the dtype and the
// shape only. Pass memory of at least this size, aligned to 256 bytes as cudaMalloc and torch's allocator give
// it (less alignment still works, with scalar instead of 128-bit loads).
std::size_t dasc_gate_workspace_bytes(DType dtype, DascShape shape, bool backward, bool deterministic);

// DASC forward, Eq. 1-3 with θ1·(θ2, θ3) collapsed into two per-pixel dot products:
//   s = v_d·(f_m1 - f_m2) + v_de·f_de + c,  out = (f_m1 - f_m2) * (1 + sigmoid(s)).
//   coef:      acc (channels + de_channels + 1) = [v_d, v_de, c]
//   workspace: dasc_gate_workspace_bytes(dtype, shape, false, false) bytes
//   out:       features (batch, channels, pixels)
// The result does not depend on timing (no atomics). Returns the launch status (cudaSuccess == 0).
int dasc_gate_forward(DType dtype, DascShape shape, const void* f_m1, const void* f_m2, const void* f_de,
                      const void* coef, void* workspace, void* out, cudaStream_t stream);

// DASC backward for the upstream gradient `grad` (batch, channels, pixels):
//   grad_m1 = grad * (1 + att) + gs * v_d,  grad_m2 = -grad_m1,  grad_de = gs * v_de,
//   with att = sigmoid(s) and gs = att (1 - att) Σ_c grad·(f_m1 - f_m2) per pixel.
//   coef:       acc [v_d, v_de, c] as in the forward
//   workspace:  dasc_gate_workspace_bytes(dtype, shape, true, deterministic) bytes
//   grad_coef:  acc (channels + de_channels + 1), ZEROED by the caller, receives the accumulated
//               [Σ gs·f_d, Σ gs·f_de, Σ gs] (the gradient of [v_d, v_de, c])
//   deterministic: false adds the per-block partial sums of grad_coef with float atomics (their order, so the
//               last bits, vary from run to run); true writes them to the workspace and sums them in a fixed
//               order (bitwise reproducible, one more small kernel).
int dasc_gate_backward(DType dtype, DascShape shape, const void* grad, const void* f_m1, const void* f_m2,
                       const void* f_de, const void* coef, void* workspace, void* grad_m1, void* grad_m2,
                       void* grad_de, void* grad_coef, bool deterministic, cudaStream_t stream);

// Graph-conv epilogue, in place on q = (I - A) G Wᵀ of shape (batch, nodes, features):
//   q[b, m, e] = relu(q[b, m, e] + w_bias[e] - a_bias[m] * w_rowsum[e])   (a NaN stays NaN, as torch.relu)
// which is ReLU(((I - A) G - b_A) Wᵀ + b_W) with b_A folded through W. a_bias (nodes), w_rowsum and w_bias
// (features) are acc.
int graph_conv_bias_relu(DType dtype, int64_t batch, int64_t nodes, int64_t features, void* q,
                         const void* a_bias, const void* w_rowsum, const void* w_bias, cudaStream_t stream);

// Graph-conv backward through the ReLU: grad_y = out <= 0 ? 0 : grad (the gradient passes where out is NaN, as
// torch's threshold_backward), all of `numel` elements.
int graph_conv_relu_mask(DType dtype, int64_t numel, const void* grad, const void* out, void* grad_y,
                         cudaStream_t stream);

}  // namespace mdanet::cuda

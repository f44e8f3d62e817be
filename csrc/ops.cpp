// The mdanet operator library: the schemas, registered once, and the library's build information.
//
// Backends register their kernels in csrc/cpu/*.cpp and csrc/cuda/register.cpp; the fake (meta) kernels and
// the autograd formulas are registered from Python (mdanet_sdk/ops/native.py), which set_python_module names
// so that torch imports it whenever the ops are traced.
#include "mdanet/build_info.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <dlfcn.h>

#ifndef MDANET_VERSION
#define MDANET_VERSION "unknown"
#endif
#ifndef MDANET_TORCH_VERSION
#define MDANET_TORCH_VERSION "unknown"
#endif
#ifndef MDANET_COMPILER
#define MDANET_COMPILER "unknown"
#endif
#ifndef MDANET_CUDA_VERSION
#define MDANET_CUDA_VERSION ""
#endif
#ifndef MDANET_CUDA_ARCHS
#define MDANET_CUDA_ARCHS ""
#endif

TORCH_LIBRARY(mdanet, m) {
  m.set_python_module("mdanet_sdk.ops.native");
  // DASC, paper Eq. 1-3: F_D = f_m1 - f_m2; W = sigmoid(θ1(θ2 F_D + θ3 f_de)); returns F_D + W F_D.
  m.def(
      "dasc_gate(Tensor f_m1, Tensor f_m2, Tensor f_de, Tensor w_d, Tensor w_de, Tensor b_in, Tensor w_att, "
      "Tensor b_att) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // Gradients of all eight inputs of dasc_gate, in order.
  m.def(
      "dasc_gate_backward(Tensor grad, Tensor f_m1, Tensor f_m2, Tensor f_de, Tensor w_d, Tensor w_de, "
      "Tensor b_in, Tensor w_att, Tensor b_att) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Graph convolution, paper Eq. 6-7: ReLU(((I - A) g - a_bias) wᵀ + w_bias) for g (B, M, E).
  m.def("graph_conv(Tensor g, Tensor a, Tensor a_bias, Tensor w, Tensor w_bias) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Gradients of g, a, a_bias, w, w_bias; `out` is graph_conv's output (its ReLU mask).
  m.def(
      "graph_conv_backward(Tensor grad, Tensor out, Tensor g, Tensor a, Tensor a_bias, Tensor w, Tensor w_bias) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Connected components of a bool (X, Y, Z) mask (pre- and post-processing, mdanet_sdk.pipeline.morphology):
  // int64 labels, 0 outside, each component its smallest flat index + 1; faces or the whole cube (`full`),
  // within axial planes (`planar`). CPU only: the volume pipeline runs on the CPU.
  m.def("label_components(Tensor mask, bool full, bool planar) -> Tensor");
}

namespace mdanet {

BuildInfo build_info() {
  BuildInfo info;
  info.version = MDANET_VERSION;
  info.torch_version = MDANET_TORCH_VERSION;
  info.compiler = MDANET_COMPILER;
#ifdef MDANET_WITH_CUDA
  info.cuda = true;
#endif
  info.cuda_version = MDANET_CUDA_VERSION;
  info.cuda_archs = MDANET_CUDA_ARCHS;
#ifdef _OPENMP
  info.openmp = _OPENMP;
#endif
  info.num_threads = at::get_num_threads();
  Dl_info where{};
  if (dladdr(reinterpret_cast<void*>(&build_info), &where) != 0 && where.dli_fname != nullptr) {
    info.library_path = where.dli_fname;
  }
  return info;
}

}  // namespace mdanet

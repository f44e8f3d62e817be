// The device-independent halves of the mdanet ops (declared in mdanet/ops.h).
#include "mdanet/ops.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

namespace mdanet {
namespace {

void check_same_device(const char* op, const at::Tensor& ref, std::initializer_list<const at::Tensor*> others) {
  for (const at::Tensor* t : others) {
    TORCH_CHECK(t->device() == ref.device(), op, ": all tensors must be on one device, got ", ref.device(),
                " and ", t->device());
    TORCH_CHECK(at::isFloatingType(t->scalar_type()), op, ": tensors must be floating point, got ",
                t->scalar_type());
  }
}

DascDims check_dasc_gate(const at::Tensor& f_m1, const at::Tensor& f_m2, const at::Tensor& f_de,
                         const at::Tensor& w_d, const at::Tensor& w_de, const at::Tensor& b_in,
                         const at::Tensor& w_att, const at::Tensor& b_att) {
  constexpr const char* op = "mdanet::dasc_gate";
  check_same_device(op, f_m1, {&f_m1, &f_m2, &f_de, &w_d, &w_de, &b_in, &w_att, &b_att});
  TORCH_CHECK(f_m1.dim() == 4, op, ": f_m1 must be (B, C, H, W), got ", f_m1.sizes());
  TORCH_CHECK(f_m2.sizes() == f_m1.sizes(), op, ": f_m2 must have the shape of f_m1 ", f_m1.sizes(), ", got ",
              f_m2.sizes());
  TORCH_CHECK(f_de.dim() == 4 && f_de.size(0) == f_m1.size(0) && f_de.size(2) == f_m1.size(2) &&
                  f_de.size(3) == f_m1.size(3),
              op, ": f_de must be (B, C_de, H, W) with B, H, W of f_m1 ", f_m1.sizes(), ", got ", f_de.sizes());
  TORCH_CHECK(f_m2.scalar_type() == f_m1.scalar_type() && f_de.scalar_type() == f_m1.scalar_type(), op,
              ": f_m1, f_m2 and f_de must share one dtype");
  const int64_t channels = f_m1.size(1), de_channels = f_de.size(1);
  TORCH_CHECK(w_d.dim() == 2 && w_d.size(1) == channels, op, ": w_d must be (C_i, C=", channels, "), got ",
              w_d.sizes());
  const int64_t inter = w_d.size(0);
  TORCH_CHECK(w_de.dim() == 2 && w_de.size(0) == inter && w_de.size(1) == de_channels, op,
              ": w_de must be (C_i=", inter, ", C_de=", de_channels, "), got ", w_de.sizes());
  TORCH_CHECK(b_in.dim() == 1 && b_in.size(0) == inter, op, ": b_in must be (C_i=", inter, ",), got ",
              b_in.sizes());
  TORCH_CHECK(w_att.dim() == 1 && w_att.size(0) == inter, op, ": w_att must be (C_i=", inter, ",), got ",
              w_att.sizes());
  TORCH_CHECK(b_att.numel() == 1, op, ": b_att must hold one value, got ", b_att.sizes());
  return {f_m1.size(0), channels, de_channels, f_m1.size(2) * f_m1.size(3)};
}

void check_graph_conv(const at::Tensor& g, const at::Tensor& a, const at::Tensor& a_bias, const at::Tensor& w,
                      const at::Tensor& w_bias) {
  constexpr const char* op = "mdanet::graph_conv";
  check_same_device(op, g, {&g, &a, &a_bias, &w, &w_bias});
  TORCH_CHECK(g.dim() == 3, op, ": g must be (B, M, E), got ", g.sizes());
  const int64_t nodes = g.size(1), features = g.size(2);
  TORCH_CHECK(a.dim() == 2 && a.size(0) == nodes && a.size(1) == nodes, op, ": a must be (M, M) with M=", nodes,
              ", got ", a.sizes());
  TORCH_CHECK(a_bias.dim() == 1 && a_bias.size(0) == nodes, op, ": a_bias must be (M=", nodes, ",), got ",
              a_bias.sizes());
  TORCH_CHECK(w.dim() == 2 && w.size(0) == features && w.size(1) == features, op, ": w must be (E, E) with E=",
              features, ", got ", w.sizes());
  TORCH_CHECK(w_bias.dim() == 1 && w_bias.size(0) == features, op, ": w_bias must be (E=", features, ",), got ",
              w_bias.sizes());
}

// [v_d, v_de, c] = [w_dᵀ w_att, w_deᵀ w_att, w_att·b_in + b_att]: θ1 has no nonlinearity after θ2 + θ3, so
// θ1(θ2(F_D) + θ3(F_de)) = v_d·F_D + v_de·F_de + c per pixel, exactly.
at::Tensor dasc_coefficients(const at::Tensor& w_d, const at::Tensor& w_de, const at::Tensor& b_in,
                             const at::Tensor& w_att, const at::Tensor& b_att, at::ScalarType acc) {
  const at::Tensor att = w_att.to(acc);
  const at::Tensor bias = at::dot(att, b_in.to(acc)) + b_att.to(acc).reshape({});
  return at::cat({at::mv(w_d.to(acc).t(), att), at::mv(w_de.to(acc).t(), att), bias.reshape({1})});
}

// (M, M) node mixing of every graph: out[b] = mat @ x[b], as one batched product over the broadcast matrix
// (one parallel region, where a loop of matrix products would synchronise the threads once per graph).
at::Tensor mix_nodes(const at::Tensor& mat, const at::Tensor& x) {
  return at::bmm(mat.expand({x.size(0), mat.size(0), mat.size(1)}), x);
}

at::Tensor identity_minus(const at::Tensor& a, at::ScalarType dtype) {
  at::Tensor ia = a.to(dtype).neg();
  ia.diagonal().add_(1);
  return ia;
}

}  // namespace

at::Tensor dasc_gate_forward(const at::Tensor& f_m1, const at::Tensor& f_m2, const at::Tensor& f_de,
                             const at::Tensor& w_d, const at::Tensor& w_de, const at::Tensor& b_in,
                             const at::Tensor& w_att, const at::Tensor& b_att, DascForwardKernel kernel,
                             bool reads_channels_last) {
  DascDims dims = check_dasc_gate(f_m1, f_m2, f_de, w_d, w_de, b_in, w_att, b_att);
  const at::Tensor coef = dasc_coefficients(w_d, w_de, b_in, w_att, b_att, at::toOpMathType(f_m1.scalar_type()));
  const at::MemoryFormat layout = f_m1.suggest_memory_format();
  dims.channels_last = reads_channels_last && layout == at::MemoryFormat::ChannelsLast;
  const at::MemoryFormat kernel_layout = dims.channels_last ? layout : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty(f_m1.sizes(), f_m1.options().memory_format(kernel_layout));
  if (out.numel() > 0) {
    kernel(dims, f_m1.contiguous(kernel_layout), f_m2.contiguous(kernel_layout), f_de.contiguous(kernel_layout), coef,
           out);
  }
  return out.contiguous(layout);
}

DascGrads dasc_gate_backward(const at::Tensor& grad, const at::Tensor& f_m1, const at::Tensor& f_m2,
                             const at::Tensor& f_de, const at::Tensor& w_d, const at::Tensor& w_de,
                             const at::Tensor& b_in, const at::Tensor& w_att, const at::Tensor& b_att,
                             DascBackwardKernel kernel) {
  const DascDims dims = check_dasc_gate(f_m1, f_m2, f_de, w_d, w_de, b_in, w_att, b_att);
  TORCH_CHECK(grad.sizes() == f_m1.sizes() && grad.device() == f_m1.device(),
              "mdanet::dasc_gate_backward: grad must match f_m1 ", f_m1.sizes(), ", got ", grad.sizes());
  const at::ScalarType acc = at::toOpMathType(f_m1.scalar_type());
  const at::Tensor coef = dasc_coefficients(w_d, w_de, b_in, w_att, b_att, acc);
  const auto contiguous = f_m1.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor grad_m1 = at::empty(f_m1.sizes(), contiguous);
  at::Tensor grad_m2 = at::empty(f_m1.sizes(), contiguous);
  at::Tensor grad_de = at::empty(f_de.sizes(), contiguous);
  at::Tensor grad_coef = at::zeros({dims.channels + dims.de_channels + 1}, coef.options());
  if (grad_m1.numel() > 0) {
    kernel(dims, grad.to(f_m1.scalar_type()).contiguous(), f_m1.contiguous(), f_m2.contiguous(),
           f_de.contiguous(), coef, grad_m1, grad_m2, grad_de, grad_coef);
  } else {
    grad_de.zero_();
  }
  // Chain rule through v_d = w_dᵀ w_att, v_de = w_deᵀ w_att, c = w_att·b_in + b_att.
  const at::Tensor g_vd = grad_coef.narrow(0, 0, dims.channels);
  const at::Tensor g_vde = grad_coef.narrow(0, dims.channels, dims.de_channels);
  const at::Tensor g_c = grad_coef.narrow(0, dims.channels + dims.de_channels, 1);
  const at::Tensor att = w_att.to(acc);
  at::Tensor grad_w_att = at::mv(w_d.to(acc), g_vd) + at::mv(w_de.to(acc), g_vde) + b_in.to(acc) * g_c;
  return {grad_m1,
          grad_m2,
          grad_de,
          at::outer(att, g_vd).to(w_d.scalar_type()),
          at::outer(att, g_vde).to(w_de.scalar_type()),
          (att * g_c).to(b_in.scalar_type()),
          grad_w_att.to(w_att.scalar_type()),
          // A copy: a view into grad_coef would not have the storage offset the fake kernel promises.
          g_c.to(b_att.scalar_type(), /*non_blocking=*/false, /*copy=*/true).reshape(b_att.sizes())};
}

at::Tensor graph_conv_forward(const at::Tensor& g, const at::Tensor& a, const at::Tensor& a_bias,
                              const at::Tensor& w, const at::Tensor& w_bias, GraphBiasReluKernel epilogue) {
  check_graph_conv(g, a, a_bias, w, w_bias);
  const int64_t batch = g.size(0), nodes = g.size(1), features = g.size(2);
  const at::ScalarType dtype = g.scalar_type(), acc = at::toOpMathType(dtype);
  // ((I - A) G - b_A 1ᵀ) Wᵀ + 1 b_Wᵀ = (I - A)(G Wᵀ) + (b_W - b_A ⊗ W 1): feature mixing as one product
  // over all B·M nodes, node mixing per graph, and both biases and the ReLU in one epilogue pass.
  const at::Tensor p = at::mm(g.contiguous().view({batch * nodes, features}), w.to(dtype).t())
                           .view({batch, nodes, features});
  at::Tensor q = mix_nodes(identity_minus(a, dtype), p).contiguous();
  if (q.numel() > 0) {
    epilogue(q, a_bias.to(acc).contiguous(), w.to(acc).sum(1), w_bias.to(acc).contiguous());
  }
  return q;
}

GraphGrads graph_conv_backward(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& g,
                               const at::Tensor& a, const at::Tensor& a_bias, const at::Tensor& w,
                               const at::Tensor& w_bias, GraphReluMaskKernel mask) {
  check_graph_conv(g, a, a_bias, w, w_bias);
  TORCH_CHECK(grad.sizes() == g.sizes() && out.sizes() == g.sizes(),
              "mdanet::graph_conv_backward: grad and out must match g ", g.sizes());
  const int64_t batch = g.size(0), nodes = g.size(1), features = g.size(2);
  const at::ScalarType dtype = g.scalar_type(), acc = at::toOpMathType(dtype);
  const at::Tensor gc = g.contiguous();
  const at::Tensor ia = identity_minus(a, dtype);
  // y = h Wᵀ + b_W with h = (I - A) G - b_A; gy = dL/dy through the ReLU.
  const at::Tensor gy = mask(grad.to(dtype).contiguous(), out.to(dtype).contiguous());
  const at::Tensor gy2 = gy.view({batch * nodes, features});
  const at::Tensor grad_h = at::mm(gy2, w.to(dtype)).view({batch, nodes, features});
  at::Tensor h = mix_nodes(ia, gc);
  h.sub_(a_bias.to(dtype).view({nodes, 1}));
  // dL/dA = -Σ_b grad_h[b] g[b]ᵀ = -(grad_h as (M, B·E)) (g as (M, B·E))ᵀ: one product, no B×M×M temporary.
  const at::Tensor grad_a = at::mm(grad_h.permute({1, 0, 2}).reshape({nodes, batch * features}),
                                   gc.permute({1, 0, 2}).reshape({nodes, batch * features}).t())
                                .to(acc)
                                .neg_();
  return {mix_nodes(ia.t(), grad_h),
          grad_a.to(a.scalar_type()),
          grad_h.sum(at::IntArrayRef{0, 2}, false, acc).neg().to(a_bias.scalar_type()),
          at::mm(gy2.t(), h.view({batch * nodes, features})).to(w.scalar_type()),
          gy.sum(at::IntArrayRef{0, 1}, false, acc).to(w_bias.scalar_type())};
}

}  // namespace mdanet

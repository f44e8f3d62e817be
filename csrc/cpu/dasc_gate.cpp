// mdanet::dasc_gate on the CPU: one pass over the features per block of pixels.
//
// The work unit is (one image, a block of pixels): the block's 1 + sigmoid(s) is accumulated channel by channel
// (contiguous pixel rows, vectorised), then the same rows, still in cache, are scaled into the output. Blocks run
// in parallel with at::parallel_for; nothing of feature size is allocated besides the output.
#include "mdanet/ops.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

namespace mdanet {
namespace {

constexpr int64_t kMaxBlock = 1024;

// Pixels per block: the block's f_m1 and f_m2 rows (2·C·block elements) stay within ~256 KiB of cache
// between the two passes.
int64_t block_pixels(int64_t channels, size_t element_size) {
  const int64_t fit = (256 * 1024) / std::max<int64_t>(1, 2 * channels * static_cast<int64_t>(element_size));
  return std::clamp<int64_t>(fit / 16 * 16, 16, kMaxBlock);
}

// One block of pixels of one image: features start at the block's first pixel; rows are `pixels` apart.
template <typename scalar_t>
struct Block {
  const scalar_t* f_m1;
  const scalar_t* f_m2;
  const scalar_t* f_de;
  int64_t n;       // pixels in this block
  int64_t stride;  // H*W: distance between channel rows
};

// s[i] = c + Σ_c v_d[c] (f_m1 - f_m2)[c, i] + Σ_c v_de[c] f_de[c, i], channel by channel.
template <typename scalar_t, typename acc_t>
void block_logits(const Block<scalar_t>& blk, const DascDims& d, const acc_t* coef, acc_t* s) {
  std::fill(s, s + blk.n, coef[d.channels + d.de_channels]);
  for (int64_t c = 0; c < d.channels; ++c) {
    const scalar_t* x1 = blk.f_m1 + c * blk.stride;
    const scalar_t* x2 = blk.f_m2 + c * blk.stride;
    const acc_t v = coef[c];
#pragma omp simd
    for (int64_t i = 0; i < blk.n; ++i) {
      s[i] += v * (static_cast<acc_t>(x1[i]) - static_cast<acc_t>(x2[i]));
    }
  }
  for (int64_t c = 0; c < d.de_channels; ++c) {
    const scalar_t* x = blk.f_de + c * blk.stride;
    const acc_t v = coef[d.channels + c];
#pragma omp simd
    for (int64_t i = 0; i < blk.n; ++i) {
      s[i] += v * static_cast<acc_t>(x[i]);
    }
  }
}

template <typename acc_t>
acc_t sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + std::exp(-x));
}

// Calls fn(task, block, feature offset of the block) for every (image, pixel block), in parallel.
template <typename scalar_t, typename Fn>
void for_each_block(const DascDims& d, const scalar_t* f_m1, const scalar_t* f_m2, const scalar_t* f_de,
                    int64_t block, const Fn& fn) {
  const int64_t per_image = (d.pixels + block - 1) / block;
  at::parallel_for(0, d.batch * per_image, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / per_image, p0 = (task % per_image) * block;
      const int64_t offset = b * d.channels * d.pixels + p0;
      const int64_t de_offset = b * d.de_channels * d.pixels + p0;
      const Block<scalar_t> blk{f_m1 + offset, f_m2 + offset, f_de + de_offset, std::min(block, d.pixels - p0),
                                d.pixels};
      fn(task, blk, offset, de_offset);
    }
  });
}

template <typename scalar_t>
void forward_kernel(const DascDims& d, const scalar_t* f_m1, const scalar_t* f_m2, const scalar_t* f_de,
                    const at::opmath_type<scalar_t>* coef, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t block = block_pixels(d.channels, sizeof(scalar_t));
  for_each_block(d, f_m1, f_m2, f_de, block, [&](int64_t, const Block<scalar_t>& blk, int64_t offset, int64_t) {
    acc_t scale[kMaxBlock];
    block_logits(blk, d, coef, scale);
    for (int64_t i = 0; i < blk.n; ++i) {
      scale[i] = acc_t(1) + sigmoid(scale[i]);
    }
    for (int64_t c = 0; c < d.channels; ++c) {
      const scalar_t* x1 = blk.f_m1 + c * blk.stride;
      const scalar_t* x2 = blk.f_m2 + c * blk.stride;
      scalar_t* y = out + offset + c * blk.stride;
#pragma omp simd
      for (int64_t i = 0; i < blk.n; ++i) {
        y[i] = static_cast<scalar_t>((static_cast<acc_t>(x1[i]) - static_cast<acc_t>(x2[i])) * scale[i]);
      }
    }
  });
}

// Per block: recompute att = sigmoid(s), gs = att (1 - att) Σ_c grad·f_d, write the feature gradients and
// this block's partial sums of [gs·f_d, gs·f_de, gs] into partials[task] (summed over tasks afterwards, in a
// fixed order, so the result does not depend on the thread count).
template <typename scalar_t>
void backward_kernel(const DascDims& d, const scalar_t* grad, const scalar_t* f_m1, const scalar_t* f_m2,
                     const scalar_t* f_de, const at::opmath_type<scalar_t>* coef, scalar_t* grad_m1,
                     scalar_t* grad_m2, scalar_t* grad_de, at::opmath_type<scalar_t>* partials) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t block = block_pixels(d.channels, sizeof(scalar_t));
  const int64_t width = d.channels + d.de_channels + 1;
  for_each_block(d, f_m1, f_m2, f_de, block,
                 [&](int64_t task, const Block<scalar_t>& blk, int64_t offset, int64_t de_offset) {
    acc_t scale[kMaxBlock], gs[kMaxBlock];
    block_logits(blk, d, coef, scale);
    std::fill(gs, gs + blk.n, acc_t(0));
    for (int64_t c = 0; c < d.channels; ++c) {
      const scalar_t* x1 = blk.f_m1 + c * blk.stride;
      const scalar_t* x2 = blk.f_m2 + c * blk.stride;
      const scalar_t* gy = grad + offset + c * blk.stride;
#pragma omp simd
      for (int64_t i = 0; i < blk.n; ++i) {
        gs[i] += static_cast<acc_t>(gy[i]) * (static_cast<acc_t>(x1[i]) - static_cast<acc_t>(x2[i]));
      }
    }
    acc_t* part = partials + task * width;
    acc_t gs_sum = 0;
    for (int64_t i = 0; i < blk.n; ++i) {
      const acc_t att = sigmoid(scale[i]);
      scale[i] = acc_t(1) + att;
      gs[i] *= att * (acc_t(1) - att);
      gs_sum += gs[i];
    }
    part[d.channels + d.de_channels] = gs_sum;
    for (int64_t c = 0; c < d.channels; ++c) {
      const int64_t row = offset + c * blk.stride;
      const scalar_t* x1 = blk.f_m1 + c * blk.stride;
      const scalar_t* x2 = blk.f_m2 + c * blk.stride;
      const acc_t v = coef[c];
      acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < blk.n; ++i) {
        const acc_t fd = static_cast<acc_t>(x1[i]) - static_cast<acc_t>(x2[i]);
        const acc_t g = static_cast<acc_t>(grad[row + i]) * scale[i] + gs[i] * v;
        grad_m1[row + i] = static_cast<scalar_t>(g);
        grad_m2[row + i] = static_cast<scalar_t>(-g);
        sum += gs[i] * fd;
      }
      part[c] = sum;
    }
    for (int64_t c = 0; c < d.de_channels; ++c) {
      const int64_t row = de_offset + c * blk.stride;
      const acc_t v = coef[d.channels + c];
      acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < blk.n; ++i) {
        grad_de[row + i] = static_cast<scalar_t>(gs[i] * v);
        sum += gs[i] * static_cast<acc_t>(f_de[row + i]);
      }
      part[d.channels + c] = sum;
    }
  });
}

// channels_last (NHWC) features: each pixel's channels are contiguous, so a pixel is two dot products over its
// channel row, then one scaled pass over the same row (still in L1). No layout copy on either side.
template <typename scalar_t>
void forward_kernel_channels_last(const DascDims& d, const scalar_t* f_m1, const scalar_t* f_m2,
                                  const scalar_t* f_de, const at::opmath_type<scalar_t>* coef, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = d.channels, de_channels = d.de_channels;
  const acc_t* v_d = coef;
  const acc_t* v_de = coef + channels;
  const acc_t bias = coef[channels + de_channels];
  at::parallel_for(0, d.batch * d.pixels, 256, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const scalar_t* x1 = f_m1 + p * channels;
      const scalar_t* x2 = f_m2 + p * channels;
      const scalar_t* de = f_de + p * de_channels;
      acc_t s = bias;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < channels; ++c) {
        s += v_d[c] * (static_cast<acc_t>(x1[c]) - static_cast<acc_t>(x2[c]));
      }
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < de_channels; ++c) {
        s += v_de[c] * static_cast<acc_t>(de[c]);
      }
      const acc_t scale = acc_t(1) + sigmoid(s);
      scalar_t* y = out + p * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        y[c] = static_cast<scalar_t>((static_cast<acc_t>(x1[c]) - static_cast<acc_t>(x2[c])) * scale);
      }
    }
  });
}

void forward_cpu(const DascDims& d, const at::Tensor& f_m1, const at::Tensor& f_m2, const at::Tensor& f_de,
                 const at::Tensor& coef, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f_m1.scalar_type(), "mdanet::dasc_gate", [&] {
    const auto kernel = d.channels_last ? forward_kernel_channels_last<scalar_t> : forward_kernel<scalar_t>;
    kernel(d, f_m1.const_data_ptr<scalar_t>(), f_m2.const_data_ptr<scalar_t>(), f_de.const_data_ptr<scalar_t>(),
           coef.const_data_ptr<at::opmath_type<scalar_t>>(), out.mutable_data_ptr<scalar_t>());
  });
}

void backward_cpu(const DascDims& d, const at::Tensor& grad, const at::Tensor& f_m1, const at::Tensor& f_m2,
                  const at::Tensor& f_de, const at::Tensor& coef, at::Tensor& grad_m1, at::Tensor& grad_m2,
                  at::Tensor& grad_de, at::Tensor& grad_coef) {
  const int64_t block = block_pixels(d.channels, f_m1.element_size());
  const int64_t tasks = d.batch * ((d.pixels + block - 1) / block);
  at::Tensor partials = at::empty({tasks, grad_coef.size(0)}, grad_coef.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f_m1.scalar_type(), "mdanet::dasc_gate_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t>(d, grad.const_data_ptr<scalar_t>(), f_m1.const_data_ptr<scalar_t>(),
                              f_m2.const_data_ptr<scalar_t>(), f_de.const_data_ptr<scalar_t>(),
                              coef.const_data_ptr<acc_t>(), grad_m1.mutable_data_ptr<scalar_t>(),
                              grad_m2.mutable_data_ptr<scalar_t>(), grad_de.mutable_data_ptr<scalar_t>(),
                              partials.mutable_data_ptr<acc_t>());
  });
  at::sum_out(grad_coef, partials, {0});
}

at::Tensor dasc_gate_cpu(const at::Tensor& f_m1, const at::Tensor& f_m2, const at::Tensor& f_de,
                         const at::Tensor& w_d, const at::Tensor& w_de, const at::Tensor& b_in,
                         const at::Tensor& w_att, const at::Tensor& b_att) {
  return dasc_gate_forward(f_m1, f_m2, f_de, w_d, w_de, b_in, w_att, b_att, forward_cpu,
                           /*reads_channels_last=*/true);
}

DascGrads dasc_gate_backward_cpu(const at::Tensor& grad, const at::Tensor& f_m1, const at::Tensor& f_m2,
                                 const at::Tensor& f_de, const at::Tensor& w_d, const at::Tensor& w_de,
                                 const at::Tensor& b_in, const at::Tensor& w_att, const at::Tensor& b_att) {
  return dasc_gate_backward(grad, f_m1, f_m2, f_de, w_d, w_de, b_in, w_att, b_att, backward_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(mdanet, CPU, m) {
  m.impl("dasc_gate", &dasc_gate_cpu);
  m.impl("dasc_gate_backward", &dasc_gate_backward_cpu);
}

}  // namespace mdanet

// mdanet::dasc_gate on CUDA: plain kernels over raw pointers (declared in mdanet/kernels.h).
//
// Two kinds of kernels (csrc/README.md argues the sizes with the arithmetic):
//  - the channel reduction (logits_kernel): a block owns a tile of kWarp·kVec pixels of one image (lanes on
//    consecutive pixels, so loads stay coalesced) and a chunk of the C + C_de channels, split over its 8 warps and
//    summed across them in shared memory; when one chunk per tile leaves the GPU short of blocks, the chunks go to
//    several blocks, whose partial sums finalize_kernel adds in chunk order. Either way the per-pixel
//    s = c + v_d·(f_m1 - f_m2) + v_de·f_de (and, backward, Σ_c grad·(f_m1 - f_m2)) never depends on timing.
//  - the row kernels (apply_kernel, backward_rows_kernel): a warp per segment of a channel row, 128-bit loads when
//    every pointer is aligned and the rows are a whole number of vectors (scalar loads otherwise). Backward, each
//    segment's share of the weight gradient is summed over its lanes with shuffles, then added atomically (fast)
//    or written to its own slot and summed in a fixed order by reduce_kernel (deterministic).
#include "common.cuh"

namespace mdanet::cuda {
namespace {

using namespace detail;

constexpr int64_t kTargetBlocks = 528;  // channel-reduction blocks wanted: 4 of 256 threads on each of 132 SMs
constexpr int64_t kTargetWarps = 8448;  // row-kernel warps wanted: 64 on each of 132 SMs, every thread slot once
constexpr int64_t kMinChunk = 2 * kWarps;  // channels per reduction block: at least two per warp
constexpr int64_t kMaxChunks = 64;
constexpr int64_t kAlign = 64;  // workspace regions start on multiples of 64 acc elements (>= 256 bytes)

// How a call splits its work, and where its buffers lie in the workspace (offsets in acc elements). A function
// of the dtype's size and the shape only, so the workspace size is known before the pointers are, and the
// partition (hence the deterministic sums' order) is the same on every GPU.
struct DascPlan {
  int64_t tile;       // pixels per channel-reduction block: kWarp · kVec<T>
  int64_t row_tiles;  // tiles per image
  int64_t tiles;      // batch · row_tiles: the channel-reduction (and finalize) blocks along x
  int64_t chunk;      // channels of C + C_de per channel-reduction block
  int64_t chunks;     // blocks along y; > 1 writes partial sums
  int64_t seg;        // pixels per row segment, a multiple of tile
  int64_t segs;       // segments per row
  int64_t scale, gs, partial_s, partial_dot, gs_partials, weight_partials, total;
};

DascPlan make_plan(int element_bytes, const DascShape& d, bool backward, bool deterministic) {
  DascPlan p{};
  const int64_t ctot = d.channels + d.de_channels;
  p.tile = kWarp * (kVectorBytes / element_bytes);
  p.row_tiles = ceil_div(d.pixels, p.tile);
  p.tiles = d.batch * p.row_tiles;
  const int64_t max_chunks = std::min(kMaxChunks, std::max<int64_t>(1, ctot / kMinChunk));
  p.chunks = std::clamp<int64_t>(ceil_div(kTargetBlocks, std::max<int64_t>(p.tiles, 1)), 1, max_chunks);
  p.chunk = std::max<int64_t>(ceil_div(ctot, p.chunks), 1);
  p.chunks = std::max<int64_t>(ceil_div(ctot, p.chunk), 1);
  const int64_t rows = d.batch * (backward ? ctot : d.channels);
  const int64_t row_tiles = std::max<int64_t>(p.row_tiles, 1);
  const int64_t segs = std::clamp<int64_t>(ceil_div(kTargetWarps, std::max<int64_t>(rows, 1)), 1, row_tiles);
  p.seg = ceil_div(row_tiles, segs) * p.tile;
  p.segs = ceil_div(d.pixels, p.seg);
  int64_t end = 0;
  auto take = [&end](int64_t n) {
    const int64_t start = end;
    end += ceil_div(n, kAlign) * kAlign;
    return start;
  };
  const int64_t pixels = d.batch * d.pixels;
  p.scale = take(pixels);
  p.gs = backward ? take(pixels) : 0;
  p.partial_s = p.chunks > 1 ? take(p.chunks * pixels) : 0;
  p.partial_dot = backward && p.chunks > 1 ? take(p.chunks * pixels) : 0;
  p.gs_partials = backward && deterministic ? take(p.tiles) : 0;
  p.weight_partials = backward && deterministic ? take(ctot * d.batch * p.segs) : 0;
  p.total = end;
  return p;
}

// Everything a kernel of one call reads and writes. The backward-only pointers are null in the forward (and grad
// may be null in the backward too, when C == 0 leaves it empty).
template <typename T>
struct DascArgs {
  DascShape d;
  DascPlan plan;
  bool backward;
  const T* f_m1;
  const T* f_m2;
  const T* f_de;
  const acc_t<T>* coef;
  const T* grad;
  acc_t<T>* ws;
  T* out;
  T* grad_m1;
  T* grad_m2;
  T* grad_de;
  acc_t<T>* grad_coef;
  bool deterministic;
};

// End of the channel reduction at pixel p (of batch·pixels), from S = Σ v·f and D = Σ grad·f_d: writes
// scale = 1 + σ(c + S) and, backward, gs = σ(1 - σ) D; returns gs (0 forward).
template <typename T>
__device__ acc_t<T> finish_pixel(const DascArgs<T>& a, int64_t p, acc_t<T> S, acc_t<T> D) {
  using A = acc_t<T>;
  const A att = sigmoid(a.coef[a.d.channels + a.d.de_channels] + S);
  a.ws[a.plan.scale + p] = A(1) + att;
  if (!a.backward) {
    return A(0);
  }
  const A g = D * att * (A(1) - att);
  a.ws[a.plan.gs + p] = g;
  return g;
}

// Backward: the block's Σ gs into the gradient of c, atomically, or into slot blockIdx.x for reduce_kernel.
template <typename T>
__device__ void commit_gs(const DascArgs<T>& a, acc_t<T> local) {
  if (!a.backward) {
    return;  // the same for every thread of the block, so block_sum is reached by all or none
  }
  const acc_t<T> total = block_sum(local);
  if (threadIdx.x == 0) {
    if (a.deterministic) {
      a.ws[a.plan.gs_partials + blockIdx.x] = total;
    } else {
      atomicAdd(a.grad_coef + a.d.channels + a.d.de_channels, total);
    }
  }
}

// Block (tile x, chunk y): warp w sums channels w, w + 8, ... of the chunk for the lanes' pixels; the 8 warps'
// sums are added in warp order. One chunk: finishes the pixels; several: writes the chunk's partial sums.
template <typename T, bool kVector>
__global__ void __launch_bounds__(kThreads) logits_kernel(DascArgs<T> a) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  __shared__ A sum_s[kWarps][kWarp * V];
  __shared__ A sum_dot[kWarps][kWarp * V];
  const DascShape& d = a.d;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t b = blockIdx.x / a.plan.row_tiles, p0 = (blockIdx.x % a.plan.row_tiles) * a.plan.tile;
  const int valid = static_cast<int>(min64(a.plan.tile, d.pixels - p0));
  const int64_t c_begin = blockIdx.y * a.plan.chunk;
  const int64_t c_end = min64(c_begin + a.plan.chunk, d.channels + d.de_channels);
  A s[V] = {}, dot[V] = {};
  for (int64_t c = c_begin + warp; c < c_end; c += kWarps) {
    A x[V], y[V];
    if (c < d.channels) {  // the same for the whole warp
      const int64_t row = (b * d.channels + c) * d.pixels + p0;
      load_lane<kVector>(a.f_m1 + row, lane, valid, x);
      load_lane<kVector>(a.f_m2 + row, lane, valid, y);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        x[j] -= y[j];
      }
      if (a.backward) {
        load_lane<kVector>(a.grad + row, lane, valid, y);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          dot[j] += y[j] * x[j];
        }
      }
    } else {
      load_lane<kVector>(a.f_de + (b * d.de_channels + c - d.channels) * d.pixels + p0, lane, valid, x);
    }
    const A v = a.coef[c];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      s[j] += v * x[j];
    }
  }
#pragma unroll
  for (int j = 0; j < V; ++j) {
    sum_s[warp][lane_element<kVector, V>(lane, j)] = s[j];
    sum_dot[warp][lane_element<kVector, V>(lane, j)] = dot[j];
  }
  __syncthreads();
  A gs_local = 0;
  for (int i = threadIdx.x; i < valid; i += kThreads) {
    A S = 0, D = 0;
    for (int w = 0; w < kWarps; ++w) {
      S += sum_s[w][i];
      D += sum_dot[w][i];
    }
    const int64_t p = b * d.pixels + p0 + i;
    if (gridDim.y == 1) {
      gs_local += finish_pixel(a, p, S, D);
    } else {
      const int64_t at = blockIdx.y * d.batch * d.pixels + p;
      a.ws[a.plan.partial_s + at] = S;
      if (a.backward) {
        a.ws[a.plan.partial_dot + at] = D;
      }
    }
  }
  if (gridDim.y == 1) {
    commit_gs(a, gs_local);
  }
}

// Block x finishes the pixels of tile x from the chunks' partial sums, added in chunk order.
template <typename T>
__global__ void __launch_bounds__(kThreads) finalize_kernel(DascArgs<T> a) {
  using A = acc_t<T>;
  const DascShape& d = a.d;
  const int64_t b = blockIdx.x / a.plan.row_tiles, p0 = (blockIdx.x % a.plan.row_tiles) * a.plan.tile;
  const int valid = static_cast<int>(min64(a.plan.tile, d.pixels - p0));
  const int64_t stride = d.batch * d.pixels;
  A gs_local = 0;
  for (int i = threadIdx.x; i < valid; i += kThreads) {
    const int64_t p = b * d.pixels + p0 + i;
    A S = 0, D = 0;
#pragma unroll 8  // the loads are independent: 8 in flight per thread instead of one L2 round trip each
    for (int64_t k = 0; k < a.plan.chunks; ++k) {
      S += a.ws[a.plan.partial_s + k * stride + p];
      D += a.backward ? a.ws[a.plan.partial_dot + k * stride + p] : A(0);
    }
    gs_local += finish_pixel(a, p, S, D);
  }
  commit_gs(a, gs_local);
}

// Forward rows: unit u = (row b·C + c, segment); out = (f_m1 - f_m2) · scale, a warp per unit.
template <typename T, bool kVector>
__global__ void __launch_bounds__(kThreads) apply_kernel(DascArgs<T> a) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  const DascShape& d = a.d;
  const int lane = threadIdx.x % kWarp;
  const int64_t units = d.batch * d.channels * a.plan.segs;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kWarp; u < units;
       u += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t row = u / a.plan.segs, seg = u % a.plan.segs, b = row / d.channels;
    const int64_t end = min64(d.pixels, (seg + 1) * a.plan.seg);
    for (int64_t q = seg * a.plan.seg; q < end; q += a.plan.tile) {
      const int valid = static_cast<int>(min64(a.plan.tile, end - q));
      A x[V], y[V], sc[V];
      load_lane<kVector>(a.f_m1 + row * d.pixels + q, lane, valid, x);
      load_lane<kVector>(a.f_m2 + row * d.pixels + q, lane, valid, y);
      load_lane<kVector>(a.ws + a.plan.scale + b * d.pixels + q, lane, valid, sc);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        x[j] = (x[j] - y[j]) * sc[j];
      }
      store_lane<kVector>(a.out + row * d.pixels + q, lane, valid, x);
    }
  }
}

// Backward rows: unit u = (b, c of C + C_de, segment), a warp per unit. Rows of f_m1/f_m2 write
// grad_m1 = grad · scale + gs · v_d[c] and grad_m2 = -grad_m1; rows of f_de write grad_de = gs · v_de[c]. The
// unit's Σ gs · f (over its pixels, then over lanes by shuffles) goes to the gradient of coefficient c.
template <typename T, bool kVector>
__global__ void __launch_bounds__(kThreads) backward_rows_kernel(DascArgs<T> a) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  const DascShape& d = a.d;
  const int lane = threadIdx.x % kWarp;
  const int64_t ctot = d.channels + d.de_channels, units = d.batch * ctot * a.plan.segs;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kWarp; u < units;
       u += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t seg = u % a.plan.segs, bc = u / a.plan.segs, b = bc / ctot, c = bc % ctot;
    const int64_t end = min64(d.pixels, (seg + 1) * a.plan.seg);
    const A v = a.coef[c];
    A sum = 0;
    for (int64_t q = seg * a.plan.seg; q < end; q += a.plan.tile) {
      const int valid = static_cast<int>(min64(a.plan.tile, end - q));
      A g[V], x[V], y[V];
      load_lane<kVector>(a.ws + a.plan.gs + b * d.pixels + q, lane, valid, g);
      if (c < d.channels) {  // the same for the whole warp
        const int64_t at = (b * d.channels + c) * d.pixels + q;
        A up[V], sc[V];
        load_lane<kVector>(a.f_m1 + at, lane, valid, x);
        load_lane<kVector>(a.f_m2 + at, lane, valid, y);
        load_lane<kVector>(a.grad + at, lane, valid, up);
        load_lane<kVector>(a.ws + a.plan.scale + b * d.pixels + q, lane, valid, sc);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          sum += g[j] * (x[j] - y[j]);
          x[j] = up[j] * sc[j] + g[j] * v;
          y[j] = -x[j];
        }
        store_lane<kVector>(a.grad_m1 + at, lane, valid, x);
        store_lane<kVector>(a.grad_m2 + at, lane, valid, y);
      } else {
        const int64_t at = (b * d.de_channels + c - d.channels) * d.pixels + q;
        load_lane<kVector>(a.f_de + at, lane, valid, x);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          sum += g[j] * x[j];
          y[j] = g[j] * v;
        }
        store_lane<kVector>(a.grad_de + at, lane, valid, y);
      }
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      if (a.deterministic) {
        a.ws[a.plan.weight_partials + c * d.batch * a.plan.segs + b * a.plan.segs + seg] = sum;
      } else {
        atomicAdd(a.grad_coef + c, sum);
      }
    }
  }
}

// Deterministic backward: block c sums column c of the partials (weights: batch·segs rows; c = C + C_de: the
// tiles' Σ gs) in a fixed order and writes the gradient of coefficient c.
template <typename T>
__global__ void __launch_bounds__(kThreads) reduce_kernel(DascArgs<T> a) {
  using A = acc_t<T>;
  const int64_t col = blockIdx.x, ctot = a.d.channels + a.d.de_channels;
  const int64_t rows = col < ctot ? a.d.batch * a.plan.segs : a.plan.tiles;
  const A* src = a.ws + (col < ctot ? a.plan.weight_partials + col * rows : a.plan.gs_partials);
  A sum = 0;
  for (int64_t r = threadIdx.x; r < rows; r += kThreads) {
    sum += src[r];
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) {
    a.grad_coef[col] = sum;
  }
}

// Whether every feature pointer and the workspace allow 128-bit accesses and the rows are whole vectors.
template <typename T>
bool vector_ok(const DascArgs<T>& a) {
  constexpr int V = kVec<T>;
  return a.d.pixels % V == 0 && aligned(a.f_m1, kVectorBytes) && aligned(a.f_m2, kVectorBytes) &&
         aligned(a.f_de, kVectorBytes) && aligned(a.grad, kVectorBytes) && aligned(a.out, kVectorBytes) &&
         aligned(a.grad_m1, kVectorBytes) && aligned(a.grad_m2, kVectorBytes) && aligned(a.grad_de, kVectorBytes) &&
         aligned(a.ws, sizeof(Vec<acc_t<T>, V>));
}

// Blocks for the row kernels: a warp per unit.
unsigned int row_blocks(int64_t units) {
  return static_cast<unsigned int>(std::min<int64_t>(ceil_div(units, kWarps), int64_t(1) << 20));
}

// The channel reduction for every pixel: scale (and gs, backward) in the workspace.
template <typename T, bool kVector>
void launch_pixels(const DascArgs<T>& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(a.plan.tiles), static_cast<unsigned int>(a.plan.chunks));
  logits_kernel<T, kVector><<<grid, kThreads, 0, stream>>>(a);
  if (a.plan.chunks > 1) {
    finalize_kernel<T><<<static_cast<unsigned int>(a.plan.tiles), kThreads, 0, stream>>>(a);
  }
}

template <typename T, bool kVector>
void launch_forward(const DascArgs<T>& a, cudaStream_t stream) {
  launch_pixels<T, kVector>(a, stream);
  apply_kernel<T, kVector><<<row_blocks(a.d.batch * a.d.channels * a.plan.segs), kThreads, 0, stream>>>(a);
}

template <typename T, bool kVector>
void launch_backward(const DascArgs<T>& a, cudaStream_t stream) {
  const int64_t ctot = a.d.channels + a.d.de_channels;
  launch_pixels<T, kVector>(a, stream);
  backward_rows_kernel<T, kVector><<<row_blocks(a.d.batch * ctot * a.plan.segs), kThreads, 0, stream>>>(a);
  if (a.deterministic) {
    reduce_kernel<T><<<static_cast<unsigned int>(ctot + 1), kThreads, 0, stream>>>(a);
  }
}

// Grid sizes the launches above can express (grid.x < 2^31).
bool launchable(const DascPlan& p, const DascShape& d) {
  constexpr int64_t kMaxGrid = 2147483647;
  return p.tiles <= kMaxGrid && d.channels + d.de_channels + 1 <= kMaxGrid;
}

}  // namespace

std::size_t dasc_gate_workspace_bytes(DType dtype, DascShape shape, bool backward, bool deterministic) {
  const DascPlan plan = make_plan(element_size(dtype), shape, backward, deterministic);
  return static_cast<std::size_t>(plan.total) * (dtype == DType::kFloat64 ? 8 : 4);
}

int dasc_gate_forward(DType dtype, DascShape shape, const void* f_m1, const void* f_m2, const void* f_de,
                      const void* coef, void* workspace, void* out, cudaStream_t stream) {
  if (shape.batch * shape.pixels == 0 || shape.channels == 0) {
    return cudaSuccess;
  }
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const DascPlan plan = make_plan(sizeof(T), shape, false, false);
    if (!launchable(plan, shape)) {
      return static_cast<int>(cudaErrorInvalidValue);
    }
    const DascArgs<T> a{shape,
                        plan,
                        false,
                        static_cast<const T*>(f_m1),
                        static_cast<const T*>(f_m2),
                        static_cast<const T*>(f_de),
                        static_cast<const A*>(coef),
                        nullptr,
                        static_cast<A*>(workspace),
                        static_cast<T*>(out),
                        nullptr,
                        nullptr,
                        nullptr,
                        nullptr,
                        false};
    if (vector_ok(a)) {
      launch_forward<T, true>(a, stream);
    } else {
      launch_forward<T, false>(a, stream);
    }
    return static_cast<int>(cudaGetLastError());
  });
}

int dasc_gate_backward(DType dtype, DascShape shape, const void* grad, const void* f_m1, const void* f_m2,
                       const void* f_de, const void* coef, void* workspace, void* grad_m1, void* grad_m2,
                       void* grad_de, void* grad_coef, bool deterministic, cudaStream_t stream) {
  // With channels == 0 but de_channels > 0, grad_de still has elements: they are written (zeros, as gs is 0).
  if (shape.batch * shape.pixels == 0 || shape.channels + shape.de_channels == 0) {
    return cudaSuccess;
  }
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const DascPlan plan = make_plan(sizeof(T), shape, true, deterministic);
    if (!launchable(plan, shape)) {
      return static_cast<int>(cudaErrorInvalidValue);
    }
    const DascArgs<T> a{shape,
                        plan,
                        true,
                        static_cast<const T*>(f_m1),
                        static_cast<const T*>(f_m2),
                        static_cast<const T*>(f_de),
                        static_cast<const A*>(coef),
                        static_cast<const T*>(grad),
                        static_cast<A*>(workspace),
                        nullptr,
                        static_cast<T*>(grad_m1),
                        static_cast<T*>(grad_m2),
                        static_cast<T*>(grad_de),
                        static_cast<A*>(grad_coef),
                        deterministic};
    if (vector_ok(a)) {
      launch_backward<T, true>(a, stream);
    } else {
      launch_backward<T, false>(a, stream);
    }
    return static_cast<int>(cudaGetLastError());
  });
}

}  // namespace mdanet::cuda

// mdanet::label_components on the CPU: connected components of a 3D mask by union-find, one pass over the
// voxels. Each component is labelled by its smallest flat voxel index + 1, exactly as the reference
// (mdanet_sdk/ops/reference.py label_components), so either gives the same array.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <vector>

namespace mdanet {
namespace {

int64_t find(std::vector<int64_t>& parent, int64_t i) {
  while (parent[i] != i) {
    parent[i] = parent[parent[i]];  // path halving
    i = parent[i];
  }
  return i;
}

// The neighbours already visited (lexicographically before the voxel): faces, or the whole cube (`full`);
// within the axial plane only (`planar`).
std::vector<std::array<int64_t, 3>> backward_offsets(bool full, bool planar) {
  std::vector<std::array<int64_t, 3>> offsets;
  for (int64_t dx = -1; dx <= 0; ++dx) {
    for (int64_t dy = -1; dy <= 1; ++dy) {
      for (int64_t dz = -1; dz <= 1; ++dz) {
        const bool before = dx < 0 || (dx == 0 && (dy < 0 || (dy == 0 && dz < 0)));
        const int64_t steps = (dx != 0) + (dy != 0) + (dz != 0);
        if (before && (full || steps == 1) && !(planar && dz != 0)) offsets.push_back({dx, dy, dz});
      }
    }
  }
  return offsets;
}

at::Tensor label_components_cpu(const at::Tensor& mask, bool full, bool planar) {
  TORCH_CHECK(mask.dim() == 3, "mdanet::label_components: mask must be (X, Y, Z), got ", mask.sizes());
  const at::Tensor m = mask.to(at::kBool).contiguous();
  const int64_t nx = m.size(0), ny = m.size(1), nz = m.size(2);
  const bool* in = m.data_ptr<bool>();
  std::vector<int64_t> parent(static_cast<size_t>(m.numel()));
  const auto offsets = backward_offsets(full, planar);
  for (int64_t x = 0; x < nx; ++x) {
    for (int64_t y = 0; y < ny; ++y) {
      for (int64_t z = 0; z < nz; ++z) {
        const int64_t i = (x * ny + y) * nz + z;
        if (!in[i]) continue;
        parent[i] = i;
        for (const auto& o : offsets) {
          const int64_t a = x + o[0], b = y + o[1], c = z + o[2];
          if (a < 0 || b < 0 || b >= ny || c < 0 || c >= nz) continue;
          const int64_t j = (a * ny + b) * nz + c;
          if (!in[j]) continue;
          const int64_t ri = find(parent, i), rj = find(parent, j);
          if (ri < rj) parent[rj] = ri;  // the smaller index is the root: labels as the reference's
          else if (rj < ri) parent[ri] = rj;
        }
      }
    }
  }
  at::Tensor labels = at::zeros(m.sizes(), m.options().dtype(at::kLong));
  int64_t* out = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < m.numel(); ++i) {
    if (in[i]) out[i] = find(parent, i) + 1;
  }
  return labels;
}

}  // namespace

TORCH_LIBRARY_IMPL(mdanet, CPU, m) { m.impl("label_components", &label_components_cpu); }

}  // namespace mdanet

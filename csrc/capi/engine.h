// The C API's engine: one opened TorchScript artefact, its checked metadata, and the forward over slices.
// Internal to libmdanet (the exported surface is mdanet/mdanet.h); failures are thrown as ApiError.
#pragma once

#include "mdanet/mdanet.h"

#include <torch/script.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace mdanet::capi {

// Newest meta.json artifact_version this library reads (mdanet_sdk.artifact_safety.ARTIFACT_VERSION).
constexpr int32_t kArtifactVersion = 1;

// A failure with the status the C API returns and a one-sentence message.
class ApiError : public std::runtime_error {
 public:
  ApiError(mdanet_status status, const std::string& message) : std::runtime_error(message), status(status) {}
  mdanet_status status;
};

// What an artefact says of itself (meta.json and preprocess.json), checked field by field.
struct Metadata {
  int64_t channels = 0, height = 0, width = 0, classes = 2;
  int64_t batch_min = 1, batch_opt = 1, batch_max = 1;
  std::vector<std::string> modalities;
  std::string precision, ops;
  std::string meta_json, preprocess_json;
};

class Model {
 public:
  // Open `path` on `device`; throws ApiError (file, format, version, operators, device).
  Model(const std::string& path, const std::string& device);

  const Metadata& metadata() const { return meta_; }
  const std::string& device_name() const { return device_name_; }

  // The post-processing the artefact recommends; throws ApiError when it has no volume pipeline.
  mdanet_postprocess recommended() const;

  // Mask (and, when `probability` is not null, probabilities) of one case; see mdanet_segment_volume. Buffers
  // of the caller, in NIfTI voxel order; written only on success. Serialised per model.
  void segment(const float* volumes, int64_t channels, int64_t x, int64_t y, int64_t z, const double* affine,
               const uint8_t* brain_mask, const mdanet_postprocess& settings, uint8_t* mask, float* probability);

  // Logits (batch, K, H, W) of slices (batch, C, H, W), float32 buffers of the caller; `logits` is written only
  // when every chunk succeeded. Serialised per model.
  void run(const float* slices, int64_t batch, float* logits);

 private:
  torch::Tensor forward_chunk(const torch::Tensor& chunk);
  void require_pipeline() const;

  Metadata meta_;
  torch::Device device_;
  std::string device_name_;
  c10::ScalarType dtype_ = torch::kFloat32;
  torch::jit::Module module_;
  std::mutex mutex_;
};

}  // namespace mdanet::capi

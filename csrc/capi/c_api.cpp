// The functions of mdanet/mdanet.h: argument checks, and every exception turned into a status and a message.
#include "mdanet/mdanet.h"

#include "engine.h"

#include <c10/util/Exception.h>

#include <limits>
#include <memory>
#include <mutex>
#include <unordered_set>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <new>
#include <string>

// The handle the header declares opaque.
struct mdanet_model {
  explicit mdanet_model(const std::string& path, const std::string& device) : engine(path, device) {}
  mdanet::capi::Model engine;
};

namespace {

using mdanet::capi::ApiError;

thread_local std::string last_error;

mdanet_status fail(mdanet_status status, const std::string& message) {
  last_error = message;
  return status;
}

constexpr const char* kOutOfHostMemory =
    "out of host memory; free memory, or run fewer slices per call (a volume: tta = 0, or a smaller volume).";
constexpr const char* kOutOfDeviceMemory =
    "out of device memory; use a bigger GPU, or run fewer slices per call (a volume: tta = 0, or a smaller volume).";

// The CPU allocator reports a failure as a plain c10::Error ("can't allocate memory"), and the TorchScript
// interpreter re-raises any error of the program as a runtime error carrying the original text: only the text
// tells an allocation failure from a bug.
const char* out_of_memory(const std::string& what) {
  if (what.find("can't allocate memory") != std::string::npos) return kOutOfHostMemory;
  if (what.find("out of memory") != std::string::npos) return kOutOfDeviceMemory;
  return nullptr;
}

// Run `body`; whatever it throws becomes a status and the thread's last error, never an exception.
template <class Body>
mdanet_status guarded(Body&& body) noexcept {
  try {
    body();
    return MDANET_OK;
  } catch (const ApiError& e) {
    return fail(e.status, e.what());
  } catch (const c10::OutOfMemoryError& e) {
    return fail(MDANET_OUT_OF_MEMORY, kOutOfDeviceMemory);
  } catch (const std::bad_alloc&) {
    return fail(MDANET_OUT_OF_MEMORY, kOutOfHostMemory);
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    if (const char* memory = out_of_memory(what)) return fail(MDANET_OUT_OF_MEMORY, memory);
    return fail(MDANET_RUNTIME_ERROR, "the model failed: " + what.substr(0, what.find('\n')));
  } catch (const std::exception& e) {
    if (const char* memory = out_of_memory(e.what())) return fail(MDANET_OUT_OF_MEMORY, memory);
    return fail(MDANET_INTERNAL_ERROR, std::string("libmdanet failed unexpectedly: ") + e.what());
  } catch (...) {
    return fail(MDANET_INTERNAL_ERROR, "libmdanet failed unexpectedly (an unknown exception).");
  }
}

void require(bool ok, const char* message) {
  if (!ok) throw ApiError(MDANET_INVALID_ARGUMENT, message);
}

// The handles mdanet_open gave and mdanet_close has not taken back: a closed or made-up handle is a status and a
// sentence, not a read of freed memory (and a second mdanet_close does nothing).
std::mutex open_mutex;
std::unordered_set<const mdanet_model*> open_models;

void require_open(const mdanet_model* model) {
  require(model != nullptr, "model is NULL; open it with mdanet_open first.");
  std::lock_guard<std::mutex> lock(open_mutex);
  if (open_models.count(model) == 0) {
    throw ApiError(MDANET_INVALID_ARGUMENT, "model is not an open handle (closed already?); open it with mdanet_open.");
  }
}

// n * m * ..., refusing an overflow of int64 (a hostile or mistaken batch must not wrap to a small number).
int64_t product(std::initializer_list<int64_t> factors) {
  int64_t total = 1;
  for (const int64_t f : factors) {
    require(f >= 0 && (f == 0 || total <= std::numeric_limits<int64_t>::max() / f),
            "the buffer size overflows: batch is too large.");
    total *= f;
  }
  return total;
}

}  // namespace

extern "C" {

const char* mdanet_version(void) { return MDANET_VERSION; }

int32_t mdanet_api_version(void) { return MDANET_API_VERSION; }

int32_t mdanet_artifact_version(void) { return mdanet::capi::kArtifactVersion; }

const char* mdanet_last_error(void) { return last_error.c_str(); }

mdanet_status mdanet_retain_cpu_memory(void) {
#if defined(__GLIBC__)
  // Never trim the heap, then no per-allocation mmap (mdanet_sdk.device.retain_cpu_memory does the same): a
  // refused first setting leaves malloc as it was.
  if (mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) != 1) {
    return fail(MDANET_UNAVAILABLE, "glibc refused the malloc settings; nothing changed, the models run as before.");
  }
  if (mallopt(M_MMAP_MAX, 0) != 1) {
    return fail(MDANET_UNAVAILABLE, "glibc kept large blocks in mmap; freed heap memory is kept, the models run.");
  }
  return MDANET_OK;
#else
  return fail(MDANET_UNAVAILABLE, "keeping freed memory needs glibc's malloc, which this process does not use; "
                                  "the models run as before.");
#endif
}

const char* mdanet_status_name(mdanet_status status) {
  switch (status) {
    case MDANET_OK: return "MDANET_OK";
    case MDANET_INVALID_ARGUMENT: return "MDANET_INVALID_ARGUMENT";
    case MDANET_FILE_ERROR: return "MDANET_FILE_ERROR";
    case MDANET_INVALID_ARTIFACT: return "MDANET_INVALID_ARTIFACT";
    case MDANET_UNAVAILABLE: return "MDANET_UNAVAILABLE";
    case MDANET_RUNTIME_ERROR: return "MDANET_RUNTIME_ERROR";
    case MDANET_OUT_OF_MEMORY: return "MDANET_OUT_OF_MEMORY";
    case MDANET_INTERNAL_ERROR: return "MDANET_INTERNAL_ERROR";
  }
  return "MDANET_UNKNOWN_STATUS";
}

mdanet_status mdanet_open(const char* path, const char* device, mdanet_model** model) {
  if (model != nullptr) *model = nullptr;
  return guarded([&] {
    require(model != nullptr, "mdanet_open needs a place for the handle: model is NULL.");
    require(path != nullptr && *path != '\0', "mdanet_open needs the artefact's path: path is NULL or empty.");
    auto opened = std::make_unique<mdanet_model>(path, device == nullptr ? "cpu" : device);
    std::lock_guard<std::mutex> lock(open_mutex);
    open_models.insert(opened.get());
    *model = opened.release();
  });
}

void mdanet_close(mdanet_model* model) {
  {
    std::lock_guard<std::mutex> lock(open_mutex);
    if (open_models.erase(model) == 0) return;  // NULL, or closed already
  }
  delete model;
}

mdanet_status mdanet_model_input_shape(const mdanet_model* model, int64_t* channels, int64_t* height,
                                       int64_t* width) {
  return guarded([&] {
    require_open(model);
    require(channels != nullptr && height != nullptr && width != nullptr, "an output pointer is NULL.");
    const auto& m = model->engine.metadata();
    *channels = m.channels;
    *height = m.height;
    *width = m.width;
  });
}

mdanet_status mdanet_model_num_classes(const mdanet_model* model, int64_t* classes) {
  return guarded([&] {
    require_open(model);
    require(classes != nullptr, "classes is NULL.");
    *classes = model->engine.metadata().classes;
  });
}

mdanet_status mdanet_model_modality(const mdanet_model* model, int64_t index, const char** name) {
  return guarded([&] {
    require_open(model);
    require(name != nullptr, "name is NULL.");
    const auto& modalities = model->engine.metadata().modalities;
    if (index < 0 || index >= static_cast<int64_t>(modalities.size())) {
      throw ApiError(MDANET_INVALID_ARGUMENT, "modality index " + std::to_string(index) + " is outside 0.." +
                                                  std::to_string(modalities.size() - 1) + ".");
    }
    *name = modalities[static_cast<size_t>(index)].c_str();
  });
}

mdanet_status mdanet_model_batch_range(const mdanet_model* model, int64_t* min, int64_t* opt, int64_t* max) {
  return guarded([&] {
    require_open(model);
    require(min != nullptr && opt != nullptr && max != nullptr, "an output pointer is NULL.");
    const auto& m = model->engine.metadata();
    *min = m.batch_min;
    *opt = m.batch_opt;
    *max = m.batch_max;
  });
}

mdanet_status mdanet_model_precision(const mdanet_model* model, const char** precision) {
  return guarded([&] {
    require_open(model);
    require(precision != nullptr, "precision is NULL.");
    *precision = model->engine.metadata().precision.c_str();
  });
}

mdanet_status mdanet_model_device(const mdanet_model* model, const char** device) {
  return guarded([&] {
    require_open(model);
    require(device != nullptr, "device is NULL.");
    *device = model->engine.device_name().c_str();
  });
}

mdanet_status mdanet_model_preprocess_json(const mdanet_model* model, const char** json) {
  return guarded([&] {
    require_open(model);
    require(json != nullptr, "json is NULL.");
    *json = model->engine.metadata().preprocess_json.c_str();
  });
}

mdanet_status mdanet_model_meta_json(const mdanet_model* model, const char** json) {
  return guarded([&] {
    require_open(model);
    require(json != nullptr, "json is NULL.");
    *json = model->engine.metadata().meta_json.c_str();
  });
}

mdanet_status mdanet_model_postprocess(const mdanet_model* model, mdanet_postprocess* settings) {
  return guarded([&] {
    require_open(model);
    require(settings != nullptr, "settings is NULL.");
    *settings = model->engine.recommended();
  });
}

mdanet_status mdanet_segment_volume(mdanet_model* model, const float* volumes, int64_t channels, int64_t x,
                                    int64_t y, int64_t z, const double* affine, const uint8_t* brain_mask,
                                    const mdanet_postprocess* settings, uint8_t* mask, float* probability) {
  return guarded([&] {
    require_open(model);
    require(volumes != nullptr, "volumes is NULL; pass the modalities' voxels (C x X x Y x Z float32).");
    require(affine != nullptr, "affine is NULL; pass the 16 values of the 4x4 voxel-to-world matrix.");
    require(mask != nullptr, "mask is NULL; pass a uint8 buffer of X x Y x Z values for the result.");
    require(affine[12] == 0.0 && affine[13] == 0.0 && affine[14] == 0.0 && affine[15] == 1.0,
            "the affine's last row must be 0 0 0 1; pass the 4x4 voxel-to-world matrix row by row.");
    const auto& m = model->engine.metadata();
    if (channels != m.channels) {
      throw ApiError(MDANET_INVALID_ARGUMENT, "the model reads " + std::to_string(m.channels) +
                                                  " modalities, given " + std::to_string(channels) +
                                                  "; pass them in mdanet_model_modality order.");
    }
    require(x > 0 && y > 0 && z > 0, "x, y and z must be at least 1.");
    product({channels, x, y, z});  // refuses sizes whose product overflows
    const mdanet_postprocess chosen = settings != nullptr ? *settings : model->engine.recommended();
    require(chosen.threshold > 0.0 && chosen.threshold < 1.0, "settings.threshold must be between 0 and 1.");
    require(chosen.min_size >= 0, "settings.min_size must be 0 or more voxels.");
    require(chosen.max_adc_ratio >= 0.0 && chosen.max_adc_ratio <= 10.0,
            "settings.max_adc_ratio must be 0 (off) or positive, up to 10.");
    model->engine.segment(volumes, channels, x, y, z, affine, brain_mask, chosen, mask, probability);
  });
}

mdanet_status mdanet_run_slices(mdanet_model* model, const float* slices, int64_t batch, int64_t slices_len,
                                float* logits, int64_t logits_len) {
  return guarded([&] {
    require_open(model);
    require(slices != nullptr && logits != nullptr, "slices or logits is NULL.");
    require(batch > 0, "batch must be at least 1.");
    const auto& m = model->engine.metadata();
    const int64_t want_in = product({batch, m.channels, m.height, m.width});
    const int64_t want_out = product({batch, m.classes, m.height, m.width});
    if (slices_len != want_in) {
      throw ApiError(MDANET_INVALID_ARGUMENT,
                     "slices_len is " + std::to_string(slices_len) + " but " + std::to_string(batch) + " slices of " +
                         std::to_string(m.channels) + "x" + std::to_string(m.height) + "x" + std::to_string(m.width) +
                         " (C x H x W: one channel per modality) are " + std::to_string(want_in) + " values.");
    }
    if (logits_len != want_out) {
      throw ApiError(MDANET_INVALID_ARGUMENT,
                     "logits_len is " + std::to_string(logits_len) + " but the logits of " + std::to_string(batch) +
                         " slices (" + std::to_string(m.classes) + "x" + std::to_string(m.height) + "x" +
                         std::to_string(m.width) + " each) are " + std::to_string(want_out) + " values.");
    }
    model->engine.run(slices, batch, logits);
  });
}

}  // extern "C"

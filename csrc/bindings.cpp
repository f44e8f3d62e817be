// mdanet_sdk._C: importing it loads the op library (linked, so its TORCH_LIBRARY registrations run), reports
// how that library was built, and binds the C API's engine (libmdanet, mdanet/mdanet.h) for Python, through
// the C functions themselves, so Python runs exactly what a C caller runs. The ops are torch.ops.mdanet.*,
// never pybind11 functions, so TorchScript, torch.export and C programs see them too.
#include "mdanet/build_info.h"
#include "mdanet/mdanet.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include <stdexcept>
#include <string>

namespace py = pybind11;

namespace {

// A failed C call: "STATUS_NAME: message" (mdanet_sdk.export.engine maps the status to the package's errors).
class EngineError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

void check(mdanet_status status) {
  if (status != MDANET_OK) throw EngineError(std::string(mdanet_status_name(status)) + ": " + mdanet_last_error());
}

// One mdanet_model handle, closed with the Python object.
class Engine {
 public:
  Engine(const std::string& path, const std::string& device) {
    check(mdanet_open(path.c_str(), device.c_str(), &model_));
  }
  ~Engine() { mdanet_close(model_); }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  py::tuple input_shape() const {
    int64_t c = 0, h = 0, w = 0;
    check(mdanet_model_input_shape(model_, &c, &h, &w));
    return py::make_tuple(c, h, w);
  }

  int64_t num_classes() const {
    int64_t k = 0;
    check(mdanet_model_num_classes(model_, &k));
    return k;
  }

  py::list modalities() const {
    int64_t c = 0, h = 0, w = 0;
    check(mdanet_model_input_shape(model_, &c, &h, &w));
    py::list names;
    for (int64_t i = 0; i < c; ++i) {
      const char* name = nullptr;
      check(mdanet_model_modality(model_, i, &name));
      names.append(name);
    }
    return names;
  }

  py::tuple batch_range() const {
    int64_t lo = 0, opt = 0, hi = 0;
    check(mdanet_model_batch_range(model_, &lo, &opt, &hi));
    return py::make_tuple(lo, opt, hi);
  }

  std::string text(mdanet_status (*query)(const mdanet_model*, const char**)) const {
    const char* value = nullptr;
    check(query(model_, &value));
    return value;
  }

  py::dict recommended() const {
    mdanet_postprocess p{};
    check(mdanet_model_postprocess(model_, &p));
    py::dict d;
    d["tta"] = p.tta != 0;
    d["threshold"] = p.threshold;
    d["min_size"] = p.min_size;
    d["max_adc_ratio"] = p.max_adc_ratio;
    return d;
  }

  // Mask and probabilities of one case: volumes float32 (C, Z, Y, X) C-order (NIfTI order per modality), affine
  // (4, 4), brain mask uint8 (Z, Y, X) or None, settings (tta, threshold, min_size, max_adc_ratio) or None.
  py::tuple segment(const py::array_t<float, py::array::c_style | py::array::forcecast>& volumes,
                    const py::array_t<double, py::array::c_style | py::array::forcecast>& affine,
                    const std::optional<py::array_t<uint8_t, py::array::c_style | py::array::forcecast>>& brain,
                    const std::optional<py::tuple>& settings) {
    if (volumes.ndim() != 4) throw std::invalid_argument("volumes must be (C, Z, Y, X)");
    if (affine.ndim() != 2 || affine.shape(0) != 4 || affine.shape(1) != 4) {
      throw std::invalid_argument("affine must be 4 x 4");
    }
    const int64_t c = volumes.shape(0), z = volumes.shape(1), y = volumes.shape(2), x = volumes.shape(3);
    if (brain && (brain->ndim() != 3 || brain->shape(0) != z || brain->shape(1) != y || brain->shape(2) != x)) {
      throw std::invalid_argument("the brain mask must be on the images' grid");
    }
    mdanet_postprocess chosen{};
    if (settings) {
      chosen.tta = (*settings)[0].cast<bool>() ? 1 : 0;
      chosen.threshold = (*settings)[1].cast<double>();
      chosen.min_size = (*settings)[2].cast<int64_t>();
      chosen.max_adc_ratio = (*settings)[3].cast<double>();
    }
    py::array_t<uint8_t> mask({z, y, x});
    py::array_t<float> probability({z, y, x});
    const float* in = volumes.data();
    const double* matrix = affine.data();
    const uint8_t* brain_data = brain ? brain->data() : nullptr;
    uint8_t* mask_data = mask.mutable_data();
    float* prob_data = probability.mutable_data();
    mdanet_status status;
    {
      py::gil_scoped_release released;
      status = mdanet_segment_volume(model_, in, c, x, y, z, matrix, brain_data, settings ? &chosen : nullptr,
                                     mask_data, prob_data);
    }
    check(status);
    return py::make_tuple(mask, probability);
  }

  // Logits (B, K, H, W) of float32 slices (B, C, H, W); the forward runs without the GIL.
  py::array_t<float> run(const py::array_t<float, py::array::c_style | py::array::forcecast>& slices) {
    if (slices.ndim() != 4) throw std::invalid_argument("slices must be (B, C, H, W)");
    const int64_t batch = slices.shape(0), k = num_classes();
    py::array_t<float> logits({batch, k, static_cast<int64_t>(slices.shape(2)), static_cast<int64_t>(slices.shape(3))});
    const float* in = slices.data();
    float* out = logits.mutable_data();
    const int64_t in_len = slices.size(), out_len = logits.size();
    mdanet_status status;
    {
      py::gil_scoped_release released;
      status = mdanet_run_slices(model_, in, batch, in_len, out, out_len);
    }
    check(status);
    return logits;
  }

 private:
  mdanet_model* model_ = nullptr;
};

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Build information of the mdanet op library (the ops are torch.ops.mdanet.*).";
  m.def(
      "build_info",
      [] {
        const mdanet::BuildInfo info = mdanet::build_info();
        py::dict d;
        d["version"] = info.version;
        d["torch_version"] = info.torch_version;
        d["compiler"] = info.compiler;
        d["cuda"] = info.cuda;
        d["cuda_version"] = info.cuda_version;
        d["cuda_archs"] = info.cuda_archs;
        d["openmp"] = info.openmp;
        d["num_threads"] = info.num_threads;
        d["library_path"] = info.library_path;
        return d;
      },
      "Build information of the op library: version, torch_version, compiler, cuda, cuda_version, "
      "cuda_archs, openmp (the _OPENMP date, 0 without), num_threads (ATen intra-op threads now), "
      "library_path.");
  m.def(
      "library_path", [] { return mdanet::build_info().library_path; },
      "Path of the op library (for torch.ops.load_library or a C++ program).");

  py::register_exception<EngineError>(m, "EngineError");
  m.def("c_api_version", [] { return mdanet_api_version(); }, "MDANET_API_VERSION of libmdanet.");
  m.def("c_library_version", [] { return std::string(mdanet_version()); }, "Release libmdanet was built from.");
  py::class_<Engine>(m, "Engine", "An artefact opened through libmdanet's C API (mdanet_open).")
      .def(py::init<const std::string&, const std::string&>(), py::arg("path"), py::arg("device") = "cpu")
      .def_property_readonly("input_shape", &Engine::input_shape)
      .def_property_readonly("num_classes", &Engine::num_classes)
      .def_property_readonly("modalities", &Engine::modalities)
      .def_property_readonly("batch_range", &Engine::batch_range)
      .def_property_readonly("precision", [](const Engine& e) { return e.text(mdanet_model_precision); })
      .def_property_readonly("device", [](const Engine& e) { return e.text(mdanet_model_device); })
      .def_property_readonly("meta_json", [](const Engine& e) { return e.text(mdanet_model_meta_json); })
      .def_property_readonly("preprocess_json", [](const Engine& e) { return e.text(mdanet_model_preprocess_json); })
      .def_property_readonly("postprocess", &Engine::recommended)
      .def("segment", &Engine::segment, py::arg("volumes"), py::arg("affine"), py::arg("brain_mask") = py::none(),
           py::arg("settings") = py::none(),
           "(mask, probability) (Z, Y, X) of volumes (C, Z, Y, X) in NIfTI order (mdanet_segment_volume).")
      .def("run", &Engine::run, py::arg("slices"), "Logits (B, K, H, W) of float32 slices (B, C, H, W).");
}

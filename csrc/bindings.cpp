// mdanet_sdk._C: importing it loads the op library (linked, so its TORCH_LIBRARY registrations run) and
// reports how that library was built. The ops themselves are torch.ops.mdanet.*, never pybind11 functions,
// so TorchScript, torch.export and the C++ runner see them too.
#include "mdanet/build_info.h"

#include <pybind11/pybind11.h>

namespace py = pybind11;

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
}

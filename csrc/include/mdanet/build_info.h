// What the op library was built with. Plain C++ (no torch headers) so the pybind11 module that reports it
// (csrc/bindings.cpp) compiles quickly.
#pragma once

#include <string>

namespace mdanet {

struct BuildInfo {
  std::string version;         // mdanet-sdk version the library was built for
  std::string torch_version;   // torch the library was compiled against (must match at run time)
  std::string compiler;        // C++ compiler id and version
  bool cuda = false;           // whether the CUDA kernels are compiled in
  std::string cuda_version;    // nvcc version, empty without CUDA
  std::string cuda_archs;      // CUDA architectures, e.g. "80,90", empty without CUDA
  int openmp = 0;              // _OPENMP of the CPU kernels (0: built without OpenMP)
  int num_threads = 0;         // ATen intra-op threads at the time of the call
  std::string library_path;    // file the op library was loaded from
};

// Build information of the loaded op library.
BuildInfo build_info();

}  // namespace mdanet

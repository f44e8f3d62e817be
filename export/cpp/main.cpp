// mdanet_run: run an MDANet TorchScript artefact (`mdanet-sdk export --format torchscript`) without Python.
//
//   mdanet_run MODEL.ts INPUT.f32 OUTPUT.f32 [--device cpu|cuda] [--ops-library LIB]
//
// INPUT.f32 holds B preprocessed slices, raw little-endian float32 in (B, C, H, W) order; C, H and W are read
// from the artefact's metadata (mdanet/meta.json), so B = file size / (4 C H W). OUTPUT.f32 receives the
// logits, raw float32 (B, K, H, W). Batches beyond the artefact's max batch run in chunks, batches below its
// min batch are zero-padded. The mdanet:: custom ops come from the op library the program was linked with
// (MDANET_OPS_LIBRARY at configure time) or from --ops-library, loaded with dlopen before the model.

#include <torch/script.h>

#include <dlfcn.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Meta {
  int64_t channels = 0, height = 0, width = 0;
  int64_t min_batch = 1, max_batch = 1;
  c10::ScalarType dtype = torch::kFloat32;
};

// The one integer after "key": in the JSON written by mdanet_sdk.export (flat keys, json.dumps spacing).
int64_t json_int(const std::string& json, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + key + "\":\\s*(\\d+)"))) {
    throw std::runtime_error("artefact metadata lacks \"" + key + "\"; re-export it with mdanet-sdk export");
  }
  return std::stoll(m[1].str());
}

Meta parse_meta(const std::string& json) {
  Meta meta;
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"input_shape\":\\s*\\[(\\d+),\\s*(\\d+),\\s*(\\d+)\\]"))) {
    throw std::runtime_error("artefact metadata lacks input_shape; is this an mdanet-sdk TorchScript artefact?");
  }
  meta.channels = std::stoll(m[1].str());
  meta.height = std::stoll(m[2].str());
  meta.width = std::stoll(m[3].str());
  meta.min_batch = json_int(json, "min");
  meta.max_batch = json_int(json, "max");
  if (std::regex_search(json, m, std::regex("\"precision\":\\s*\"(\\w+)\""))) {
    const std::string p = m[1].str();
    meta.dtype = p == "fp16" ? torch::kFloat16 : p == "bf16" ? torch::kBFloat16 : torch::kFloat32;
  }
  return meta;
}

std::vector<float> read_floats(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open input " + path);
  const std::streamsize bytes = in.tellg();
  if (bytes % sizeof(float) != 0) throw std::runtime_error(path + " is not raw float32 (size not a multiple of 4)");
  std::vector<float> data(static_cast<size_t>(bytes) / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(data.data()), bytes);
  return data;
}

void write_floats(const std::string& path, const torch::Tensor& t) {
  // Write under a temporary name and rename, so a failed run never leaves a truncated output.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out.write(reinterpret_cast<const char*>(t.data_ptr<float>()),
              static_cast<std::streamsize>(t.numel() * sizeof(float)));
    if (!out) throw std::runtime_error("cannot write " + path);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot move output to " + path);
}

int usage() {
  std::cerr << "usage: mdanet_run MODEL.ts INPUT.f32 OUTPUT.f32 [--device cpu|cuda] [--ops-library LIB]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage();
  const std::string model_path = argv[1], input_path = argv[2], output_path = argv[3];
  std::string device_name = "cpu", ops_library;
  for (int i = 4; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--device" && i + 1 < argc) {
      device_name = argv[++i];
    } else if (arg == "--ops-library" && i + 1 < argc) {
      ops_library = argv[++i];
    } else {
      return usage();
    }
  }
  try {
    // RTLD_GLOBAL so the library's TORCH_LIBRARY registrations land in the one op registry of libtorch.
    if (!ops_library.empty() && dlopen(ops_library.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
      throw std::runtime_error(std::string("cannot load op library: ") + dlerror());
    }
    const torch::Device device(device_name);
    torch::jit::ExtraFilesMap extra{{"mdanet/meta.json", ""}};
    torch::jit::Module module = torch::jit::load(model_path, device, extra);
    module.eval();
    const Meta meta = parse_meta(extra["mdanet/meta.json"]);

    std::vector<float> data = read_floats(input_path);
    const int64_t per_slice = meta.channels * meta.height * meta.width;
    if (data.empty() || static_cast<int64_t>(data.size()) % per_slice != 0) {
      throw std::runtime_error(input_path + " holds " + std::to_string(data.size()) +
                               " floats, not a whole number of slices of " + std::to_string(meta.channels) + "x" +
                               std::to_string(meta.height) + "x" + std::to_string(meta.width));
    }
    const int64_t batch = static_cast<int64_t>(data.size()) / per_slice;
    const torch::Tensor input =
        torch::from_blob(data.data(), {batch, meta.channels, meta.height, meta.width}, torch::kFloat32);

    c10::InferenceMode guard;
    const auto start = std::chrono::steady_clock::now();
    std::vector<torch::Tensor> outputs;
    for (const torch::Tensor& chunk : input.split(meta.max_batch)) {
      const int64_t n = chunk.size(0);
      torch::Tensor x = chunk.to(device, meta.dtype);
      if (n < meta.min_batch) {
        x = torch::cat({x, x.new_zeros({meta.min_batch - n, meta.channels, meta.height, meta.width})});
      }
      outputs.push_back(module.forward({x}).toTensor().slice(0, 0, n).to(torch::kCPU, torch::kFloat32));
    }
    const torch::Tensor logits = torch::cat(outputs).contiguous();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    write_floats(output_path, logits);
    std::cerr << "mdanet_run: " << batch << " slice(s) " << meta.channels << "x" << meta.height << "x" << meta.width
              << " -> logits " << logits.sizes() << " on " << device << " in " << ms << " ms\n";
  } catch (const std::exception& e) {
    // c10::Error messages carry a C++ backtrace; the first line says what went wrong.
    const std::string what = e.what();
    std::cerr << "error: " << what.substr(0, what.find('\n')) << "\n";
    return 1;
  }
  return 0;
}

#pragma once
// --device cpu|cuda for the programs: which kernel backend the model runs on. CUDA exists in
// builds configured with -DTINYLLM_CUDA=ON (tinyllm::cuda defines TINYLLM_WITH_CUDA); elsewhere
// `--device cuda` is an error that says so.
#include <tinyllm/tinyllm.hpp>
#if defined(TINYLLM_WITH_CUDA)
#include <tinyllm/kernels/cuda/backend.hpp>
#endif

#include <CLI/CLI.hpp>

#include <string>

namespace programs {

struct DeviceFlag {
  std::string device = "cpu";

  void add(CLI::App& app) {
    app.add_option("--device", device, "where the model runs: cpu, or cuda (GPU 0; builds with TINYLLM_CUDA)")
        ->check(CLI::IsMember({"cpu", "cuda"}))
        ->capture_default_str();
  }

  // The model at `path`, or the embedded synthetic one when path is empty, on the chosen device.
  tinyllm::LoadedModel load(const std::string& path, const tinyllm::LoadOptions& opt = {}) const {
    if (device == "cuda") {
#if defined(TINYLLM_WITH_CUDA)
      std::string why;
      if (tinyllm::cuda::usable_devices(&why) == 0) throw tinyllm::Error("no usable CUDA device: " + why, "--device cuda");
      return path.empty() ? tinyllm::load_synthetic<tinyllm::CudaBackend>("tiny", tinyllm::DType::F32, 42, opt)
                          : tinyllm::load<tinyllm::CudaBackend>(path, opt);
#else
      throw tinyllm::Error("this build has no CUDA backend", "--device cuda",
                           "a build configured with -DTINYLLM_CUDA=ON");
#endif
    }
    return path.empty() ? tinyllm::load_synthetic("tiny", tinyllm::DType::F32, 42, opt) : tinyllm::load(path, opt);
  }
  // What the programs print beside the CPU's kernel target.
  std::string describe() const {
#if defined(TINYLLM_WITH_CUDA)
    if (device == "cuda") return "cuda (" + tinyllm::cuda::describe_device() + ")";
#endif
    return device;
  }
};

}  // namespace programs

#pragma once
// How the programs load a model: --device cpu|cuda, which kernel backend it runs on, and
// --quantize TYPE, its F32/F16/BF16 matrices quantized as they are loaded (a Hugging Face folder
// straight to Q4_K, say). CUDA exists in builds configured with -DTINYLLM_CUDA=ON (tinyllm::cuda
// defines TINYLLM_WITH_CUDA); elsewhere `--device cuda` is an error that says so.
// Started by mpirun with several processes (builds with TINYLLM_MPI), each process loads its
// rank's share of the model (tensor parallelism); rank 0 goes on as the program while the others
// run its forward passes with it and exit when it ends (serve/rank_leader.hpp).
#include <tinyllm/tinyllm.hpp>
#if defined(TINYLLM_WITH_CUDA)
#include <tinyllm/kernels/cuda/backend.hpp>
#endif
#if defined(TINYLLM_WITH_MPI)
#include <tinyllm/comm/mpi.hpp>
#endif

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "default_model.hpp"

namespace programs {

// A matrix type the matmul takes, by its name in either case ("q4_k", "BF16").
inline tinyllm::DType parse_matrix_type(const std::string& text, const std::string& flag) {
  std::string upper;
  for (char ch : text) upper += char(std::toupper(static_cast<unsigned char>(ch)));
  using tinyllm::DType;
  for (const DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K})
    if (tinyllm::name(t) == upper) return t;
  throw tinyllm::Error(flag + " " + text, "the command line", "f32, f16, bf16, q8_0, q4_0, q4_k, q5_k or q6_k");
}

struct DeviceFlag {
  std::string device = "cpu";
  std::string quantize;

  void add(CLI::App& app) {
    app.add_option("--device", device, "where the model runs: cpu, or cuda (GPU 0; builds with TINYLLM_CUDA)")
        ->check(CLI::IsMember({"cpu", "cuda"}))
        ->capture_default_str();
    app.add_option("--quantize", quantize,
                   "quantize the model's F32/F16/BF16 matrices as it loads: q8_0, q4_0, q4_k, q5_k, q6_k, f16 or bf16");
  }

  // The model at `path`, or when path is empty the default one built into the programs
  // (stories260K, default_model.hpp), on the chosen device.
  tinyllm::LoadedModel load(const std::string& path, tinyllm::LoadOptions opt = {}) const {
    return load_on_device(path.empty() ? Source::embedded : Source::file, path, opt);
  }
  // The embedded random-weight model (tinyllm-synth's "tiny" shape, seed 42), on the chosen device.
  tinyllm::LoadedModel load_synthetic(tinyllm::LoadOptions opt = {}) const { return load_on_device(Source::synthetic, "", opt); }
 private:
  enum class Source { file, embedded, synthetic };

#if defined(TINYLLM_WITH_MPI)
  // The processes mpirun started (Open MPI's or a PMI launcher's variable); 1 without mpirun.
  static int mpi_processes() {
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
      if (const char* v = std::getenv(name)) return std::atoi(v);
    return 1;
  }
  static tinyllm::LoadedModel load_split(Source source, const std::string& path, tinyllm::LoadOptions opt) {
    static tinyllm::MpiCommunicator world;   // MPI ends with the program
    static bool loaded = false;   // the followers follow one model's forward passes
    if (std::exchange(loaded, true))
      throw tinyllm::Error("a second model", "mpirun", "one model per job when split across processes");
    opt.comm = &world;
    if (world.rank() > 0) opt.progress = nullptr;
    tinyllm::LoadedModel lm = load_from<tinyllm::CpuBackend>(source, path, opt);
    if (world.rank() == 0) {
      tinyllm::lead(lm, world);
      return lm;
    }
    // A follower's threads: this machine's cores shared among the ranks on it.
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    const unsigned on_node = local ? unsigned(std::max(1, std::atoi(local))) : 1u;
    {
      tinyllm::ThreadPool pool(std::max(1u, std::thread::hardware_concurrency() / on_node));
      tinyllm::follow_leader(lm, pool, world);
    }
    std::exit(0);
  }
#endif

  template <class Backend>
  static tinyllm::LoadedModel load_from(Source source, const std::string& path, const tinyllm::LoadOptions& opt) {
    switch (source) {
      case Source::file: return tinyllm::load<void, Backend>(path, opt);
      case Source::embedded: {
        const auto bytes = default_model_gguf();
        return tinyllm::load_gguf_bytes<void, Backend>(std::vector<std::byte>(bytes.begin(), bytes.end()), "stories260K (built in)", opt);
      }
      case Source::synthetic: break;
    }
    return tinyllm::load_synthetic<Backend>("tiny", tinyllm::DType::F32, 42, opt);
  }

  tinyllm::LoadedModel load_on_device(Source source, const std::string& path, tinyllm::LoadOptions opt) const {
    if (!quantize.empty()) opt.quantize = parse_matrix_type(quantize, "--quantize");
#if defined(TINYLLM_WITH_MPI)
    if (mpi_processes() > 1) {
      if (device != "cpu") throw tinyllm::Error("tensor parallelism runs on the CPU", "--device " + device, "cpu under mpirun");
      return load_split(source, path, opt);
    }
#endif
    if (device == "cuda") {
#if defined(TINYLLM_WITH_CUDA)
      std::string why;
      if (tinyllm::cuda::usable_devices(&why) == 0) throw tinyllm::Error("no usable CUDA device: " + why, "--device cuda");
      return load_from<tinyllm::CudaBackend>(source, path, opt);
#else
      throw tinyllm::Error("this build has no CUDA backend", "--device cuda",
                           "a build configured with -DTINYLLM_CUDA=ON");
#endif
    }
    return load_from<tinyllm::CpuBackend>(source, path, opt);
  }

 public:
  // What the programs print beside the CPU's kernel target.
  std::string describe() const {
#if defined(TINYLLM_WITH_CUDA)
    if (device == "cuda") return "cuda (" + tinyllm::cuda::describe_device() + ")";
#endif
    return device;
  }
};

}  // namespace programs

// tinyllm-synth: write a seeded random-weight Llama GGUF of a named shape, for tests and benchmarks.
//   tinyllm-synth --shape tinyllama-1.1b --type F32 -o tinyllama-f32.gguf
#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-synth: write a random-weight Llama GGUF"};
  std::string shape = "tiny", type = "F32", out;
  std::uint64_t seed = 42;
  app.add_option("--shape", shape, "tiny, tinyllama-1.1b or llama-7b")->capture_default_str();
  app.add_option("--type", type, "weight type: F32 or F16")->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_option("-o,--output", out, "output .gguf")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    const tinyllm::DType t = type == "F32" ? tinyllm::DType::F32
                           : type == "F16" ? tinyllm::DType::F16
                           : throw tinyllm::Error("unknown --type '" + type + "'", "--type", "F32 or F16");
    tinyllm::GGUFWriter w;
    tinyllm::write_synthetic_llama(w, tinyllm::synthetic_shape(shape), t, seed);
    w.write(out);
    std::fprintf(stderr, "wrote %s\n", out.c_str());
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}

// tinyllm-synth: write a seeded random-weight Llama GGUF of a named shape, for tests and benchmarks.
//   tinyllm-synth --shape tinyllama-1.1b --type Q4_K_M --vocab ggml-vocab-llama-spm.gguf -o tl-q4km.gguf
// --context N writes another context length (e.g. 4096, for long-context benchmarks).
// With --vocab the tokenizer metadata is copied from that GGUF, so llama.cpp loads the file too.
// With --lora-rank R it writes instead a random LoRA adapter of rank R for that shape (all seven
// matrices of every block; --type F32 or F16):
//   tinyllm-synth --shape tinyllama-1.1b --lora-rank 16 --type F16 -o tl-lora16.gguf
// With --hf the same model goes into a Hugging Face folder instead (config.json and
// model.safetensors, --type F32, F16 or BF16), as transformers lays out a Llama: its Q and K rows
// in Hugging Face's order, so that the folder and the GGUF file are one model.
//   tinyllm-synth --shape tinyllama-1.1b --type BF16 --hf -o tl-bf16/
#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <optional>
#include <string>


int main(int argc, char** argv) {
  CLI::App app{"tinyllm-synth: write a random-weight Llama GGUF"};
  std::string shape = "tiny", type = "F32", vocab_path, out;
  std::uint64_t seed = 42;
  std::size_t lora_rank = 0, context = 0;
  app.add_option("--shape", shape, "tiny, small, tinyllama-1.1b, llama-7b, small-moe or olmoe-1b-7b")->capture_default_str();
  app.add_option("--type", type, "F32, F16, Q8_0, Q4_0, Q4_K_M, Q5_K_M or Q6_K")->capture_default_str();
  app.add_option("--vocab", vocab_path, "GGUF file whose tokenizer metadata to copy");
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_option("--lora-rank", lora_rank, "write a LoRA adapter of this rank for the shape instead of a model");
  app.add_option("--context", context, "context length written to the metadata (default: the shape's)");
  bool hf = false;
  app.add_flag("--hf", hf, "write a Hugging Face folder (config.json, model.safetensors; --type F32, F16 or BF16) at -o");
  app.add_option("-o,--output", out, "output .gguf (a folder with --hf)")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    tinyllm::SyntheticShape dims = tinyllm::synthetic_shape(shape);
    if (context > 0) dims.context = context;
    if (dims.n_experts > 0 && (hf || lora_rank > 0))
      throw tinyllm::Error("--shape " + shape + " (a mixture of experts)", hf ? "--hf" : "--lora-rank",
                           "a dense shape: Hugging Face folders and adapters of experts are not written yet");
    std::optional<tinyllm::GGUFFile> vocab;
    if (!vocab_path.empty()) vocab = tinyllm::GGUFFile::open(vocab_path);
    tinyllm::GGUFWriter w;
    if (hf) {
      if (type != "F32" && type != "F16" && type != "BF16") throw tinyllm::Error("--type " + type, "--hf", "F32, F16 or BF16");
      tinyllm::write_synthetic_llama(w, dims, tinyllm::weight_mix(type == "F32" ? "F32" : "F16"),
                                     seed);
      const auto bytes = w.to_bytes();
      tinyllm::write_hf_llama(tinyllm::GGUFFile::parse(bytes, "synthetic"), out, type == "BF16" ? tinyllm::DType::BF16
                                                                          : type == "F16" ? tinyllm::DType::F16
                                                                                          : tinyllm::DType::F32);
      std::fprintf(stderr, "wrote %s\n", out.c_str());
      return 0;
    }
    if (lora_rank > 0 && type != "F32" && type != "F16") throw tinyllm::Error("--type " + type, "--lora-rank", "F32 or F16");
    if (lora_rank > 0)
      tinyllm::write_synthetic_lora(w, dims, lora_rank,
                                    type == "F16" ? tinyllm::DType::F16 : tinyllm::DType::F32, seed);
    else
      tinyllm::write_synthetic_llama(w, dims, tinyllm::weight_mix(type), seed, "llama",
                                   vocab ? &*vocab : nullptr);
    w.write(out);
    std::fprintf(stderr, "wrote %s\n", out.c_str());
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}

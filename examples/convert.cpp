// tinyllm-convert: a Hugging Face folder (config.json, safetensors) written as a GGUF file, as
// llama.cpp's converter writes it for the same architectures (model/convert.hpp), optionally
// with the matrices quantized:
//   tinyllm-convert path/to/folder -o model.gguf [--outtype f32|f16|bf16|q8_0|q4_0|q4_k|q5_k|q6_k]
// The folder's tokenizer.json and chat template become the file's tokenizer metadata; with
// --vocab-only only those are written (no config.json or weights needed), as llama.cpp's
// converter does with --vocab-only. A llama2.c model and its tokenizer become one GGUF file:
//   tinyllm-convert --llama2c stories260K.bin -z tok512.bin -o stories260K.gguf [--name N]
#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>

#include "common/device_flag.hpp"

#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-convert: a Hugging Face folder, or a llama2.c model, as a GGUF file"};
  std::string folder, out, outtype, llama2c, tokenizer, name, license, source;
  bool vocab_only = false;
  auto* folder_opt = app.add_option("folder", folder, "Hugging Face folder (config.json and model.safetensors or its shards)");
  auto* llama2c_opt = app.add_option("--llama2c", llama2c, "a llama2.c model .bin instead of a folder (with -z)");
  folder_opt->excludes(llama2c_opt);
  app.add_option("-z,--tokenizer", tokenizer, "the llama2.c model's tokenizer .bin")->needs(llama2c_opt);
  app.add_option("--name", name, "general.name of a llama2.c model (default: its file name)")->needs(llama2c_opt);
  app.add_option("--license", license, "general.license of a llama2.c model")->needs(llama2c_opt);
  app.add_option("--source", source, "general.source.url of a llama2.c model")->needs(llama2c_opt);
  app.add_option("-o,--output", out, "GGUF file to write")->required();
  app.add_option("--outtype", outtype, "type of the matrices: f32, f16, bf16, q8_0, q4_0, q4_k, q5_k or q6_k "
                                       "(default: the folder's)")->excludes(llama2c_opt);
  app.add_flag("--vocab-only", vocab_only, "write only the tokenizer and chat template (tokenizer.json, tokenizer_config.json)")
      ->excludes(llama2c_opt);
  CLI11_PARSE(app, argc, argv);
  try {
    tinyllm::GGUFWriter w;
    if (!llama2c.empty()) {
      if (tokenizer.empty()) throw tinyllm::Error("a llama2.c model needs its tokenizer", "--llama2c", "-z TOKENIZER.bin");
      tinyllm::convert_llama2c_to_gguf(llama2c, tokenizer, w, name.empty() ? std::filesystem::path(llama2c).stem().string() : name,
                                       license, source);
    } else if (folder.empty()) {
      throw tinyllm::Error("nothing to convert", "tinyllm-convert", "a Hugging Face folder, or --llama2c MODEL.bin -z TOKENIZER.bin");
    } else if (vocab_only) {
      tinyllm::write_gguf_tokenizer(std::filesystem::path(folder), w);
    } else {
      std::optional<tinyllm::DType> type;
      if (!outtype.empty()) type = programs::parse_matrix_type(outtype, "--outtype");
      tinyllm::convert_hf_to_gguf(folder, w, type);
    }
    w.write(out);
    std::fprintf(stderr, "wrote %s\n", out.c_str());
    return 0;
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}

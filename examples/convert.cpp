// tinyllm-convert: a Hugging Face folder (config.json, safetensors) written as a GGUF file, as
// llama.cpp's converter writes it for the same architectures (model/convert.hpp), optionally
// with the matrices quantized:
//   tinyllm-convert path/to/folder -o model.gguf [--outtype f32|f16|bf16|q8_0|q4_0|q4_k|q5_k|q6_k]
// The tokenizer is not converted yet (tokenizer.json is not read).
#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>

#include <cctype>
#include <cstdio>
#include <optional>
#include <string>

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-convert: a Hugging Face folder as a GGUF file"};
  std::string folder, out, outtype;
  app.add_option("folder", folder, "Hugging Face folder (config.json and model.safetensors or its shards)")->required();
  app.add_option("-o,--output", out, "GGUF file to write")->required();
  app.add_option("--outtype", outtype, "type of the matrices: f32, f16, bf16, q8_0, q4_0, q4_k, q5_k or q6_k "
                                       "(default: the folder's)");
  CLI11_PARSE(app, argc, argv);
  try {
    std::optional<tinyllm::DType> type;
    if (!outtype.empty()) {
      std::string upper;
      for (char ch : outtype) upper += char(std::toupper(static_cast<unsigned char>(ch)));
      using tinyllm::DType;
      for (const DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K,
                            DType::Q6_K})
        if (tinyllm::name(t) == upper) type = t;
      if (!type) throw tinyllm::Error("--outtype " + outtype, "tinyllm-convert", "f32, f16, bf16, q8_0, q4_0, q4_k, q5_k or q6_k");
    }
    tinyllm::GGUFWriter w;
    tinyllm::convert_hf_to_gguf(folder, w, type);
    w.write(out);
    std::fprintf(stderr, "wrote %s\n", out.c_str());
    return 0;
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}

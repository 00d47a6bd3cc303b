// tinyllm-custom-arch: generates text with a user-defined architecture (parallel_reglu.hpp).
//   tinyllm-custom-arch [-m llama-shaped.gguf] [-p PROMPT] [-n N]
// With no model it runs on the embedded random Llama's weights, so its text is noise.
#include "parallel_reglu.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-custom-arch: a user-defined architecture on the library's layers"};
  std::string model_path, prompt = "Once upon a time";
  std::size_t n = 32;
  app.add_option("-m,--model", model_path, "a Llama-shaped GGUF file");
  app.add_option("-p,--prompt", prompt, "prompt");
  app.add_option("-n,--n-predict", n, "tokens to generate");
  CLI11_PARSE(app, argc, argv);
  try {
    auto embedded = [] {
      tinyllm::GGUFWriter w;
      tinyllm::write_synthetic_llama(w, tinyllm::synthetic_shape("tiny"), tinyllm::DType::F32, 42);
      return tinyllm::load_gguf_bytes<ParallelReGLU>(w.to_bytes(), "embedded");
    };
    tinyllm::LoadedModel lm = model_path.empty() ? embedded() : tinyllm::load<ParallelReGLU>(model_path);
    const tinyllm::Tokenizer& tok = lm.tokenizer();
    tinyllm::ThreadPool pool;
    const auto ids = tok.encode(prompt, /*add_bos=*/true);
    tinyllm::GenerateOptions g{.max_new_tokens = n, .sampling = {.temperature = 0.0f}};
    std::int32_t prev = ids.back();
    std::printf("%s", prompt.c_str());
    tinyllm::generate(pool, lm.model(), ids, g, [&](std::int32_t id) {
      std::printf("%s", tok.decode(prev, id).c_str());
      prev = id;
      return true;
    });
    std::printf("\n");
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}

// tinyllm-logits: write every row of logits as raw little-endian float32, for comparison with any
// other implementation. The given tokens are fed as one batch, then --greedy N steps one token at
// a time; the file holds (n_tokens + N) rows of vocab_size floats.
//   tinyllm-logits -m stories260K.bin --ids "1 403 407 261 378" --greedy 20 -o out.f32
// --lora FILE / --lora-scaled FILE SCALE (repeatable) add LoRA adapters.
#include <tinyllm/tinyllm.hpp>

#include "common/lora_flags.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-logits: dump logits as raw float32 rows"};
  std::string model_path, tokenizer_path, ids_text, prompt, out_path;
  std::size_t greedy = 0;
  unsigned threads = 0;
  app.add_option("-m,--model", model_path, "model file (.gguf or llama2.c .bin)")->required();
  app.add_option("-z,--tokenizer", tokenizer_path, "llama2.c tokenizer .bin");
  auto* ids_opt = app.add_option("--ids", ids_text, "token ids, space separated");
  auto* prompt_opt = app.add_option("-p,--prompt", prompt, "prompt text, encoded with BOS");
  ids_opt->excludes(prompt_opt);
  app.add_option("--greedy", greedy, "greedy steps after the batch, one token at a time")->capture_default_str();
  app.add_option("-o,--output", out_path, "output file")->required();
  app.add_option("-t,--threads", threads, "threads; 0 = all cores");
  programs::LoraFlags lora;
  lora.add_to(app);
  CLI11_PARSE(app, argc, argv);

  try {
    tinyllm::LoadOptions opt;
    opt.tokenizer_path = tokenizer_path;
    tinyllm::LoadedModel lm = tinyllm::load(model_path, opt);
    lora.apply(lm.model());
    std::vector<std::int32_t> ids;
    if (!ids_opt->empty()) {
      std::istringstream in(ids_text);
      std::string word;
      while (in >> word) {
        try {
          std::size_t used = 0;
          ids.push_back(std::int32_t(std::stol(word, &used)));
          if (used != word.size()) throw std::invalid_argument(word);
        } catch (const std::exception&) {
          throw tinyllm::Error("not a token id: '" + word + "'", "--ids", "integers separated by spaces");
        }
      }
    } else {
      ids = lm.tokenizer().encode(prompt, /*add_bos=*/true);
    }
    if (ids.empty()) throw tinyllm::Error("no input tokens", "--ids / -p", "at least one token");

    const std::size_t vocab = lm.config().vocab_size, n = ids.size();
    tinyllm::ThreadPool pool(threads);
    auto cache = lm.model().new_kv_cache(std::min(lm.config().context, n + greedy));
    std::vector<float> rows((n + greedy) * vocab);   // [n + greedy, vocab]
    std::vector<std::int32_t> positions(n);
    for (std::size_t i = 0; i < n; ++i) positions[i] = std::int32_t(i);
    lm.model().forward(pool, ids, positions, *cache, tinyllm::MatrixView<float>(rows.data(), n, vocab));
    for (std::size_t s = 0; s < greedy; ++s) {
      float* prev = rows.data() + (n + s - 1) * vocab;
      const std::int32_t next = tinyllm::argmax(std::span<const float>(prev, vocab));
      const std::int32_t pos = std::int32_t(n + s);
      lm.model().forward(pool, std::span(&next, 1), std::span(&pos, 1), *cache,
                         tinyllm::MatrixView<float>(prev + vocab, 1, vocab));
    }
    std::FILE* f = std::fopen(out_path.c_str(), "wb");
    if (!f) throw tinyllm::Error("cannot write the output file", out_path);
    const bool ok = std::fwrite(rows.data(), sizeof(float), rows.size(), f) == rows.size();
    if (std::fclose(f) != 0 || !ok) throw tinyllm::Error("write failed", out_path);
    std::fprintf(stderr, "wrote %zu rows of %zu logits to %s\n", n + greedy, vocab, out_path.c_str());
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}

// tinyllm-perplexity: the perplexity of a text under a model. The text is tokenized and cut into
// windows of --ctx tokens (BOS, then ctx - 1 tokens of text); each window runs as one batch, and
// every token after its first is scored by the log-probability the model gave it. The windows do
// not overlap, so a window's first tokens are scored with little context.
//   tinyllm-perplexity -m stories260K.bin -z tok512.bin -f story.txt --ctx 256
// --lora FILE / --lora-scaled FILE SCALE (repeatable) add LoRA adapters. The last line printed is
// "perplexity: X".
#include <tinyllm/tinyllm.hpp>

#include "common/lora_flags.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-perplexity: perplexity of a text file under a model"};
  std::string model_path, tokenizer_path, text_path;
  std::size_t ctx = 512;
  unsigned threads = 0;
  app.add_option("-m,--model", model_path, "model file (.gguf or llama2.c .bin)")->required();
  app.add_option("-z,--tokenizer", tokenizer_path, "llama2.c tokenizer .bin");
  app.add_option("-f,--file", text_path, "text file")->required();
  app.add_option("--ctx", ctx, "tokens per window, BOS included (at most the model's context)")->capture_default_str();
  app.add_option("-t,--threads", threads, "threads; 0 = all cores");
  programs::LoraFlags lora;
  lora.add_to(app);
  CLI11_PARSE(app, argc, argv);

  try {
    std::ifstream in(text_path, std::ios::binary);
    if (!in) throw tinyllm::Error("cannot read the text file", text_path);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    tinyllm::LoadOptions opt;
    opt.tokenizer_path = tokenizer_path;
    tinyllm::LoadedModel lm = tinyllm::load(model_path, opt);
    lora.apply(lm.model());
    const tinyllm::Tokenizer& tok = lm.tokenizer();
    const std::size_t vocab = lm.config().vocab_size;
    if (ctx < 2 || ctx > lm.config().context)
      throw tinyllm::Error("--ctx " + std::to_string(ctx), "tinyllm-perplexity", "2 to the model's context " + std::to_string(lm.config().context));
    const std::vector<std::int32_t> text = tok.encode(bytes.str(), /*add_bos=*/false);
    if (text.size() < (tok.bos() >= 0 ? 1u : 2u)) throw tinyllm::Error("the text has too few tokens to score", text_path);

    tinyllm::ThreadPool pool(threads);
    auto cache = lm.model().new_kv_cache(ctx);
    std::vector<float> logits(ctx * vocab);
    double nll = 0;
    std::size_t scored = 0;
    const std::size_t step = tok.bos() >= 0 ? ctx - 1 : ctx;   // text tokens per window
    for (std::size_t first = 0; first < text.size(); first += step) {
      std::vector<std::int32_t> ids;
      if (tok.bos() >= 0) ids.push_back(tok.bos());
      ids.insert(ids.end(), text.begin() + std::ptrdiff_t(first),
                 text.begin() + std::ptrdiff_t(std::min(text.size(), first + step)));
      const std::size_t n = ids.size();
      std::vector<std::int32_t> pos(n);
      for (std::size_t i = 0; i < n; ++i) pos[i] = std::int32_t(i);
      // (The cache is reused: each token attends to positions up to its own, all written by this window.)
      lm.model().forward(pool, ids, pos, *cache, tinyllm::MatrixView<float>(logits.data(), n, vocab));
      for (std::size_t i = 0; i + 1 < n; ++i) {
        const float* row = logits.data() + i * vocab;
        const float top = *std::max_element(row, row + vocab);
        double sum = 0;
        for (std::size_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v] - top));
        nll += double(top) + std::log(sum) - double(row[ids[i + 1]]);
        ++scored;
      }
      std::fprintf(stderr, "[%zu tokens scored] running perplexity %.4f\n", scored, std::exp(nll / double(scored)));
    }
    std::printf("tokens: %zu, windows of %zu\nperplexity: %.4f\n", scored, ctx, std::exp(nll / double(scored)));
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}

#pragma once
// The simplest serving loop: one sequence, prompt prefilled as one batch, then one token per
// forward step. The Engine generalises this to many sequences; this one stays small enough to
// read as the definition of "generate".
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/model/kv_cache.hpp>
#include <tinyllm/model/transformer.hpp>
#include <tinyllm/sample/sampler.hpp>

namespace tinyllm {

struct GenerateOptions {
  std::size_t max_new_tokens = 256;
  SamplingParams sampling;
  std::vector<std::int32_t> stop_tokens;   // generation ends at one of these (counted, not passed on)
  KVType kv_type = KVType::f32;            // how the cache stores K and V
};

struct GenerateStats {
  std::size_t prompt_tokens = 0, generated_tokens = 0;
  double prompt_seconds = 0, generate_seconds = 0;   // prefill, and every later step with sampling
  double prompt_tokens_per_second() const { return prompt_seconds > 0 ? prompt_tokens / prompt_seconds : 0; }
  double generate_tokens_per_second() const { return generate_seconds > 0 ? generated_tokens / generate_seconds : 0; }
};

// Calls on_token(id) for each generated token; returning false stops early.
inline GenerateStats generate(ThreadPool& pool, Model& model, std::span<const std::int32_t> prompt,
                              const GenerateOptions& opt, const std::function<bool(std::int32_t)>& on_token) {
  using clock = std::chrono::steady_clock;
  const std::size_t vocab = model.config().vocab_size;
  if (prompt.empty()) throw Error("generate: the prompt has no tokens", "generate", "at least one (BOS)");
  const std::size_t capacity = std::min(model.config().context, prompt.size() + opt.max_new_tokens);
  if (prompt.size() > model.config().context)
    throw Error("prompt of " + std::to_string(prompt.size()) + " tokens exceeds the context",
                "generate", "at most " + std::to_string(model.config().context) + " tokens");
  auto cache = model.new_kv_cache(capacity, opt.kv_type);
  Sampler sampler(opt.sampling, vocab);
  AlignedBuffer<float> logits(vocab);
  MatrixView<float> last(logits.data(), 1, vocab);
  std::vector<std::int32_t> tokens(prompt.begin(), prompt.end()), positions(prompt.size());
  for (std::size_t i = 0; i < positions.size(); ++i) positions[i] = std::int32_t(i);
  tokens.reserve(capacity + 1);

  GenerateStats stats;
  stats.prompt_tokens = prompt.size();
  auto t0 = clock::now();
  model.forward(pool, prompt, positions, *cache, last);
  auto t1 = clock::now();
  stats.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();

  for (std::size_t pos = prompt.size(); stats.generated_tokens < opt.max_new_tokens; ++pos) {
    const std::int32_t next = sampler.sample(logits.span(), tokens);
    tokens.push_back(next);
    ++stats.generated_tokens;
    const bool stop = std::find(opt.stop_tokens.begin(), opt.stop_tokens.end(), next) != opt.stop_tokens.end();
    if (stop || !on_token(next) || pos >= capacity) break;
    const std::int32_t p = std::int32_t(pos);
    model.forward(pool, std::span(&next, 1), std::span(&p, 1), *cache, last);
  }
  stats.generate_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return stats;
}

}  // namespace tinyllm

#pragma once
// Sampler: picks the next token from logits. Repetition penalty, presence and frequency
// penalties, then greedy, or top-k, temperature, softmax, top-p, min-p and a seeded draw. Draws come from the library's own PRNG,
// so a seed gives the same tokens on every platform and standard library.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/sample/random.hpp>

namespace tinyllm {

struct SamplingParams {
  float temperature = 0.8f;         // <= 0: greedy
  std::int32_t top_k = 40;          // <= 0: off
  float top_p = 0.95f;              // >= 1: off
  float min_p = 0.05f;              // <= 0: off; keeps tokens with p >= min_p * p_max
  float repetition_penalty = 1.0f;  // 1: off; logit > 0 ? logit / penalty : logit * penalty (CTRL)
  std::int32_t repeat_last_n = 64;  // the penalty's window of history; each distinct token once
  // OpenAI's additive penalties over the tokens generated so far (not the prompt), in [-2, 2]:
  // logit[t] -= presence_penalty * (count[t] > 0) + frequency_penalty * count[t]. 0: off.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::uint64_t seed = 0;
};

// The index of the largest logit, the lowest one on ties; NaN is never chosen unless all are NaN.
inline std::int32_t argmax(std::span<const float> logits) {
  if (logits.empty()) throw Error("no logits", "argmax", "at least one");
  std::size_t best = 0;
  while (best + 1 < logits.size() && std::isnan(logits[best])) ++best;
  float best_logit = logits[best];
  for (std::size_t i = best + 1; i < logits.size(); ++i) {
    if (logits[i] > best_logit) {
      best = i;
      best_logit = logits[i];
    }
  }
  return static_cast<std::int32_t>(best);
}

// A Sampler follows one sequence. The history of its first sample() call is the prompt; the
// tokens appended to the history after it are the generated ones, which the presence and
// frequency penalties count (as OpenAI and vLLM do).
class Sampler {
 public:
  Sampler(const SamplingParams& params, std::size_t vocab_size)
      : params_(params), rng_(params.seed) {
    validate(params);
    if (vocab_size == 0 ||
        vocab_size > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
      throw Error("vocabulary size " + std::to_string(vocab_size), "Sampler",
                  "between 1 and 2^31 - 1");
    candidates_.resize(vocab_size);
    penalised_.resize(vocab_size, 0);
  }

  // The number of history tokens taken as the prompt; none before the first sample() call.
  std::optional<std::size_t> prompt_length() const { return n_prompt_; }

  // Picks a token; may change `logits` (the penalties are applied in place). `history` holds the
  // tokens so far, prompt and generated; each call's history extends the previous call's.
  std::int32_t sample(std::span<float> logits, std::span<const std::int32_t> history) {
    if (logits.size() != candidates_.size())
      throw Error(std::to_string(logits.size()) + " logits", "Sampler::sample",
                  std::to_string(candidates_.size()) + ", the vocabulary size");
    if (!n_prompt_) n_prompt_ = history.size();
    if (history.size() < *n_prompt_)
      throw Error("history of " + std::to_string(history.size()) + " tokens", "Sampler::sample",
                  "at least the " + std::to_string(*n_prompt_) + " prompt tokens of the first call");
    apply_repetition_penalty(logits, history);
    apply_presence_frequency_penalties(logits, history.subspan(*n_prompt_));
    check_logits(logits);
    if (params_.temperature <= 0.0f) return argmax(logits);

    const bool top_k = params_.top_k > 0 && static_cast<std::size_t>(params_.top_k) < logits.size();
    std::size_t n = top_k ? collect_top_k(logits, static_cast<std::size_t>(params_.top_k))
                          : collect_all(logits);  // candidates_[0, n) are still in the running
    float max_logit = -std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i < n; ++i) max_logit = std::max(max_logit, candidates_[i].value);

    // Softmax at the temperature; `value` becomes a probability, normalised over the top k.
    const float inv_temperature = 1.0f / params_.temperature;
    double sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      candidates_[i].value = std::exp((candidates_[i].value - max_logit) * inv_temperature);
      sum += candidates_[i].value;
    }
    float p_max = 0.0f;
    for (std::size_t i = 0; i < n; ++i) {
      candidates_[i].value = static_cast<float>(candidates_[i].value / sum);
      p_max = std::max(p_max, candidates_[i].value);
    }

    // Min-p and top-p both keep a prefix of the tokens sorted by probability, so filtering before
    // the sort is safe. Min-p's threshold is exact. For top-p, a token below (1 - top_p) / (n - 1)
    // cannot be in the prefix: all such tokens together hold less than 1 - top_p (llama2.c's
    // trick). The most likely token always stays.
    float threshold = 0.0f;
    if (params_.min_p > 0.0f) threshold = params_.min_p * p_max;
    if (params_.top_p < 1.0f && n > 1)
      threshold = std::max(threshold, (1.0f - params_.top_p) / static_cast<float>(n - 1));
    threshold = std::min(threshold, p_max);
    std::size_t n_kept = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (candidates_[i].value >= threshold) candidates_[n_kept++] = candidates_[i];
    n = n_kept;
    // Top-p needs the tokens by probability, and the draw an order that every standard library
    // agrees on: token order as collected, but not the heap that top-k leaves.
    if (params_.top_p < 1.0f || top_k)
      std::sort(candidates_.begin(), candidates_.begin() + std::ptrdiff_t(n), by_value_then_id);

    // Top-p: the smallest non-empty prefix whose probability reaches top_p (all survivors if
    // rounding keeps the sum below it).
    double kept = 0.0;
    if (params_.top_p < 1.0f) {
      std::size_t prefix = 0;
      do kept += candidates_[prefix++].value;
      while (prefix < n && kept < params_.top_p);
      n = prefix;
    } else {
      for (std::size_t i = 0; i < n; ++i) kept += candidates_[i].value;
    }

    // Draw from the kept tokens, renormalised by scaling the uniform number by their mass.
    const double target = static_cast<double>(rng_.uniform()) * kept;
    double cumulative = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      cumulative += candidates_[i].value;
      if (target < cumulative) return candidates_[i].id;
    }
    return candidates_[n - 1].id;  // `target` can reach the sum only through rounding
  }

  void reseed(std::uint64_t seed) { rng_ = Xoshiro256(seed); }

 private:
  struct Candidate {
    float value;  // a logit, then a probability
    std::int32_t id;
  };

  // Larger values first; the lower id first among equal values, so every standard library agrees.
  static bool by_value_then_id(const Candidate& a, const Candidate& b) noexcept {
    return a.value > b.value || (a.value == b.value && a.id < b.id);
  }

  // NaN and +inf are errors upstream; a row of only -inf leaves nothing to choose.
  static void check_logits(std::span<const float> logits) {
    constexpr float inf = std::numeric_limits<float>::infinity();
    bool bad = false, any_finite = false;
    for (const float x : logits) {  // branch-free, so that it vectorises
      bad |= !(x < inf);
      any_finite |= x > -inf;
    }
    if (bad) {
      const auto it =
          std::find_if(logits.begin(), logits.end(), [](float x) { return !(x < inf); });
      throw Error("logit is " + std::to_string(*it),
                  "Sampler::sample, token " + std::to_string(it - logits.begin()),
                  "a number or -inf");
    }
    if (!any_finite)
      throw Error("every logit is -inf", "Sampler::sample",
                  "at least one token that may be chosen");
  }

  // All tokens that may be drawn (not at -inf, probability 0), in token order; returns their
  // number.
  std::size_t collect_all(std::span<const float> logits) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < logits.size(); ++i)
      if (logits[i] != -std::numeric_limits<float>::infinity())
        candidates_[n++] = {logits[i], static_cast<std::int32_t>(i)};
    return n;
  }

  // The k best tokens (fewer where fewer may be drawn) as a heap, the worst on top; returns their
  // number. Most tokens lose the one comparison with the top, so this is one pass over the
  // vocabulary, not a sort. The order is total, so the set is unique even with ties.
  std::size_t collect_top_k(std::span<const float> logits, std::size_t k) {
    const auto first = candidates_.begin();
    const auto heap_end = first + std::ptrdiff_t(k);
    std::size_t n = 0;
    for (std::size_t i = 0; i < logits.size(); ++i) {
      if (logits[i] == -std::numeric_limits<float>::infinity()) continue;
      const Candidate candidate = {logits[i], static_cast<std::int32_t>(i)};
      if (n < k) {
        candidates_[n++] = candidate;
        std::push_heap(first, first + std::ptrdiff_t(n), by_value_then_id);
      } else if (by_value_then_id(candidate, candidates_[0])) {
        std::pop_heap(first, heap_end, by_value_then_id);
        candidates_[k - 1] = candidate;
        std::push_heap(first, heap_end, by_value_then_id);
      }
    }
    return n;
  }

  static void validate(const SamplingParams& p) {
    const auto fail = [](const char* field, float value, const char* expected) {
      throw Error(std::string(field) + " is " + std::to_string(value),
                  std::string("SamplingParams::") + field, expected);
    };
    if (!std::isfinite(p.temperature)) fail("temperature", p.temperature, "a finite number");
    if (std::isnan(p.top_p) || p.top_p < 0.0f)
      fail("top_p", p.top_p, "a number >= 0 (>= 1 turns it off)");
    if (std::isnan(p.min_p) || p.min_p > 1.0f)
      fail("min_p", p.min_p, "a number <= 1 (<= 0 turns it off)");
    if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0.0f)
      fail("repetition_penalty", p.repetition_penalty, "a finite number > 0 (1 turns it off)");
    if (!std::isfinite(p.presence_penalty) || std::fabs(p.presence_penalty) > 2.0f)
      fail("presence_penalty", p.presence_penalty, "a finite number in [-2, 2] (0 turns it off)");
    if (!std::isfinite(p.frequency_penalty) || std::fabs(p.frequency_penalty) > 2.0f)
      fail("frequency_penalty", p.frequency_penalty, "a finite number in [-2, 2] (0 turns it off)");
    if (p.repeat_last_n < 0)
      throw Error("repeat_last_n is " + std::to_string(p.repeat_last_n),
                  "SamplingParams::repeat_last_n", "a count >= 0");
  }

  static void check_ids(std::span<const std::int32_t> tokens, std::size_t vocab) {
    for (const std::int32_t token : tokens)
      if (token < 0 || static_cast<std::size_t>(token) >= vocab)
        throw Error("token id " + std::to_string(token) + " in the history", "Sampler::sample",
                    "an id in [0, " + std::to_string(vocab) + ")");
  }

  void apply_repetition_penalty(std::span<float> logits, std::span<const std::int32_t> history) {
    if (params_.repetition_penalty == 1.0f || params_.repeat_last_n == 0) return;
    const std::size_t window =
        std::min(history.size(), static_cast<std::size_t>(params_.repeat_last_n));
    const auto recent = history.last(window);
    check_ids(recent, logits.size());
    for (const std::int32_t token : recent) {
      if (penalised_[token]) continue;
      penalised_[token] = 1;
      float& logit = logits[token];
      logit =
          logit > 0.0f ? logit / params_.repetition_penalty : logit * params_.repetition_penalty;
    }
    for (const std::int32_t token : recent) penalised_[token] = 0;
  }

  // Counted afresh from the history at each call: a few hundred tokens against a forward pass.
  void apply_presence_frequency_penalties(std::span<float> logits,
                                          std::span<const std::int32_t> generated) {
    if (params_.presence_penalty == 0.0f && params_.frequency_penalty == 0.0f) return;
    check_ids(generated, logits.size());
    if (counts_.empty()) counts_.resize(logits.size(), 0);
    for (const std::int32_t token : generated) ++counts_[token];
    for (const std::int32_t token : generated) {
      const std::uint32_t count = counts_[token];
      if (count == 0) continue;  // already penalised
      logits[token] -= params_.presence_penalty + params_.frequency_penalty * float(count);
      counts_[token] = 0;
    }
  }

  SamplingParams params_;
  Xoshiro256 rng_;
  std::vector<Candidate> candidates_;    // [vocab_size] scratch, reused by every call
  std::vector<std::uint8_t> penalised_;  // [vocab_size] marks, all zero between calls
  std::vector<std::uint32_t> counts_;    // [vocab_size] when penalties are on, all zero between calls
  std::optional<std::size_t> n_prompt_;  // the first call's history length
};

}  // namespace tinyllm

#pragma once
// Log-probabilities of the model's distribution over the next token: log-softmax of the logits
// as the model computed them (before penalties, temperature or truncation), for OpenAI's
// `logprobs` / `top_logprobs`.
#include <tinyllm/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tinyllm {

struct TokenLogprob {
  std::int32_t token = -1;
  float logprob = 0.0f;
};

struct TokenLogprobs {
  TokenLogprob chosen;                   // the token that was picked
  std::vector<TokenLogprob> top;         // the most likely tokens, most likely first (ties: lower id)
};

// log(sum(exp(logits))), computed around the largest logit so that nothing overflows.
inline double log_sum_exp(std::span<const float> logits) {
  if (logits.empty()) throw Error("no logits", "log_sum_exp", "at least one");
  const float m = *std::max_element(logits.begin(), logits.end());
  if (!std::isfinite(m)) return m;
  double sum = 0;
  for (const float x : logits) sum += std::exp(double(x) - m);
  return m + std::log(sum);
}

// The chosen token's log-probability and the `top_n` most likely tokens' (top_n may exceed the
// vocabulary: all are given then).
inline TokenLogprobs token_logprobs(std::span<const float> logits, std::int32_t chosen, std::size_t top_n) {
  if (chosen < 0 || std::size_t(chosen) >= logits.size())
    throw Error("token " + std::to_string(chosen), "token_logprobs", "an id below " + std::to_string(logits.size()));
  const double lse = log_sum_exp(logits);
  TokenLogprobs r;
  r.chosen = {chosen, float(logits[std::size_t(chosen)] - lse)};
  const std::size_t n = std::min(top_n, logits.size());
  if (n == 0) return r;
  std::vector<std::int32_t> ids(logits.size());
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int32_t(i);
  const auto more_likely = [&](std::int32_t a, std::int32_t b) {
    return logits[std::size_t(a)] > logits[std::size_t(b)] || (logits[std::size_t(a)] == logits[std::size_t(b)] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(n), ids.end(), more_likely);
  r.top.reserve(n);
  for (std::size_t i = 0; i < n; ++i) r.top.push_back({ids[i], float(logits[std::size_t(ids[i])] - lse)});
  return r;
}

}  // namespace tinyllm

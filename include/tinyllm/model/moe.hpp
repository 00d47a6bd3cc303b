#pragma once
// Mixture of experts (Mixtral, Qwen3-MoE): a block's FFN is a router [n_experts, n_embd] and
// n_experts gated FFNs. For each token the router's logits pick the n_experts_used experts of
// highest softmax probability; their probabilities, renormalised to sum to 1, weight the sum of
// those experts' outputs (llama.cpp's `llama` and `qwen3moe` MoE). The transformer groups a
// batch's tokens by expert (route_tokens), so each chosen expert's weights are read once per step
// for all its tokens, and one token reads only its chosen experts.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include <tinyllm/core/tensor.hpp>
#include <tinyllm/model/weights.hpp>

namespace tinyllm {

// One expert: a gated FFN, gate and up [n_ff_expert, n_embd], down [n_embd, n_ff_expert].
struct ExpertWeights {
  WeightMatrix w_gate, w_up, w_down;
};

// A token sent to an expert, with the weight of that expert's output in the token's sum.
struct ExpertToken {
  std::uint32_t token;
  float weight;
};

// by_expert[e] = the tokens (rows of `logits`, [n_tok, n_experts] router logits) that choose
// expert e among their k most probable, in token order, with their renormalised probabilities.
// Ties go to the lower expert index. The softmax's denominator cancels in the renormalisation,
// so the weights are exp(l_e - max) over the sum of the chosen ones.
inline void route_tokens(MatrixView<const float> logits, std::size_t k, std::vector<std::vector<ExpertToken>>& by_expert) {
  const std::size_t n_experts = logits.cols;
  by_expert.resize(n_experts);
  for (auto& v : by_expert) v.clear();
  std::vector<std::uint32_t> order(n_experts);
  for (std::size_t t = 0; t < logits.rows; ++t) {
    const float* l = logits.row(t);
    std::iota(order.begin(), order.end(), 0u);
    std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(k), order.end(),
                      [&](std::uint32_t a, std::uint32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    const float top = l[order[0]];
    float sum = 0;
    for (std::size_t i = 0; i < k; ++i) sum += std::exp(l[order[i]] - top);
    for (std::size_t i = 0; i < k; ++i)
      by_expert[order[i]].push_back({std::uint32_t(t), std::exp(l[order[i]] - top) / sum});
  }
}

}  // namespace tinyllm

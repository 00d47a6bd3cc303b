#pragma once
// The per-layer knobs of attention, shared by the reference and the SIMD kernels.
#include <cstddef>

namespace tinyllm {

struct AttentionParams {
  float scale = 1.0f;       // scores = (q · k) * scale, usually 1 / sqrt(head_dim)
  std::size_t window = 0;   // > 0: a token at position p sees only positions (p - window, p]
  float softcap = 0.0f;     // > 0: scores = softcap * tanh(scores / softcap) before the softmax
};

// The CPU kernel splits a query's positions at multiples of this into segments: each is a unit of
// work with a softmax of its own, and the segments' results merge in position order, so one long
// sequence spreads over every thread while the result depends on the positions only (not on the
// threads or on which tokens share a batch).
inline constexpr std::size_t kAttentionSegment = 256;
// ... and serves up to this many tokens of one sequence at consecutive positions (prefill,
// speculative steps) from each key row it loads.
inline constexpr std::size_t kAttentionTile = 4;

// The first cache position a query at `pos` attends to.
inline std::size_t attention_start(std::size_t pos, std::size_t window) {
  return window > 0 && pos + 1 > window ? pos + 1 - window : 0;
}

}  // namespace tinyllm

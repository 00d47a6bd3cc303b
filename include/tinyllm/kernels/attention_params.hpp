#pragma once
// The per-layer knobs of attention, shared by the reference and the SIMD kernels.
#include <cstddef>

namespace tinyllm {

struct AttentionParams {
  float scale = 1.0f;       // scores = (q · k) * scale, usually 1 / sqrt(head_dim)
  std::size_t window = 0;   // > 0: a token at position p sees only positions (p - window, p]
  float softcap = 0.0f;     // > 0: scores = softcap * tanh(scores / softcap) before the softmax
};

// The first cache position a query at `pos` attends to.
inline std::size_t attention_start(std::size_t pos, std::size_t window) {
  return window > 0 && pos + 1 > window ? pos + 1 - window : 0;
}

}  // namespace tinyllm

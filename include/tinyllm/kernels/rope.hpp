#pragma once
// Rotary position embedding: which values form a rotated pair, and the per-pair frequencies.
// Shared by the reference and the SIMD kernels, and named by architecture traits.
#include <cmath>
#include <cstddef>
#include <vector>

namespace tinyllm {

enum class RopeStyle {
  adjacent_pairs,  // pairs (2i, 2i+1): llama2.c, GGUF llama
  half_split,      // pairs (i, i + head_dim/2): GPT-NeoX, Hugging Face
};

// inv_freq[i] = 1 / theta^(2i / head_dim) for i < head_dim/2. Computed in double and rounded once,
// so the table does not depend on how a libm rounds powf.
inline std::vector<float> rope_inv_freq(std::size_t head_dim, float theta) {
  std::vector<float> inv_freq(head_dim / 2);
  for (std::size_t i = 0; i < inv_freq.size(); ++i)
    inv_freq[i] = static_cast<float>(
        1.0 / std::pow(static_cast<double>(theta), static_cast<double>(2 * i) / static_cast<double>(head_dim)));
  return inv_freq;
}

}  // namespace tinyllm

#pragma once
// A user's own architecture: a Llama variant whose blocks run attention and the FFN in parallel
// from one norm (x += attn(norm(x)) + ffn(norm(x)), as GPT-J does) and whose FFN gate is ReLU
// instead of SiLU (ReGLU). It reads the weights of any Llama-shaped GGUF file.
#include <algorithm>
#include <cstddef>
#include <string_view>

#include <tinyllm/tinyllm.hpp>

struct ParallelReGLU : tinyllm::ArchDefaults {
  static constexpr std::string_view name = "parallel-reglu";
  static constexpr bool parallel_blocks = true;
  static constexpr tinyllm::Ffn ffn = tinyllm::Ffn::custom;

  // gate[i] = relu(gate[i]) * up[i]
  static void activation(float* gate, const float* up, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) gate[i] = std::max(gate[i], 0.0f) * up[i];
  }
};

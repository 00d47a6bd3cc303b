#pragma once
// Llama 1/2/3/3.1 and the Llama-architecture family (TinyLlama, llama2.c's models, Kakao
// Kanana): pre-norm RMSNorm, SwiGLU, RoPE on adjacent pairs as GGUF and llama2.c store Q and K.
// Llama 3.1's RoPE frequency scaling arrives as data (the rope_freqs tensor).
// Mistral is the same network with a sliding attention window on every layer.
#include <string_view>

#include <tinyllm/model/arch/traits.hpp>

namespace tinyllm {

struct Llama : ArchDefaults {
  static constexpr std::string_view name = "llama";
};

struct Mistral : ArchDefaults {
  static constexpr std::string_view name = "mistral";
};

}  // namespace tinyllm

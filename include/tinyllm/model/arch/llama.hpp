#pragma once
// Llama (1, 2, and the Llama-architecture family: TinyLlama, llama2.c's models, Kanana):
// pre-norm RMSNorm, SwiGLU FFN, RoPE on adjacent pairs as GGUF and llama2.c store Q and K.
#include <string_view>

#include <tinyllm/kernels/rope.hpp>
#include <tinyllm/model/arch/traits.hpp>

namespace tinyllm {

struct Llama {
  static constexpr std::string_view name = "llama";
  static constexpr Norm norm = Norm::rms;
  static constexpr Ffn ffn = Ffn::swiglu;
  static constexpr RopeStyle rope = RopeStyle::adjacent_pairs;
};

}  // namespace tinyllm

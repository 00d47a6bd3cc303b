#pragma once
// Google's Gemma family. GGUF stores Gemma's RMSNorm weights with the 1 already added, so the
// norms are plain RMSNorm here.
#include <string_view>

#include <tinyllm/model/arch/traits.hpp>

namespace tinyllm {

struct Gemma : ArchDefaults {
  static constexpr std::string_view name = "gemma";
  static constexpr Ffn ffn = Ffn::geglu;
  static constexpr RopeStyle rope = RopeStyle::half_split;
  static constexpr bool scale_embeddings = true;
};

struct Gemma2 : Gemma {
  static constexpr std::string_view name = "gemma2";
  static constexpr bool post_norms = true;
  static constexpr bool attn_softcap = true;
  static constexpr bool final_softcap = true;
  static constexpr std::size_t swa_period = 2;
};

struct Gemma3 : Gemma {
  static constexpr std::string_view name = "gemma3";
  static constexpr bool post_norms = true;
  static constexpr bool qk_norm = true;
  static constexpr std::size_t swa_period = 6;
};

}  // namespace tinyllm

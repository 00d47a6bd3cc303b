#pragma once
// Alibaba's Qwen 2 (biases on Q, K, V) and Qwen 3 (RMSNorm over each Q and K head instead);
// Qwen3-MoE is Qwen 3 with a mixture of experts for every FFN.
#include <string_view>

#include <tinyllm/model/arch/traits.hpp>

namespace tinyllm {

struct Qwen2 : ArchDefaults {
  static constexpr std::string_view name = "qwen2";
  static constexpr RopeStyle rope = RopeStyle::half_split;
  static constexpr bool qkv_bias = true;
};

struct Qwen3 : ArchDefaults {
  static constexpr std::string_view name = "qwen3";
  static constexpr RopeStyle rope = RopeStyle::half_split;
  static constexpr bool qk_norm = true;
};

struct Qwen3Moe : Qwen3 {
  static constexpr std::string_view name = "qwen3moe";
  static constexpr bool moe = true;
};

}  // namespace tinyllm

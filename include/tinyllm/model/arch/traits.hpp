#pragma once
// The vocabulary of architecture traits. An architecture is a struct that derives from
// ArchDefaults (which is plain Llama) and overrides what differs; the transformer is written once
// against these constants and `if constexpr` drops what a model does not use. Sizes, windows,
// RoPE bases and soft-cap values are data from the file, not traits.
#include <cstddef>

#include <tinyllm/kernels/rope.hpp>

namespace tinyllm {

enum class Ffn {
  swiglu,   // down(silu(gate(x)) * up(x))
  geglu,    // down(gelu(gate(x)) * up(x)), GELU in its tanh form
  custom,   // down(Arch::activation(gate(x), up(x))): the architecture brings its own
};

struct ArchDefaults {
  static constexpr Ffn ffn = Ffn::swiglu;
  static constexpr RopeStyle rope = RopeStyle::adjacent_pairs;
  static constexpr bool scale_embeddings = false;  // x *= sqrt(n_embd) after the embedding lookup
  static constexpr bool qkv_bias = false;          // biases on the Q, K and V projections
  static constexpr bool qk_norm = false;           // RMSNorm over each head of Q and K, before RoPE
  static constexpr bool post_norms = false;        // RMSNorm of each block's output before the residual add
  static constexpr bool parallel_blocks = false;   // x += attn(norm(x)) + ffn(norm(x)), one norm (GPT-J style)
  static constexpr bool attn_softcap = false;      // scores = cap * tanh(scores / cap)
  static constexpr bool final_softcap = false;     // logits = cap * tanh(logits / cap)
  // Which layers use the sliding window, when the file sets one: 0 = every layer; p > 0 = every
  // layer but each p-th (Gemma 2: p = 2, local/global alternating; Gemma 3: p = 6, 5 local then 1 global).
  static constexpr std::size_t swa_period = 0;
  // Every block's FFN is a mixture of experts (model/moe.hpp), and the file must have them. Files
  // of other architectures may still bring experts ({arch}.expert_count > 0: Mixtral is `llama`).
  static constexpr bool moe = false;
};

// An architecture's traits as run-time values, for code that runs a model whose traits type it
// never sees (the LoRA trainer of train/ works on any loaded Model).
struct ArchInfo {
  Ffn ffn;
  RopeStyle rope;
  bool scale_embeddings, qkv_bias, qk_norm, post_norms, parallel_blocks, attn_softcap, final_softcap;
  std::size_t swa_period;
  bool moe;
};

template <class Arch>
constexpr ArchInfo arch_info() {
  return {Arch::ffn,           Arch::rope,         Arch::scale_embeddings, Arch::qkv_bias,
          Arch::qk_norm,       Arch::post_norms,   Arch::parallel_blocks,  Arch::attn_softcap,
          Arch::final_softcap, Arch::swa_period,      Arch::moe};
}

}  // namespace tinyllm

#pragma once
// The run-time sizes of a decoder-only transformer, read from the model file.
#include <cstddef>
#include <cstdint>
#include <string>

namespace tinyllm {

struct ModelConfig {
  std::string arch;              // general.architecture, or "llama" for llama2.c files
  std::size_t n_embd = 0;        // model width
  std::size_t n_layers = 0;
  std::size_t n_heads = 0;       // query heads
  std::size_t n_kv_heads = 0;    // key/value heads (grouped-query attention when fewer)
  std::size_t head_dim = 0;
  std::size_t n_ff = 0;          // FFN hidden width
  std::size_t vocab_size = 0;
  std::size_t context = 0;       // the longest sequence the model was trained for
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  float rope_theta_swa = 0.0f;       // RoPE base of sliding-window layers; 0 = rope_theta
  float rope_linear_scale = 1.0f;    // positions divided by this on global layers (linear RoPE scaling)
  std::size_t sliding_window = 0;    // positions a sliding-window layer sees, itself included; 0 = none
  float attn_scale = 0.0f;           // scale of Q·K; 0 = 1 / sqrt(head_dim)
  float attn_softcap = 0.0f;         // used by architectures with soft-capping traits
  float final_softcap = 0.0f;
  // Mixture of experts (Mixtral, Qwen3-MoE): each block's FFN is a router over n_experts gated
  // FFNs of width n_ff_expert, of which n_experts_used run per token; 0 experts = dense FFNs.
  std::size_t n_experts = 0, n_experts_used = 0, n_ff_expert = 0;

  std::size_t q_dim() const { return n_heads * head_dim; }
  std::size_t kv_dim() const { return n_kv_heads * head_dim; }
};

}  // namespace tinyllm

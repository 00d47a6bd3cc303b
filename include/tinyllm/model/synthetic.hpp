#pragma once
// Seeded random-weight Llama models written with the library's own GGUF writer: the embedded
// default model, test models, and benchmark models of real shapes (TinyLlama, Llama 7B). Their
// weights are N(0, 0.02) and their norms 1 + N(0, 0.1), so the text they generate is noise.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/io/gguf.hpp>

namespace tinyllm {

struct SyntheticShape {
  std::string_view name;
  std::size_t n_embd, n_layers, n_heads, n_kv_heads, n_ff, vocab, context;
};

inline constexpr SyntheticShape kSyntheticShapes[] = {
    {"tiny", 128, 4, 4, 2, 344, 512, 512},
    {"tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, 2048},
    {"llama-7b", 4096, 32, 32, 32, 11008, 32000, 4096},
};

inline const SyntheticShape& synthetic_shape(std::string_view name) {
  std::string known;
  for (const auto& s : kSyntheticShapes) {
    if (s.name == name) return s;
    known += (known.empty() ? "" : ", ") + std::string(s.name);
  }
  throw Error("unknown synthetic shape '" + std::string(name) + "'", "synthetic_shape", "one of " + known);
}

// splitmix64: a tiny generator whose output is the same on every platform.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return float(next() >> 40) * 0x1.0p-24f; }   // [0, 1)
  float normal() {                                               // Box-Muller
    const float u1 = 1.0f - uniform(), u2 = uniform();
    return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
  }

 private:
  std::uint64_t state_;
};

// A SentencePiece-style vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then letter pieces
// with and without the word-start marker, shortest first (higher scores merge first).
inline void add_synthetic_vocab(GGUFWriter& out, std::size_t vocab) {
  if (vocab < 3 + 256 + 1) throw Error("synthetic vocabulary too small", "vocab", ">= 260 tokens");
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<std::int32_t> types = {2, 3, 3};   // unknown, control, control
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    tokens.emplace_back(hex);
    types.push_back(6);                          // byte
  }
  const std::string marker = "\xE2\x96\x81";     // U+2581, SentencePiece's space
  tokens.push_back(marker);
  types.push_back(1);                            // normal
  const std::string letters = "etaoinshrdlcumwfgypbvkjxqz";
  std::vector<std::string> words = {""};
  while (tokens.size() < vocab) {
    std::vector<std::string> longer;
    for (const auto& w : words)
      for (char ch : letters) longer.push_back(w + ch);
    for (const auto& w : longer) {
      for (const std::string& piece : {w, marker + w}) {
        if (tokens.size() == vocab) break;
        tokens.push_back(piece);
        types.push_back(1);                      // normal
      }
    }
    words = std::move(longer);
  }
  std::vector<float> scores(vocab);
  for (std::size_t i = 0; i < vocab; ++i) scores[i] = i < 259 ? 0.0f : -float(i - 259);
  out.set_string("tokenizer.ggml.model", "llama");
  out.set_string_array("tokenizer.ggml.tokens", tokens);
  out.set_f32_array("tokenizer.ggml.scores", scores);
  out.set_i32_array("tokenizer.ggml.token_type", types);
  out.set_u32("tokenizer.ggml.bos_token_id", 1);
  out.set_u32("tokenizer.ggml.eos_token_id", 2);
  out.set_u32("tokenizer.ggml.unknown_token_id", 0);
}

// Writes a Llama of the given shape with weights of `type` (F32 or F16) into `out`, under the
// architecture name `arch` (a Llama-shaped one: llama, mistral).
inline void write_synthetic_llama(GGUFWriter& out, const SyntheticShape& s, DType type, std::uint64_t seed,
                                  std::string_view arch = "llama") {
  if (type != DType::F32 && type != DType::F16)
    throw Error("synthetic models are written as F32 or F16", "write_synthetic_llama",
                "F32 or F16, got " + std::string(name(type)));
  const std::string a = std::string(arch) + ".";
  out.set_string("general.architecture", std::string(arch));
  out.set_string("general.name", "tinyllm synthetic " + std::string(s.name));
  out.set_u32("general.file_type", type == DType::F32 ? 0 : 1);
  out.set_u32(a + "context_length", std::uint32_t(s.context));
  out.set_u32(a + "embedding_length", std::uint32_t(s.n_embd));
  out.set_u32(a + "block_count", std::uint32_t(s.n_layers));
  out.set_u32(a + "feed_forward_length", std::uint32_t(s.n_ff));
  out.set_u32(a + "attention.head_count", std::uint32_t(s.n_heads));
  out.set_u32(a + "attention.head_count_kv", std::uint32_t(s.n_kv_heads));
  out.set_u32(a + "rope.dimension_count", std::uint32_t(s.n_embd / s.n_heads));
  out.set_f32(a + "rope.freq_base", 10000.0f);
  out.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  add_synthetic_vocab(out, s.vocab);

  SplitMix64 rng(seed);
  std::vector<float> values;
  std::vector<F16> halves;
  // dims in GGUF order: {columns (inputs), rows (outputs)}
  auto add = [&](const std::string& name, std::size_t cols, std::size_t rows, float mean, float sd,
                 DType t) {
    values.resize(cols * rows);
    for (float& v : values) v = mean + sd * rng.normal();
    std::vector<std::uint64_t> dims = rows == 1 ? std::vector<std::uint64_t>{cols}
                                                : std::vector<std::uint64_t>{cols, rows};
    if (t == DType::F32) {
      out.add_tensor(name, t, dims, values.data(), values.size() * sizeof(float));
    } else {
      halves.resize(values.size());
      for (std::size_t i = 0; i < values.size(); ++i) halves[i] = F16{f32_to_f16(values[i])};
      out.add_tensor(name, t, dims, halves.data(), halves.size() * sizeof(F16));
    }
  };
  const std::size_t kv_dim = s.n_embd / s.n_heads * s.n_kv_heads;
  add("token_embd.weight", s.n_embd, s.vocab, 0.0f, 0.02f, type);
  for (std::size_t l = 0; l < s.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", s.n_embd, 1, 1.0f, 0.1f, DType::F32);
    add(p + "attn_q.weight", s.n_embd, s.n_embd, 0.0f, 0.02f, type);
    add(p + "attn_k.weight", s.n_embd, kv_dim, 0.0f, 0.02f, type);
    add(p + "attn_v.weight", s.n_embd, kv_dim, 0.0f, 0.02f, type);
    add(p + "attn_output.weight", s.n_embd, s.n_embd, 0.0f, 0.02f, type);
    add(p + "ffn_norm.weight", s.n_embd, 1, 1.0f, 0.1f, DType::F32);
    add(p + "ffn_gate.weight", s.n_embd, s.n_ff, 0.0f, 0.02f, type);
    add(p + "ffn_up.weight", s.n_embd, s.n_ff, 0.0f, 0.02f, type);
    add(p + "ffn_down.weight", s.n_ff, s.n_embd, 0.0f, 0.02f, type);
  }
  add("output_norm.weight", s.n_embd, 1, 1.0f, 0.1f, DType::F32);
  add("output.weight", s.n_embd, s.vocab, 0.0f, 0.02f, type);
}

}  // namespace tinyllm

#pragma once
// Seeded random-weight Llama models written with the library's own GGUF writer: the embedded
// default model, test models, and benchmark models of real shapes (TinyLlama, Llama 7B, and
// OLMoE-1B-7B's mixture of experts). Their
// weights are N(0, 0.02) and their norms 1 + N(0, 0.1), so the text they generate is noise.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/model/lora.hpp>
#include <tinyllm/quant/quantize.hpp>

namespace tinyllm {

struct SyntheticShape {
  std::string_view name;
  std::size_t n_embd, n_layers, n_heads, n_kv_heads, n_ff, vocab, context;
  // A mixture of experts in every block (Mixtral's layout: architecture llama with experts).
  std::size_t n_experts = 0, n_experts_used = 0, n_ff_expert = 0;
};

inline constexpr SyntheticShape kSyntheticShapes[] = {
    {"tiny", 128, 4, 4, 2, 344, 512, 512},
    {"small", 256, 4, 4, 2, 768, 512, 512},   // widths that are whole K-quant blocks
    {"tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, 2048},
    {"llama-7b", 4096, 32, 32, 32, 11008, 32000, 4096},
    {"small-moe", 256, 4, 4, 2, 512, 512, 512, 8, 2, 256},
    {"olmoe-1b-7b", 2048, 16, 16, 16, 1024, 50304, 4096, 64, 8, 1024},   // OLMoE's sizes, Llama's layers
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

// The weight types of a file type, as llama-quantize mixes them: "_M" mixes give the output,
// and attn_v / ffn_down in some layers (first and last eighth, every third between), more bits.
struct WeightMix {
  std::string_view name;
  DType base, embedding, output, more_bits;
  std::uint32_t file_type;   // general.file_type (llama_ftype)
};

inline constexpr WeightMix kWeightMixes[] = {
    {"F32", DType::F32, DType::F32, DType::F32, DType::F32, 0},
    {"F16", DType::F16, DType::F16, DType::F16, DType::F16, 1},
    {"Q8_0", DType::Q8_0, DType::Q8_0, DType::Q8_0, DType::Q8_0, 7},
    {"Q4_0", DType::Q4_0, DType::Q4_0, DType::Q6_K, DType::Q4_0, 2},
    {"Q4_K_M", DType::Q4_K, DType::Q4_K, DType::Q6_K, DType::Q6_K, 15},
    {"Q5_K_M", DType::Q5_K, DType::Q5_K, DType::Q6_K, DType::Q6_K, 17},
    {"Q6_K", DType::Q6_K, DType::Q6_K, DType::Q6_K, DType::Q6_K, 18},
};

inline const WeightMix& weight_mix(std::string_view name) {
  std::string known;
  for (const auto& m : kWeightMixes) {
    if (m.name == name) return m;
    known += (known.empty() ? "" : ", ") + std::string(m.name);
  }
  throw Error("unknown weight type '" + std::string(name) + "'", "weight_mix", "one of " + known);
}

// Writes a Llama of the given shape with weights of the mix `mix` into `out`, under the
// architecture name `arch` (a Llama-shaped one: llama, mistral). The tokenizer metadata comes
// from `vocab` (every tokenizer.* key, so the file also loads in llama.cpp) or, when null, from a
// synthetic vocabulary of the shape's size.
inline void write_synthetic_llama(GGUFWriter& out, const SyntheticShape& s, const WeightMix& mix, std::uint64_t seed,
                                  std::string_view arch = "llama", const GGUFFile* vocab = nullptr) {
  const std::string a = std::string(arch) + ".";
  out.set_string("general.architecture", std::string(arch));
  out.set_string("general.name", "tinyllm synthetic " + std::string(s.name) + " " + std::string(mix.name));
  out.set_u32("general.file_type", mix.file_type);
  out.set_u32(a + "context_length", std::uint32_t(s.context));
  out.set_u32(a + "embedding_length", std::uint32_t(s.n_embd));
  out.set_u32(a + "block_count", std::uint32_t(s.n_layers));
  out.set_u32(a + "feed_forward_length", std::uint32_t(s.n_ff));
  out.set_u32(a + "attention.head_count", std::uint32_t(s.n_heads));
  out.set_u32(a + "attention.head_count_kv", std::uint32_t(s.n_kv_heads));
  out.set_u32(a + "rope.dimension_count", std::uint32_t(s.n_embd / s.n_heads));
  out.set_f32(a + "rope.freq_base", 10000.0f);
  out.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  if (s.n_experts > 0) {
    out.set_u32(a + "expert_count", std::uint32_t(s.n_experts));
    out.set_u32(a + "expert_used_count", std::uint32_t(s.n_experts_used));
    out.set_u32(a + "expert_feed_forward_length", std::uint32_t(s.n_ff_expert));
  }
  std::size_t n_vocab = s.vocab;
  if (vocab) {
    for (const auto& [key, value] : vocab->metadata())
      if (key.rfind("tokenizer.", 0) == 0) out.set(key, value);
    n_vocab = vocab->get_string_array("tokenizer.ggml.tokens").size();
  } else {
    add_synthetic_vocab(out, s.vocab);
  }

  SplitMix64 rng(seed);
  ThreadPool pool;
  std::vector<float> values;
  std::vector<std::byte> packed;
  // dims in GGUF order: {columns (inputs), rows (outputs)}
  // experts > 0: that many [rows, cols] matrices stacked, dims {cols, rows, experts}.
  auto add = [&](const std::string& name, std::size_t cols, std::size_t rows, float mean, float sd, DType t,
                 std::size_t experts = 0) {
    std::vector<std::uint64_t> dims = experts ? std::vector<std::uint64_t>{cols, rows, experts}
                                      : rows == 1 ? std::vector<std::uint64_t>{cols}
                                                  : std::vector<std::uint64_t>{cols, rows};
    rows *= std::max<std::size_t>(experts, 1);
    values.resize(cols * rows);
    for (float& v : values) v = mean + sd * rng.normal();
    const std::size_t row_size = quantized_bytes(t, cols);
    packed.resize(row_size * rows);
    pool.parallel_for(rows, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r) quantize_row(t, values.data() + r * cols, packed.data() + r * row_size, cols);
    });
    out.add_tensor(name, t, dims, packed.data(), packed.size());
  };
  const std::size_t kv_dim = s.n_embd / s.n_heads * s.n_kv_heads, n = s.n_layers;
  add("token_embd.weight", s.n_embd, n_vocab, 0.0f, 0.02f, mix.embedding);
  for (std::size_t l = 0; l < n; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const bool more_bits = l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2;
    const DType sensitive = more_bits ? mix.more_bits : mix.base;
    add(p + "attn_norm.weight", s.n_embd, 1, 1.0f, 0.1f, DType::F32);
    add(p + "attn_q.weight", s.n_embd, s.n_embd, 0.0f, 0.02f, mix.base);
    add(p + "attn_k.weight", s.n_embd, kv_dim, 0.0f, 0.02f, mix.base);
    add(p + "attn_v.weight", s.n_embd, kv_dim, 0.0f, 0.02f, sensitive);
    add(p + "attn_output.weight", s.n_embd, s.n_embd, 0.0f, 0.02f, mix.base);
    add(p + "ffn_norm.weight", s.n_embd, 1, 1.0f, 0.1f, DType::F32);
    if (s.n_experts > 0) {
      add(p + "ffn_gate_inp.weight", s.n_embd, s.n_experts, 0.0f, 0.02f, DType::F32);
      add(p + "ffn_gate_exps.weight", s.n_embd, s.n_ff_expert, 0.0f, 0.02f, mix.base, s.n_experts);
      add(p + "ffn_up_exps.weight", s.n_embd, s.n_ff_expert, 0.0f, 0.02f, mix.base, s.n_experts);
      add(p + "ffn_down_exps.weight", s.n_ff_expert, s.n_embd, 0.0f, 0.02f, sensitive, s.n_experts);
      continue;
    }
    add(p + "ffn_gate.weight", s.n_embd, s.n_ff, 0.0f, 0.02f, mix.base);
    add(p + "ffn_up.weight", s.n_embd, s.n_ff, 0.0f, 0.02f, mix.base);
    add(p + "ffn_down.weight", s.n_ff, s.n_embd, 0.0f, 0.02f, sensitive);
  }
  add("output_norm.weight", s.n_embd, 1, 1.0f, 0.1f, DType::F32);
  add("output.weight", s.n_embd, n_vocab, 0.0f, 0.02f, mix.output);
}

// F32 or F16 throughout.
inline void write_synthetic_llama(GGUFWriter& out, const SyntheticShape& s, DType type, std::uint64_t seed,
                                  std::string_view arch = "llama") {
  if (type != DType::F32 && type != DType::F16)
    throw Error("plain synthetic models are F32 or F16", "write_synthetic_llama", "a weight mix for quantized ones");
  write_synthetic_llama(out, s, weight_mix(type == DType::F32 ? "F32" : "F16"), seed, arch);
}

// A random LoRA adapter of rank r for a synthetic Llama of shape s on all seven matrices of every
// block, in llama.cpp's adapter layout (model/lora.hpp): A ~ N(0, 1 / sqrt(n_in)), B ~ N(0, 0.01),
// alpha = r, of type F32 or F16. For benchmarks (its update is noise, small beside the weights).
inline void write_synthetic_lora(GGUFWriter& out, const SyntheticShape& s, std::size_t rank, DType type,
                                 std::uint64_t seed, std::string_view arch = "llama") {
  if (type != DType::F32 && type != DType::F16) throw Error("synthetic adapters are F32 or F16", "write_synthetic_lora");
  if (rank == 0 || rank > s.n_embd) throw Error("rank " + std::to_string(rank), "write_synthetic_lora", "1 to n_embd");
  write_lora_metadata(out, arch, float(rank), "tinyllm synthetic LoRA r" + std::to_string(rank) + " for " + std::string(s.name));
  SplitMix64 rng(seed);
  std::vector<float> values;
  std::vector<std::byte> bytes;
  auto add = [&](const std::string& name, std::size_t cols, std::size_t rows, float sd) {
    values.resize(cols * rows);
    for (float& v : values) v = sd * rng.normal();
    bytes.resize(quantized_bytes(type, cols) * rows);
    for (std::size_t r = 0; r < rows; ++r)
      quantize_row(type, values.data() + r * cols, bytes.data() + r * quantized_bytes(type, cols), cols);
    out.add_tensor(name, type, {cols, rows}, bytes.data(), bytes.size());
  };
  const std::size_t kv_dim = s.n_embd / s.n_heads * s.n_kv_heads;
  const std::pair<const char*, std::array<std::size_t, 2>> targets[] = {
      {"attn_q", {s.n_embd, s.n_embd}}, {"attn_k", {kv_dim, s.n_embd}},  {"attn_v", {kv_dim, s.n_embd}},
      {"attn_output", {s.n_embd, s.n_embd}}, {"ffn_gate", {s.n_ff, s.n_embd}}, {"ffn_up", {s.n_ff, s.n_embd}},
      {"ffn_down", {s.n_embd, s.n_ff}}};
  for (std::size_t l = 0; l < s.n_layers; ++l)
    for (const auto& [name, shape] : targets) {
      const auto [n_out, n_in] = shape;
      const std::string w = "blk." + std::to_string(l) + "." + name + ".weight";
      add(w + ".lora_a", n_in, rank, 1.0f / std::sqrt(float(n_in)));
      add(w + ".lora_b", rank, n_out, 0.01f);
    }
}

}  // namespace tinyllm

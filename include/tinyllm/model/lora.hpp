#pragma once
// LoRA adapters: a low-rank update of some of a model's matrices,
//   y = W x + scale * (alpha / r) * B (A x),      A [r, n_in], B [n_out, r],
// read from GGUF files in the layout llama.cpp writes and reads: general.type = "adapter",
// adapter.type = "lora", adapter.lora.alpha, general.architecture as the base model's, and for
// each adapted matrix "<weight name>.lora_a" (GGUF dims [n_in, r]) and ".lora_b" ([r, n_out]).
// The base weights are never touched (quantized or not): Transformer adds the low-rank product
// after each matmul, per sequence of a batch (SequenceSlice::adapters) or for every token
// (Transformer::set_adapters).
#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/model/config.hpp>
#include <tinyllm/model/weights.hpp>

namespace tinyllm {

// The matrices of a block that an adapter may change, with their GGUF names (blk.N.<name>.weight).
enum class LoraTarget : std::uint8_t { q, k, v, o, gate, up, down };
inline constexpr std::size_t kLoraTargets = 7;
inline constexpr std::array<std::string_view, kLoraTargets> kLoraTargetNames = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

// [n_out, n_in] of a target in a model of this configuration.
inline std::array<std::size_t, 2> lora_target_shape(const ModelConfig& c, LoraTarget t) {
  switch (t) {
    case LoraTarget::q: return {c.q_dim(), c.n_embd};
    case LoraTarget::k: case LoraTarget::v: return {c.kv_dim(), c.n_embd};
    case LoraTarget::o: return {c.n_embd, c.q_dim()};
    case LoraTarget::gate: case LoraTarget::up: return {c.n_ff, c.n_embd};
    case LoraTarget::down: return {c.n_embd, c.n_ff};
  }
  return {0, 0};
}

// The GGUF name of target t's weight in block l ("blk.3.attn_q.weight"); its adapter's A and B
// add ".lora_a" and ".lora_b".
inline std::string lora_weight_name(std::size_t l, LoraTarget t) {
  return "blk." + std::to_string(l) + "." + std::string(kLoraTargetNames[std::size_t(t)]) + ".weight";
}

// The metadata that makes a GGUF file a LoRA adapter for architecture `arch` (what
// LoraAdapter::load checks), for the writers of adapters.
inline void write_lora_metadata(GGUFWriter& out, std::string_view arch, float alpha, std::string name) {
  out.set_string("general.architecture", std::string(arch));
  out.set_string("general.type", "adapter");
  out.set_string("general.name", std::move(name));
  out.set_string("adapter.type", "lora");
  out.set_f32("adapter.lora.alpha", alpha);
}

// One adapted matrix; empty (a.data null) where the adapter leaves the matrix alone.
struct LoraMatrix {
  WeightMatrix a;  // [r, n_in]
  WeightMatrix b;  // [n_out, r]
  explicit operator bool() const noexcept { return a.data != nullptr; }
  std::size_t rank() const noexcept { return a.rows; }
};

class LoraAdapter {
 public:
  // Opens a LoRA GGUF and checks it against the base model's configuration: an adapter file
  // (not a model), of the same architecture, every tensor a known "<weight>.lora_a/_b" pair of
  // a block the model has, shapes [r, n_in] and [n_out, r] with n_in, n_out the model's, in a
  // type the matmul takes.
  static std::shared_ptr<const LoraAdapter> load(const std::string& path, const ModelConfig& base) {
    return std::shared_ptr<const LoraAdapter>(new LoraAdapter(GGUFFile::open(path), base));
  }
  // The same from a parsed file (bytes owned by the caller, who keeps them alive).
  static std::shared_ptr<const LoraAdapter> from_gguf(GGUFFile file, const ModelConfig& base) {
    return std::shared_ptr<const LoraAdapter>(new LoraAdapter(std::move(file), base));
  }

  const std::string& path() const noexcept { return file_.name(); }
  // Unique among the adapters this process loads (never reused, unlike an address).
  std::uint64_t id() const noexcept { return id_; }
  float alpha() const noexcept { return alpha_; }
  std::size_t max_rank() const noexcept { return max_rank_; }
  std::size_t n_layers() const noexcept { return layers_.size(); }
  std::size_t n_matrices() const noexcept { return n_matrices_; }
  const LoraMatrix& matrix(std::size_t layer, LoraTarget t) const { return layers_[layer][std::size_t(t)]; }
  // Whether every matrix has the shapes of a model with this configuration.
  bool fits(const ModelConfig& c) const {
    if (layers_.size() != c.n_layers) return false;
    for (const auto& l : layers_)
      for (std::size_t i = 0; i < kLoraTargets; ++i)
        if (l[i]) {
          const auto [n_out, n_in] = lora_target_shape(c, LoraTarget(i));
          if (l[i].a.cols != n_in || l[i].b.rows != n_out) return false;
        }
    return true;
  }
  // Parameters in all A and B matrices.
  std::size_t n_params() const {
    std::size_t n = 0;
    for (const auto& l : layers_)
      for (const LoraMatrix& m : l)
        if (m) n += m.a.rows * m.a.cols + m.b.rows * m.b.cols;
    return n;
  }
  // The factor of B (A x) for a user's scale: scale * alpha / r (alpha 0 in the file: scale alone,
  // as llama.cpp reads it).
  float factor(const LoraMatrix& m, float scale) const noexcept {
    return alpha_ > 0 ? scale * alpha_ / float(m.rank()) : scale;
  }

 private:
  LoraAdapter(GGUFFile file, const ModelConfig& base) : file_(std::move(file)), layers_(base.n_layers) {
    const std::string& where = file_.name();
    const std::string type = file_.has("general.type") ? file_.get_string("general.type") : "";
    if (type != "adapter")
      throw Error("not an adapter file (general.type is \"" + type + "\")", where, "general.type = \"adapter\"");
    const std::string kind = file_.has("adapter.type") ? file_.get_string("adapter.type") : "";
    if (kind != "lora") throw Error("adapter of type \"" + kind + "\"", where, "adapter.type = \"lora\"");
    const std::string arch = file_.has("general.architecture") ? file_.get_string("general.architecture") : "";
    if (arch != base.arch)
      throw Error("adapter for architecture \"" + arch + "\"", where, "the base model's \"" + base.arch + "\"");
    alpha_ = file_.get_f32_or("adapter.lora.alpha", 0.0f);
    if (!(alpha_ >= 0.0f) || alpha_ > 1e6f) throw Error("adapter.lora.alpha = " + std::to_string(alpha_), where, "0 <= alpha");

    for (const TensorView& t : file_.tensors()) {
      const std::string& name = t.name;
      const bool is_a = name.ends_with(".weight.lora_a"), is_b = name.ends_with(".weight.lora_b");
      if (!is_a && !is_b) throw Error("tensor " + name + " is not a LoRA A or B matrix", where, "<weight>.lora_a, <weight>.lora_b");
      const auto [layer, target] = parse_name(name, base, where);
      LoraMatrix& m = layers_[layer][std::size_t(target)];
      WeightMatrix& w = is_a ? m.a : m.b;
      if (w.data) throw Error("tensor " + name + " appears twice", where);
      if (t.n_dims != 2 || !matmul_supports(t.dtype))
        throw Error("tensor " + name + " has " + std::to_string(t.n_dims) + " dims of type " + std::string(tinyllm::name(t.dtype)),
                    where, "2 dims of a matmul type: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K");
      w = {name, t.dtype, t.data, t.rows(), t.cols()};
    }
    for (std::size_t l = 0; l < layers_.size(); ++l)
      for (std::size_t i = 0; i < kLoraTargets; ++i) {
        LoraMatrix& m = layers_[l][i];
        if (!m.a.data && !m.b.data) continue;
        const std::string base_name = lora_weight_name(l, LoraTarget(i));
        if (!m.a.data || !m.b.data) throw Error(base_name + " has only one of lora_a and lora_b", where);
        const auto [n_out, n_in] = lora_target_shape(base, LoraTarget(i));
        const std::size_t r = m.a.rows;
        if (r == 0 || r > n_in || m.a.cols != n_in || m.b.rows != n_out || m.b.cols != r)
          throw Error(base_name + ": lora_a is [" + std::to_string(m.a.rows) + ", " + std::to_string(m.a.cols) +
                          "] and lora_b [" + std::to_string(m.b.rows) + ", " + std::to_string(m.b.cols) + "]",
                      where, "[r, " + std::to_string(n_in) + "] and [" + std::to_string(n_out) + ", r], 0 < r <= " + std::to_string(n_in));
        if (m.b.cols % info(m.b.type).block_size != 0)
          throw Error(base_name + ".lora_b of type " + std::string(tinyllm::name(m.b.type)) + " with rank " + std::to_string(r),
                      where, "a rank that is whole blocks of its type (F32 or F16 for any rank)");
        max_rank_ = std::max(max_rank_, r);
        ++n_matrices_;
      }
    if (n_matrices_ == 0) throw Error("adapter has no LoRA matrices", where);
  }

  // "blk.N.<target>.weight.lora_a" -> N, target.
  static std::pair<std::size_t, LoraTarget> parse_name(const std::string& name, const ModelConfig& base,
                                                        const std::string& where) {
    std::size_t layer = 0, i = 4;
    if (name.rfind("blk.", 0) != 0 || i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i])))
      throw Error("tensor " + name + " is not a block's matrix", where, "blk.N.<matrix>.weight.lora_a/b");
    for (; i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && layer <= base.n_layers; ++i)
      layer = layer * 10 + std::size_t(name[i] - '0');
    if (layer >= base.n_layers)
      throw Error("tensor " + name + " is for block " + std::to_string(layer), where,
                  "blocks below " + std::to_string(base.n_layers));
    const std::string_view rest = std::string_view(name).substr(i);  // ".<target>.weight.lora_x"
    for (std::size_t t = 0; t < kLoraTargets; ++t)
      if (rest.size() == kLoraTargetNames[t].size() + 1 + std::string_view(".weight.lora_a").size() &&
          rest.substr(1, kLoraTargetNames[t].size()) == kLoraTargetNames[t] && rest[0] == '.')
        return {layer, LoraTarget(t)};
    throw Error("tensor " + name + " adapts no matrix this model has", where,
                "attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up or ffn_down");
  }

  GGUFFile file_;
  float alpha_ = 0.0f;
  std::vector<std::array<LoraMatrix, kLoraTargets>> layers_;
  std::size_t max_rank_ = 0, n_matrices_ = 0;
  std::uint64_t id_ = next_id();

  static std::uint64_t next_id() {
    static std::atomic<std::uint64_t> n{0};
    return ++n;
  }
};

// An adapter and the scale it is applied with (llama.cpp's --lora-scaled; 1 for --lora).
struct AdapterRef {
  std::shared_ptr<const LoraAdapter> adapter;
  float scale = 1.0f;
  friend bool operator==(const AdapterRef&, const AdapterRef&) = default;
};

}  // namespace tinyllm

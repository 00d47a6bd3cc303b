#pragma once
// Hugging Face checkpoint folders: config.json for the hyper-parameters, model.safetensors (or
// shards through model.safetensors.index.json) for the weights, used in place over mmap. The
// layout differences from GGUF are handled here, as llama.cpp's converter handles them, but
// without rewriting weights:
//   - Llama and Mistral: Hugging Face keeps Q and K rows in the order that rotates dimension i
//     with i + head_dim/2; GGUF permutes them so adjacent pairs rotate. Rather than permute the
//     rows back (a copy), the model runs with half-split RoPE (NeoxRope<Arch>), the same function.
//   - Gemma: RMSNorm weights are stored as w and applied as (1 + w); GGUF stores 1 + w.
//   - Tied embeddings: no lm_head.weight, the classifier is the embedding.
// Models: llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3 (model_type in config.json).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <tinyllm/core/error.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/io/json_file.hpp>
#include <tinyllm/io/safetensors.hpp>
#include <tinyllm/quant/dequantize.hpp>
#include <tinyllm/model/arch/all.hpp>
#include <tinyllm/model/bind.hpp>
#include <tinyllm/model/config.hpp>
#include <tinyllm/model/transformer.hpp>
#include <tinyllm/text/hf_tokenizer.hpp>

namespace tinyllm {

// An architecture whose Q and K rows are in Hugging Face's order: RoPE rotates half-split pairs.
template <class Arch>
struct NeoxRope : Arch {
  static constexpr RopeStyle rope = RopeStyle::half_split;
};

// Whether `path` names a Hugging Face folder (or its config.json) rather than a model file.
inline bool is_hf_folder(const std::filesystem::path& path) {
  if (std::filesystem::is_directory(path)) return std::filesystem::exists(path / "config.json");
  return path.filename() == "config.json";
}
inline std::filesystem::path hf_folder(const std::filesystem::path& path) {
  return std::filesystem::is_directory(path) ? path : path.parent_path();
}

namespace detail {

// config.json's fields as ModelConfig, under the GGUF name of the architecture.
struct HfConfig {
  ModelConfig cfg;
  bool tied = false;
  std::vector<float> rope_freq_factors;   // Llama 3.1's, computed as llama.cpp's converter does
};

inline HfConfig read_hf_config(const std::filesystem::path& file) {
  const nlohmann::json j = read_json_file(file);
  const std::string where = file.string();
  auto get = [&](const char* key) -> const nlohmann::json& {
    if (!j.contains(key) || j[key].is_null()) throw Error("missing key " + std::string(key), where);
    return j[key];
  };
  auto size = [&](const char* key) {
    const auto& v = get(key);
    if (!v.is_number_unsigned() || v.get<std::uint64_t>() == 0 || v.get<std::uint64_t>() > (1u << 24))
      throw Error(std::string(key) + " is not a positive size", where);
    return std::size_t(v.get<std::uint64_t>());
  };
  auto number = [&](const char* key, double dflt) {
    if (!j.contains(key) || j[key].is_null()) return dflt;
    if (!j[key].is_number()) throw Error(std::string(key) + " is not a number", where);
    return j[key].get<double>();
  };
  HfConfig h;
  ModelConfig& c = h.cfg;
  std::string type = get("model_type").get<std::string>();
  if (type == "gemma3_text") type = "gemma3";
  const char* known[] = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3"};
  if (std::find(std::begin(known), std::end(known), type) == std::end(known))
    throw Error("unsupported model_type '" + type + "'", where, "llama, mistral, qwen2, qwen3, gemma, gemma2 or gemma3");
  c.arch = type;
  c.n_embd = size("hidden_size");
  c.n_layers = size("num_hidden_layers");
  c.n_heads = size("num_attention_heads");
  c.n_kv_heads = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null() ? size("num_key_value_heads")
                                                                                          : c.n_heads;
  c.head_dim = j.contains("head_dim") && !j["head_dim"].is_null() ? size("head_dim") : c.n_embd / c.n_heads;
  c.n_ff = size("intermediate_size");
  c.vocab_size = size("vocab_size");
  c.context = size("max_position_embeddings");
  c.norm_eps = float(number("rms_norm_eps", 1e-6));
  c.rope_theta = float(number("rope_theta", 10000.0));
  if (c.n_heads % c.n_kv_heads != 0 || c.head_dim % 2 != 0)
    throw Error("heads " + std::to_string(c.n_heads) + ", KV heads " + std::to_string(c.n_kv_heads) + ", head_dim " +
                    std::to_string(c.head_dim), where, "KV heads dividing heads and an even head_dim");
  h.tied = j.value("tie_word_embeddings", type.starts_with("gemma"));
  const bool sliding = j.value("use_sliding_window", type != "qwen2" && type != "qwen3");
  if (sliding && j.contains("sliding_window") && j["sliding_window"].is_number_unsigned())
    c.sliding_window = j["sliding_window"].get<std::size_t>();
  if (type == "gemma2" || type == "gemma3") {
    c.attn_scale = float(1.0 / std::sqrt(number("query_pre_attn_scalar", double(c.head_dim))));
    c.attn_softcap = float(number("attn_logit_softcapping", 0.0));
    c.final_softcap = float(number("final_logit_softcapping", 0.0));
  }
  if (type == "gemma3") c.rope_theta_swa = float(number("rope_local_base_freq", 10000.0));
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    const auto& rs = j["rope_scaling"];
    const std::string kind = rs.value("rope_type", rs.value("type", std::string()));
    const double factor = rs.value("factor", 1.0);
    if (kind == "linear") {
      c.rope_linear_scale = float(factor);
    } else if (kind == "llama3") {
      // Long wavelengths slowed by `factor`, short ones kept, a smooth blend between.
      const double low = rs.value("low_freq_factor", 1.0), high = rs.value("high_freq_factor", 4.0);
      const double old_ctx = rs.value("original_max_position_embeddings", 8192.0);
      const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
      for (std::size_t i = 0; i < c.head_dim / 2; ++i) {
        const double freq = 1.0 / std::pow(double(c.rope_theta), double(2 * i) / double(c.head_dim));
        const double wavelen = 2 * std::numbers::pi / freq;
        double f = 1.0;
        if (wavelen > low_wavelen) {
          f = factor;
        } else if (wavelen >= high_wavelen) {
          const double smooth = (old_ctx / wavelen - low) / (high - low);
          f = 1.0 / ((1 - smooth) / factor + smooth);
        }
        h.rope_freq_factors.push_back(float(f));
      }
    } else if (!kind.empty() && kind != "default") {
      throw Error("rope_scaling type '" + kind + "' is not supported", where, "linear or llama3");
    }
  }
  return h;
}

inline WeightMatrix hf_matrix(const SafetensorsModel& m, const std::string& tensor, std::size_t rows, std::size_t cols) {
  return matrix(m.tensor(tensor).view(m.file_of(tensor)), rows, cols, m.file_of(tensor) + ", tensor " + tensor);
}

// A norm or bias vector as f32; Gemma's norms get their 1 added (`plus_one`).
inline AlignedBuffer<float> hf_vector(const SafetensorsModel& m, const std::string& tensor, std::size_t n,
                                      bool plus_one = false) {
  AlignedBuffer<float> v = norm_weights(m.tensor(tensor).view(m.file_of(tensor)), n, m.file_of(tensor));
  if (plus_one) for (float& x : v) x += 1.0f;
  return v;
}

template <class Arch, class Backend>
std::unique_ptr<Model> bind_hf(const SafetensorsModel& m, const HfConfig& h, const LoadOptions& opt) {
  const ModelConfig& c = h.cfg;
  const bool gemma = c.arch.starts_with("gemma");
  TransformerWeights w;
  w.token_embd = hf_matrix(m, "model.embed_tokens.weight", c.vocab_size, c.n_embd);
  w.layers.resize(c.n_layers);
  for (std::size_t l = 0; l < c.n_layers; ++l) {
    const std::string b = "model.layers." + std::to_string(l) + ".";
    LayerWeights& lw = w.layers[l];
    lw.attn_norm = hf_vector(m, b + "input_layernorm.weight", c.n_embd, gemma);
    lw.wq = hf_matrix(m, b + "self_attn.q_proj.weight", c.q_dim(), c.n_embd);
    lw.wk = hf_matrix(m, b + "self_attn.k_proj.weight", c.kv_dim(), c.n_embd);
    lw.wv = hf_matrix(m, b + "self_attn.v_proj.weight", c.kv_dim(), c.n_embd);
    lw.wo = hf_matrix(m, b + "self_attn.o_proj.weight", c.n_embd, c.q_dim());
    if constexpr (Arch::qkv_bias) {
      lw.bq = hf_vector(m, b + "self_attn.q_proj.bias", c.q_dim());
      lw.bk = hf_vector(m, b + "self_attn.k_proj.bias", c.kv_dim());
      lw.bv = hf_vector(m, b + "self_attn.v_proj.bias", c.kv_dim());
    }
    if constexpr (Arch::qk_norm) {
      lw.q_norm = hf_vector(m, b + "self_attn.q_norm.weight", c.head_dim, gemma);
      lw.k_norm = hf_vector(m, b + "self_attn.k_norm.weight", c.head_dim, gemma);
    }
    if constexpr (Arch::post_norms) {   // Gemma 2 and 3: a norm on each side of both blocks
      lw.post_attn_norm = hf_vector(m, b + "post_attention_layernorm.weight", c.n_embd, gemma);
      lw.ffn_norm = hf_vector(m, b + "pre_feedforward_layernorm.weight", c.n_embd, gemma);
      lw.post_ffn_norm = hf_vector(m, b + "post_feedforward_layernorm.weight", c.n_embd, gemma);
    } else {
      lw.ffn_norm = hf_vector(m, b + "post_attention_layernorm.weight", c.n_embd, gemma);
    }
    lw.w_gate = hf_matrix(m, b + "mlp.gate_proj.weight", c.n_ff, c.n_embd);
    lw.w_up = hf_matrix(m, b + "mlp.up_proj.weight", c.n_ff, c.n_embd);
    lw.w_down = hf_matrix(m, b + "mlp.down_proj.weight", c.n_embd, c.n_ff);
  }
  w.output_norm = hf_vector(m, "model.norm.weight", c.n_embd, gemma);
  w.output = !h.tied && m.find("lm_head.weight") ? hf_matrix(m, "lm_head.weight", c.vocab_size, c.n_embd) : w.token_embd;
  if (!h.rope_freq_factors.empty()) {
    w.rope_freq_factors.resize(h.rope_freq_factors.size());
    std::copy(h.rope_freq_factors.begin(), h.rope_freq_factors.end(), w.rope_freq_factors.begin());
  }
  return build_model<Arch, Backend>(c, std::move(w), opt, nullptr);
}

}  // namespace detail

// A Llama GGUF file (F32 or F16 weights, or any type dequantize_row reads) written as a Hugging
// Face folder, config.json and model.safetensors with matrices of `type` (F32, F16 or BF16), as
// transformers lays out a Llama: the same model in the other layout (Q and K rows in Hugging
// Face's order), for tests and benchmarks of the folder loader.
inline void write_hf_llama(const GGUFFile& f, const std::filesystem::path& dir, DType type) {
  std::filesystem::create_directories(dir);
  const std::size_t n_embd = f.get_u32("llama.embedding_length"), n_heads = f.get_u32("llama.attention.head_count");
  const std::size_t head_dim = n_embd / n_heads;
  const nlohmann::json config = {
      {"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", n_embd},
      {"num_hidden_layers", f.get_u32("llama.block_count")}, {"num_attention_heads", n_heads},
      {"num_key_value_heads", f.get_u32_or("llama.attention.head_count_kv", std::uint32_t(n_heads))},
      {"head_dim", head_dim}, {"intermediate_size", f.get_u32("llama.feed_forward_length")},
      {"vocab_size", f.tensor("token_embd.weight").rows()}, {"max_position_embeddings", f.get_u32("llama.context_length")},
      {"rms_norm_eps", f.get_f32("llama.attention.layer_norm_rms_epsilon")},
      {"rope_theta", f.get_f32_or("llama.rope.freq_base", 10000.0f)}, {"tie_word_embeddings", false},
      {"torch_dtype", type == DType::BF16 ? "bfloat16" : type == DType::F16 ? "float16" : "float32"}};
  std::ofstream(dir / "config.json") << config.dump(2) << "\n";
  const std::pair<const char*, const char*> names[] = {
      {"attn_norm", "input_layernorm"}, {"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"}, {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
      {"ffn_gate", "mlp.gate_proj"}, {"ffn_up", "mlp.up_proj"}, {"ffn_down", "mlp.down_proj"}};
  SafetensorsWriter w;
  std::vector<float> values;
  std::vector<std::uint16_t> halves;
  for (const TensorView& t : f.tensors()) {
    std::string hf;
    bool rope_rows = false;
    if (t.name == "token_embd.weight") hf = "model.embed_tokens.weight";
    else if (t.name == "output_norm.weight") hf = "model.norm.weight";
    else if (t.name == "output.weight") hf = "lm_head.weight";
    else {
      const auto dot = t.name.find('.', 4);   // blk.N.<name>.weight
      const std::string layer = t.name.substr(4, dot - 4), base = t.name.substr(dot + 1, t.name.size() - dot - 8);
      for (const auto& [g, h] : names)
        if (base == g) hf = "model.layers." + layer + "." + h + ".weight";
      if (hf.empty()) throw Error("no Hugging Face name for " + t.name, "write_hf_llama", "a Llama GGUF");
      rope_rows = base == "attn_q" || base == "attn_k";
    }
    const std::size_t rows = t.rows(), cols = t.cols();
    values.resize(rows * cols);
    for (std::size_t r = 0; r < rows; ++r) {
      // GGUF's row 2j + k of a head is Hugging Face's row j + k * head_dim / 2.
      const std::size_t h = r / head_dim, i = r % head_dim;
      const std::size_t to = rope_rows ? h * head_dim + i / 2 + (i % 2) * (head_dim / 2) : r;
      dequantize_row(t.dtype, static_cast<const std::byte*>(t.data) + r * row_bytes(t.dtype, cols), values.data() + to * cols,
                     cols);
    }
    std::vector<std::uint64_t> shape = t.n_dims == 1 ? std::vector<std::uint64_t>{cols} : std::vector<std::uint64_t>{rows, cols};
    if (type == DType::F32 || t.n_dims == 1) {
      w.add_tensor(hf, DType::F32, shape, values.data(), values.size() * 4);
      continue;
    }
    halves.resize(values.size());
    for (std::size_t i = 0; i < values.size(); ++i)
      halves[i] = type == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
    w.add_tensor(hf, type, shape, halves.data(), halves.size() * 2);
  }
  w.write((dir / "model.safetensors").string());
}

namespace detail {

// Arch = void: the traits config.json's model_type names; otherwise the given traits over the
// folder's weights. The tokenizer is tokenizer.json's (a llama2.c tokenizer given as
// LoadOptions::tokenizer_path overrides it); the chat template is tokenizer_config.json's.
template <class Arch, class Backend>
LoadedModel load_hf(const std::filesystem::path& dir, const LoadOptions& opt) {
  const HfConfig h = read_hf_config(dir / "config.json");
  auto st = std::make_shared<const SafetensorsModel>(SafetensorsModel::open_folder(dir));
  std::unique_ptr<Model> model;
  if constexpr (!std::is_void_v<Arch>) {
    model = bind_hf<Arch, Backend>(*st, h, opt);
  } else {
    const std::string& a = h.cfg.arch;
    if (a == "llama") model = bind_hf<NeoxRope<Llama>, Backend>(*st, h, opt);
    else if (a == "mistral") model = bind_hf<NeoxRope<Mistral>, Backend>(*st, h, opt);
    else if (a == "qwen2") model = bind_hf<Qwen2, Backend>(*st, h, opt);
    else if (a == "qwen3") model = bind_hf<Qwen3, Backend>(*st, h, opt);
    else if (a == "gemma") model = bind_hf<Gemma, Backend>(*st, h, opt);
    else if (a == "gemma2") model = bind_hf<Gemma2, Backend>(*st, h, opt);
    else model = bind_hf<Gemma3, Backend>(*st, h, opt);
  }
  std::optional<Tokenizer> tok = tokenizer_file(opt, h.cfg.vocab_size);
  if (!tok && std::filesystem::exists(dir / "tokenizer.json")) tok = load_hf_tokenizer(dir);
  // Hugging Face models often pad the embedding past the tokenizer's last token.
  if (tok && tok->size() > h.cfg.vocab_size)
    throw Error("the tokenizer has " + std::to_string(tok->size()) + " tokens", (dir / "tokenizer.json").string(),
                "at most the model's vocab_size, " + std::to_string(h.cfg.vocab_size));
  LoadedModel lm(st, std::move(model), std::move(tok), dir.string());
  if (std::filesystem::exists(dir / "tokenizer_config.json"))
    lm.set_chat_template(hf_chat_template(read_json_file(dir / "tokenizer_config.json")));
  return lm;
}

}  // namespace detail
}  // namespace tinyllm

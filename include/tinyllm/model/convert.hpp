#pragma once
// A Hugging Face folder written as GGUF, as llama.cpp's converter writes it for the same
// architectures: its metadata keys, its tensor names, the Q/K rows of llama and mistral permuted so
// that adjacent pairs rotate, Gemma's norms stored as 1 + w, norms and biases as F32, and the
// matrices in the folder's own type or in `out_type` (F32, F16, BF16, or a quantized type through
// quant/, for matrices whose rows are whole blocks; the others keep F16). No tokenizer yet: the
// folder's tokenizer.json is not read (so a program reading the GGUF needs -z or token ids).
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/io/safetensors.hpp>
#include <tinyllm/model/hf.hpp>
#include <tinyllm/quant/dequantize.hpp>
#include <tinyllm/quant/quantize.hpp>

namespace tinyllm {

inline void convert_hf_to_gguf(const std::filesystem::path& folder, GGUFWriter& out,
                               std::optional<DType> out_type = std::nullopt) {
  const detail::HfConfig h = detail::read_hf_config(folder / "config.json");
  const ModelConfig& c = h.cfg;
  const SafetensorsModel st = SafetensorsModel::open_folder(folder);
  const std::string a = c.arch, p = a + ".";
  const bool gemma = a.starts_with("gemma"), post_norms = a == "gemma2" || a == "gemma3";
  const bool permute_qk = a == "llama" || a == "mistral";

  out.set_string("general.architecture", a);
  out.set_string("general.name", folder.filename().string());
  out.set_u32(p + "context_length", std::uint32_t(c.context));
  out.set_u32(p + "embedding_length", std::uint32_t(c.n_embd));
  out.set_u32(p + "block_count", std::uint32_t(c.n_layers));
  out.set_u32(p + "feed_forward_length", std::uint32_t(c.n_ff));
  out.set_u32(p + "attention.head_count", std::uint32_t(c.n_heads));
  out.set_u32(p + "attention.head_count_kv", std::uint32_t(c.n_kv_heads));
  out.set_f32(p + "attention.layer_norm_rms_epsilon", c.norm_eps);
  out.set_f32(p + "rope.freq_base", c.rope_theta);
  if (c.head_dim != c.n_embd / c.n_heads) {
    out.set_u32(p + "attention.key_length", std::uint32_t(c.head_dim));
    out.set_u32(p + "attention.value_length", std::uint32_t(c.head_dim));
  }
  if (c.rope_linear_scale != 1.0f) {
    out.set_string(p + "rope.scaling.type", "linear");
    out.set_f32(p + "rope.scaling.factor", c.rope_linear_scale);
  }
  if (c.rope_theta_swa > 0) out.set_f32(p + "rope.freq_base_swa", c.rope_theta_swa);
  if (c.sliding_window > 0) out.set_u32(p + "attention.sliding_window", std::uint32_t(c.sliding_window));
  if (c.attn_scale > 0) out.set_f32(p + "attention.scale", c.attn_scale);
  if (c.attn_softcap > 0) out.set_f32(p + "attn_logit_softcapping", c.attn_softcap);
  if (c.final_softcap > 0) out.set_f32(p + "final_logit_softcapping", c.final_softcap);

  std::vector<float> values;
  std::vector<std::byte> bytes;
  // A vector (norm, bias) as F32; Gemma's norms with their 1 added.
  auto vector = [&](const std::string& from, const std::string& to, bool plus_one) {
    const auto v = detail::hf_vector(st, from, std::size_t(st.tensor(from).n_elements()), plus_one);
    out.add_tensor(to, DType::F32, {v.size()}, v.data(), v.size() * sizeof(float));
  };
  // A matrix [rows, cols]: rows permuted per head for RoPE where asked, then stored as `type`.
  auto matrix = [&](const std::string& from, const std::string& to, std::size_t heads) {
    const SafetensorsTensor& t = st.tensor(from);
    const TensorView v = t.view(st.file_of(from));
    if (t.shape.size() != 2) throw Error("not a matrix", st.file_of(from) + ", tensor " + from);
    const std::size_t rows = v.rows(), cols = v.cols();
    DType type = out_type.value_or(v.dtype);
    if (cols % info(type).block_size != 0) type = DType::F16;
    const std::size_t hd = heads ? rows / heads : 0;
    values.resize(cols);
    bytes.resize(rows * row_bytes(type, cols));
    for (std::size_t r = 0; r < rows; ++r) {
      // GGUF's row 2j + k of a head is Hugging Face's row j + k * head_dim / 2.
      const std::size_t i = hd ? r % hd : 0;
      const std::size_t from_row = heads ? r - i + i / 2 + (i % 2) * (hd / 2) : r;
      dequantize_row(v.dtype, static_cast<const std::byte*>(v.data) + from_row * row_bytes(v.dtype, cols), values.data(),
                     cols);
      quantize_row(type, values.data(), bytes.data() + r * row_bytes(type, cols), cols);
    }
    out.add_tensor(to, type, {cols, rows}, bytes.data(), bytes.size());
  };

  matrix("model.embed_tokens.weight", "token_embd.weight", 0);
  for (std::size_t l = 0; l < c.n_layers; ++l) {
    const std::string hf = "model.layers." + std::to_string(l) + ".", g = "blk." + std::to_string(l) + ".";
    vector(hf + "input_layernorm.weight", g + "attn_norm.weight", gemma);
    matrix(hf + "self_attn.q_proj.weight", g + "attn_q.weight", permute_qk ? c.n_heads : 0);
    matrix(hf + "self_attn.k_proj.weight", g + "attn_k.weight", permute_qk ? c.n_kv_heads : 0);
    matrix(hf + "self_attn.v_proj.weight", g + "attn_v.weight", 0);
    matrix(hf + "self_attn.o_proj.weight", g + "attn_output.weight", 0);
    for (const char* b : {"q", "k", "v"})
      if (st.find(hf + "self_attn." + b + "_proj.bias"))
        vector(hf + "self_attn." + b + "_proj.bias", g + "attn_" + b + ".bias", false);
    if (st.find(hf + "self_attn.q_norm.weight")) {
      vector(hf + "self_attn.q_norm.weight", g + "attn_q_norm.weight", gemma);
      vector(hf + "self_attn.k_norm.weight", g + "attn_k_norm.weight", gemma);
    }
    if (post_norms) {
      vector(hf + "post_attention_layernorm.weight", g + "post_attention_norm.weight", true);
      vector(hf + "pre_feedforward_layernorm.weight", g + "ffn_norm.weight", true);
      vector(hf + "post_feedforward_layernorm.weight", g + "post_ffw_norm.weight", true);
    } else {
      vector(hf + "post_attention_layernorm.weight", g + "ffn_norm.weight", gemma);
    }
    matrix(hf + "mlp.gate_proj.weight", g + "ffn_gate.weight", 0);
    matrix(hf + "mlp.up_proj.weight", g + "ffn_up.weight", 0);
    matrix(hf + "mlp.down_proj.weight", g + "ffn_down.weight", 0);
  }
  vector("model.norm.weight", "output_norm.weight", gemma);
  if (!h.tied && st.find("lm_head.weight")) matrix("lm_head.weight", "output.weight", 0);
  if (!h.rope_freq_factors.empty())
    out.add_tensor("rope_freqs.weight", DType::F32, {h.rope_freq_factors.size()}, h.rope_freq_factors.data(),
                   h.rope_freq_factors.size() * sizeof(float));
}

}  // namespace tinyllm

#pragma once
// Files from elsewhere written as GGUF. A Hugging Face folder, as llama.cpp's converter writes it for the same
// architectures: its metadata keys, its tensor names, the Q/K rows of llama and mistral permuted so
// that adjacent pairs rotate, Gemma's norms stored as 1 + w, norms and biases as F32, and the
// matrices in the folder's own type or in `out_type` (F32, F16, BF16, or a quantized type through
// quant/, for matrices whose rows are whole blocks; the others keep F16), and the folder's
// tokenizer.json and chat template as tokenizer.* metadata (text/hf_tokenizer.hpp) where it has them.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/io/llama2c.hpp>
#include <tinyllm/io/safetensors.hpp>
#include <tinyllm/model/hf.hpp>
#include <tinyllm/quant/dequantize.hpp>
#include <tinyllm/quant/quantize.hpp>
#include <tinyllm/text/hf_tokenizer.hpp>

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
  if (std::filesystem::exists(folder / "tokenizer.json")) write_gguf_tokenizer(folder, out, c.vocab_size);

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

// A llama2.c model and its tokenizer as one GGUF file (llama architecture, F32 weights), as
// llama.cpp's convert-llama2c-to-ggml writes it: the weights as they are (llama2.c rotates
// adjacent pairs, as GGUF's llama does; a shared classifier is the embedding, so no output.weight),
// and the tokenizer as a SentencePiece vocabulary: spaces written U+2581, "<0xAB>" byte tokens,
// <unk> 0, BOS <s> 1 and EOS </s> 2 (llama2.c's export stored those two as "\n<s>\n" and
// "\n</s>\n"). `name`, `license` and `source` go to general.name, general.license and
// general.source.url.
inline void convert_llama2c_to_gguf(const std::string& model_path, const std::string& tokenizer_path, GGUFWriter& out,
                                    const std::string& name, const std::string& license = "",
                                    const std::string& source = "") {
  const Llama2cFile file = Llama2cFile::open(model_path);
  const Llama2cConfig& c = file.config();
  const Llama2cWeights& w = file.weights();
  const Llama2cVocab vocab = read_llama2c_vocab(tokenizer_path, c.vocab_size);
  const auto u32 = [](int v) { return static_cast<std::uint32_t>(v); };
  out.set_string("general.architecture", "llama");
  out.set_string("general.name", name);
  if (!license.empty()) out.set_string("general.license", license);
  if (!source.empty()) out.set_string("general.source.url", source);
  out.set_u32("llama.context_length", u32(c.seq_len));
  out.set_u32("llama.embedding_length", u32(c.dim));
  out.set_u32("llama.block_count", u32(c.n_layers));
  out.set_u32("llama.feed_forward_length", u32(c.hidden_dim));
  out.set_u32("llama.attention.head_count", u32(c.n_heads));
  out.set_u32("llama.attention.head_count_kv", u32(c.n_kv_heads));
  out.set_u32("llama.rope.dimension_count", u32(c.head_size()));
  out.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  out.set_f32("llama.rope.freq_base", 10000.0f);

  std::vector<std::string> tokens(vocab.pieces.size());
  std::vector<std::int32_t> types(vocab.pieces.size(), static_cast<std::int32_t>(TokenType::normal));
  for (std::size_t id = 0; id < tokens.size(); ++id) {
    const std::string& piece = vocab.pieces[id];
    if (id <= 2) {
      tokens[id] = id == 0 ? "<unk>" : id == 1 ? "<s>" : "</s>";
      types[id] = static_cast<std::int32_t>(id == 0 ? TokenType::unknown : TokenType::control);
      continue;
    }
    const bool byte = piece.size() == 6 && piece.starts_with("<0x") && piece.back() == '>';
    if (byte) types[id] = static_cast<std::int32_t>(TokenType::byte);
    for (const char ch : piece) tokens[id] += ch == ' ' && !byte ? std::string("\xE2\x96\x81") : std::string(1, ch);
  }
  out.set_string("tokenizer.ggml.model", "llama");
  out.set_string_array("tokenizer.ggml.tokens", tokens);
  out.set_f32_array("tokenizer.ggml.scores", vocab.scores);
  out.set_i32_array("tokenizer.ggml.token_type", types);
  out.set_u32("tokenizer.ggml.unknown_token_id", 0);
  out.set_u32("tokenizer.ggml.bos_token_id", 1);
  out.set_u32("tokenizer.ggml.eos_token_id", 2);

  const std::uint64_t dim = u32(c.dim), hidden = u32(c.hidden_dim), kv = u32(c.kv_dim()), n_vocab = u32(c.vocab_size);
  const auto tensor = [&](const std::string& tensor_name, const float* data, std::uint64_t rows, std::uint64_t cols) {
    out.add_tensor(tensor_name, DType::F32, rows == 1 ? std::vector<std::uint64_t>{cols} : std::vector<std::uint64_t>{cols, rows},
                   data, rows * cols * sizeof(float));
  };
  tensor("token_embd.weight", w.token_embedding, n_vocab, dim);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    tensor(b + "attn_norm.weight", w.rms_att + l * dim, 1, dim);
    tensor(b + "attn_q.weight", w.wq + l * dim * dim, dim, dim);
    tensor(b + "attn_k.weight", w.wk + l * kv * dim, kv, dim);
    tensor(b + "attn_v.weight", w.wv + l * kv * dim, kv, dim);
    tensor(b + "attn_output.weight", w.wo + l * dim * dim, dim, dim);
    tensor(b + "ffn_norm.weight", w.rms_ffn + l * dim, 1, dim);
    tensor(b + "ffn_gate.weight", w.w1 + l * hidden * dim, hidden, dim);
    tensor(b + "ffn_down.weight", w.w2 + l * dim * hidden, dim, hidden);
    tensor(b + "ffn_up.weight", w.w3 + l * hidden * dim, hidden, dim);
  }
  tensor("output_norm.weight", w.rms_final, 1, dim);
  if (!c.shared_classifier) tensor("output.weight", w.wcls, n_vocab, dim);
}

}  // namespace tinyllm

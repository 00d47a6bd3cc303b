#pragma once
// Loading a model file: GGUF (architecture from general.architecture, weights bound by tensor
// name, zero-copy over mmap) or llama2.c's .bin. The file stays mapped for the model's life. The
// model runs on the CPU backend unless another is named: load<ReferenceBackend>(path).
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/io/llama2c.hpp>
#include <tinyllm/model/arch/all.hpp>
#include <tinyllm/model/bind.hpp>
#include <tinyllm/model/hf.hpp>
#include <tinyllm/model/synthetic.hpp>
#include <tinyllm/model/transformer.hpp>
#include <tinyllm/text/tokenizer.hpp>

namespace tinyllm {

namespace detail {

inline AlignedBuffer<float> vector_tensor(const GGUFFile& f, const std::string& tensor, std::size_t n) {
  return norm_weights(f.tensor(tensor), n, f.name());
}

// Hyperparameters under "<arch>.": every size from the file; defaults only where llama.cpp has them.
inline ModelConfig read_config(const GGUFFile& f, const std::string& arch) {
  const std::string p = arch + ".";
  ModelConfig c;
  c.arch = arch;
  c.n_embd = f.get_u32(p + "embedding_length");
  c.n_layers = f.get_u32(p + "block_count");
  c.n_ff = f.get_u32(p + "feed_forward_length");
  c.n_heads = f.get_u32(p + "attention.head_count");
  c.n_kv_heads = f.get_u32_or(p + "attention.head_count_kv", std::uint32_t(c.n_heads));
  c.context = f.get_u32(p + "context_length");
  c.norm_eps = f.get_f32(p + "attention.layer_norm_rms_epsilon");
  c.rope_theta = f.get_f32_or(p + "rope.freq_base", 10000.0f);
  c.rope_theta_swa = f.get_f32_or(p + "rope.freq_base_swa", 0.0f);
  if (f.has(p + "rope.scaling.type") && f.get_string(p + "rope.scaling.type") == "linear")
    c.rope_linear_scale = f.get_f32(p + "rope.scaling.factor");
  c.sliding_window = f.get_u32_or(p + "attention.sliding_window", 0);
  c.attn_scale = f.get_f32_or(p + "attention.scale", 0.0f);
  c.attn_softcap = f.get_f32_or(p + "attn_logit_softcapping", 0.0f);
  c.final_softcap = f.get_f32_or(p + "final_logit_softcapping", 0.0f);
  if (c.n_heads == 0 || c.n_kv_heads == 0 || c.n_embd % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0 ||
      c.n_layers == 0 || c.n_ff == 0 || c.context == 0 || c.n_layers > 1024)
    throw Error("inconsistent hyperparameters: n_embd " + std::to_string(c.n_embd) + ", layers " +
                std::to_string(c.n_layers) + ", heads " + std::to_string(c.n_heads) + ", kv heads " +
                std::to_string(c.n_kv_heads), f.name() + ", keys " + p + "*",
                "heads dividing n_embd, kv heads dividing heads, nonzero sizes");
  c.head_dim = f.get_u32_or(p + "attention.key_length", std::uint32_t(c.n_embd / c.n_heads));
  if (f.get_u32_or(p + "attention.value_length", std::uint32_t(c.head_dim)) != c.head_dim)
    throw Error("value heads of a different size than key heads", f.name() + ", key " + p + "attention.value_length",
                std::to_string(c.head_dim));
  if (c.head_dim == 0 || c.head_dim % 2 != 0)
    throw Error("head size " + std::to_string(c.head_dim), f.name(), "an even, nonzero head size");
  if (f.get_u32_or(p + "rope.dimension_count", std::uint32_t(c.head_dim)) != c.head_dim)
    throw Error("partial rotary embeddings are not supported", f.name() + ", key " + p + "rope.dimension_count",
                std::to_string(c.head_dim));
  c.vocab_size = f.tensor("token_embd.weight").rows();
  c.n_experts = f.get_u32_or(p + "expert_count", 0);
  if (c.n_experts > 0) {
    c.n_experts_used = f.get_u32(p + "expert_used_count");
    c.n_ff_expert = f.get_u32_or(p + "expert_feed_forward_length", std::uint32_t(c.n_ff));
    if (c.n_experts_used == 0 || c.n_experts_used > c.n_experts || c.n_experts > 4096 || c.n_ff_expert == 0)
      throw Error("experts: " + std::to_string(c.n_experts_used) + " used of " + std::to_string(c.n_experts) +
                  ", width " + std::to_string(c.n_ff_expert), f.name() + ", keys " + p + "expert_*",
                  "1 <= expert_used_count <= expert_count <= 4096 and a nonzero expert width");
  }
  return c;
}

// The experts of a stacked 3-D tensor [n_experts][rows][cols] (GGUF dims cols, rows, n_experts):
// one matrix per expert over its slice of the file, no copy.
inline std::vector<WeightMatrix> expert_matrices(const GGUFFile& f, const std::string& tensor, std::size_t n_experts,
                                                 std::size_t rows, std::size_t cols) {
  const TensorView& t = f.tensor(tensor);
  const std::string where = f.name() + ", tensor " + tensor;
  if (t.n_dims != 3 || t.dims[0] != cols || t.dims[1] != rows || t.dims[2] != n_experts)
    throw Error("tensor has shape [" + std::to_string(t.dims[2]) + ", " + std::to_string(t.dims[1]) + ", " +
                std::to_string(t.dims[0]) + "]", where,
                "[" + std::to_string(n_experts) + ", " + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  if (!matmul_supports(t.dtype))
    throw Error("tensor type " + std::string(name(t.dtype)) + " is not supported yet", where,
                "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K");
  std::vector<WeightMatrix> out;
  const std::size_t bytes = rows * row_bytes(t.dtype, cols);
  for (std::size_t e = 0; e < n_experts; ++e)
    out.push_back({tensor + "[" + std::to_string(e) + "]", t.dtype, static_cast<const std::byte*>(t.data) + e * bytes, rows, cols});
  return out;
}

// Binds the tensors an architecture's traits call for, checking each one's shape and type.
template <class Arch, class Backend>
std::unique_ptr<Model> bind_gguf(const GGUFFile& f, ModelConfig c, const LoadOptions& opt) {
  if (Arch::moe && c.n_experts == 0)
    throw Error("no experts", f.name() + ", key " + c.arch + ".expert_count", "a mixture-of-experts model (" + std::string(Arch::name) + ")");
  TransformerWeights w;
  w.token_embd = matrix(f, "token_embd.weight", c.vocab_size, c.n_embd);
  w.layers.resize(c.n_layers);
  for (std::size_t l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    LayerWeights& lw = w.layers[l];
    lw.attn_norm = vector_tensor(f, b + "attn_norm.weight", c.n_embd);
    lw.wq = matrix(f, b + "attn_q.weight", c.q_dim(), c.n_embd);
    lw.wk = matrix(f, b + "attn_k.weight", c.kv_dim(), c.n_embd);
    lw.wv = matrix(f, b + "attn_v.weight", c.kv_dim(), c.n_embd);
    lw.wo = matrix(f, b + "attn_output.weight", c.n_embd, c.q_dim());
    if constexpr (Arch::qkv_bias) {
      lw.bq = vector_tensor(f, b + "attn_q.bias", c.q_dim());
      lw.bk = vector_tensor(f, b + "attn_k.bias", c.kv_dim());
      lw.bv = vector_tensor(f, b + "attn_v.bias", c.kv_dim());
    }
    if constexpr (Arch::qk_norm) {
      lw.q_norm = vector_tensor(f, b + "attn_q_norm.weight", c.head_dim);
      lw.k_norm = vector_tensor(f, b + "attn_k_norm.weight", c.head_dim);
    }
    if constexpr (Arch::post_norms) {
      lw.post_attn_norm = vector_tensor(f, b + "post_attention_norm.weight", c.n_embd);
      lw.post_ffn_norm = vector_tensor(f, b + "post_ffw_norm.weight", c.n_embd);
    }
    if constexpr (!Arch::parallel_blocks) lw.ffn_norm = vector_tensor(f, b + "ffn_norm.weight", c.n_embd);
    if (c.n_experts > 0) {
      lw.router = matrix(f, b + "ffn_gate_inp.weight", c.n_experts, c.n_embd);
      const auto gate = expert_matrices(f, b + "ffn_gate_exps.weight", c.n_experts, c.n_ff_expert, c.n_embd);
      const auto up = expert_matrices(f, b + "ffn_up_exps.weight", c.n_experts, c.n_ff_expert, c.n_embd);
      const auto down = expert_matrices(f, b + "ffn_down_exps.weight", c.n_experts, c.n_embd, c.n_ff_expert);
      for (std::size_t e = 0; e < c.n_experts; ++e) lw.experts.push_back({gate[e], up[e], down[e]});
    } else {
      lw.w_gate = matrix(f, b + "ffn_gate.weight", c.n_ff, c.n_embd);
      lw.w_up = matrix(f, b + "ffn_up.weight", c.n_ff, c.n_embd);
      lw.w_down = matrix(f, b + "ffn_down.weight", c.n_embd, c.n_ff);
    }
  }
  w.output_norm = vector_tensor(f, "output_norm.weight", c.n_embd);
  w.output = f.find_tensor("output.weight") ? matrix(f, "output.weight", c.vocab_size, c.n_embd) : w.token_embd;
  if (f.find_tensor("rope_freqs.weight")) w.rope_freq_factors = vector_tensor(f, "rope_freqs.weight", c.head_dim / 2);
  return build_model<Arch, Backend>(std::move(c), std::move(w), opt, &f);
}

inline std::string known_arch_names() {
  std::string names;
  std::apply([&](auto... a) { ((names += (names.empty() ? "" : ", ") + std::string(a.name)), ...); }, KnownArchs{});
  return names;
}

// Binds the model with the traits type named `c.arch`, or returns null when no traits have that name.
template <class Backend, std::size_t I = 0>
std::unique_ptr<Model> bind_known_arch(const GGUFFile& f, ModelConfig c, const LoadOptions& opt) {
  if constexpr (I == std::tuple_size_v<KnownArchs>) {
    return nullptr;
  } else {
    using Arch = std::tuple_element_t<I, KnownArchs>;
    if (c.arch == Arch::name) return bind_gguf<Arch, Backend>(f, std::move(c), opt);
    return bind_known_arch<Backend, I + 1>(f, std::move(c), opt);
  }
}

// Arch = void: the traits named by general.architecture; otherwise the given traits, over the
// file's hyperparameters and Llama-style tensor names (a user's own architecture).
template <class Arch, class Backend>
LoadedModel load_gguf(std::shared_ptr<const GGUFFile> file, std::shared_ptr<const void> storage,
                      const LoadOptions& opt) {
  const GGUFFile& f = *file;
  const std::string arch = f.get_string("general.architecture");
  std::unique_ptr<Model> model;
  if constexpr (std::is_void_v<Arch>) {
    bool known = false;
    std::apply([&](auto... a) { known = ((a.name == arch) || ...); }, KnownArchs{});
    if (!known)
      throw Error("unsupported architecture '" + arch + "'", f.name() + ", key general.architecture",
                  "one of " + known_arch_names());
  }
  ModelConfig c = read_config(f, arch);
  const std::size_t vocab = c.vocab_size;
  if constexpr (std::is_void_v<Arch>) model = bind_known_arch<Backend>(f, std::move(c), opt);
  else model = bind_gguf<Arch, Backend>(f, std::move(c), opt);

  std::optional<Tokenizer> tok = tokenizer_file(opt, vocab);
  if (!tok && f.has("tokenizer.ggml.tokens")) tok = tokenizer_from_gguf(f);
  if (tok && tok->size() != vocab)
    throw Error("tokenizer has " + std::to_string(tok->size()) + " tokens", f.name(),
                std::to_string(vocab) + " as token_embd.weight");
  LoadedModel lm(std::move(storage), std::move(model), std::move(tok), f.name());
  if (f.has("tokenizer.chat_template")) lm.set_chat_template(f.get_string("tokenizer.chat_template"));
  return lm;
}

// A llama2.c tokenizer beside the model: tok<vocab>.bin, or tokenizer.bin when vocab is 32000.
inline std::string find_llama2c_tokenizer(const std::string& model_path, std::size_t vocab) {
  const auto dir = std::filesystem::path(model_path).parent_path();
  for (const auto& name : {"tok" + std::to_string(vocab) + ".bin", std::string("tokenizer.bin")}) {
    const auto p = dir / name;
    if (std::filesystem::exists(p) && (vocab == 32000 || name != "tokenizer.bin")) return p.string();
  }
  return {};
}

template <class Arch, class Backend>
LoadedModel load_llama2c(const std::string& path, LoadOptions opt) {
  auto file = std::make_shared<const Llama2cFile>(Llama2cFile::open(path));
  const Llama2cConfig& lc = file->config();
  const Llama2cWeights& lw = file->weights();
  ModelConfig c;
  c.arch = "llama";
  c.n_embd = std::size_t(lc.dim);
  c.n_layers = std::size_t(lc.n_layers);
  c.n_heads = std::size_t(lc.n_heads);
  c.n_kv_heads = std::size_t(lc.n_kv_heads);
  c.head_dim = c.n_embd / c.n_heads;
  c.n_ff = std::size_t(lc.hidden_dim);
  c.vocab_size = std::size_t(lc.vocab_size);
  c.context = std::size_t(lc.seq_len);
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;

  auto mat = [&](const char* what, const float* base, std::size_t layer, std::size_t rows, std::size_t cols) {
    return WeightMatrix{what, DType::F32, base + layer * rows * cols, rows, cols};
  };
  auto norm = [&](const float* base, std::size_t layer) {
    AlignedBuffer<float> out(c.n_embd);
    std::memcpy(out.data(), base + layer * c.n_embd, c.n_embd * sizeof(float));
    return out;
  };
  TransformerWeights w;
  w.token_embd = mat("token_embedding_table", lw.token_embedding, 0, c.vocab_size, c.n_embd);
  w.layers.resize(c.n_layers);
  for (std::size_t l = 0; l < c.n_layers; ++l) {
    LayerWeights& y = w.layers[l];
    y.attn_norm = norm(lw.rms_att, l);
    y.wq = mat("wq", lw.wq, l, c.q_dim(), c.n_embd);
    y.wk = mat("wk", lw.wk, l, c.kv_dim(), c.n_embd);
    y.wv = mat("wv", lw.wv, l, c.kv_dim(), c.n_embd);
    y.wo = mat("wo", lw.wo, l, c.n_embd, c.q_dim());
    y.ffn_norm = norm(lw.rms_ffn, l);
    y.w_gate = mat("w1", lw.w1, l, c.n_ff, c.n_embd);
    y.w_down = mat("w2", lw.w2, l, c.n_embd, c.n_ff);
    y.w_up = mat("w3", lw.w3, l, c.n_ff, c.n_embd);
  }
  w.output_norm = norm(lw.rms_final, 0);
  w.output = mat("wcls", lw.wcls, 0, c.vocab_size, c.n_embd);

  if (opt.tokenizer_path.empty()) opt.tokenizer_path = find_llama2c_tokenizer(path, c.vocab_size);
  std::optional<Tokenizer> tok = tokenizer_file(opt, c.vocab_size);
  auto model = build_model<Arch, Backend>(std::move(c), std::move(w), opt, nullptr);
  return LoadedModel(std::move(file), std::move(model), std::move(tok), path);
}

// Under run-time dispatch the loaders for the files' own architectures on the CPU backend (every
// Transformer they can build) are compiled once, in the file that includes tinyllm/dispatch.hpp,
// rather than in every file that calls load().
#if defined(TINYLLM_DYNAMIC_DISPATCH)
extern template LoadedModel load_gguf<void, CpuBackend>(std::shared_ptr<const GGUFFile>, std::shared_ptr<const void>,
                                                        const LoadOptions&);
extern template LoadedModel load_llama2c<Llama, CpuBackend>(const std::string&, LoadOptions);
extern template LoadedModel load_hf<void, CpuBackend>(const std::filesystem::path&, const LoadOptions&);
#endif

}  // namespace detail

// Loads a GGUF or llama2.c model file, telling them apart by the GGUF magic, or a Hugging Face
// folder (a directory with config.json, or that config.json: model/hf.hpp). load<MyArch>(path)
// runs the file's weights with a user's own architecture traits instead of the file's;
// load<ReferenceBackend>(path) runs them on another kernel backend, load<MyArch, ReferenceBackend>
// both.
template <class Arch = void, KernelBackend Backend = CpuBackend>
LoadedModel load(const std::string& path, const LoadOptions& opt = {}) {
  if constexpr (KernelBackend<Arch>) {   // load<SomeBackend>(path): the file's architecture
    return load<void, Arch>(path, opt);
  } else {
    if (is_hf_folder(path)) return detail::load_hf<Arch, Backend>(hf_folder(path), opt);
    char magic[4] = {};
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot open model file", path);
    in.read(magic, 4);
    if (in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) {
      auto file = std::make_shared<const GGUFFile>(GGUFFile::open(path));
      return detail::load_gguf<Arch, Backend>(file, file, opt);
    }
    return detail::load_llama2c<std::conditional_t<std::is_void_v<Arch>, Llama, Arch>, Backend>(path, opt);
  }
}

// Loads a GGUF image held in memory (an embedded or freshly written model); the model keeps it.
// The template arguments are load's.
template <class Arch = void, KernelBackend Backend = CpuBackend>
LoadedModel load_gguf_bytes(std::vector<std::byte> bytes, const std::string& name, const LoadOptions& opt = {}) {
  if constexpr (KernelBackend<Arch>) {
    return load_gguf_bytes<void, Arch>(std::move(bytes), name, opt);
  } else {
    auto owned = std::make_shared<const std::vector<std::byte>>(std::move(bytes));
    auto file = std::make_shared<const GGUFFile>(GGUFFile::parse(std::span<const std::byte>(*owned), name));
    auto storage = std::make_shared<std::pair<std::shared_ptr<const std::vector<std::byte>>, std::shared_ptr<const GGUFFile>>>(owned, file);
    return detail::load_gguf<Arch, Backend>(file, storage, opt);
  }
}

// A seeded random-weight Llama of a named shape, written by the GGUF writer and loaded from
// memory (load_synthetic<ReferenceBackend>(...) on another backend). With no arguments: the
// embedded default model (its text is noise).
template <KernelBackend Backend = CpuBackend>
LoadedModel load_synthetic(std::string_view shape = "tiny", DType type = DType::F32, std::uint64_t seed = 42,
                           const LoadOptions& opt = {}) {
  GGUFWriter w;
  write_synthetic_llama(w, synthetic_shape(shape), type, seed);
  return load_gguf_bytes<void, Backend>(w.to_bytes(), "synthetic:" + std::string(shape), opt);
}

}  // namespace tinyllm

#pragma once
// What every model loader shares (GGUF and llama2.c files in load.hpp, Hugging Face folders in
// hf.hpp): the options, the loaded model with the storage its weights live in, and the binding
// of weight matrices and norm vectors.
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/io/llama2c.hpp>
#include <tinyllm/comm/communicator.hpp>
#include <tinyllm/model/tensor_parallel.hpp>
#include <tinyllm/model/transformer.hpp>
#include <tinyllm/quant/dequantize.hpp>
#include <tinyllm/quant/quantize.hpp>
#include <tinyllm/text/tokenizer.hpp>

namespace tinyllm {

struct LoadOptions {
  std::size_t max_batch = 512;     // tokens per internal forward step (workspace size)
  std::string tokenizer_path;      // llama2.c tokenizer .bin; overrides the model's own vocabulary
  bool pack_weights = true;        // let the backend regroup matrices into its own layout (CPU: cpu/qpack.hpp)
  // Quantize the file's F32, F16 and BF16 matrices to this type as they are bound (a Hugging Face
  // folder straight to Q4_K, say): those whose rows are whole blocks of it; the others keep their type.
  std::optional<DType> quantize;
  // Called as the weight matrices are bound, with the bytes done so far and in all. With it, the
  // loader also reads each matrix (one byte per page), so a cold file is paged in during the
  // load, where the progress shows, rather than during the first forward pass.
  std::function<void(std::size_t done, std::size_t total)> progress;
  // Tensor parallelism (model/tensor_parallel.hpp): this process is one rank of `comm` and keeps
  // only its share of the weights; every rank loads the same file and makes the same calls.
  // Null or one rank: the whole model. The caller keeps it alive while the model lives.
  Communicator* comm = nullptr;
};

// A model together with the file its weights live in and its tokenizer.
class LoadedModel {
 public:
  LoadedModel(std::shared_ptr<const void> storage, std::unique_ptr<Model> model,
              std::optional<Tokenizer> tokenizer, std::string path)
      : storage_(std::move(storage)), model_(std::move(model)), tokenizer_(std::move(tokenizer)),
        path_(std::move(path)) {}

  Model& model() { return *model_; }
  // Replaces the model by f(model): a decorator that owns it (serve/rank_leader.hpp's lead()).
  template <class F>
  void wrap_model(F&& f) {
    model_ = std::forward<F>(f)(std::move(model_));
  }
  const Model& model() const { return *model_; }
  const ModelConfig& config() const { return model_->config(); }
  bool has_tokenizer() const { return tokenizer_.has_value(); }
  const Tokenizer& tokenizer() const {
    if (!tokenizer_) throw Error("the model file has no tokenizer this build can read", path_, "a tokenizer file (-z)");
    return *tokenizer_;
  }
  const std::string& path() const { return path_; }
  // The file's tokenizer.chat_template (Jinja source), empty when it has none.
  const std::string& chat_template() const { return chat_template_; }
  void set_chat_template(std::string t) { chat_template_ = std::move(t); }

 private:
  std::shared_ptr<const void> storage_;   // declared first: destroyed after the model that points into it
  std::unique_ptr<Model> model_;
  std::optional<Tokenizer> tokenizer_;
  std::string path_;
  std::string chat_template_;
};

namespace detail {

inline AlignedBuffer<float> norm_weights(const TensorView& t, std::size_t n, const std::string& where) {
  if (t.n_elements() != n)
    throw Error("norm tensor has " + std::to_string(t.n_elements()) + " values", where + ", tensor " + t.name,
                std::to_string(n));
  AlignedBuffer<float> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::F32: std::memcpy(&out[i], static_cast<const float*>(t.data) + i, sizeof(float)); break;
      case DType::F16: out[i] = f16_to_f32(static_cast<const std::uint16_t*>(t.data)[i]); break;
      case DType::BF16: out[i] = bf16_to_f32(static_cast<const std::uint16_t*>(t.data)[i]); break;
      default: throw Error("norm tensor of type " + std::string(name(t.dtype)), where + ", tensor " + t.name, "F32, F16 or BF16");
    }
  }
  return out;
}

// A weight matrix [rows, cols] over a tensor of any file, checked for its shape and for a type the
// matmul takes; `where` names the file and tensor in errors.
inline WeightMatrix matrix(const TensorView& t, std::size_t rows, std::size_t cols, const std::string& where) {
  if (t.n_dims != 2 || t.rows() != rows || t.cols() != cols)
    throw Error("tensor has shape [" + std::to_string(t.rows()) + ", " + std::to_string(t.cols()) + "]", where,
                "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  if (!matmul_supports(t.dtype))
    throw Error("tensor type " + std::string(name(t.dtype)) + " is not supported yet", where,
                "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K");
  return {t.name, t.dtype, t.data, rows, cols};
}
inline WeightMatrix matrix(const GGUFFile& f, const std::string& tensor, std::size_t rows, std::size_t cols) {
  return matrix(f.tensor(tensor), rows, cols, f.name() + ", tensor " + tensor);
}

// Gets the weight matrices ready for the forward pass on Backend, reporting progress after each
// one. Those the backend has a layout of its own for are packed (CPU: cpu/qpack.hpp) and the
// file's pages of them released (`file` null: nothing to release); with a progress callback the
// others are read, one byte per page, so a cold file is paged in during the load, where the
// progress shows, rather than during the first forward pass.
// LoadOptions::quantize: each F32, F16 or BF16 matrix whose rows are whole blocks of `type` is
// replaced by its quantized copy, which the matrix owns. A tied output shares token_embd's copy.
inline void quantize_weights(TransformerWeights& w, DType type, ThreadPool& pool) {
  if (!can_quantize(type) || !matmul_supports(type)) throw Error("cannot quantize to " + std::string(name(type)), "LoadOptions::quantize",
                                      "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K");
  const bool tied = w.output.data == w.token_embd.data;
  const auto quantize = [&](WeightMatrix& m) {
    const bool dense = m.type == DType::F32 || m.type == DType::F16 || m.type == DType::BF16;
    if (!m.data || !dense || m.type == type || m.cols % info(type).block_size != 0) return;
    const std::size_t from = row_bytes(m.type, m.cols), to = row_bytes(type, m.cols);
    auto out = std::make_shared<AlignedBuffer<std::byte>>(m.rows * to);
    pool.parallel_for(m.rows, [&](std::size_t begin, std::size_t end) {
      std::vector<float> row(m.cols);
      for (std::size_t r = begin; r < end; ++r) {
        dequantize_row(m.type, static_cast<const std::byte*>(m.data) + r * from, row.data(), m.cols);
        quantize_row(type, row.data(), out->data() + r * to, m.cols);
      }
    }, 16);
    m.type = type;
    m.data = out->data();
    m.owned = std::move(out);
  };
  quantize(w.token_embd);
  for (LayerWeights& l : w.layers) {
    for (WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) quantize(*m);
    for (ExpertWeights& e : l.experts)   // (the router stays as the file has it, as llama.cpp keeps it)
      for (WeightMatrix* m : {&e.w_gate, &e.w_up, &e.w_down}) quantize(*m);
  }
  if (tied) {
    w.output = w.token_embd;
  } else {
    quantize(w.output);
  }
}

template <class Backend>
void prepare_weights(TransformerWeights& w, const LoadOptions& opt, const GGUFFile* file) {
  if (opt.quantize) {
    ThreadPool pool;
    quantize_weights(w, *opt.quantize, pool);
  }
  std::vector<WeightMatrix*> matrices = {&w.token_embd};
  for (LayerWeights& l : w.layers) {
    for (WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down, &l.router})
      if (m->data) matrices.push_back(m);   // (a block has a dense FFN or a router, not both)
    for (ExpertWeights& e : l.experts)
      for (WeightMatrix* m : {&e.w_gate, &e.w_up, &e.w_down}) matrices.push_back(m);
  }
  // Tied to token_embd, the output is only work here when it gets a packed copy (the embedding
  // lookups keep reading the file's rows).
  if (w.output.data != w.token_embd.data || (opt.pack_weights && can_pack<Backend>(w.output.type)))
    matrices.push_back(&w.output);
  const auto bytes = [](const WeightMatrix& m) { return m.data ? m.rows * row_bytes(m.type, m.cols) : 0; };
  std::size_t total = 0, done = 0;
  for (const WeightMatrix* m : matrices) total += bytes(*m);
  if (opt.progress) opt.progress(0, total);
  unsigned char sum = 0;
  std::optional<ThreadPool> pool;  // started when the first matrix is packed
  for (WeightMatrix* m : matrices) {
    const std::size_t n = bytes(*m);
    const bool packable = m != &w.token_embd && opt.pack_weights && can_pack<Backend>(m->type);
    if (packable && !pool) pool.emplace();  // one thread per hardware thread
    if (packable && pack<Backend>(*m, *pool)) {
      if (file && m->data != w.token_embd.data) file->release_pages(m->data, n);
    } else if (opt.progress) {
      const auto* p = static_cast<const unsigned char*>(m->data);
      for (std::size_t i = 0; i < n; i += 4096) sum ^= p[i];
    }
    done += n;
    if (opt.progress) opt.progress(done, total);
  }
  volatile unsigned char keep = sum;  // the reads must happen
  (void)keep;
}

// The model over bound weights (views of a file or owned copies, nothing packed yet): this
// rank's share of them under tensor parallelism, made ready for Backend, in a Transformer.
template <class Arch, class Backend>
std::unique_ptr<Model> build_model(ModelConfig c, TransformerWeights w, const LoadOptions& opt, const GGUFFile* file) {
  if (opt.comm) c = split_for_rank(std::move(c), w, *opt.comm);
  prepare_weights<Backend>(w, opt, file);
  return std::make_unique<Transformer<Arch, Backend>>(std::move(c), std::move(w), opt.max_batch, opt.comm);
}

inline std::optional<Tokenizer> tokenizer_file(const LoadOptions& opt, std::size_t vocab) {
  if (opt.tokenizer_path.empty()) return std::nullopt;
  Llama2cVocab v = read_llama2c_vocab(opt.tokenizer_path, int(vocab));
  return Tokenizer(std::move(v.pieces), std::move(v.scores));
}

}  // namespace detail
}  // namespace tinyllm

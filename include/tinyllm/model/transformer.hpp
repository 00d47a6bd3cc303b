#pragma once
// A decoder-only transformer written once against architecture traits. forward() is the whole
// model, top to bottom, in the spirit of llama2.c's forward(): it takes a batch of tokens of one
// sequence at given positions (a prompt prefill, or one token of decode) and writes logits. Every
// kernel is called through the Backend parameter: CpuBackend (Highway, kernels/cpu/backend.hpp,
// which lists a backend's members), ReferenceBackend (the scalar specification, for tests) or
// CudaBackend (kernels/cuda/backend.hpp). The backend also says where activations and KV caches
// live (Backend::memory()) and where the kernels read the weights (Backend::resident).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <tinyllm/comm/communicator.hpp>
#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/memory.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/attention_params.hpp>
#include <tinyllm/kernels/cpu/backend.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/kernels/rope.hpp>
#include <tinyllm/model/arch/traits.hpp>
#include <tinyllm/model/config.hpp>
#include <tinyllm/model/kv_cache.hpp>
#include <tinyllm/model/lora.hpp>
#include <tinyllm/model/moe.hpp>
#include <tinyllm/model/weights.hpp>

namespace tinyllm {

// Weights of one block. Optional parts (biases, QK-norm, post-norms) stay empty unless the
// architecture's traits use them.
struct LayerWeights {
  AlignedBuffer<float> attn_norm;             // [n_embd]
  WeightMatrix wq, wk, wv, wo;                // [q_dim, n_embd], [kv_dim, n_embd] x2, [n_embd, q_dim]
  AlignedBuffer<float> bq, bk, bv;            // [q_dim], [kv_dim] x2       (qkv_bias)
  AlignedBuffer<float> q_norm, k_norm;        // [head_dim]                 (qk_norm)
  AlignedBuffer<float> post_attn_norm;        // [n_embd]                   (post_norms)
  AlignedBuffer<float> ffn_norm;              // [n_embd]
  WeightMatrix w_gate, w_up, w_down;          // [n_ff, n_embd] x2, [n_embd, n_ff]   (dense FFN)
  WeightMatrix router;                        // [n_experts, n_embd]        (mixture of experts)
  std::vector<ExpertWeights> experts;         // [n_experts]; empty: dense FFN
  AlignedBuffer<float> post_ffn_norm;         // [n_embd]                   (post_norms)
};

struct TransformerWeights {
  WeightMatrix token_embd;                    // [vocab, n_embd]
  std::vector<LayerWeights> layers;
  AlignedBuffer<float> output_norm;           // [n_embd]
  WeightMatrix output;                        // [vocab, n_embd]; may be token_embd (tied)
  AlignedBuffer<float> rope_freq_factors;     // [head_dim / 2]: Llama 3.1 divides each RoPE frequency; may be empty
};

// One sequence's share of a batched step: tokens [first, first + count) of the batch.
struct SequenceSlice {
  KVCache* cache = nullptr;
  std::size_t first = 0, count = 0;
  bool wants_logits = false;   // the logits of its last token are wanted
  // LoRA adapters of this sequence (adding up), on top of the model's own (set_adapters); the
  // caller keeps them alive for the call. Consecutive slices with the same adapters share one
  // low-rank product per matrix.
  std::span<const AdapterRef> adapters = {};
  bool all_logits = false;     // the logits of every token are wanted (speculative decoding's check)
};

// The architecture-independent face of a model, so a loader can return any architecture.
class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  virtual ArchInfo arch() const = 0;   // the architecture's traits
  virtual const TransformerWeights& weights() const = 0;
  virtual std::size_t max_batch() const = 0;
  // tokens[i] at positions[i], all of one sequence; K/V of these positions are written to
  // `cache`, and each token attends to the cache up to its own position. logits has n_tok rows
  // (every position) or one row (the last token only, which saves the classifier for the rest of
  // a prompt). Any number of tokens: more than max_batch() run in chunks.
  virtual void forward(ThreadPool& pool, std::span<const std::int32_t> tokens,
                       std::span<const std::int32_t> positions, KVCache& cache,
                       MatrixView<float> logits) = 0;
  // Tokens of several sequences in one step (continuous batching): every weight is read once for
  // all of them. Slices partition the batch in order; logits gets one row per slice that wants
  // logits (one per token of a slice that wants all_logits), in slice order. At most max_batch()
  // tokens.
  virtual void forward_batch(ThreadPool& pool, std::span<const std::int32_t> tokens,
                             std::span<const std::int32_t> positions, std::span<const SequenceSlice> seqs,
                             MatrixView<float> logits) = 0;

  // How far back every layer reads: the widest sliding window when every layer has one, else 0
  // (some layer reads the whole sequence). Cache positions older than that can be dropped.
  virtual std::size_t kv_window() const = 0;

  // LoRA adapters applied to every token from now on (adding up; empty: none), as llama.cpp's
  // --lora; each must have been loaded for this model's configuration.
  virtual void set_adapters(std::vector<AdapterRef> adapters) = 0;
  virtual const std::vector<AdapterRef>& adapters() const = 0;

  // Where this model's activations and KV caches live: nullptr for host memory, else its
  // backend's device memory (a KVBlockPool for it must allocate there too).
  virtual const MemoryResource* memory() const = 0;

  std::unique_ptr<KVCache> new_kv_cache(std::size_t capacity = 0, KVType type = KVType::f32) const {
    return std::make_unique<ContiguousKVCache>(config(), capacity ? capacity : config().context, type, memory());
  }
  // Parameters in weight matrices, norms and biases (an embedding tied to the output counts once).
  std::size_t n_params() const { return count_weights([](const WeightMatrix& m) { return m.rows * m.cols; }, 1); }
  // Bytes of weights as stored (norms and biases as f32).
  std::size_t weight_bytes() const {
    return count_weights([](const WeightMatrix& m) { return row_bytes(m.type, m.cols) * m.rows; }, sizeof(float));
  }

 private:
  template <class F>
  std::size_t count_weights(F matrix_size, std::size_t vector_element) const {
    const auto& w = weights();
    std::size_t n = matrix_size(w.token_embd) + (w.output.data != w.token_embd.data ? matrix_size(w.output) : 0);
    std::size_t vec = w.output_norm.size() + w.rope_freq_factors.size();
    for (const auto& l : w.layers) {
      for (const WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down, &l.router}) n += matrix_size(*m);
      for (const ExpertWeights& e : l.experts) n += matrix_size(e.w_gate) + matrix_size(e.w_up) + matrix_size(e.w_down);
      for (const AlignedBuffer<float>* v : {&l.attn_norm, &l.bq, &l.bk, &l.bv, &l.q_norm, &l.k_norm,
                                            &l.post_attn_norm, &l.ffn_norm, &l.post_ffn_norm})
        vec += v->size();
    }
    return n + vec * vector_element;
  }
};

// A type whose static members are the kernels the model calls (listed in kernels/cpu/backend.hpp).
template <class B>
concept KernelBackend = requires { typename B::Workspace; B::packs_weights; &B::matmul; &B::attention; &B::memory; };

template <class Arch, KernelBackend Backend = CpuBackend>
class Transformer final : public Model {
 public:
  // max_batch bounds the tokens of one internal forward step; longer inputs run in chunks.
  // comm: the ranks this one shares the model with (model/tensor_parallel.hpp: cfg and w are then
  // this rank's share); the caller keeps it alive. Null: the whole model, in this process.
  Transformer(ModelConfig cfg, TransformerWeights w, std::size_t max_batch = 512, Communicator* comm = nullptr)
      : cfg_(std::move(cfg)), w_(std::move(w)), max_batch_(std::max<std::size_t>(1, max_batch)),
        comm_(comm && comm->size() > 1 ? comm : nullptr),
        ws_(max_batch_, std::max({cfg_.n_embd, cfg_.q_dim(), cfg_.n_ff, cfg_.n_ff_expert})) {
    if (!can_dequantize(w_.token_embd.type))
      throw Error("cannot read rows of tensor type " + std::string(name(w_.token_embd.type)), w_.token_embd.name);
    if (Backend::memory() && Arch::ffn == Ffn::custom)
      throw Error("a custom FFN activation runs on the host; this backend keeps activations in " +
                  std::string(Backend::memory()->name) + " memory", std::string(Arch::name));
    if (comm_ && Backend::memory())
      throw Error("tensor parallelism runs on host memory; this backend keeps activations in " +
                  std::string(Backend::memory()->name) + " memory", std::string(Arch::name));
    const bool moe = std::ranges::any_of(w_.layers, [](const LayerWeights& l) { return !l.experts.empty(); });
    if (moe && (Backend::memory() || Arch::parallel_blocks))
      throw Error("mixture-of-experts blocks run on host memory, one FFN after attention", std::string(Arch::name));
    const std::size_t b = max_batch_;
    if (moe) {
      router_logits_.resize(b * cfg_.n_experts);
      expert_in_.resize(b * cfg_.n_embd);
      expert_x_.resize(b * cfg_.n_embd);
      expert_y_.resize(b * cfg_.n_embd);
    }
    x_.resize(b * cfg_.n_embd);
    xb_.resize(b * std::max(cfg_.n_embd, cfg_.q_dim()));
    q_.resize(b * cfg_.q_dim());
    k_.resize(b * cfg_.kv_dim());
    v_.resize(b * cfg_.kv_dim());
    att_.resize(b * cfg_.q_dim());
    gate_.resize(b * std::max(cfg_.n_ff, cfg_.n_ff_expert));
    up_.resize(b * std::max(cfg_.n_ff, cfg_.n_ff_expert));
    all_rows_.resize(b);
    for (std::size_t i = 0; i < b; ++i) all_rows_[i] = i;
    logit_rows_.resize(b);
    seq_of_token_.resize(b);
    views_.resize(16);
    plan_layers();
    make_resident();
  }

  const ModelConfig& config() const override { return cfg_; }
  ArchInfo arch() const override { return arch_info<Arch>(); }
  const TransformerWeights& weights() const override { return w_; }
  const MemoryResource* memory() const override { return Backend::memory(); }

  std::size_t max_batch() const override { return max_batch_; }

  std::size_t kv_window() const override {
    std::size_t widest = 0;
    for (const LayerPlan& p : plans_) {
      if (p.window == 0) return 0;
      widest = std::max(widest, p.window);
    }
    return widest;
  }

  void set_adapters(std::vector<AdapterRef> adapters) override {
    for (const AdapterRef& a : adapters) check_adapter(a);
    adapters_ = std::move(adapters);
  }
  const std::vector<AdapterRef>& adapters() const override { return adapters_; }

  void forward(ThreadPool& pool, std::span<const std::int32_t> tokens,
               std::span<const std::int32_t> positions, KVCache& cache,
               MatrixView<float> logits) override {
    check_tokens(tokens, positions);
    if (logits.cols != cfg_.vocab_size || (logits.rows != tokens.size() && logits.rows != 1))
      throw Error("forward: logits must be [n_tokens or 1, " + std::to_string(cfg_.vocab_size) + "]");
    const bool all_rows = logits.rows == tokens.size();
    for (std::size_t first = 0; first < tokens.size(); first += max_batch_) {
      const std::size_t n = std::min(max_batch_, tokens.size() - first);
      const bool last_chunk = first + n == tokens.size();
      const SequenceSlice seq{&cache, 0, n, last_chunk};
      const auto rows = all_rows ? std::span<const std::size_t>(all_rows_).first(n)
                                 : (last_chunk ? std::span<const std::size_t>(&all_rows_[n - 1], 1)
                                               : std::span<const std::size_t>());
      forward_chunk(pool, tokens.subspan(first, n), positions.subspan(first, n), std::span(&seq, 1), rows,
                    all_rows ? logits.rows_slice(first, n) : logits);
    }
  }

  void forward_batch(ThreadPool& pool, std::span<const std::int32_t> tokens,
                     std::span<const std::int32_t> positions, std::span<const SequenceSlice> seqs,
                     MatrixView<float> logits) override {
    check_tokens(tokens, positions);
    if (tokens.size() > max_batch_)
      throw Error("forward_batch: " + std::to_string(tokens.size()) + " tokens", "forward_batch",
                  "at most max_batch = " + std::to_string(max_batch_));
    std::size_t next = 0, n_rows = 0;
    for (const SequenceSlice& s : seqs) {
      if (s.first != next || s.count == 0 || s.cache == nullptr)
        throw Error("forward_batch: sequence slices must partition the batch in order, each non-empty");
      next += s.count;
      if (s.all_logits)
        for (std::size_t t = 0; t < s.count; ++t) logit_rows_[n_rows++] = s.first + t;
      else if (s.wants_logits)
        logit_rows_[n_rows++] = s.first + s.count - 1;
      for (const AdapterRef& a : s.adapters) check_adapter(a);
    }
    if (next != tokens.size()) throw Error("forward_batch: sequence slices cover " + std::to_string(next) + " of " +
                                           std::to_string(tokens.size()) + " tokens");
    if (logits.cols != cfg_.vocab_size || logits.rows != n_rows)
      throw Error("forward_batch: logits must be [" + std::to_string(n_rows) + ", " + std::to_string(cfg_.vocab_size) + "]");
    forward_chunk(pool, tokens, positions, seqs, std::span<const std::size_t>(logit_rows_).first(n_rows), logits);
  }

 private:
  // What differs between layers at run time: the attention window and the RoPE table.
  struct LayerPlan {
    std::size_t window = 0;          // 0 = attends to every earlier position
    const float* inv_freq = nullptr; // [head_dim / 2]
  };

  void plan_layers() {
    const ModelConfig& c = cfg_;
    auto table = [&](float theta, float linear_scale) {
      std::vector<float> f = rope_inv_freq(c.head_dim, theta);
      for (std::size_t i = 0; i < f.size(); ++i) {
        if (!w_.rope_freq_factors.empty()) f[i] /= w_.rope_freq_factors[i];
        f[i] /= linear_scale;
      }
      return f;
    };
    inv_freq_global_ = table(c.rope_theta, c.rope_linear_scale);
    inv_freq_local_ = table(c.rope_theta_swa > 0 ? c.rope_theta_swa : c.rope_theta, 1.0f);
    plans_.resize(c.n_layers);
    for (std::size_t l = 0; l < c.n_layers; ++l) {
      const std::size_t p = Arch::swa_period;
      const bool local = c.sliding_window > 0 && (p == 0 || l % p < p - 1);
      plans_[l] = {local ? c.sliding_window : 0, local ? inv_freq_local_.data() : inv_freq_global_.data()};
    }
  }

  // A layer's weights where the backend's kernels read them (Backend::resident): the loaded
  // weights themselves on a host backend, copies in device memory on CUDA.
  struct ResidentLayer {
    const float *attn_norm, *bq, *bk, *bv, *q_norm, *k_norm, *post_attn_norm, *ffn_norm, *post_ffn_norm;
    WeightMatrix wq, wk, wv, wo, w_gate, w_up, w_down, router;
    std::vector<ExpertWeights> experts;
  };
  const float* resident(const AlignedBuffer<float>& v) {
    return v.empty() ? nullptr : static_cast<const float*>(Backend::resident(ws_, v.data(), v.size() * sizeof(float)));
  }
  const float* resident(const std::vector<float>& v) {
    return static_cast<const float*>(Backend::resident(ws_, v.data(), v.size() * sizeof(float)));
  }
  WeightMatrix resident(const WeightMatrix& m) {
    WeightMatrix r = m;
    if (m.data) r.data = Backend::resident(ws_, m.data, row_bytes(m.type, m.cols) * m.rows);
    return r;
  }
  void make_resident() {
    for (const LayerWeights& l : w_.layers) {
      layers_.push_back({resident(l.attn_norm), resident(l.bq), resident(l.bk), resident(l.bv), resident(l.q_norm),
                         resident(l.k_norm), resident(l.post_attn_norm), resident(l.ffn_norm),
                         resident(l.post_ffn_norm), resident(l.wq), resident(l.wk), resident(l.wv), resident(l.wo),
                         resident(l.w_gate), resident(l.w_up), resident(l.w_down), resident(l.router), {}});
      for (const ExpertWeights& e : l.experts)
        layers_.back().experts.push_back({resident(e.w_gate), resident(e.w_up), resident(e.w_down)});
    }
    token_embd_ = resident(w_.token_embd);
    output_ = resident(w_.output);
    output_norm_ = resident(w_.output_norm);
    const float* global = resident(inv_freq_global_);
    const float* local = resident(inv_freq_local_);
    for (LayerPlan& p : plans_) p.inv_freq = p.inv_freq == inv_freq_local_.data() ? local : global;
  }

  // n <= max_batch tokens of the sequences `seqs`; logits row i is for token logit_rows[i].
  void forward_chunk(ThreadPool& pool, std::span<const std::int32_t> tokens, std::span<const std::int32_t> positions,
                     std::span<const SequenceSlice> seqs, std::span<const std::size_t> logit_rows,
                     MatrixView<float> logits) {
    const ModelConfig& c = cfg_;
    const std::size_t n = tokens.size(), dim = c.n_embd;
    MatrixView<float> x(x_.data(), n, dim);            // [n, n_embd] the residual stream
    MatrixView<float> xb(xb_.data(), n, dim);          // [n, n_embd] normalised input of a block
    MatrixView<float> q(q_.data(), n, c.q_dim());      // [n, n_heads * head_dim]
    MatrixView<float> k(k_.data(), n, c.kv_dim());     // [n, n_kv_heads * head_dim]
    MatrixView<float> v(v_.data(), n, c.kv_dim());
    MatrixView<float> att(att_.data(), n, c.q_dim());  // [n, q_dim] attention output per head
    MatrixView<float> gate(gate_.data(), n, c.n_ff);   // [n, n_ff]
    MatrixView<float> up(up_.data(), n, c.n_ff);
    MatrixView<float> proj(xb_.data(), n, dim);        // [n, n_embd] block output, reuses xb
    MatrixView<float> q_heads(q_.data(), n * c.n_heads, c.head_dim);     // q and k as one row per head
    MatrixView<float> k_heads(k_.data(), n * c.n_kv_heads, c.head_dim);

    std::size_t longest = 0;   // cache positions any token can attend to
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      const SequenceSlice& s = seqs[i];
      for (std::size_t t = s.first; t < s.first + s.count; ++t) {
        if (std::size_t(positions[t]) >= s.cache->capacity())
          throw Error("position " + std::to_string(positions[t]) + " does not fit the KV cache", "input " + std::to_string(t),
                      "0 <= position < " + std::to_string(s.cache->capacity()));
        seq_of_token_[t] = std::uint32_t(i);
      }
      longest = std::max(longest, s.cache->capacity());
    }
    const std::size_t score_cols = Backend::attention_scratch_cols(c.n_heads, c.n_kv_heads, c.head_dim, longest);
    if (scores_.rows < pool.size() || scores_.cols < score_cols) {  // first call, more threads or a longer cache
      scores_buf_.resize(pool.size() * score_cols);
      scores_ = MatrixView<float>(scores_buf_.data(), pool.size(), score_cols);
    }
    if (views_.size() < seqs.size()) views_.resize(std::max(seqs.size(), 2 * views_.size()));
    AttentionParams ap;
    ap.scale = c.attn_scale > 0 ? c.attn_scale : 1.0f / std::sqrt(float(c.head_dim));
    if constexpr (Arch::attn_softcap) ap.softcap = c.attn_softcap;

    Backend::begin_step(ws_, tokens, positions, std::span<const std::uint32_t>(seq_of_token_).first(n));
    Backend::embed(ws_, token_embd_.type, token_embd_.data, x, Arch::scale_embeddings ? std::sqrt(float(dim)) : 1.0f);

    for (std::size_t l = 0; l < c.n_layers; ++l) {
      const ResidentLayer& lw = layers_[l];
      // Attention block: x += wo · attention(rope(wq · norm(x)), rope(wk · norm(x)), wv · norm(x))
      Backend::rmsnorm_rows(ws_, x, lw.attn_norm, xb, c.norm_eps);
      matmul(pool, lw.wq, xb, q, l, LoraTarget::q, seqs);
      matmul(pool, lw.wk, xb, k, l, LoraTarget::k, seqs);
      matmul(pool, lw.wv, xb, v, l, LoraTarget::v, seqs);
      if constexpr (Arch::parallel_blocks) {   // the FFN reads the same normalised input
        matmul(pool, lw.w_gate, xb, gate, l, LoraTarget::gate, seqs);
        matmul(pool, lw.w_up, xb, up, l, LoraTarget::up, seqs);
      }
      if constexpr (Arch::qkv_bias) {
        Backend::add_bias(ws_, q, lw.bq);
        Backend::add_bias(ws_, k, lw.bk);
        Backend::add_bias(ws_, v, lw.bv);
      }
      if constexpr (Arch::qk_norm) {
        Backend::rmsnorm_rows(ws_, q_heads, lw.q_norm, q_heads, c.norm_eps);
        Backend::rmsnorm_rows(ws_, k_heads, lw.k_norm, k_heads, c.norm_eps);
      }
      Backend::rope_rows(ws_, q, c.n_heads, c.head_dim, plans_[l].inv_freq, Arch::rope);
      Backend::rope_rows(ws_, k, c.n_kv_heads, c.head_dim, plans_[l].inv_freq, Arch::rope);
      for (std::size_t i = 0; i < seqs.size(); ++i) views_[i] = seqs[i].cache->layer(l);
      Backend::set_kv_views(ws_, std::span<const KVLayerView>(views_).first(seqs.size()));
      Backend::store_kv(ws_, k, v);
      ap.window = plans_[l].window;
      Backend::attention(pool, ws_, q, c.n_heads, c.n_kv_heads, c.head_dim, ap, att, scores_);
      matmul(pool, lw.wo, att, proj, l, LoraTarget::o, seqs);
      all_reduce(proj);   // tensor parallelism: each rank's heads gave part of the sum
      if constexpr (Arch::post_norms) Backend::rmsnorm_rows(ws_, proj, lw.post_attn_norm, proj, c.norm_eps);
      Backend::add_rows(ws_, x, proj);

      // FFN block: x += w_down · (act(w_gate · norm(x)) * (w_up · norm(x))), or the experts' mixture
      // (parallel blocks normed x for both before attention; they have no experts: the constructor)
      if constexpr (!Arch::parallel_blocks) Backend::rmsnorm_rows(ws_, x, lw.ffn_norm, xb, c.norm_eps);
      if (!lw.experts.empty()) {
        experts_ffn(pool, lw, xb, proj);
      } else {
        if constexpr (!Arch::parallel_blocks) {
          matmul(pool, lw.w_gate, xb, gate, l, LoraTarget::gate, seqs);
          matmul(pool, lw.w_up, xb, up, l, LoraTarget::up, seqs);
        }
        if (c.n_ff > 0) {
          activate(gate.data, up.data, n * c.n_ff);
          matmul(pool, lw.w_down, gate, proj, l, LoraTarget::down, seqs);
        } else {   // a rank whose share of the FFN is empty adds nothing
          std::fill(proj.data, proj.data + n * dim, 0.0f);
        }
      }
      all_reduce(proj);
      if constexpr (Arch::post_norms) Backend::rmsnorm_rows(ws_, proj, lw.post_ffn_norm, proj, c.norm_eps);
      Backend::add_rows(ws_, x, proj);
    }

    if (logit_rows.empty()) return;   // a prompt chunk whose logits nobody asked for
    MatrixView<float> xf = xb.rows_slice(0, logit_rows.size());   // [rows wanted, n_embd]
    Backend::gather_rows(ws_, x, logit_rows, xf);
    Backend::rmsnorm_rows(ws_, xf, output_norm_, xf, c.norm_eps);
    // Logits are computed where the activations live, then brought to the caller's (host) memory.
    MatrixView<float> out = logits;
    if (Backend::memory() || comm_) {   // (tensor parallelism: this rank's rows of the vocabulary)
      const std::size_t cols = output_.rows;
      if (logits_dev_.size() < logits.rows * cols) logits_dev_.resize(logits.rows * cols);
      out = MatrixView<float>(logits_dev_.data(), logits.rows, cols);
    }
    matmul(pool, output_, xf, out);
    if constexpr (Arch::final_softcap) Backend::softcap_rows(ws_, out, c.final_softcap);
    if (comm_) return gather_logits(out, logits);
    Backend::to_host(ws_, out, logits);
  }
  // gate = act(gate) * up, the architecture's FFN activation over n values.
  void activate(float* gate, const float* up, std::size_t n) {
    if constexpr (Arch::ffn == Ffn::swiglu) Backend::swiglu(ws_, gate, up, n);
    if constexpr (Arch::ffn == Ffn::geglu) Backend::geglu(ws_, gate, up, n);
    if constexpr (Arch::ffn == Ffn::custom) Arch::activation(gate, up, n);
  }
  // out = the mixture of experts over x (model/moe.hpp): the router's choice for each token, then
  // each chosen expert once over the rows of its tokens, its output added to theirs with its
  // weight. out may be x's memory (the forward pass's proj is xb).
  void experts_ffn(ThreadPool& pool, const ResidentLayer& lw, MatrixView<const float> x, MatrixView<float> out) {
    const ModelConfig& c = cfg_;
    const std::size_t n = x.rows, dim = c.n_embd, ff = c.n_ff_expert;
    MatrixView<float> xb(expert_in_.data(), n, dim);   // [n, n_embd] the input, kept while out is summed
    std::copy_n(x.data, n * dim, xb.data);
    MatrixView<float> logits(router_logits_.data(), n, c.n_experts);
    matmul(pool, lw.router, xb, logits);
    route_tokens(logits, c.n_experts_used, by_expert_);
    std::fill(out.data, out.data + n * dim, 0.0f);
    for (std::size_t e = 0; e < lw.experts.size(); ++e) {
      const std::vector<ExpertToken>& tokens = by_expert_[e];
      const std::size_t m = tokens.size();
      if (m == 0 || ff == 0) continue;
      const ExpertWeights& ex = lw.experts[e];
      MatrixView<float> xe(expert_x_.data(), m, dim), ye(expert_y_.data(), m, dim);   // [m, n_embd]
      MatrixView<float> g(gate_.data(), m, ff), u(up_.data(), m, ff);                 // [m, n_ff_expert]
      for (std::size_t i = 0; i < m; ++i) std::copy_n(xb.row(tokens[i].token), dim, xe.row(i));
      matmul(pool, ex.w_gate, xe, g);
      matmul(pool, ex.w_up, xe, u);
      activate(g.data, u.data, m * ff);
      matmul(pool, ex.w_down, g, ye);
      for (std::size_t i = 0; i < m; ++i) {
        float* o = out.row(tokens[i].token);
        const float* y = ye.row(i);
        for (std::size_t j = 0; j < dim; ++j) o[j] += tokens[i].weight * y[j];
      }
    }
  }
  // Tensor parallelism: the sum of every rank's `m`, on every rank.
  void all_reduce(MatrixView<float> m) {
    if (comm_) comm_->all_reduce_sum(std::span<float>(m.data, m.rows * m.cols));
  }
  // Tensor parallelism: every rank's columns of the logits (its rows of the vocabulary, in rank
  // order) into `logits` on every rank.
  void gather_logits(MatrixView<const float> mine, MatrixView<float> logits) {
    const std::size_t ranks = comm_->size(), rows = logits.rows;
    gather_counts_.resize(ranks);
    for (std::size_t r = 0; r < ranks; ++r) gather_counts_[r] = rows * even_part(cfg_.vocab_size, ranks, r).second;
    if (gathered_.size() < rows * cfg_.vocab_size) gathered_.resize(rows * cfg_.vocab_size);
    comm_->all_gather(std::span<const float>(mine.data, rows * mine.cols),
                      std::span<float>(gathered_.data(), rows * cfg_.vocab_size), gather_counts_);
    const float* block = gathered_.data();   // rank r's [rows, its vocabulary] block
    for (std::size_t r = 0; r < ranks; ++r) {
      const auto [v0, nv] = even_part(cfg_.vocab_size, ranks, r);
      for (std::size_t i = 0; i < rows; ++i) std::copy_n(block + i * nv, nv, logits.row(i) + v0);
      block += rows * nv;
    }
  }
  void matmul(ThreadPool& pool, const WeightMatrix& w, MatrixView<const float> x, MatrixView<float> y) {
    tinyllm::matmul<Backend>(pool, w, x, y, ws_);
  }
  // The same for a block's matrix, plus the LoRA updates: the model's adapters for every token,
  // then each run of consecutive slices with the same adapters, y += factor * B (A x) over its rows.
  void matmul(ThreadPool& pool, const WeightMatrix& w, MatrixView<const float> x, MatrixView<float> y, std::size_t l,
              LoraTarget target, std::span<const SequenceSlice> seqs) {
    matmul(pool, w, x, y);
    for (const AdapterRef& a : adapters_) add_lora(pool, a, l, target, x, y);
    for (std::size_t i = 0; i < seqs.size();) {
      std::size_t j = i + 1;
      while (j < seqs.size() && std::ranges::equal(seqs[j].adapters, seqs[i].adapters)) ++j;
      const std::size_t first = seqs[i].first, count = seqs[j - 1].first + seqs[j - 1].count - first;
      for (const AdapterRef& a : seqs[i].adapters)
        add_lora(pool, a, l, target, x.rows_slice(first, count), y.rows_slice(first, count));
      i = j;
    }
  }
  void add_lora(ThreadPool& pool, const AdapterRef& a, std::size_t l, LoraTarget target, MatrixView<const float> x,
                MatrixView<float> y) {
    const LoraMatrix& m = a.adapter->matrix(l, target);
    if (!m || a.scale == 0.0f) return;
    const std::size_t r = m.rank(), n = x.rows;   // check_adapter sized the buffers
    MatrixView<float> ax(lora_ax_.data(), n, r), out(lora_out_.data(), n, y.cols);
    // A few tokens' low-rank products are too small to share out: the threads would spend
    // longer meeting than computing. They run on the calling thread.
    ThreadPool& p = n <= kLoraInlineTokens ? inline_pool_ : pool;
    tinyllm::matmul<Backend>(p, m.a, x, ax, ws_);
    tinyllm::matmul<Backend>(p, m.b, ax, out, ws_);
    Backend::add_rows(ws_, y, out, a.adapter->factor(m, a.scale));
  }
  // Refuses an adapter made for other shapes, and sizes the buffers of the low-rank products.
  void check_adapter(const AdapterRef& a) {
    if (!a.adapter) throw Error("null adapter");
    if (comm_) throw Error("LoRA adapters are not supported with tensor parallelism yet", a.adapter->path());
    if (Backend::memory())   // its matrices stay in host memory, where this backend's kernels cannot read
      throw Error("LoRA adapters are not supported on the " + std::string(Backend::memory()->name) + " backend yet",
                  a.adapter->path());
    if (!a.adapter->fits(cfg_))
      throw Error("adapter does not fit this model's shapes", a.adapter->path(), "an adapter loaded for this model");
    for (std::size_t l = 0; l < w_.layers.size(); ++l)
      if (!w_.layers[l].experts.empty())
        for (LoraTarget t : {LoraTarget::gate, LoraTarget::up, LoraTarget::down})
          if (a.adapter->matrix(l, t))
            throw Error("the adapter changes the FFN of block " + std::to_string(l) + ", a mixture of experts",
                        a.adapter->path(), "an adapter of the attention matrices only");
    const std::size_t widest = std::max({cfg_.n_embd, cfg_.q_dim(), cfg_.kv_dim(), cfg_.n_ff});
    if (lora_ax_.size() < max_batch_ * a.adapter->max_rank()) lora_ax_.resize(max_batch_ * a.adapter->max_rank());
    if (lora_out_.size() < max_batch_ * widest) lora_out_.resize(max_batch_ * widest);
  }
  void check_tokens(std::span<const std::int32_t> tokens, std::span<const std::int32_t> positions) const {
    if (tokens.size() != positions.size())
      throw Error("forward: " + std::to_string(tokens.size()) + " tokens but " +
                  std::to_string(positions.size()) + " positions");
    if (tokens.empty()) throw Error("forward: no tokens");
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] < 0 || std::size_t(tokens[i]) >= cfg_.vocab_size)
        throw Error("token id " + std::to_string(tokens[i]) + " out of range", "input " + std::to_string(i),
                    "0 <= id < " + std::to_string(cfg_.vocab_size));
      if (positions[i] < 0) throw Error("negative position " + std::to_string(positions[i]), "input " + std::to_string(i));
    }
  }

  ModelConfig cfg_;
  TransformerWeights w_;
  std::size_t max_batch_;
  Communicator* comm_;                      // tensor parallelism: the other ranks; null when alone
  std::vector<std::size_t> gather_counts_;  // [ranks] logits each rank holds
  std::vector<float> gathered_;             // [rows * vocab] the ranks' logit blocks, in rank order
  std::vector<std::vector<ExpertToken>> by_expert_;   // [n_experts] this step's tokens of each expert
  std::vector<float> router_logits_, expert_in_, expert_x_, expert_y_;   // [max_batch, n_experts], [max_batch, n_embd] x3
  std::vector<float> inv_freq_global_, inv_freq_local_;   // [head_dim / 2] RoPE tables
  std::vector<LayerPlan> plans_;                          // [n_layers]
  std::vector<std::size_t> all_rows_;       // 0, 1, ..., max_batch - 1
  std::vector<std::size_t> logit_rows_;     // [max_batch] tokens whose logits a batch wants
  std::vector<std::uint32_t> seq_of_token_; // [max_batch] slice index of each token
  std::vector<KVLayerView> views_;          // one per sequence of the current step
  std::vector<AdapterRef> adapters_;        // LoRA adapters for every token (set_adapters)
  MemoryBuffer<float> lora_ax_{Backend::memory()}, lora_out_{Backend::memory()};   // [max_batch, rank], [max_batch, n_out]
  static constexpr std::size_t kLoraInlineTokens = 4;
  ThreadPool inline_pool_{1};               // runs on the calling thread
  typename Backend::Workspace ws_;    // the backend's own state (CPU: activations quantized for the matmuls)
  std::vector<ResidentLayer> layers_; // [n_layers] weights where the kernels read them
  WeightMatrix token_embd_, output_;
  const float* output_norm_ = nullptr;
  // Buffers for max_batch_ tokens in the backend's memory, allocated once: the forward pass
  // never allocates.
  MemoryBuffer<float> x_{Backend::memory()}, xb_{Backend::memory()}, q_{Backend::memory()}, k_{Backend::memory()},
      v_{Backend::memory()}, att_{Backend::memory()}, gate_{Backend::memory()}, up_{Backend::memory()};
  MemoryBuffer<float> scores_buf_{Backend::memory()};   // [threads, Backend::attention_scratch_cols(...)] scores
  MatrixView<float> scores_;
  MemoryBuffer<float> logits_dev_{Backend::memory()};   // [rows, vocab] logits before the copy to the host
};

}  // namespace tinyllm

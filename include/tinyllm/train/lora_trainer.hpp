#pragma once
// LoRA fine-tuning on the CPU: the base model frozen in whatever type its file holds (F32 to the
// K-quants: QLoRA), a low-rank pair (A, B) trained for each chosen matrix of each block. A
// training step is a forward pass that keeps what the backward needs, the backward pass through
// the cross-entropy, the classifier, RMSNorm, the FFN (SwiGLU or GeGLU), attention (causal,
// grouped-query) and RoPE to the adapters' gradients (kernels/backward.hpp), and AdamW.
//
// The forward here is the model's (model/transformer.hpp) for the traits it supports, written
// with Eigen matrices of T so that the same code runs in double for the gradient checks. Base
// matrices are dequantized to T: kept for the whole run when they fit in cache_bytes, else
// dequantized at each use. Sequences start at position 0 (a training window); a step's
// sequences run in parallel on the pool, each thread adding to gradients of its own.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/kernels/backward.hpp>
#include <tinyllm/model/lora.hpp>
#include <tinyllm/model/transformer.hpp>
#include <tinyllm/sample/random.hpp>

namespace tinyllm {

struct LoraTrainOptions {
  std::size_t rank = 8;
  float alpha = 16.0f;
  std::vector<LoraTarget> targets = {LoraTarget::q, LoraTarget::k, LoraTarget::v, LoraTarget::o,
                                     LoraTarget::gate, LoraTarget::up, LoraTarget::down};
  std::uint64_t seed = 1;            // A's initial values (B starts at zero: the adapter starts as a no-op)
  float beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-8f;
  float weight_decay = 0.0f;         // AdamW's decoupled decay of A and B
  std::size_t cache_bytes = std::size_t(1) << 30;   // dequantized base matrices kept up to this
};

// One training example: tokens[0..n) and, for each i < n - 1, the weight of predicting
// tokens[i + 1] from tokens[0..i] (0: not scored, as a user turn of a chat; 1: scored).
struct TrainingSequence {
  std::vector<std::int32_t> tokens;
  std::vector<float> weights;   // [tokens.size() - 1]
};

struct TrainingLoss {
  double sum = 0, count = 0;    // weighted sum of -log p(target), and of the weights
  double mean() const { return count > 0 ? sum / count : 0.0; }
  TrainingLoss& operator+=(const TrainingLoss& o) {
    sum += o.sum, count += o.count;
    return *this;
  }
};

template <class T = float>
class LoraTrainer {
 public:
  using Mat = grad::Matrix<T>;

  LoraTrainer(const Model& model, LoraTrainOptions opt) : model_(model), cfg_(model.config()), opt_(std::move(opt)) {
    check_supported();
    if (opt_.rank == 0 || opt_.targets.empty())
      throw Error("LoRA training needs a rank >= 1 and at least one target matrix", "LoraTrainOptions");
    const ArchInfo a = model_.arch();
    const auto& w = model_.weights();
    inv_freq_ = rope_inv_freq(cfg_.head_dim, cfg_.rope_theta);
    for (std::size_t i = 0; i < inv_freq_.size(); ++i) {
      if (!w.rope_freq_factors.empty()) inv_freq_[i] /= w.rope_freq_factors[i];
      inv_freq_[i] /= cfg_.rope_linear_scale;
    }
    geglu_ = a.ffn == Ffn::geglu;
    SplitMix64 rng(opt_.seed);
    params_.resize(cfg_.n_layers);
    for (auto& layer : params_)
      for (LoraTarget t : opt_.targets) {
        const auto [n_out, n_in] = lora_target_shape(cfg_, t);
        Param& p = layer[std::size_t(t)];
        p.used = true;
        // A as Kaiming-uniform for a linear layer of n_in inputs, B zero (as the LoRA paper).
        const T bound = T(1) / std::sqrt(T(n_in));
        p.a.resize(Eigen::Index(opt_.rank), Eigen::Index(n_in));
        for (Eigen::Index i = 0; i < p.a.size(); ++i) p.a.data()[i] = bound * T(2 * rng.uniform() - 1);
        p.b.setZero(Eigen::Index(n_out), Eigen::Index(opt_.rank));
        for (Mat* m : {&p.ga, &p.ma, &p.va}) m->setZero(p.a.rows(), p.a.cols());
        for (Mat* m : {&p.gb, &p.mb, &p.vb}) m->setZero(p.b.rows(), p.b.cols());
      }
    cache_weights();
  }

  const LoraTrainOptions& options() const { return opt_; }
  T factor() const { return T(opt_.alpha) / T(opt_.rank); }
  std::size_t steps_done() const { return steps_; }
  std::size_t n_params() const {
    std::size_t n = 0;
    for (const auto& layer : params_)
      for (const Param& p : layer)
        if (p.used) n += std::size_t(p.a.size() + p.b.size());
    return n;
  }
  // The adapter of block l for a target (A [r, n_in], B [n_out, r]) and their gradients so far.
  Mat& a(std::size_t l, LoraTarget t) { return param(l, t).a; }
  Mat& b(std::size_t l, LoraTarget t) { return param(l, t).b; }
  const Mat& grad_a(std::size_t l, LoraTarget t) { return param(l, t).ga; }
  const Mat& grad_b(std::size_t l, LoraTarget t) { return param(l, t).gb; }

  // Forward and backward of each sequence; their gradients add to those of earlier calls (gradient
  // accumulation) until step(). Returns the sequences' loss.
  TrainingLoss accumulate(ThreadPool& pool, std::span<const TrainingSequence> seqs) {
    return run(pool, seqs, true);
  }
  // The loss without gradients (held-out evaluation).
  TrainingLoss evaluate(ThreadPool& pool, std::span<const TrainingSequence> seqs) { return run(pool, seqs, false); }
  // The logits [n, vocab] of the model with the adapters as trained so far, for tokens at
  // positions 0..n-1.
  Mat logits(std::span<const std::int32_t> tokens) {
    check_sequence({{tokens.begin(), tokens.end()}, std::vector<float>(tokens.size() - 1)});
    if (workers_.empty()) workers_.resize(1);
    Mat x;
    return forward(tokens, workers_[0], x);
  }

  // One AdamW step with learning rate lr on the gradients accumulated since the last step,
  // averaged over their scored tokens; the gradients are then cleared.
  void step(float lr) {
    if (pending_.count == 0) throw Error("an optimizer step without gradients", "LoraTrainer::step",
                                         "accumulate() with scored tokens first");
    ++steps_;
    const T inv = T(1) / T(pending_.count);
    const T b1 = T(opt_.beta1), b2 = T(opt_.beta2);
    const T c1 = T(1) - std::pow(b1, T(steps_)), c2 = T(1) - std::pow(b2, T(steps_));
    auto update = [&](Mat& w, Mat& g, Mat& m, Mat& v) {
      for (Eigen::Index i = 0; i < w.size(); ++i) {
        const T gi = g.data()[i] * inv;
        m.data()[i] = b1 * m.data()[i] + (T(1) - b1) * gi;
        v.data()[i] = b2 * v.data()[i] + (T(1) - b2) * gi * gi;
        const T m_hat = m.data()[i] / c1, v_hat = v.data()[i] / c2;
        w.data()[i] -= T(lr) * (m_hat / (std::sqrt(v_hat) + T(opt_.adam_eps)) + T(opt_.weight_decay) * w.data()[i]);
      }
      g.setZero();
    };
    for (auto& layer : params_)
      for (Param& p : layer)
        if (p.used) {
          update(p.a, p.ga, p.ma, p.va);
          update(p.b, p.gb, p.mb, p.vb);
        }
    pending_ = {};
  }

  // The adapter as a GGUF file in llama.cpp's layout (model/lora.hpp), F32, for the base model's
  // architecture: LoraAdapter::load reads it back.
  void save_adapter(const std::string& path) const {
    GGUFWriter out;
    write_adapter(out);
    out.write(path);
  }
  // The adapter plus what resuming needs: the optimizer's moments and the step count.
  void save_checkpoint(const std::string& path) const {
    GGUFWriter out;
    write_adapter(out);
    out.set_string("general.type", "tinyllm.lora_checkpoint");
    out.set_u64("training.steps", steps_);
    each_param(*this, [&](const std::string& name, const Param& p) {
      add_f32(out, name + ".lora_a.adam_m", p.ma);
      add_f32(out, name + ".lora_a.adam_v", p.va);
      add_f32(out, name + ".lora_b.adam_m", p.mb);
      add_f32(out, name + ".lora_b.adam_v", p.vb);
    });
    out.write(path);
  }
  // Restores a checkpoint of a trainer with the same model shapes, rank and targets.
  void load_checkpoint(const std::string& path) {
    const GGUFFile f = GGUFFile::open(path);
    if (!f.has("general.type") || f.get_string("general.type") != "tinyllm.lora_checkpoint")
      throw Error("not a LoRA training checkpoint", path, "general.type = tinyllm.lora_checkpoint");
    if (f.get_string("general.architecture") != cfg_.arch)
      throw Error("checkpoint for architecture " + f.get_string("general.architecture"), path, cfg_.arch);
    each_param(*this, [&](const std::string& name, Param& p) {
      read_f32(f, name + ".lora_a", p.a);
      read_f32(f, name + ".lora_b", p.b);
      read_f32(f, name + ".lora_a.adam_m", p.ma);
      read_f32(f, name + ".lora_a.adam_v", p.va);
      read_f32(f, name + ".lora_b.adam_m", p.mb);
      read_f32(f, name + ".lora_b.adam_v", p.vb);
      p.ga.setZero(), p.gb.setZero();
    });
    for (const TensorView& t : f.tensors()) {
      bool known = false;
      each_param(*this, [&](const std::string& name, const Param&) { known = known || t.name.rfind(name + ".lora_", 0) == 0; });
      if (!known) throw Error("checkpoint tensor " + t.name + " is not one of this trainer's adapters", path,
                              "the same rank and target matrices as the run that wrote it");
    }
    steps_ = f.get_u64("training.steps");
    pending_ = {};
  }

 private:
  struct Param {
    bool used = false;
    Mat a, b, ga, gb, ma, mb, va, vb;   // values, gradients, AdamW's first and second moments
  };
  // What the backward pass needs of one block.
  struct LayerCache {
    Mat x_in, xb, q, k, v, att, x_mid, xb2, gate, up, h;
    std::vector<T> r1, r2;
    std::vector<Mat> probs;
    std::array<Mat, kLoraTargets> ax;   // x Aᵀ of each adapted matrix
  };
  // One thread's gradients and scratch.
  struct Worker {
    std::vector<std::array<Mat, kLoraTargets>> ga, gb;
    std::vector<LayerCache> layers;
    Mat xf;                     // the final norm's output [n, n_embd] and its 1 / rms per row
    std::vector<T> rf;
    Mat scratch_weight;
    TrainingLoss loss;
  };

  Param& param(std::size_t l, LoraTarget t) {
    Param& p = params_.at(l)[std::size_t(t)];
    if (!p.used) throw Error("no adapter trained for " + std::string(kLoraTargetNames[std::size_t(t)]), "LoraTrainer");
    return p;
  }
  const Param* trained(std::size_t l, LoraTarget t) const {
    const Param& p = params_[l][std::size_t(t)];
    return p.used ? &p : nullptr;
  }

  void check_supported() const {
    const ArchInfo a = model_.arch();
    const char* missing = a.ffn == Ffn::custom ? "a custom FFN activation"
                          : a.qk_norm          ? "QK-norm"
                          : a.post_norms       ? "post-norms"
                          : a.parallel_blocks  ? "parallel blocks"
                          : a.attn_softcap || a.final_softcap ? "soft-capping"
                          : cfg_.sliding_window > 0           ? "sliding-window attention"
                                                              : nullptr;
    if (missing)
      throw Error("LoRA training does not support " + std::string(missing) + " yet", cfg_.arch,
                  "a llama-family model (Llama, Mistral, Qwen2, Gemma)");
    if (cfg_.n_heads % cfg_.n_kv_heads != 0) throw Error("n_heads not a multiple of n_kv_heads", cfg_.arch);
  }

  // ---- base weights as T ----
  void cache_weights() {
    std::size_t bytes = 0;
    auto want = [&](const WeightMatrix& w) { bytes += w.rows * w.cols * sizeof(T); };
    const auto& wt = model_.weights();
    for (const auto& l : wt.layers)
      for (const WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) want(*m);
    want(wt.output);
    if (bytes > opt_.cache_bytes) return;   // dequantized at each use instead
    auto keep = [&](const WeightMatrix& w) {
      if (!cached_.contains(w.data)) dequantize(w, cached_[w.data]);
    };
    for (const auto& l : wt.layers)
      for (const WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) keep(*m);
    keep(wt.output);
  }
  static void dequantize(const WeightMatrix& w, Mat& out) {
    out.resize(Eigen::Index(w.rows), Eigen::Index(w.cols));
    if constexpr (std::is_same_v<T, float>) {
      for (std::size_t r = 0; r < w.rows; ++r) dequantize_row(w, r, out.row(Eigen::Index(r)).data());
    } else {
      std::vector<float> row(w.cols);
      for (std::size_t r = 0; r < w.rows; ++r) {
        dequantize_row(w, r, row.data());
        for (std::size_t i = 0; i < w.cols; ++i) out(Eigen::Index(r), Eigen::Index(i)) = T(row[i]);
      }
    }
  }
  const Mat& weight(const WeightMatrix& w, Worker& wk) const {
    if (const auto it = cached_.find(w.data); it != cached_.end()) return it->second;
    dequantize(w, wk.scratch_weight);
    return wk.scratch_weight;
  }

  // y = x Wᵀ (+ the adapter's product, its x Aᵀ saved in `ax`).
  void linear(const WeightMatrix& w, const Mat& x, Mat& y, std::size_t l, LoraTarget t, Mat& ax, Worker& wk) const {
    y.noalias() = x * weight(w, wk).transpose();
    if (const Param* p = trained(l, t)) ax = grad::lora(x, p->a, p->b, factor(), y);
  }
  // dx += dy W, and the adapter's gradients.
  void linear_backward(const WeightMatrix& w, const Mat& x, const Mat& dy, Mat& dx, std::size_t l, LoraTarget t,
                       const Mat& ax, Worker& wk) const {
    dx.noalias() += dy * weight(w, wk);
    if (const Param* p = trained(l, t))
      grad::lora_backward(x, ax, p->a, p->b, factor(), dy, wk.ga[l][std::size_t(t)], wk.gb[l][std::size_t(t)], dx);
  }

  TrainingLoss run(ThreadPool& pool, std::span<const TrainingSequence> seqs, bool backward) {
    for (const TrainingSequence& s : seqs) check_sequence(s);
    const std::size_t n_workers = std::min<std::size_t>(pool.size(), std::max<std::size_t>(1, seqs.size()));
    if (workers_.size() < n_workers) workers_.resize(n_workers);
    for (std::size_t i = 0; i < n_workers; ++i) prepare(workers_[i], backward);
    // Sequence i runs on worker i % n_workers: the same split whatever the timing, so a run
    // gives the same numbers each time.
    pool.parallel_for(n_workers, [&](std::size_t w0, std::size_t w1) {
      for (std::size_t w = w0; w < w1; ++w)
        for (std::size_t i = w; i < seqs.size(); i += n_workers) sequence(seqs[i], backward, workers_[w]);
    });
    TrainingLoss total;
    for (std::size_t w = 0; w < n_workers; ++w) {
      total += workers_[w].loss;
      if (!backward) continue;
      for (std::size_t l = 0; l < params_.size(); ++l)
        for (Param& p : params_[l])
          if (p.used) {
            const std::size_t t = std::size_t(&p - params_[l].data());
            p.ga += workers_[w].ga[l][t];
            p.gb += workers_[w].gb[l][t];
          }
    }
    if (backward) pending_ += total;
    return total;
  }
  void prepare(Worker& wk, bool backward) const {
    wk.loss = {};
    if (!backward) return;
    wk.ga.resize(cfg_.n_layers), wk.gb.resize(cfg_.n_layers);
    for (std::size_t l = 0; l < cfg_.n_layers; ++l)
      for (std::size_t t = 0; t < kLoraTargets; ++t)
        if (params_[l][t].used) {
          wk.ga[l][t].setZero(params_[l][t].a.rows(), params_[l][t].a.cols());
          wk.gb[l][t].setZero(params_[l][t].b.rows(), params_[l][t].b.cols());
        }
  }
  void check_sequence(const TrainingSequence& s) const {
    if (s.tokens.size() < 2 || s.weights.size() != s.tokens.size() - 1)
      throw Error("a training sequence of " + std::to_string(s.tokens.size()) + " tokens and " +
                      std::to_string(s.weights.size()) + " weights", "LoraTrainer",
                  "at least 2 tokens and one weight per predicted token");
    if (s.tokens.size() - 1 > cfg_.context)
      throw Error("a training sequence of " + std::to_string(s.tokens.size()) + " tokens", "LoraTrainer",
                  "at most the model's context + 1 = " + std::to_string(cfg_.context + 1));
    for (std::int32_t id : s.tokens)
      if (id < 0 || std::size_t(id) >= cfg_.vocab_size)
        throw Error("token id " + std::to_string(id) + " out of range", "LoraTrainer",
                    "0 <= id < " + std::to_string(cfg_.vocab_size));
  }

  T attention_scale() const { return cfg_.attn_scale > 0 ? T(cfg_.attn_scale) : T(1) / std::sqrt(T(cfg_.head_dim)); }

  // The forward pass over `inputs` at positions 0..n-1, keeping each block's activations and the
  // final norm's in the worker; x ends as the last block's output [n, n_embd]. Returns the
  // logits [n, vocab].
  Mat forward(std::span<const std::int32_t> inputs, Worker& wk, Mat& x) const {
    const ModelConfig& c = cfg_;
    const ArchInfo arch = model_.arch();
    const TransformerWeights& w = model_.weights();
    const std::size_t n = inputs.size();
    const auto N = Eigen::Index(n);
    const T scale = attention_scale();
    std::vector<std::int32_t> positions(n);
    for (std::size_t i = 0; i < n; ++i) positions[i] = std::int32_t(i);
    wk.layers.resize(c.n_layers);

    x.resize(N, Eigen::Index(c.n_embd));   // [n, n_embd] the residual stream
    {
      std::vector<float> row(c.n_embd);
      const T embed_scale = arch.scale_embeddings ? std::sqrt(T(c.n_embd)) : T(1);
      for (std::size_t t = 0; t < n; ++t) {
        dequantize_row(w.token_embd, std::size_t(inputs[t]), row.data());
        for (std::size_t i = 0; i < c.n_embd; ++i) x(Eigen::Index(t), Eigen::Index(i)) = T(row[i]) * embed_scale;
      }
    }
    Mat proj;
    for (std::size_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights& lw = w.layers[l];
      LayerCache& lc = wk.layers[l];
      auto bias = [&](Mat& m, const AlignedBuffer<float>& b) {
        if (!arch.qkv_bias) return;
        for (Eigen::Index t = 0; t < m.rows(); ++t)
          for (Eigen::Index i = 0; i < m.cols(); ++i) m(t, i) += T(b[std::size_t(i)]);
      };
      lc.x_in = x;
      lc.r1 = grad::rmsnorm(lc.x_in, lw.attn_norm.data(), c.norm_eps, lc.xb);
      linear(lw.wq, lc.xb, lc.q, l, LoraTarget::q, lc.ax[0], wk);
      linear(lw.wk, lc.xb, lc.k, l, LoraTarget::k, lc.ax[1], wk);
      linear(lw.wv, lc.xb, lc.v, l, LoraTarget::v, lc.ax[2], wk);
      bias(lc.q, lw.bq), bias(lc.k, lw.bk), bias(lc.v, lw.bv);
      grad::rope(lc.q, c.head_dim, positions, inv_freq_.data(), arch.rope);
      grad::rope(lc.k, c.head_dim, positions, inv_freq_.data(), arch.rope);
      grad::attention(lc.q, lc.k, lc.v, c.n_heads, c.n_kv_heads, c.head_dim, scale, lc.att, lc.probs);
      linear(lw.wo, lc.att, proj, l, LoraTarget::o, lc.ax[3], wk);
      lc.x_mid = lc.x_in + proj;
      lc.r2 = grad::rmsnorm(lc.x_mid, lw.ffn_norm.data(), c.norm_eps, lc.xb2);
      linear(lw.w_gate, lc.xb2, lc.gate, l, LoraTarget::gate, lc.ax[4], wk);
      linear(lw.w_up, lc.xb2, lc.up, l, LoraTarget::up, lc.ax[5], wk);
      grad::gated(lc.gate, lc.up, geglu_, lc.h);
      linear(lw.w_down, lc.h, proj, l, LoraTarget::down, lc.ax[6], wk);
      x = lc.x_mid + proj;
    }
    wk.rf = grad::rmsnorm(x, w.output_norm.data(), c.norm_eps, wk.xf);
    Mat logits = wk.xf * weight(w.output, wk).transpose();   // [n, vocab]
    return logits;
  }

  // One sequence: the forward pass, then (when asked) the backward pass into the worker's
  // gradients. Inputs are tokens[0..n-1), targets tokens[1..n).
  void sequence(const TrainingSequence& s, bool backward, Worker& wk) const {
    const ModelConfig& c = cfg_;
    const ArchInfo arch = model_.arch();
    const TransformerWeights& w = model_.weights();
    const std::size_t n = s.tokens.size() - 1;
    const auto N = Eigen::Index(n);
    const T scale = attention_scale();
    std::vector<std::int32_t> positions(n);
    for (std::size_t i = 0; i < n; ++i) positions[i] = std::int32_t(i);
    Mat x, dlogits;
    const Mat logits = forward(std::span(s.tokens).first(n), wk, x);
    const T loss = grad::cross_entropy(logits, std::span(s.tokens).subspan(1), s.weights, dlogits);
    double count = 0;
    for (float v : s.weights) count += v;
    wk.loss += {double(loss), count};
    if (!backward) return;

    // Backward, from the loss to the adapters.
    Mat dxf = dlogits * weight(w.output, wk);   // the classifier is frozen: only its input's gradient
    Mat dx = Mat::Zero(N, Eigen::Index(c.n_embd));
    grad::rmsnorm_backward(x, w.output_norm.data(), wk.rf, dxf, dx);
    Mat dh, dgate, dup, dxb, datt, dq, dk, dv;
    for (std::size_t l = c.n_layers; l-- > 0;) {
      const LayerWeights& lw = w.layers[l];
      const LayerCache& lc = wk.layers[l];
      // FFN block: x_out = x_mid + down(act(gate) * up); dx is dL/dx_out, and becomes dL/dx_mid.
      dh.setZero(N, Eigen::Index(c.n_ff));
      linear_backward(lw.w_down, lc.h, dx, dh, l, LoraTarget::down, lc.ax[6], wk);
      grad::gated_backward(lc.gate, lc.up, geglu_, dh, dgate, dup);
      dxb.setZero(N, Eigen::Index(c.n_embd));
      linear_backward(lw.w_gate, lc.xb2, dgate, dxb, l, LoraTarget::gate, lc.ax[4], wk);
      linear_backward(lw.w_up, lc.xb2, dup, dxb, l, LoraTarget::up, lc.ax[5], wk);
      grad::rmsnorm_backward(lc.x_mid, lw.ffn_norm.data(), lc.r2, dxb, dx);
      // Attention block: x_mid = x_in + o(attention(rope(q), rope(k), v)); dx becomes dL/dx_in.
      datt.setZero(N, Eigen::Index(c.q_dim()));
      linear_backward(lw.wo, lc.att, dx, datt, l, LoraTarget::o, lc.ax[3], wk);
      dk.setZero(N, Eigen::Index(c.kv_dim()));
      dv.setZero(N, Eigen::Index(c.kv_dim()));
      grad::attention_backward(lc.q, lc.k, lc.v, lc.probs, datt, c.n_heads, c.n_kv_heads, c.head_dim, scale, dq, dk,
                               dv);
      grad::rope(dq, c.head_dim, positions, inv_freq_.data(), arch.rope, /*inverse=*/true);
      grad::rope(dk, c.head_dim, positions, inv_freq_.data(), arch.rope, /*inverse=*/true);
      dxb.setZero(N, Eigen::Index(c.n_embd));
      linear_backward(lw.wq, lc.xb, dq, dxb, l, LoraTarget::q, lc.ax[0], wk);
      linear_backward(lw.wk, lc.xb, dk, dxb, l, LoraTarget::k, lc.ax[1], wk);
      linear_backward(lw.wv, lc.xb, dv, dxb, l, LoraTarget::v, lc.ax[2], wk);
      grad::rmsnorm_backward(lc.x_in, lw.attn_norm.data(), lc.r1, dxb, dx);
    }
  }

  // ---- files ----
  // f(tensor name prefix "blk.L.<target>.weight", parameter) for each trained matrix.
  template <class Self, class F>
  static void each_param(Self& self, F&& f) {
    for (std::size_t l = 0; l < self.params_.size(); ++l)
      for (std::size_t t = 0; t < kLoraTargets; ++t)
        if (self.params_[l][t].used)
          f(lora_weight_name(l, LoraTarget(t)), self.params_[l][t]);
  }
  void write_adapter(GGUFWriter& out) const {
    write_lora_metadata(out, cfg_.arch, opt_.alpha, "tinyllm LoRA r" + std::to_string(opt_.rank));
    each_param(*this, [&](const std::string& name, const Param& p) {
      add_f32(out, name + ".lora_a", p.a);
      add_f32(out, name + ".lora_b", p.b);
    });
  }
  // A row-major [rows, cols] matrix as an F32 tensor of GGUF dims {cols, rows}.
  static void add_f32(GGUFWriter& out, const std::string& name, const Mat& m) {
    std::vector<float> values(std::size_t(m.size()));
    for (Eigen::Index i = 0; i < m.size(); ++i) values[std::size_t(i)] = float(m.data()[i]);
    out.add_tensor(name, DType::F32, {std::size_t(m.cols()), std::size_t(m.rows())}, values.data(),
                   values.size() * sizeof(float));
  }
  static void read_f32(const GGUFFile& f, const std::string& name, Mat& m) {
    const TensorView& t = f.tensor(name);
    if (t.dtype != DType::F32 || t.cols() != std::size_t(m.cols()) || t.rows() != std::size_t(m.rows()))
      throw Error("checkpoint tensor " + name + " has another type or shape", f.name(),
                  "F32 [" + std::to_string(m.rows()) + ", " + std::to_string(m.cols()) + "]");
    const auto* v = static_cast<const float*>(t.data);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = T(v[i]);
  }

  const Model& model_;
  ModelConfig cfg_;
  LoraTrainOptions opt_;
  bool geglu_ = false;
  std::vector<float> inv_freq_;                       // [head_dim / 2] RoPE frequencies
  std::vector<std::array<Param, kLoraTargets>> params_;
  std::map<const void*, Mat> cached_;                 // dequantized base matrices, by their data
  std::vector<Worker> workers_;
  TrainingLoss pending_;                              // accumulated since the last step
  std::size_t steps_ = 0;
};

}  // namespace tinyllm

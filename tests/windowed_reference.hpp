#pragma once
// A whole-model reference for Llama-shaped F32 models with a sliding window, written from the
// reference kernels with an explicit attention mask (mask[i][j] = j <= i && i - j < window), for
// the tests of the model and of the paged cache that releases blocks out of the window.
#include <tinyllm/tinyllm.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace tinyllm::test {

using Matrix = std::vector<float>;   // row-major

namespace detail {

inline Matrix project(ThreadPool& pool, const WeightMatrix& w, const Matrix& x, std::size_t n) {
  Matrix y(n * w.rows);
  ref::matmul(pool, MatrixView<const float>(static_cast<const float*>(w.data), w.rows, w.cols),
              MatrixView<const float>(x.data(), n, w.cols), MatrixView<float>(y.data(), n, w.rows));
  return y;
}

}  // namespace detail

// Logits [n, vocab] of a Llama-shaped F32 model for tokens at positions 0..n-1, every attention
// score outside the mask set to -infinity before the softmax.
inline Matrix masked_reference(const Model& m, const std::vector<std::int32_t>& tokens, std::size_t window) {
  const ModelConfig& c = m.config();
  const TransformerWeights& w = m.weights();
  const std::size_t n = tokens.size(), d = c.n_embd, hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
  ThreadPool pool(1);
  const auto inv_freq = rope_inv_freq(hd, c.rope_theta);
  Matrix x(n * d), xb(n * d);
  for (std::size_t t = 0; t < n; ++t) dequantize_row(w.token_embd, std::size_t(tokens[t]), x.data() + t * d);
  for (const LayerWeights& l : w.layers) {
    for (std::size_t t = 0; t < n; ++t) ref::rmsnorm(x.data() + t * d, l.attn_norm.data(), xb.data() + t * d, d, c.norm_eps);
    Matrix q = detail::project(pool, l.wq, xb, n), k = detail::project(pool, l.wk, xb, n), v = detail::project(pool, l.wv, xb, n);
    for (std::size_t t = 0; t < n; ++t) {
      ref::rope(q.data() + t * c.q_dim(), c.n_heads, hd, t, inv_freq.data(), RopeStyle::adjacent_pairs);
      ref::rope(k.data() + t * c.kv_dim(), c.n_kv_heads, hd, t, inv_freq.data(), RopeStyle::adjacent_pairs);
    }
    Matrix att(n * c.q_dim(), 0.0f);
    std::vector<float> scores(n);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t h = 0; h < c.n_heads; ++h) {
        const std::size_t kvh = h / group;
        for (std::size_t j = 0; j < n; ++j) {
          const bool visible = j <= i && i - j < window;
          double dot = 0;
          for (std::size_t e = 0; e < hd; ++e) dot += double(q[i * c.q_dim() + h * hd + e]) * k[j * c.kv_dim() + kvh * hd + e];
          scores[j] = visible ? float(dot / std::sqrt(double(hd))) : -std::numeric_limits<float>::infinity();
        }
        ref::softmax(scores.data(), n);
        for (std::size_t j = 0; j < n; ++j)
          for (std::size_t e = 0; e < hd; ++e)
            att[i * c.q_dim() + h * hd + e] += scores[j] * v[j * c.kv_dim() + kvh * hd + e];
      }
    const Matrix o = detail::project(pool, l.wo, att, n);
    for (std::size_t i = 0; i < n * d; ++i) x[i] += o[i];
    for (std::size_t t = 0; t < n; ++t) ref::rmsnorm(x.data() + t * d, l.ffn_norm.data(), xb.data() + t * d, d, c.norm_eps);
    Matrix g = detail::project(pool, l.w_gate, xb, n);
    const Matrix u = detail::project(pool, l.w_up, xb, n);
    ref::swiglu(g.data(), u.data(), g.size());
    const Matrix down = detail::project(pool, l.w_down, g, n);
    for (std::size_t i = 0; i < n * d; ++i) x[i] += down[i];
  }
  for (std::size_t t = 0; t < n; ++t) ref::rmsnorm(x.data() + t * d, w.output_norm.data(), xb.data() + t * d, d, c.norm_eps);
  return detail::project(pool, w.output, xb, n);
}

}  // namespace tinyllm::test

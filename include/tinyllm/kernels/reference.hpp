#pragma once
// The specification of every kernel: plain scalar loops, accumulating in double so that each
// result is (close to) the exact value of its formula. The SIMD kernels of cpu/ have the same
// signatures and are tested against these. Thread pools are accepted for identical signatures
// and ignored: the reference is deliberately serial.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include <tinyllm/core/half.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/attention_params.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/kernels/rope.hpp>

namespace tinyllm::ref {

inline double weight_value(float w) { return w; }
inline double weight_value(F16 w) { return f16_to_f32(w.bits); }
inline double weight_value(BF16 w) { return bf16_to_f32(w.bits); }

// y[t, o] = sum_i w[o, i] * x[t, i].  w: [n_out, n_in], x: [n_tok, n_in], y: [n_tok, n_out].
template <class W>
void matmul(ThreadPool& /*pool*/, MatrixView<const W> w, MatrixView<const float> x, MatrixView<float> y) {
  assert(w.cols == x.cols && y.rows == x.rows && y.cols == w.rows);
  for (std::size_t t = 0; t < x.rows; ++t)
    for (std::size_t o = 0; o < w.rows; ++o) {
      double sum = 0;
      for (std::size_t i = 0; i < w.cols; ++i) sum += weight_value(w.row(o)[i]) * x.row(t)[i];
      y.row(t)[o] = static_cast<float>(sum);
    }
}

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; out may alias x.
inline void rmsnorm(const float* x, const float* w, float* out, std::size_t n, float eps) {
  double sum_sq = 0;
  for (std::size_t i = 0; i < n; ++i) sum_sq += double(x[i]) * x[i];
  const double inv_rms = 1.0 / std::sqrt(sum_sq / double(n) + eps);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(x[i] * inv_rms * w[i]);
}

// Rotates each of the n_heads heads of x ([n_heads, head_dim]) in place: pair i turns by the
// angle pos * inv_freq[i] (a float product, as llama.cpp and llama2.c compute it).
inline void rope(float* x, std::size_t n_heads, std::size_t head_dim, std::size_t pos, const float* inv_freq,
                 RopeStyle style) {
  assert(head_dim % 2 == 0);
  const std::size_t half = head_dim / 2;
  for (std::size_t h = 0; h < n_heads; ++h) {
    float* head = x + h * head_dim;
    for (std::size_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos) * inv_freq[i];
      const double c = std::cos(double(angle)), s = std::sin(double(angle));
      float& a = style == RopeStyle::adjacent_pairs ? head[2 * i] : head[i];
      float& b = style == RopeStyle::adjacent_pairs ? head[2 * i + 1] : head[i + half];
      const double a0 = a, b0 = b;
      a = static_cast<float>(a0 * c - b0 * s);
      b = static_cast<float>(a0 * s + b0 * c);
    }
  }
}

// In place: x[i] = exp(x[i] - max) / sum_j exp(x[j] - max).
inline void softmax(float* x, std::size_t n) {
  if (n == 0) return;
  const double max = *std::max_element(x, x + n);
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += std::exp(x[i] - max);
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<float>(std::exp(x[i] - max) / sum);
}

inline double silu_value(double v) { return v / (1.0 + std::exp(-v)); }

// x[i] = x[i] * sigmoid(x[i]), in place.
inline void silu(float* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<float>(silu_value(x[i]));
}

// gate[i] = silu(gate[i]) * up[i].
inline void swiglu(float* gate, const float* up, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) gate[i] = static_cast<float>(silu_value(gate[i]) * up[i]);
}

// GELU in its tanh form, as GPT-2, Gemma and ggml compute it.
inline double gelu_value(double v) {
  return 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
}

// gate[i] = gelu(gate[i]) * up[i].
inline void geglu(float* gate, const float* up, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) gate[i] = static_cast<float>(gelu_value(gate[i]) * up[i]);
}

// x[i] = cap * tanh(x[i] / cap), in place: Gemma 2's soft-capping of logits.
inline void softcap(float* x, std::size_t n, float cap) {
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<float>(cap * std::tanh(double(x[i]) / cap));
}

// Causal grouped-query attention over F32 or F16 K/V (read as f32). q, out: [n_tok, n_heads *
// head_dim]. Token t attends to cache positions attention_start(positions[t], window)..positions[t];
// head h reads KV head h / (n_heads / n_kv_heads). scratch: at least one row of max(positions) + 1 floats (the
// reference uses only row 0).
inline void attention(ThreadPool& /*pool*/, MatrixView<const float> q, std::span<const std::int32_t> positions,
                      const KVLayerView& kv, std::size_t n_heads, std::size_t n_kv_heads, std::size_t head_dim,
                      const AttentionParams& params, MatrixView<float> out, MatrixView<float> scratch) {
  assert(n_kv_heads > 0 && n_heads % n_kv_heads == 0 && q.rows == positions.size() && out.rows == q.rows);
  const std::size_t group = n_heads / n_kv_heads;
  float* scores = scratch.row(0);
  for (std::size_t t = 0; t < positions.size(); ++t) {
    const auto pos = static_cast<std::size_t>(positions[t]);
    const std::size_t first = attention_start(pos, params.window), n_pos = pos + 1 - first;
    assert(pos < scratch.cols);
    for (std::size_t h = 0; h < n_heads; ++h) {
      const float* qh = q.row(t) + h * head_dim;
      const std::size_t kv_offset = (h / group) * head_dim;
      for (std::size_t p = 0; p < n_pos; ++p) {
        double dot = 0;
        for (std::size_t i = 0; i < head_dim; ++i) dot += double(qh[i]) * kv.key_at(first + p, kv_offset + i);
        dot *= params.scale;
        if (params.softcap > 0) dot = params.softcap * std::tanh(dot / params.softcap);
        scores[p] = static_cast<float>(dot);
      }
      softmax(scores, n_pos);
      for (std::size_t i = 0; i < head_dim; ++i) {
        double acc = 0;
        for (std::size_t p = 0; p < n_pos; ++p) acc += double(scores[p]) * kv.value_at(first + p, kv_offset + i);
        out.row(t)[h * head_dim + i] = static_cast<float>(acc);
      }
    }
  }
}

}  // namespace tinyllm::ref

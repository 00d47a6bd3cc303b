#pragma once
// The ops of LoRA fine-tuning (train/): each forward op that saves what its backward needs, and
// the backward beside it. Templates on the scalar T: float to train, double for the checks
// against central finite differences (tests/kernels/backward_test.cpp). Matrices are Eigen's,
// row-major like every other matrix of the library ([tokens, features]); their products are
// Eigen's GEMMs, the dense f32 math the design card names Eigen for.
#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <tinyllm/kernels/rope.hpp>

namespace tinyllm::grad {

template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// ---- RMSNorm: y = x * r * w with r = 1 / sqrt(mean(x^2) + eps), row by row ----
// Returns r of each row (the backward's saved value).
template <class T>
std::vector<T> rmsnorm(const Matrix<T>& x, const float* w, float eps, Matrix<T>& y) {
  std::vector<T> r(std::size_t(x.rows()));
  y.resize(x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    r[t] = T(1) / std::sqrt(x.row(t).squaredNorm() / T(x.cols()) + T(eps));
    for (Eigen::Index i = 0; i < x.cols(); ++i) y(t, i) = x(t, i) * r[t] * T(w[i]);
  }
  return r;
}
// dx += dL/dx for dy = dL/dy: with g = dy * w, dx = r g - x r^3 (g . x) / n.
template <class T>
void rmsnorm_backward(const Matrix<T>& x, const float* w, const std::vector<T>& r, const Matrix<T>& dy,
                      Matrix<T>& dx) {
  const T n = T(x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    T dot = 0;
    for (Eigen::Index i = 0; i < x.cols(); ++i) dot += dy(t, i) * T(w[i]) * x(t, i);
    const T c = r[t] * r[t] * r[t] * dot / n;
    for (Eigen::Index i = 0; i < x.cols(); ++i) dx(t, i) += r[t] * dy(t, i) * T(w[i]) - c * x(t, i);
  }
}

// ---- RoPE: each head of row t turned by position positions[t] (as ref::rope); the backward of a
// rotation is the rotation by the opposite angle ----
template <class T>
void rope(Matrix<T>& x, std::size_t head_dim, std::span<const std::int32_t> positions, const float* inv_freq,
          RopeStyle style, bool inverse = false) {
  const std::size_t half = head_dim / 2, n_heads = std::size_t(x.cols()) / head_dim;
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (std::size_t h = 0; h < n_heads; ++h)
      for (std::size_t i = 0; i < half; ++i) {
        const float angle = float(positions[t]) * inv_freq[i];
        const T c = T(std::cos(double(angle))), s = T(inverse ? -std::sin(double(angle)) : std::sin(double(angle)));
        const std::size_t ia = h * head_dim + (style == RopeStyle::adjacent_pairs ? 2 * i : i);
        const std::size_t ib = h * head_dim + (style == RopeStyle::adjacent_pairs ? 2 * i + 1 : i + half);
        const T a = x(t, Eigen::Index(ia)), b = x(t, Eigen::Index(ib));
        x(t, Eigen::Index(ia)) = a * c - b * s;
        x(t, Eigen::Index(ib)) = a * s + b * c;
      }
}

// ---- causal grouped-query attention over one sequence at positions 0..n-1 ----
// q [n, n_heads * head_dim], k and v [n, n_kv_heads * head_dim] -> out [n, n_heads * head_dim];
// probs[h] [n, n] (the softmax of each head, zero above the diagonal) is saved for the backward.
template <class T>
void attention(const Matrix<T>& q, const Matrix<T>& k, const Matrix<T>& v, std::size_t n_heads,
               std::size_t n_kv_heads, std::size_t head_dim, T scale, Matrix<T>& out, std::vector<Matrix<T>>& probs) {
  const Eigen::Index n = q.rows(), d = Eigen::Index(head_dim);
  const std::size_t group = n_heads / n_kv_heads;
  out.resize(n, q.cols());
  probs.resize(n_heads);
  for (std::size_t h = 0; h < n_heads; ++h) {
    const Eigen::Index qc = Eigen::Index(h * head_dim), kc = Eigen::Index(h / group * head_dim);
    Matrix<T>& p = probs[h];
    p.noalias() = scale * q.middleCols(qc, d) * k.middleCols(kc, d).transpose();   // [n, n] scores
    for (Eigen::Index t = 0; t < n; ++t) {
      const T max = p.row(t).head(t + 1).maxCoeff();
      T sum = 0;
      for (Eigen::Index j = 0; j <= t; ++j) sum += p(t, j) = std::exp(p(t, j) - max);
      p.row(t).head(t + 1) /= sum;
      p.row(t).tail(n - t - 1).setZero();
    }
    out.middleCols(qc, d).noalias() = p * v.middleCols(kc, d);
  }
}
// dq = dL/dq, and dk, dv += (every query head of a KV head adds to it).
template <class T>
void attention_backward(const Matrix<T>& q, const Matrix<T>& k, const Matrix<T>& v, const std::vector<Matrix<T>>& probs,
                        const Matrix<T>& dout, std::size_t n_heads, std::size_t n_kv_heads, std::size_t head_dim,
                        T scale, Matrix<T>& dq, Matrix<T>& dk, Matrix<T>& dv) {
  const Eigen::Index n = q.rows(), d = Eigen::Index(head_dim);
  const std::size_t group = n_heads / n_kv_heads;
  dq.setZero(n, q.cols());
  Matrix<T> dp, ds;
  for (std::size_t h = 0; h < n_heads; ++h) {
    const Eigen::Index qc = Eigen::Index(h * head_dim), kc = Eigen::Index(h / group * head_dim);
    const Matrix<T>& p = probs[h];
    dp.noalias() = dout.middleCols(qc, d) * v.middleCols(kc, d).transpose();   // dL/dp [n, n]
    // Through the softmax: ds = p * (dp - sum_j p_j dp_j), row by row (zero above the diagonal).
    ds = p.cwiseProduct(dp);
    const Eigen::Matrix<T, Eigen::Dynamic, 1> row_dot = ds.rowwise().sum();
    ds -= p.cwiseProduct(row_dot.replicate(1, n));
    ds *= scale;
    dq.middleCols(qc, d).noalias() += ds * k.middleCols(kc, d);
    dk.middleCols(kc, d).noalias() += ds.transpose() * q.middleCols(qc, d);
    dv.middleCols(kc, d).noalias() += p.transpose() * dout.middleCols(qc, d);
  }
}

// ---- gated activations: h = act(gate) * up ----
template <class T>
T silu(T g) { return g / (T(1) + std::exp(-g)); }
template <class T>
T silu_derivative(T g) {
  const T s = T(1) / (T(1) + std::exp(-g));
  return s * (T(1) + g * (T(1) - s));
}
// GELU in its tanh form, as ref::gelu_value.
template <class T>
T gelu(T g) { return T(0.5) * g * (T(1) + std::tanh(T(0.7978845608028654) * (g + T(0.044715) * g * g * g))); }
template <class T>
T gelu_derivative(T g) {
  const T c = T(0.7978845608028654), z = c * (g + T(0.044715) * g * g * g), th = std::tanh(z);
  return T(0.5) * (T(1) + th) + T(0.5) * g * (T(1) - th * th) * c * (T(1) + T(3 * 0.044715) * g * g);
}
template <class T>
void gated(const Matrix<T>& gate, const Matrix<T>& up, bool geglu, Matrix<T>& h) {
  h.resize(gate.rows(), gate.cols());
  for (Eigen::Index i = 0; i < gate.size(); ++i)
    h.data()[i] = (geglu ? gelu(gate.data()[i]) : silu(gate.data()[i])) * up.data()[i];
}
// dgate = dh * up * act'(gate), dup = dh * act(gate).
template <class T>
void gated_backward(const Matrix<T>& gate, const Matrix<T>& up, bool geglu, const Matrix<T>& dh, Matrix<T>& dgate,
                    Matrix<T>& dup) {
  dgate.resize(gate.rows(), gate.cols());
  dup.resize(gate.rows(), gate.cols());
  for (Eigen::Index i = 0; i < gate.size(); ++i) {
    const T g = gate.data()[i];
    dgate.data()[i] = dh.data()[i] * up.data()[i] * (geglu ? gelu_derivative(g) : silu_derivative(g));
    dup.data()[i] = dh.data()[i] * (geglu ? gelu(g) : silu(g));
  }
}

// ---- cross-entropy of next-token prediction ----
// Row t of logits predicts targets[t] with weight weights[t] (0 = not scored, as a prompt token
// of a chat). Returns sum_t weight_t * -log softmax(logits_t)[target_t]; dlogits = its gradient.
template <class T>
T cross_entropy(const Matrix<T>& logits, std::span<const std::int32_t> targets, std::span<const float> weights,
                Matrix<T>& dlogits) {
  dlogits.setZero(logits.rows(), logits.cols());
  T loss = 0;
  for (Eigen::Index t = 0; t < logits.rows(); ++t) {
    if (weights[t] == 0.0f) continue;
    const T max = logits.row(t).maxCoeff();
    const T sum = (logits.row(t).array() - max).exp().sum();
    const T log_z = max + std::log(sum);
    loss += T(weights[t]) * (log_z - logits(t, targets[t]));
    dlogits.row(t) = T(weights[t]) * ((logits.row(t).array() - log_z).exp()).matrix();
    dlogits(t, targets[t]) -= T(weights[t]);
  }
  return loss;
}

// ---- the LoRA product y += f * (x Aᵀ) Bᵀ: A [r, n_in], B [n_out, r] ----
// Forward: returns x Aᵀ [n, r] (saved) after adding the product to y.
template <class T>
Matrix<T> lora(const Matrix<T>& x, const Matrix<T>& a, const Matrix<T>& b, T f, Matrix<T>& y) {
  Matrix<T> ax = x * a.transpose();
  y.noalias() += f * (ax * b.transpose());
  return ax;
}
// dA += f (dy B)ᵀ x, dB += f dyᵀ (x Aᵀ), dx += f (dy B) A.
template <class T>
void lora_backward(const Matrix<T>& x, const Matrix<T>& ax, const Matrix<T>& a, const Matrix<T>& b, T f,
                   const Matrix<T>& dy, Matrix<T>& da, Matrix<T>& db, Matrix<T>& dx) {
  const Matrix<T> dax = f * (dy * b);   // [n, r]
  db.noalias() += f * (dy.transpose() * ax);
  da.noalias() += dax.transpose() * x;
  dx.noalias() += dax * a;
}

}  // namespace tinyllm::grad

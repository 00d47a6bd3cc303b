// Every backward op of kernels/backward.hpp against central finite differences, in double
// precision: for a random R, the loss L = sum(op(inputs) * R) has the gradient the op's backward
// gives with dL/dout = R.
#include <tinyllm/kernels/backward.hpp>
#include <tinyllm/tinyllm.hpp>

#include <functional>

#include "test_util.hpp"

using namespace tinyllm;
using M = grad::Matrix<double>;

namespace {

M random_matrix(SplitMix64& rng, Eigen::Index rows, Eigen::Index cols, double sd = 1.0) {
  M m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = sd * rng.normal();
  return m;
}

double dot(const M& a, const M& b) { return a.cwiseProduct(b).sum(); }

// Each element of `param` nudged by +-h: (L+ - L-) / 2h against analytic's element.
void check_gradient(M& param, const M& analytic, const std::function<double()>& loss, const std::string& what,
                    double tol = 1e-6) {
  REQUIRE(param.rows() == analytic.rows());
  REQUIRE(param.cols() == analytic.cols());
  const double h = 1e-5;
  double worst = 0;
  for (Eigen::Index i = 0; i < param.size(); ++i) {
    const double saved = param.data()[i];
    param.data()[i] = saved + h;
    const double up = loss();
    param.data()[i] = saved - h;
    const double down = loss();
    param.data()[i] = saved;
    const double fd = (up - down) / (2 * h);
    worst = std::max(worst, std::fabs(fd - analytic.data()[i]) / std::max(1.0, std::fabs(fd)));
  }
  MESSAGE(what << ": worst relative difference to finite differences " << worst);
  CHECK(worst < tol);
}

}  // namespace

TEST_CASE("backward: RMSNorm") {
  SplitMix64 rng(1);
  M x = random_matrix(rng, 3, 12), r = random_matrix(rng, 3, 12);
  std::vector<float> w(12);
  for (float& v : w) v = float(0.5 + rng.uniform());
  auto loss = [&] {
    M y;
    grad::rmsnorm(x, w.data(), 1e-5f, y);
    return dot(y, r);
  };
  M y;
  const auto inv = grad::rmsnorm(x, w.data(), 1e-5f, y);
  M dx = M::Zero(3, 12);
  grad::rmsnorm_backward(x, w.data(), inv, r, dx);
  check_gradient(x, dx, loss, "rmsnorm dx");
}

TEST_CASE("backward: RoPE, both pair layouts") {
  for (const RopeStyle style : {RopeStyle::adjacent_pairs, RopeStyle::half_split}) {
    SplitMix64 rng(2);
    M x = random_matrix(rng, 4, 16), r = random_matrix(rng, 4, 16);
    const std::vector<std::int32_t> pos = {0, 3, 7, 20};
    const auto inv_freq = rope_inv_freq(8, 10000.0f);
    auto loss = [&] {
      M y = x;
      grad::rope(y, 8, pos, inv_freq.data(), style);
      return dot(y, r);
    };
    M dx = r;
    grad::rope(dx, 8, pos, inv_freq.data(), style, /*inverse=*/true);
    check_gradient(x, dx, loss, "rope dx");
  }
}

TEST_CASE("backward: causal grouped-query attention") {
  SplitMix64 rng(3);
  const std::size_t n = 6, n_heads = 4, n_kv = 2, hd = 4;
  M q = random_matrix(rng, n, n_heads * hd), k = random_matrix(rng, n, n_kv * hd), v = random_matrix(rng, n, n_kv * hd);
  const M r = random_matrix(rng, n, n_heads * hd);
  const double scale = 0.5;
  auto loss = [&] {
    M out;
    std::vector<M> probs;
    grad::attention(q, k, v, n_heads, n_kv, hd, scale, out, probs);
    return dot(out, r);
  };
  M out, dq;
  std::vector<M> probs;
  grad::attention(q, k, v, n_heads, n_kv, hd, scale, out, probs);
  // The forward against the scalar reference on the same inputs, position by position.
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t h = 0; h < n_heads; ++h)
      for (std::size_t j = t + 1; j < n; ++j) CHECK(probs[h](t, j) == 0.0);
  M dk = M::Zero(n, n_kv * hd), dv = M::Zero(n, n_kv * hd);
  grad::attention_backward(q, k, v, probs, r, n_heads, n_kv, hd, scale, dq, dk, dv);
  check_gradient(q, dq, loss, "attention dq");
  check_gradient(k, dk, loss, "attention dk");
  check_gradient(v, dv, loss, "attention dv");
}

TEST_CASE("backward: the attention forward equals ref::attention") {
  SplitMix64 rng(4);
  const std::size_t n = 7, n_heads = 4, n_kv = 2, hd = 8;
  M q = random_matrix(rng, n, n_heads * hd), k = random_matrix(rng, n, n_kv * hd), v = random_matrix(rng, n, n_kv * hd);
  M out;
  std::vector<M> probs;
  grad::attention(q, k, v, n_heads, n_kv, hd, 0.3, out, probs);
  ModelConfig cfg{.n_layers = 1, .n_heads = n_heads, .n_kv_heads = n_kv, .head_dim = hd};
  ContiguousKVCache cache(cfg, n);
  std::vector<float> qf(n * n_heads * hd), want(n * n_heads * hd), scratch(n);
  std::vector<std::int32_t> pos(n);
  for (std::size_t t = 0; t < n; ++t) {
    std::vector<float> kr(n_kv * hd), vr(n_kv * hd);
    for (std::size_t i = 0; i < n_kv * hd; ++i) kr[i] = float(k(t, i)), vr[i] = float(v(t, i));
    cache.layer(0).store(t, kr.data(), vr.data());
    for (std::size_t i = 0; i < n_heads * hd; ++i) qf[t * n_heads * hd + i] = float(q(t, i));
    pos[t] = std::int32_t(t);
  }
  ThreadPool pool(1);
  AttentionParams ap{.scale = 0.3f};
  ref::attention(pool, MatrixView<const float>(qf.data(), n, n_heads * hd), pos, cache.layer(0), n_heads, n_kv, hd, ap,
                 MatrixView<float>(want.data(), n, n_heads * hd), MatrixView<float>(scratch.data(), 1, n));
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t i = 0; i < n_heads * hd; ++i) CHECK(out(t, i) == doctest::Approx(want[t * n_heads * hd + i]).epsilon(1e-5));
}

TEST_CASE("backward: SwiGLU and GeGLU") {
  for (const bool geglu : {false, true}) {
    CAPTURE(geglu);
    SplitMix64 rng(5);
    M gate = random_matrix(rng, 3, 10, 2.0), up = random_matrix(rng, 3, 10);
    const M r = random_matrix(rng, 3, 10);
    auto loss = [&] {
      M h;
      grad::gated(gate, up, geglu, h);
      return dot(h, r);
    };
    M h, dgate, dup;
    grad::gated(gate, up, geglu, h);
    // The forward against the scalar reference.
    std::vector<float> g(gate.data(), gate.data() + gate.size()), u(up.data(), up.data() + up.size());
    if (geglu) ref::geglu(g.data(), u.data(), g.size()); else ref::swiglu(g.data(), u.data(), g.size());
    for (Eigen::Index i = 0; i < h.size(); ++i) CHECK(h.data()[i] == doctest::Approx(g[i]).epsilon(1e-6));
    grad::gated_backward(gate, up, geglu, r, dgate, dup);
    check_gradient(gate, dgate, loss, geglu ? "geglu dgate" : "swiglu dgate");
    check_gradient(up, dup, loss, geglu ? "geglu dup" : "swiglu dup");
  }
}

TEST_CASE("backward: cross-entropy with masked rows") {
  SplitMix64 rng(6);
  M logits = random_matrix(rng, 4, 9, 2.0);
  const std::vector<std::int32_t> targets = {3, 0, 8, 5};
  const std::vector<float> weights = {1.0f, 0.0f, 1.0f, 0.5f};
  auto loss = [&] {
    M d;
    return grad::cross_entropy(logits, targets, weights, d);
  };
  M d;
  const double l = grad::cross_entropy(logits, targets, weights, d);
  // Row 0 by hand: log-sum-exp minus the target's logit.
  double z = 0;
  for (Eigen::Index i = 0; i < 9; ++i) z += std::exp(logits(0, i));
  double want = std::log(z) - logits(0, 3);
  for (const std::size_t t : {2u, 3u}) {
    double zt = 0;
    for (Eigen::Index i = 0; i < 9; ++i) zt += std::exp(logits(t, i));
    want += weights[t] * (std::log(zt) - logits(t, targets[t]));
  }
  CHECK(l == doctest::Approx(want).epsilon(1e-12));
  CHECK(d.row(1).isZero());
  check_gradient(logits, d, loss, "cross-entropy dlogits");
}

TEST_CASE("backward: the LoRA product") {
  SplitMix64 rng(7);
  M x = random_matrix(rng, 5, 12), a = random_matrix(rng, 3, 12), b = random_matrix(rng, 7, 3);
  const M r = random_matrix(rng, 5, 7), base = random_matrix(rng, 5, 7);
  const double f = 0.75;
  auto loss = [&] {
    M y = base;
    grad::lora(x, a, b, f, y);
    return dot(y, r);
  };
  M y = base;
  const M ax = grad::lora(x, a, b, f, y);
  CHECK((y - base - f * x * a.transpose() * b.transpose()).norm() < 1e-12);
  M da = M::Zero(3, 12), db = M::Zero(7, 3), dx = M::Zero(5, 12);
  grad::lora_backward(x, ax, a, b, f, r, da, db, dx);
  check_gradient(a, da, loss, "lora dA");
  check_gradient(b, db, loss, "lora dB");
  check_gradient(x, dx, loss, "lora dx");
}

// Mistral's sliding window, checked against a whole-model reference written here from the
// reference kernels with an explicit attention mask (mask[i][j] = j <= i && i - j < window).
#include <tinyllm/tinyllm.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

using Matrix = std::vector<float>;   // row-major

Matrix project(ThreadPool& pool, const WeightMatrix& w, const Matrix& x, std::size_t n) {
  Matrix y(n * w.rows);
  ref::matmul(pool, MatrixView<const float>(static_cast<const float*>(w.data), w.rows, w.cols),
              MatrixView<const float>(x.data(), n, w.cols), MatrixView<float>(y.data(), n, w.rows));
  return y;
}

// Logits [n, vocab] of a Llama-shaped F32 model for tokens at positions 0..n-1, every attention
// score outside the mask set to -infinity before the softmax.
Matrix masked_reference(const Model& m, const std::vector<std::int32_t>& tokens, std::size_t window) {
  const ModelConfig& c = m.config();
  const TransformerWeights& w = m.weights();
  const std::size_t n = tokens.size(), d = c.n_embd, hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
  ThreadPool pool(1);
  const auto inv_freq = rope_inv_freq(hd, c.rope_theta);
  Matrix x(n * d), xb(n * d);
  for (std::size_t t = 0; t < n; ++t) dequantize_row(w.token_embd, std::size_t(tokens[t]), x.data() + t * d);
  for (const LayerWeights& l : w.layers) {
    for (std::size_t t = 0; t < n; ++t) ref::rmsnorm(x.data() + t * d, l.attn_norm.data(), xb.data() + t * d, d, c.norm_eps);
    Matrix q = project(pool, l.wq, xb, n), k = project(pool, l.wk, xb, n), v = project(pool, l.wv, xb, n);
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
    const Matrix o = project(pool, l.wo, att, n);
    for (std::size_t i = 0; i < n * d; ++i) x[i] += o[i];
    for (std::size_t t = 0; t < n; ++t) ref::rmsnorm(x.data() + t * d, l.ffn_norm.data(), xb.data() + t * d, d, c.norm_eps);
    Matrix g = project(pool, l.w_gate, xb, n);
    const Matrix u = project(pool, l.w_up, xb, n);
    ref::swiglu(g.data(), u.data(), g.size());
    const Matrix down = project(pool, l.w_down, g, n);
    for (std::size_t i = 0; i < n * d; ++i) x[i] += down[i];
  }
  for (std::size_t t = 0; t < n; ++t) ref::rmsnorm(x.data() + t * d, w.output_norm.data(), xb.data() + t * d, d, c.norm_eps);
  return project(pool, w.output, xb, n);
}

}  // namespace

TEST_CASE("Mistral sliding window: 40 tokens through a window of 8 equal an explicitly masked reference") {
  const std::size_t window = 8, n = 40;
  GGUFWriter writer;
  write_synthetic_llama(writer, synthetic_shape("tiny"), DType::F32, 5, "mistral");
  writer.set_u32("mistral.attention.sliding_window", std::uint32_t(window));
  LoadedModel lm = load_gguf_bytes(writer.to_bytes(), "mistral-test.gguf");
  REQUIRE(lm.config().sliding_window == window);

  std::vector<std::int32_t> tokens(n), pos(n);
  for (std::size_t i = 0; i < n; ++i) {
    tokens[i] = std::int32_t((i * 37 + 11) % lm.config().vocab_size);
    pos[i] = std::int32_t(i);
  }
  const std::size_t vocab = lm.config().vocab_size;
  ThreadPool pool(2);
  std::vector<float> batch(n * vocab), one_by_one(n * vocab);
  auto cache = lm.model().new_kv_cache(n);
  lm.model().forward(pool, tokens, pos, *cache, MatrixView<float>(batch.data(), n, vocab));
  auto cache2 = lm.model().new_kv_cache(n);
  for (std::size_t i = 0; i < n; ++i)
    lm.model().forward(pool, std::span(&tokens[i], 1), std::span(&pos[i], 1), *cache2,
                       MatrixView<float>(one_by_one.data() + i * vocab, 1, vocab));

  const auto want = masked_reference(lm.model(), tokens, window);
  const auto unmasked = masked_reference(lm.model(), tokens, n);
  float worst = 0, worst_decode = 0, window_effect = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, std::fabs(batch[i] - want[i]));
    worst_decode = std::max(worst_decode, std::fabs(one_by_one[i] - want[i]));
    window_effect = std::max(window_effect, std::fabs(unmasked[i] - want[i]));
  }
  MESSAGE("max abs difference: prefill " << worst << ", decode " << worst_decode << "; the window itself moves logits by "
                                          << window_effect);
  CHECK(worst < 1e-4f);
  CHECK(worst_decode < 1e-4f);
  CHECK(window_effect > 1e-3f);   // the test would notice a window that is ignored
}

// The user-defined architecture of examples/custom_arch: parallel blocks with a ReGLU FFN,
// against a one-token forward written out here with the reference kernels.
#include "../../examples/custom_arch/parallel_reglu.hpp"

#include <cmath>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

std::vector<float> apply(ThreadPool& pool, const WeightMatrix& w, const std::vector<float>& x) {
  std::vector<float> y(w.rows);
  ref::matmul(pool, MatrixView<const float>(static_cast<const float*>(w.data), w.rows, w.cols),
              MatrixView<const float>(x.data(), 1, w.cols), MatrixView<float>(y.data(), 1, w.rows));
  return y;
}

}  // namespace

TEST_CASE("custom architecture: parallel ReGLU blocks equal a hand-written one-token forward") {
  GGUFWriter w;
  write_synthetic_llama(w, synthetic_shape("tiny"), DType::F32, 9);
  LoadedModel lm = load_gguf_bytes<ParallelReGLU>(w.to_bytes(), "custom");
  const ModelConfig& c = lm.config();
  const TransformerWeights& tw = lm.model().weights();
  const std::int32_t token = 300, pos = 0;
  ThreadPool pool(1);

  // At position 0 attention sees one position: each head's output is its KV head's value.
  std::vector<float> x(c.n_embd), xb(c.n_embd);
  dequantize_row(tw.token_embd, token, x.data());
  for (const LayerWeights& l : tw.layers) {
    ref::rmsnorm(x.data(), l.attn_norm.data(), xb.data(), c.n_embd, c.norm_eps);
    const auto v = apply(pool, l.wv, xb);
    std::vector<float> att(c.q_dim());
    for (std::size_t h = 0; h < c.n_heads; ++h)
      for (std::size_t e = 0; e < c.head_dim; ++e)
        att[h * c.head_dim + e] = v[(h / (c.n_heads / c.n_kv_heads)) * c.head_dim + e];
    const auto attn_out = apply(pool, l.wo, att);
    auto gate = apply(pool, l.w_gate, xb);
    const auto up = apply(pool, l.w_up, xb);
    for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = std::max(gate[i], 0.0f) * up[i];
    const auto ffn_out = apply(pool, l.w_down, gate);
    for (std::size_t i = 0; i < c.n_embd; ++i) x[i] += attn_out[i] + ffn_out[i];
  }
  ref::rmsnorm(x.data(), tw.output_norm.data(), xb.data(), c.n_embd, c.norm_eps);
  const auto want = apply(pool, tw.output, xb);

  std::vector<float> got(c.vocab_size);
  auto cache = lm.model().new_kv_cache(4);
  lm.model().forward(pool, std::span(&token, 1), std::span(&pos, 1), *cache, MatrixView<float>(got.data(), 1, got.size()));
  float worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
  CHECK(worst < 1e-5f);

  // And it is not simply Llama: the same weights as Llama give other logits.
  LoadedModel llama = load_gguf_bytes(w.to_bytes(), "llama");
  std::vector<float> other(c.vocab_size);
  auto cache2 = llama.model().new_kv_cache(4);
  llama.model().forward(pool, std::span(&token, 1), std::span(&pos, 1), *cache2, MatrixView<float>(other.data(), 1, other.size()));
  float diff = 0;
  for (std::size_t i = 0; i < got.size(); ++i) diff = std::max(diff, std::fabs(got[i] - other[i]));
  CHECK(diff > 1e-3f);
}

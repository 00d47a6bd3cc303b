// Mistral's sliding window, checked against a whole-model reference built from the reference
// kernels with an explicit attention mask (windowed_reference.hpp).
#include <tinyllm/tinyllm.hpp>

#include <cmath>
#include <vector>

#include "test_util.hpp"
#include "windowed_reference.hpp"

using namespace tinyllm;

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

  const auto want = test::masked_reference(lm.model(), tokens, window);
  const auto unmasked = test::masked_reference(lm.model(), tokens, n);
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

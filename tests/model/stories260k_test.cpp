// stories260K (llama2.c format) against llama2.c's own outputs: logits, tokenization, greedy text.
#include <tinyllm/tinyllm.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

LoadedModel load_stories() {
  LoadOptions opt;
  opt.tokenizer_path = test::testdata("llama2c/tok512.bin").string();
  return load(test::testdata("llama2c/stories260K.bin").string(), opt);
}

// Compares logits rows with llama2.c's: max abs difference, and argmax where the top-two gap is clear.
void compare_rows(const std::vector<float>& got, const std::vector<float>& want, std::size_t vocab,
                  float tol, float clear_gap) {
  REQUIRE(got.size() == want.size());
  float worst = 0;
  for (std::size_t r = 0; r < want.size() / vocab; ++r) {
    const float* g = got.data() + r * vocab;
    const float* w = want.data() + r * vocab;
    for (std::size_t i = 0; i < vocab; ++i) worst = std::max(worst, std::fabs(g[i] - w[i]));
    if (test::top2_gap(w, vocab) > clear_gap)
      REQUIRE_MESSAGE(argmax(std::span(g, vocab)) == argmax(std::span(w, vocab)), "row " << r);
  }
  MESSAGE("max abs logit difference to llama2.c: " << worst);
  CHECK(worst <= tol);
}

}  // namespace

TEST_CASE("stories260K: prompt encodes like llama2.c") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  const LoadedModel lm = load_stories();
  const auto ids = lm.tokenizer().encode("Once upon a time", true);
  CHECK(ids == std::vector<std::int32_t>{1, 403, 407, 261, 378});
}

TEST_CASE("stories260K: logits of 25 positions match llama2.c within 1e-4, batched and one by one") {
  TINYLLM_REQUIRE_TESTDATA("reference/once_upon_a_time_p25.logits.f32");
  LoadedModel lm = load_stories();
  const auto ids = test::header_ids(test::testdata("reference/once_upon_a_time_p25.header.txt"), "input_tokens");
  const auto want = test::read_f32(test::testdata("reference/once_upon_a_time_p25.logits.f32"));
  const std::size_t vocab = lm.config().vocab_size, n = ids.size();
  REQUIRE(n == 25);
  REQUIRE(vocab == 512);
  std::vector<std::int32_t> pos(n);
  for (std::size_t i = 0; i < n; ++i) pos[i] = std::int32_t(i);

  for (unsigned threads : {1u, 2u}) {
    ThreadPool pool(threads);
    SUBCASE("one batch") {
      std::vector<float> got(n * vocab);
      auto cache = lm.model().new_kv_cache();
      lm.model().forward(pool, ids, pos, *cache, MatrixView<float>(got.data(), n, vocab));
      compare_rows(got, want, vocab, 1e-4f, 0.0f);
    }
    SUBCASE("one token at a time") {
      std::vector<float> got(n * vocab);
      auto cache = lm.model().new_kv_cache();
      for (std::size_t i = 0; i < n; ++i)
        lm.model().forward(pool, std::span(&ids[i], 1), std::span(&pos[i], 1), *cache,
                           MatrixView<float>(got.data() + i * vocab, 1, vocab));
      compare_rows(got, want, vocab, 1e-4f, 0.0f);
    }
  }
}

TEST_CASE("stories260K: 200 positions in chunks of 7 match llama2.c where its argmax is clear") {
  TINYLLM_REQUIRE_TESTDATA("reference/once_upon_a_time_p200.logits.f32");
  LoadOptions opt;
  opt.max_batch = 7;   // prefill in chunks whose edges fall anywhere
  opt.tokenizer_path = test::testdata("llama2c/tok512.bin").string();
  LoadedModel lm = load(test::testdata("llama2c/stories260K.bin").string(), opt);
  const auto ids = test::header_ids(test::testdata("reference/once_upon_a_time_p200.header.txt"), "input_tokens");
  const auto want = test::read_f32(test::testdata("reference/once_upon_a_time_p200.logits.f32"));
  const std::size_t vocab = lm.config().vocab_size, n = ids.size();
  std::vector<std::int32_t> pos(n);
  for (std::size_t i = 0; i < n; ++i) pos[i] = std::int32_t(i);
  std::vector<float> got(n * vocab);
  ThreadPool pool(2);
  auto cache = lm.model().new_kv_cache();
  lm.model().forward(pool, ids, pos, *cache, MatrixView<float>(got.data(), n, vocab));
  compare_rows(got, want, vocab, 1e-3f, 0.02f);
}

TEST_CASE("stories260K: greedy -n 200 reproduces llama2.c's text byte for byte") {
  TINYLLM_REQUIRE_TESTDATA("reference/Once_upon_a_time_n200.txt");
  LoadedModel lm = load_stories();
  ThreadPool pool(2);
  const std::string text = test::stories_greedy_text(lm, pool);
  const auto want_bytes = test::read_bytes(test::testdata("reference/Once_upon_a_time_n200.txt"));
  const std::string want(want_bytes.begin(), want_bytes.end());
  CHECK(text == want);
}

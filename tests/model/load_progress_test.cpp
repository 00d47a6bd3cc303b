#include <tinyllm/model/load.hpp>

#include <cstddef>
#include <utility>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

TEST_CASE("load: the progress callback counts the bytes of every weight matrix, from 0 to all") {
  std::vector<std::pair<std::size_t, std::size_t>> calls;
  LoadOptions opt;
  opt.progress = [&](std::size_t done, std::size_t total) { calls.emplace_back(done, total); };
  const LoadedModel lm = load_synthetic("tiny", DType::F32, 42, opt);

  // The tiny shape by hand: n_embd 128, 4 layers, 4 heads of 32 with 2 KV heads (kv_dim 64),
  // n_ff 344, vocabulary 512, untied output. Per layer: wq and wo 128 x 128, wk and wv 64 x 128,
  // gate, up and down 344 x 128 = 181248 floats; embeddings and output 512 x 128 each.
  const std::size_t floats = 2 * 512 * 128 + 4 * (2 * 128 * 128 + 2 * 64 * 128 + 3 * 344 * 128);
  const std::size_t total = floats * sizeof(float);
  REQUIRE(calls.size() == 1 + 1 + 4 * 7 + 1);   // the start, then one call per matrix
  CHECK(calls.front() == std::pair<std::size_t, std::size_t>{0, total});
  CHECK(calls.back() == std::pair<std::size_t, std::size_t>{total, total});
  for (std::size_t i = 1; i < calls.size(); ++i) {
    CHECK(calls[i].second == total);
    CHECK(calls[i].first > calls[i - 1].first);
  }
  CHECK(calls[1].first == 512 * 128 * sizeof(float));   // token_embd comes first
  CHECK(lm.config().n_layers == 4);
}

TEST_CASE("load: without a progress callback nothing is reported and the model is the same") {
  const LoadedModel with_none = load_synthetic("tiny", DType::F32, 42);
  std::size_t n = 0;
  LoadOptions opt;
  opt.progress = [&](std::size_t, std::size_t) { ++n; };
  const LoadedModel with_one = load_synthetic("tiny", DType::F32, 42, opt);
  CHECK(n > 0);
  CHECK(with_none.model().weight_bytes() == with_one.model().weight_bytes());
}

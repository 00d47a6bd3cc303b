// The paged KV cache: block accounting, the prefix cache, copy on write, and a model running on
// it exactly as on a contiguous cache.
#include <tinyllm/serve/paged_kv_cache.hpp>
#include <tinyllm/tinyllm.hpp>

#include <cmath>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;
using test::iota;
using test::max_abs_diff;

namespace {

std::vector<float> last_logits(Model& m, KVCache& cache, const std::vector<std::int32_t>& tokens, std::int32_t first_pos) {
  ThreadPool pool(2);
  std::vector<float> out(m.config().vocab_size);
  m.forward(pool, tokens, iota(tokens.size(), first_pos), cache, MatrixView<float>(out.data(), 1, out.size()));
  return out;
}

}  // namespace

TEST_CASE("KVBlockPool: allocation, release, revival and eviction keep exact counts") {
  ModelConfig c{.n_layers = 2, .n_kv_heads = 1, .head_dim = 4};
  KVBlockPool pool(c, 4, 3);
  CHECK(pool.n_free() == 3);
  const BlockId a = *pool.allocate(), b = *pool.allocate(), d = *pool.allocate();
  CHECK_FALSE(pool.allocate().has_value());   // exhausted: a scheduling event, not a crash
  CHECK(pool.n_used() == 3);
  pool.register_full(a, 111);
  pool.release(a);
  CHECK(pool.n_free() == 1);
  // A released block stays findable by its hash and comes back with one reference.
  CHECK(pool.lookup(111) == a);
  CHECK(pool.ref_count(a) == 1);
  CHECK(pool.n_free() == 0);
  pool.release(a);
  pool.release(b);
  // Allocation takes the least recently released block first and forgets its hash.
  CHECK(pool.allocate() == a);
  CHECK_FALSE(pool.lookup(111).has_value());
  CHECK(pool.allocate() == b);
  pool.release(d);
  pool.retain(d);   // revived: its queue entry is stale now
  CHECK_FALSE(pool.allocate().has_value());
  pool.release(d);
  CHECK(pool.allocate() == d);
  CHECK_THROWS_AS([&] { KVBlockPool p(c, 4, 1); p.release(0); }(), Error);
}

TEST_CASE("a model on the paged cache gives the logits it gives on a contiguous cache") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 8);
  const ModelConfig& c = lm.config();
  KVBlockPool pool(c, 5, 16);
  const auto prompt = iota(23, 40);   // 23 positions: four full blocks of 5 and a partial one
  PagedKVCache paged(pool, c.n_layers, c.kv_dim());
  REQUIRE(paged.reserve(prompt.size()));
  CHECK(paged.blocks().size() == 5);
  auto contiguous = lm.model().new_kv_cache(64);
  CHECK(max_abs_diff(last_logits(lm.model(), paged, prompt, 0), last_logits(lm.model(), *contiguous, prompt, 0)) < 1e-5f);
  // Decoding on: the table grows by one block when position 25 needs it.
  REQUIRE(paged.reserve(26));
  const std::vector<std::int32_t> more = {7, 8, 9};
  CHECK(max_abs_diff(last_logits(lm.model(), paged, more, 23), last_logits(lm.model(), *contiguous, more, 23)) < 1e-5f);
  paged.clear();
  CHECK(pool.n_free() == 16);
}

TEST_CASE("prefix caching: a second request shares the first one's 3 full blocks and computes the same logits") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 8);
  const ModelConfig& c = lm.config();
  const std::size_t bs = 4;
  KVBlockPool pool(c, bs, 32);
  const auto system = iota(12, 100);   // 3 full blocks of shared prefix
  auto a_tokens = system, b_tokens = system;
  a_tokens.insert(a_tokens.end(), {5, 6});
  b_tokens.insert(b_tokens.end(), {9, 10, 11});

  PagedKVCache a(pool, c.n_layers, c.kv_dim());
  REQUIRE(a.reserve(a_tokens.size()));
  last_logits(lm.model(), a, a_tokens, 0);
  std::uint64_t h = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    h = KVBlockPool::chain_hash(h, std::span(system).subspan(i * bs, bs));
    pool.register_full(a.blocks()[i], h);
  }

  PagedKVCache b(pool, c.n_layers, c.kv_dim());
  h = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    h = KVBlockPool::chain_hash(h, std::span(b_tokens).subspan(i * bs, bs));
    const auto hit = pool.lookup(h);
    REQUIRE(hit.has_value());
    b.append(*hit);
  }
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(b.blocks()[i] == a.blocks()[i]);
    CHECK(pool.ref_count(b.blocks()[i]) == 2);
  }
  REQUIRE(b.reserve(b_tokens.size()));
  const std::vector<std::int32_t> rest(b_tokens.begin() + 12, b_tokens.end());
  const auto shared = last_logits(lm.model(), b, rest, 12);
  PagedKVCache alone(pool, c.n_layers, c.kv_dim());
  REQUIRE(alone.reserve(b_tokens.size()));
  CHECK(max_abs_diff(shared, last_logits(lm.model(), alone, b_tokens, 0)) < 1e-5f);

  // A different token in block 2 changes that block's hash and every hash after it.
  auto c_tokens = system;
  c_tokens[9] = 1;
  std::uint64_t hc = 0;
  for (std::size_t i = 0; i < 3; ++i) hc = KVBlockPool::chain_hash(hc, std::span(c_tokens).subspan(i * bs, bs));
  CHECK(hc != h);
}

TEST_CASE("copy on write: writing into a shared block gives the writer its own copy") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 8);
  const ModelConfig& c = lm.config();
  KVBlockPool pool(c, 8, 8);
  PagedKVCache a(pool, c.n_layers, c.kv_dim()), fork(pool, c.n_layers, c.kv_dim());
  REQUIRE(a.reserve(6));
  last_logits(lm.model(), a, iota(6, 50), 0);
  pool.retain(a.blocks()[0]);
  fork.append(a.blocks()[0]);   // shares a's partial block
  const float before = a.layer(0).key(3)[0];
  REQUIRE(fork.make_writable(6));
  CHECK(fork.blocks()[0] != a.blocks()[0]);
  CHECK(pool.ref_count(a.blocks()[0]) == 1);
  CHECK(fork.layer(0).key(3)[0] == before);   // the copy holds a's positions
  last_logits(lm.model(), fork, {1, 2}, 6);
  CHECK(a.layer(0).key(3)[0] == before);
  fork.clear();
  a.clear();
  CHECK(pool.n_free() == 8);
}

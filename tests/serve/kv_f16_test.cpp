// F16 KV storage: twice the blocks for a memory budget, the model on an F16 paged cache equal to
// it on an F16 contiguous cache and close to F32, and the engine's greedy tokens with F16 K/V.
#include <tinyllm/serve/engine.hpp>
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

std::vector<std::int32_t> solo(LoadedModel& lm, ThreadPool& pool, const std::vector<std::int32_t>& prompt, std::size_t n,
                               KVType type) {
  GenerateOptions g{.max_new_tokens = n, .sampling = {.temperature = 0.0f}, .kv_type = type};
  std::vector<std::int32_t> out;
  generate(pool, lm.model(), prompt, g, [&](std::int32_t id) { out.push_back(id); return true; });
  return out;
}

// Greedy tokens of every prompt run together through an engine whose cache stores `type`.
std::vector<std::vector<std::int32_t>> engine_greedy(LoadedModel& lm, ThreadPool& pool,
                                                     const std::vector<std::vector<std::int32_t>>& prompts,
                                                     std::size_t n, KVType type) {
  Engine engine(lm, pool, {.max_batch_tokens = 64, .block_size = 16, .kv_blocks = 256, .kv_type = type});
  std::vector<std::vector<std::int32_t>> out(prompts.size());
  for (std::size_t i = 0; i < prompts.size(); ++i)
    engine.submit({.tokens = prompts[i], .max_tokens = n, .sampling = {.temperature = 0.0f}, .stop_at_eos = false},
                  [&out, i](const TokenEvent& e) {
                    if (e.token >= 0) out[i].push_back(e.token);
                  });
  while (engine.step()) engine.audit();
  CHECK(engine.block_pool().n_used() == 0);
  return out;
}

}  // namespace

TEST_CASE("F16 KV storage holds twice the blocks of F32 in the same memory budget") {
  const ModelConfig c{.n_layers = 4, .n_kv_heads = 2, .head_dim = 32};
  const std::size_t bs = 16, f32_block = KVBlockPool::block_bytes(c, bs);
  CHECK(f32_block == bs * 4 * 2 * 64 * sizeof(float));
  CHECK(KVBlockPool::block_bytes(c, bs, KVType::f16) * 2 == f32_block);
  for (std::size_t budget : {10 * f32_block, 10 * f32_block + f32_block / 2, std::size_t(64) << 20}) {
    CAPTURE(budget);
    const std::size_t n32 = KVBlockPool::blocks_for_bytes(c, bs, budget);
    const std::size_t n16 = KVBlockPool::blocks_for_bytes(c, bs, budget, KVType::f16);
    CHECK(n32 * f32_block <= budget);
    CHECK(n16 >= 2 * n32);
    CHECK(n16 <= 2 * n32 + 1);   // the half block left over by F32 may hold one more F16 block
  }
  // The engine sizes its pool from kv_bytes and the KV type.
  LoadedModel lm = load_synthetic("tiny", DType::F32, 8);
  ThreadPool pool(1);
  const std::size_t budget = 12 * KVBlockPool::block_bytes(lm.config(), bs);
  Engine e32(lm, pool, {.block_size = bs, .kv_bytes = budget});
  Engine e16(lm, pool, {.block_size = bs, .kv_bytes = budget, .kv_type = KVType::f16});
  MESSAGE("a budget of " << budget << " bytes holds " << e32.metrics().blocks_total << " F32 blocks, "
                         << e16.metrics().blocks_total << " F16 blocks");
  CHECK(e32.metrics().blocks_total == 12);
  CHECK(e16.metrics().blocks_total == 24);
  CHECK(e16.block_pool().type() == KVType::f16);
}

TEST_CASE("a model on an F16 paged cache gives the logits of an F16 contiguous cache, close to F32") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 8);
  const ModelConfig& c = lm.config();
  KVBlockPool pool(c, 5, 16, KVType::f16);
  const auto prompt = iota(23, 40);
  PagedKVCache paged(pool, c.n_layers, c.kv_dim());
  REQUIRE(paged.reserve(prompt.size() + 3));
  CHECK(paged.layer(0).type() == KVType::f16);
  auto contiguous16 = lm.model().new_kv_cache(64, KVType::f16);
  auto contiguous32 = lm.model().new_kv_cache(64);
  const auto p16 = last_logits(lm.model(), paged, prompt, 0);
  const auto c16 = last_logits(lm.model(), *contiguous16, prompt, 0);
  const auto c32 = last_logits(lm.model(), *contiguous32, prompt, 0);
  CHECK(max_abs_diff(p16, c16) < 1e-5f);
  // Layer 0's K and V come from the embeddings alone: the F16 cache holds exactly the F32 ones, rounded.
  const KVLayerView v16 = paged.layer(0), v32 = contiguous32->layer(0);
  for (std::size_t p : {0u, 7u, 22u})
    for (std::size_t i = 0; i < c.kv_dim(); ++i) {
      CHECK(v16.key_f16(p)[i].bits == f32_to_f16(v32.key(p)[i]));
      CHECK(v16.value_f16(p)[i].bits == f32_to_f16(v32.value(p)[i]));
    }
  const float vs_f32 = max_abs_diff(p16, c32);
  MESSAGE("last logits, F16 cache against F32 cache: max abs difference " << vs_f32);
  CHECK(vs_f32 > 0);
  CHECK(vs_f32 < 1e-3f);
  const std::vector<std::int32_t> more = {7, 8, 9};
  CHECK(max_abs_diff(last_logits(lm.model(), paged, more, 23), last_logits(lm.model(), *contiguous16, more, 23)) < 1e-5f);

  // Copy on write copies F16 blocks too.
  PagedKVCache fork(pool, c.n_layers, c.kv_dim());
  pool.retain(paged.blocks()[4]);
  for (std::size_t b = 0; b < 4; ++b) fork.append(*pool.allocate());
  fork.append(paged.blocks()[4]);   // positions 20..24, shared
  REQUIRE(fork.make_writable(24));
  CHECK(fork.blocks()[4] != paged.blocks()[4]);
  CHECK(fork.layer(1).key_f16(21)[5].bits == paged.layer(1).key_f16(21)[5].bits);
  fork.clear();
  paged.clear();
  CHECK(pool.n_free() == 16);
}

TEST_CASE("engine with F16 K/V: batched greedy runs equal solo F16 runs (synthetic model)") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 21);
  ThreadPool pool(2);
  SplitMix64 rng(3);
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::size_t i = 0; i < 8; ++i) {
    std::vector<std::int32_t> p = {1};
    while (p.size() < 1 + rng.next() % 40) p.push_back(std::int32_t(3 + rng.next() % (lm.config().vocab_size - 3)));
    prompts.push_back(p);
  }
  const auto got = engine_greedy(lm, pool, prompts, 24, KVType::f16);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == solo(lm, pool, prompts[i], 24, KVType::f16));
  }
}

TEST_CASE("engine with F16 K/V gives the greedy tokens of F32 K/V (stories260K)") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadOptions o{.tokenizer_path = test::testdata("llama2c/tok512.bin").string()};
  LoadedModel lm = load(test::testdata("llama2c/stories260K.bin").string(), o);
  ThreadPool pool(2);
  const char* texts[] = {"Once upon a time", "The little dog", "Lily wanted to", "One day, a big", "Tom and Sue went",
                         "There was a girl", "The sun was", "A cat sat"};
  std::vector<std::vector<std::int32_t>> prompts;
  for (const char* t : texts) prompts.push_back(lm.tokenizer().encode(t, true));
  const std::size_t n = 48;
  const auto f32 = engine_greedy(lm, pool, prompts, n, KVType::f32);
  const auto f16 = engine_greedy(lm, pool, prompts, n, KVType::f16);
  std::size_t same = 0, total = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    CAPTURE(i);
    REQUIRE(f32[i].size() == n);
    REQUIRE(f16[i].size() == n);
    for (std::size_t t = 0; t < n && f16[i][t] == f32[i][t]; ++t) ++same;   // agreement up to the first difference
    total += n;
    CHECK(f16[i] == f32[i]);
  }
  MESSAGE("F16 K/V: " << same << " of " << total << " greedy tokens equal F32's (up to the first difference)");
}

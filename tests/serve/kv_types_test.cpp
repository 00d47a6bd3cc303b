// F16 and Q8_0 KV storage: more blocks for a memory budget (2x and 3.76x F32's), the model on a
// paged cache equal to it on a contiguous cache of the same type and close to F32, copy on write,
// the engine's batched greedy tokens equal solo runs, and on stories260K the greedy text of F16
// K/V equal to F32's and that of Q8_0 K/V equal to F16's (or parting only at a near tie).
#include <tinyllm/serve/engine.hpp>
#include <tinyllm/tinyllm.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
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

TEST_CASE("F16 and Q8_0 KV storage hold 2x and 3.76x the blocks of F32 in the same memory budget") {
  const ModelConfig c{.n_layers = 4, .n_kv_heads = 2, .head_dim = 32};
  const std::size_t bs = 16, f32_block = KVBlockPool::block_bytes(c, bs);
  CHECK(f32_block == bs * 4 * 2 * 64 * sizeof(float));
  CHECK(KVBlockPool::block_bytes(c, bs, KVType::f16) * 2 == f32_block);
  CHECK(KVBlockPool::block_bytes(c, bs, KVType::q8_0) == bs * 4 * 2 * 2 * 34);   // two 34-byte blocks per row
  for (std::size_t budget : {10 * f32_block, 10 * f32_block + f32_block / 2, std::size_t(64) << 20}) {
    CAPTURE(budget);
    const std::size_t n32 = KVBlockPool::blocks_for_bytes(c, bs, budget);
    const std::size_t n16 = KVBlockPool::blocks_for_bytes(c, bs, budget, KVType::f16);
    const std::size_t n8 = KVBlockPool::blocks_for_bytes(c, bs, budget, KVType::q8_0);
    CHECK(n32 * f32_block <= budget);
    CHECK(n16 >= 2 * n32);
    CHECK(n16 <= 2 * n32 + 1);   // the half block left over by F32 may hold one more F16 block
    CHECK(n8 * KVBlockPool::block_bytes(c, bs, KVType::q8_0) <= budget);
    CHECK((n8 + 1) * KVBlockPool::block_bytes(c, bs, KVType::q8_0) > budget);
    CHECK(double(n8) >= 1.85 * double(n16));
  }
  // The engine sizes its pool from kv_bytes and the KV type.
  LoadedModel lm = load_synthetic("tiny", DType::F32, 8);
  ThreadPool pool(1);
  const std::size_t budget = 12 * KVBlockPool::block_bytes(lm.config(), bs);
  Engine e32(lm, pool, {.block_size = bs, .kv_bytes = budget});
  Engine e16(lm, pool, {.block_size = bs, .kv_bytes = budget, .kv_type = KVType::f16});
  Engine e8(lm, pool, {.block_size = bs, .kv_bytes = budget, .kv_type = KVType::q8_0});
  MESSAGE("a budget of " << budget << " bytes holds " << e32.metrics().blocks_total << " F32 blocks, "
                         << e16.metrics().blocks_total << " F16 blocks, " << e8.metrics().blocks_total << " Q8_0 blocks");
  CHECK(e32.metrics().blocks_total == 12);
  CHECK(e16.metrics().blocks_total == 24);
  CHECK(e8.metrics().blocks_total == 45);   // 12 * 4 bytes / (34 / 32 bytes) = 45.2
  CHECK(e16.block_pool().type() == KVType::f16);
  CHECK(e8.block_pool().type() == KVType::q8_0);
  // Rows that Q8_0 blocks cannot tile: a clear error, not a pool.
  const ModelConfig odd{.n_layers = 2, .n_kv_heads = 3, .head_dim = 10};
  CHECK_THROWS_WITH_AS(KVBlockPool(odd, 16, 4, KVType::q8_0), doctest::Contains("Q8_0 K/V for rows of 30 values"), Error);
  CHECK_THROWS_WITH_AS(ContiguousKVCache(odd, 16, KVType::q8_0), doctest::Contains("a multiple of 32"), Error);
}

TEST_CASE("a model on an F16 or Q8_0 paged cache gives the logits of a contiguous cache of that type, close to F32") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 8);
  const ModelConfig& c = lm.config();
  for (const KVType type : {KVType::f16, KVType::q8_0}) {
    CAPTURE(std::string(kv_type_name(type)));
    KVBlockPool pool(c, 5, 16, type);
    const auto prompt = iota(23, 40);
    PagedKVCache paged(pool, c.n_layers, c.kv_dim());
    REQUIRE(paged.reserve(prompt.size() + 3));
    CHECK(paged.layer(0).type() == type);
    auto contiguous = lm.model().new_kv_cache(64, type);
    auto contiguous32 = lm.model().new_kv_cache(64);
    const auto p = last_logits(lm.model(), paged, prompt, 0);
    const auto cont = last_logits(lm.model(), *contiguous, prompt, 0);
    const auto c32 = last_logits(lm.model(), *contiguous32, prompt, 0);
    CHECK(max_abs_diff(p, cont) < 1e-5f);
    // Layer 0's K and V come from the embeddings alone: the cache holds exactly the F32 ones,
    // rounded to F16 or quantized by GGUF's Q8_0 rule (quant/), bit for bit.
    const KVLayerView v = paged.layer(0), v32 = contiguous32->layer(0);
    for (std::size_t pos : {0u, 7u, 22u}) {
      if (type == KVType::f16) {
        for (std::size_t i = 0; i < c.kv_dim(); ++i) {
          CHECK(v.key_f16(pos)[i].bits == f32_to_f16(v32.key(pos)[i]));
          CHECK(v.value_f16(pos)[i].bits == f32_to_f16(v32.value(pos)[i]));
        }
      } else {
        std::vector<BlockQ8_0> k(c.kv_dim() / 32), val(c.kv_dim() / 32);
        quantize_row(v32.key(pos), k.data(), c.kv_dim());
        quantize_row(v32.value(pos), val.data(), c.kv_dim());
        CHECK(std::memcmp(v.key_q8(pos), k.data(), k.size() * sizeof(BlockQ8_0)) == 0);
        CHECK(std::memcmp(v.value_q8(pos), val.data(), val.size() * sizeof(BlockQ8_0)) == 0);
      }
    }
    const float vs_f32 = max_abs_diff(p, c32);
    MESSAGE(std::string(kv_type_name(type)) << " cache against F32 cache, last logits: max abs difference " << vs_f32);
    CHECK(vs_f32 > 0);
    CHECK(vs_f32 < (type == KVType::f16 ? 1e-3f : 2e-2f));
    const std::vector<std::int32_t> more = {7, 8, 9};
    CHECK(max_abs_diff(last_logits(lm.model(), paged, more, 23), last_logits(lm.model(), *contiguous, more, 23)) < 1e-5f);

    // Copy on write copies the block's bytes, whatever the type.
    PagedKVCache fork(pool, c.n_layers, c.kv_dim());
    pool.retain(paged.blocks()[4]);
    for (std::size_t b = 0; b < 4; ++b) fork.append(*pool.allocate());
    fork.append(paged.blocks()[4]);   // positions 20..24, shared
    REQUIRE(fork.make_writable(24));
    CHECK(fork.blocks()[4] != paged.blocks()[4]);
    for (std::size_t i = 0; i < c.kv_dim(); ++i) {
      CHECK(fork.layer(1).key_at(21, i) == paged.layer(1).key_at(21, i));
      CHECK(fork.layer(3).value_at(24, i) == paged.layer(3).value_at(24, i));
    }
    fork.clear();
    paged.clear();
    CHECK(pool.n_free() == 16);
  }
}

TEST_CASE("engine with F16 or Q8_0 K/V: batched greedy runs equal solo runs of that type (synthetic model)") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 21);
  ThreadPool pool(2);
  SplitMix64 rng(3);
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::size_t i = 0; i < 8; ++i) {
    std::vector<std::int32_t> p = {1};
    while (p.size() < 1 + rng.next() % 40) p.push_back(std::int32_t(3 + rng.next() % (lm.config().vocab_size - 3)));
    prompts.push_back(p);
  }
  for (const KVType type : {KVType::f16, KVType::q8_0}) {
    CAPTURE(std::string(kv_type_name(type)));
    const auto got = engine_greedy(lm, pool, prompts, 24, type);
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      CAPTURE(i);
      CHECK(got[i] == solo(lm, pool, prompts[i], 24, type));
    }
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

namespace {

// Logits of every position of `tokens` on a fresh contiguous cache of `type`: [n, vocab].
std::vector<float> all_logits(Model& m, const std::vector<std::int32_t>& tokens, KVType type) {
  ThreadPool pool(2);
  auto cache = m.new_kv_cache(tokens.size(), type);
  std::vector<float> out(tokens.size() * m.config().vocab_size);
  m.forward(pool, tokens, iota(tokens.size(), 0), *cache, MatrixView<float>(out.data(), tokens.size(), m.config().vocab_size));
  return out;
}

}  // namespace

TEST_CASE("Q8_0 K/V on stories260K: perplexity within 1% of F16 K/V's; greedy texts part from F16's only where the logits are close") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  TINYLLM_REQUIRE_TESTDATA("reference/default_n256_noprompt.txt");
  LoadOptions o{.tokenizer_path = test::testdata("llama2c/tok512.bin").string()};
  LoadedModel lm = load(test::testdata("llama2c/stories260K.bin").string(), o);
  const std::size_t V = lm.config().vocab_size;

  // Teacher-forced on two stories: the next-token log-likelihood with each cache.
  for (const char* file : {"reference/default_n256_noprompt.txt", "reference/Once_upon_a_time_n200.txt"}) {
    CAPTURE(std::string(file));
    const auto bytes = test::read_bytes(test::testdata(file));
    std::vector<std::int32_t> tokens = lm.tokenizer().encode(std::string(bytes.begin(), bytes.end()), true);
    tokens.resize(std::min<std::size_t>(tokens.size(), 300));
    const auto f16 = all_logits(lm.model(), tokens, KVType::f16), q8 = all_logits(lm.model(), tokens, KVType::q8_0);
    double nll16 = 0, nll8 = 0, worst = 0, sum_abs = 0;
    std::size_t same_top = 0;
    const auto nll = [&](const float* row, std::int32_t next) {
      const float mx = *std::max_element(row, row + V);
      double z = 0;
      for (std::size_t j = 0; j < V; ++j) z += std::exp(double(row[j]) - mx);
      return std::log(z) + mx - row[next];
    };
    for (std::size_t t = 0; t + 1 < tokens.size(); ++t) {
      const float *a = f16.data() + t * V, *b = q8.data() + t * V;
      nll16 += nll(a, tokens[t + 1]);
      nll8 += nll(b, tokens[t + 1]);
      same_top += argmax(std::span(a, V)) == argmax(std::span(b, V));
      for (std::size_t j = 0; j < V; ++j) {
        worst = std::max(worst, double(std::abs(a[j] - b[j])));
        sum_abs += std::abs(a[j] - b[j]);
      }
    }
    const double n = double(tokens.size() - 1), ppl16 = std::exp(nll16 / n), ppl8 = std::exp(nll8 / n);
    MESSAGE(std::string(file) << ", " << tokens.size() << " tokens: perplexity F16 K/V " << ppl16 << ", Q8_0 K/V " << ppl8
                 << "; logits differ by " << sum_abs / (n * V) << " on average, " << worst << " at most; the best token agrees at "
                 << same_top << " of " << n << " positions");
    CHECK(std::abs(ppl8 / ppl16 - 1) < 0.01);
    CHECK(double(same_top) >= 0.97 * n);
  }

  // Greedy, 200 tokens, batched: where a Q8_0 text parts from F16's, a contiguous cache of each
  // type on the shared context picks the same two tokens (the batching is not the cause), and F16's
  // two best logits there are reported.
  ThreadPool pool(2);
  const char* texts[] = {"Once upon a time", "The little dog", "Lily wanted to", "One day, a big", "Tom and Sue went",
                         "There was a girl", "The sun was", "A cat sat", "Ben had a red", "The bird"};
  std::vector<std::vector<std::int32_t>> prompts;
  for (const char* t : texts) prompts.push_back(lm.tokenizer().encode(t, true));
  const std::size_t n = 200;
  const auto f16 = engine_greedy(lm, pool, prompts, n, KVType::f16);
  const auto q8 = engine_greedy(lm, pool, prompts, n, KVType::q8_0);
  std::size_t identical = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    CAPTURE(i);
    REQUIRE(f16[i].size() == n);
    REQUIRE(q8[i].size() == n);
    std::size_t t = 0;
    while (t < n && q8[i][t] == f16[i][t]) ++t;
    if (t == n) {
      ++identical;
      continue;
    }
    std::vector<std::int32_t> context = prompts[i];
    context.insert(context.end(), f16[i].begin(), f16[i].begin() + std::ptrdiff_t(t));
    const auto a = all_logits(lm.model(), context, KVType::f16), b = all_logits(lm.model(), context, KVType::q8_0);
    const std::span<const float> last16(a.data() + (context.size() - 1) * V, V), last8(b.data() + (context.size() - 1) * V, V);
    CHECK(argmax(last16) == f16[i][t]);
    CHECK(argmax(last8) == q8[i][t]);
    const float gap = last16[std::size_t(f16[i][t])] - last16[std::size_t(q8[i][t])];
    MESSAGE("prompt " << i << ": Q8_0 K/V parts from F16 at generated token " << t << ", where F16's logits of the two tokens differ by " << gap);
  }
  MESSAGE("Q8_0 K/V: " << identical << " of " << prompts.size() << " greedy texts of " << n << " tokens identical to F16 K/V's");
}

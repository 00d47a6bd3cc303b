// Sliding-window models release the KV blocks that fell out of every layer's window: a long
// generation holds a bounded number of blocks, yet its tokens equal the contiguous cache's and an
// explicitly masked reference's; prefix-cache hits on released blocks stay correct; block
// accounting stays exact; a model with some global layers releases nothing.
#include <tinyllm/serve/engine.hpp>
#include <tinyllm/tinyllm.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "windowed_reference.hpp"

using namespace tinyllm;

namespace {

// Gemma 2's pattern on a Llama-shaped network: every other layer is global.
struct MixedWindows : ArchDefaults {
  static constexpr std::string_view name = "mixed-windows";
  static constexpr std::size_t swa_period = 2;
};

template <class Arch = void>
LoadedModel windowed_model(std::size_t window, std::uint64_t seed) {
  GGUFWriter writer;
  write_synthetic_llama(writer, synthetic_shape("tiny"), DType::F32, seed, "mistral");
  writer.set_u32("mistral.attention.sliding_window", std::uint32_t(window));
  return load_gguf_bytes<Arch>(writer.to_bytes(), "mistral-window.gguf");
}

std::vector<std::int32_t> random_prompt(SplitMix64& rng, std::size_t n, std::size_t vocab) {
  std::vector<std::int32_t> p = {1};
  while (p.size() < n) p.push_back(std::int32_t(3 + rng.next() % (vocab - 3)));
  return p;
}

std::vector<std::int32_t> solo(LoadedModel& lm, ThreadPool& pool, const std::vector<std::int32_t>& prompt, std::size_t n,
                               KVType type = KVType::f32) {
  GenerateOptions g{.max_new_tokens = n, .sampling = {.temperature = 0.0f}, .kv_type = type};
  std::vector<std::int32_t> out;
  generate(pool, lm.model(), prompt, g, [&](std::int32_t id) { out.push_back(id); return true; });
  return out;
}

Engine::Callback collect(std::vector<std::int32_t>& out) {
  return [&out](const TokenEvent& e) {
    if (e.token >= 0) out.push_back(e.token);
  };
}

}  // namespace

TEST_CASE("PagedKVCache::release_before returns whole blocks before a position, once") {
  const ModelConfig c{.n_layers = 2, .n_kv_heads = 1, .head_dim = 4};
  for (KVType type : {KVType::f32, KVType::f16}) {
    KVBlockPool pool(c, 4, 8, type);
    PagedKVCache cache(pool, c.n_layers, c.kv_dim());
    REQUIRE(cache.reserve(20));   // 5 blocks
    const BlockId third = cache.blocks()[2];
    CHECK(cache.release_before(3) == 0);   // block 0 still holds position 3
    CHECK(cache.release_before(9) == 2);   // blocks 0 and 1: positions 0..7
    CHECK(cache.n_released() == 2);
    CHECK(cache.n_held() == 3);
    CHECK(cache.blocks()[0] == PagedKVCache::kReleased);
    CHECK(cache.blocks()[2] == third);
    CHECK(pool.n_free() == 5);
    const KVLayerView v = cache.layer(1);
    CHECK(v.type() == type);
    if (type == KVType::f32) {
      CHECK(v.k_blocks[1] == nullptr);
      CHECK(v.v_blocks[1] == nullptr);
      CHECK(v.k_blocks[2] == pool.keys(third, 1));
    } else {
      CHECK(v.k_blocks_f16[1] == nullptr);
      CHECK(v.k_blocks_f16[2] == pool.keys_f16(third, 1));
    }
    CHECK(cache.capacity() == 20);         // positions stay addressable
    CHECK(cache.release_before(9) == 0);   // nothing twice
    CHECK(cache.release_before(100) == 3);
    cache.clear();                         // releases only what it still holds (a double release throws)
    CHECK(pool.n_free() == 8);
  }
}

TEST_CASE("Model::kv_window: the window when every layer has one, else 0") {
  CHECK(windowed_model(12, 3).model().kv_window() == 12);
  CHECK(windowed_model<MixedWindows>(12, 3).model().kv_window() == 0);
  CHECK(load_synthetic("tiny", DType::F32, 3).model().kv_window() == 0);
}

TEST_CASE("a long windowed generation holds at most window / block_size + 2 blocks and equals the masked reference") {
  const std::size_t window = 12, bs = 4, n_prompt = 21, n_gen = 200;
  LoadedModel lm = windowed_model(window, 31);
  ThreadPool pool(2);
  SplitMix64 rng(8);
  const auto prompt = random_prompt(rng, n_prompt, lm.config().vocab_size);
  for (KVType type : {KVType::f32, KVType::f16}) {
    CAPTURE(std::string(kv_type_name(type)));
    // window / bs + 2 = 5 blocks hold 20 positions; the request needs 221 of them. Prefill chunks
    // of 4 tokens keep a step's needs within 5 blocks too.
    const std::size_t n_blocks = window / bs + 2;
    Engine engine(lm, pool, {.max_batch_tokens = 4, .block_size = bs, .kv_blocks = n_blocks, .kv_type = type});
    std::vector<std::int32_t> got;
    engine.submit({.tokens = prompt, .max_tokens = n_gen, .sampling = {.temperature = 0.0f}, .stop_at_eos = false},
                  collect(got));
    std::size_t most_blocks = 0, most_blocks_decoding = 0;
    for (std::size_t steps = 0; engine.step(); ++steps) {
      REQUIRE(steps < 1000);
      engine.audit();
      const EngineMetrics m = engine.metrics();
      REQUIRE(m.blocks_used + m.blocks_free == m.blocks_total);
      REQUIRE(m.slots_allocated - m.slots_used <= m.running * bs);   // still at most one partial block
      most_blocks = std::max(most_blocks, m.blocks_used);
      if (!got.empty()) most_blocks_decoding = std::max(most_blocks_decoding, m.blocks_used);
    }
    const EngineMetrics m = engine.metrics();
    MESSAGE(std::string(kv_type_name(type)) << ": " << n_prompt + n_gen << " positions, window " << window << ", blocks of " << bs
                               << ", a pool of " << n_blocks << " blocks: at most " << most_blocks
                               << " blocks held between steps (" << most_blocks_decoding << " while decoding), "
                               << m.window_releases << " released early, " << m.preemptions << " preemptions");
    CHECK(m.preemptions == 0);   // it never needed more than the 5 blocks within a step either
    CHECK(m.blocks_used == 0);
    CHECK(m.window_releases >= (n_prompt + n_gen) / bs - (window / bs + 2));
    REQUIRE(got.size() == n_gen);
    // Token for token what the contiguous cache (nothing released) gives.
    CHECK(got == solo(lm, pool, prompt, n_gen, type));
    if (type == KVType::f16) continue;
    // And the argmax of an explicitly masked whole-model reference, wherever its top two logits
    // are far enough apart for float rounding not to decide.
    std::vector<std::int32_t> all = prompt;
    all.insert(all.end(), got.begin(), got.end() - 1);
    const auto ref = test::masked_reference(lm.model(), all, window);
    const std::size_t vocab = lm.config().vocab_size;
    std::size_t checked = 0;
    for (std::size_t i = 0; i < n_gen; ++i) {
      const float* row = ref.data() + (n_prompt - 1 + i) * vocab;
      if (test::top2_gap(row, vocab) < 1e-3f) continue;
      CAPTURE(i);
      CHECK(std::max_element(row, row + vocab) - row == got[i]);
      ++checked;
    }
    MESSAGE(checked << " of " << n_gen << " tokens checked against the masked reference");
    CHECK(checked >= n_gen * 9 / 10);
  }
}

TEST_CASE("windowed requests together, with preemption, give the tokens each gives alone") {
  const std::size_t bs = 4;
  LoadedModel lm = windowed_model(10, 32);
  ThreadPool pool(2);
  SplitMix64 rng(9);
  std::vector<std::vector<std::int32_t>> prompts, got(8);
  std::vector<std::size_t> lengths;
  Engine engine(lm, pool, {.max_batch_tokens = 16, .max_sequences = 8, .block_size = bs, .kv_blocks = 14});
  for (std::size_t i = 0; i < got.size(); ++i) {
    prompts.push_back(random_prompt(rng, 2 + rng.next() % 40, lm.config().vocab_size));
    lengths.push_back(30 + rng.next() % 60);
    engine.submit({.tokens = prompts[i], .max_tokens = lengths[i], .sampling = {.temperature = 0.0f}, .stop_at_eos = false},
                  collect(got[i]));
    engine.step();
    engine.audit();
  }
  while (engine.step()) engine.audit();
  MESSAGE(engine.metrics().preemptions << " preemptions, " << engine.metrics().window_releases << " blocks released early");
  CHECK(engine.metrics().preemptions > 0);
  CHECK(engine.block_pool().n_used() == 0);
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == solo(lm, pool, prompts[i], lengths[i]));
  }
}

TEST_CASE("prefix caching with a window: blocks released out of the window still serve as correct prefix hits") {
  const std::size_t bs = 4, window = 10;
  LoadedModel lm = windowed_model(window, 33);
  ThreadPool pool(2);
  SplitMix64 rng(10);
  const auto prefix = random_prompt(rng, 8 * bs, lm.config().vocab_size);
  auto a = prefix, b = prefix;
  a.insert(a.end(), {10, 11, 12});
  b.insert(b.end(), {20, 21});
  const auto want_a = solo(lm, pool, a, 40), want_b = solo(lm, pool, b, 40);
  // 64 blocks: a's released prefix blocks stay cached; 12: they are reused for a's own later
  // blocks (least recently released first) and b finds none.
  for (std::size_t n_blocks : {64u, 12u}) {
    CAPTURE(n_blocks);
    Engine engine(lm, pool, {.max_batch_tokens = 8, .block_size = bs, .kv_blocks = n_blocks});
    std::vector<std::int32_t> got_a, got_b;
    RequestMetrics mb;
    engine.submit({.tokens = a, .max_tokens = 40, .sampling = {.temperature = 0.0f}, .stop_at_eos = false}, collect(got_a));
    while (engine.step()) engine.audit();
    CHECK(engine.metrics().window_releases > 0);
    engine.submit({.tokens = b, .max_tokens = 40, .sampling = {.temperature = 0.0f}, .stop_at_eos = false},
                  [&](const TokenEvent& e) {
                    if (e.token >= 0) got_b.push_back(e.token);
                    if (e.finished) mb = e.metrics;
                  });
    while (engine.step()) engine.audit();
    CHECK(got_a == want_a);
    CHECK(got_b == want_b);
    CHECK(engine.block_pool().n_used() == 0);
    if (n_blocks == 64) CHECK(mb.cached_prompt_tokens == 8 * bs);
    else CHECK(mb.cached_prompt_tokens == 0);
  }
}

TEST_CASE("a model with some global layers releases no block") {
  LoadedModel lm = windowed_model<MixedWindows>(8, 34);
  ThreadPool pool(2);
  SplitMix64 rng(11);
  const auto prompt = random_prompt(rng, 10, lm.config().vocab_size);
  Engine engine(lm, pool, {.block_size = 4, .kv_blocks = 64});
  std::vector<std::int32_t> got;
  engine.submit({.tokens = prompt, .max_tokens = 50, .sampling = {.temperature = 0.0f}, .stop_at_eos = false}, collect(got));
  std::size_t most = 0;
  while (engine.step()) {
    engine.audit();
    most = std::max(most, engine.metrics().blocks_used);
  }
  CHECK(engine.metrics().window_releases == 0);
  CHECK(most >= 14);   // every computed position stays: 58 of them after the last step that runs on
  CHECK(got == solo(lm, pool, prompt, 50));
}

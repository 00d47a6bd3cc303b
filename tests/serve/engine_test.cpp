// The engine: batched greedy runs equal solo runs, a stress test with preemption and
// cancellations that leaks no block, prefix sharing, stop conditions, bad requests.
#include <tinyllm/serve/engine.hpp>
#include <tinyllm/tinyllm.hpp>

#include <map>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

struct Outcome {
  std::vector<std::int32_t> tokens;
  std::string text;
  FinishReason reason = FinishReason::none;
  int finished = 0;
  RequestMetrics metrics;
};

Engine::Callback record(Outcome& o) {
  return [&o](const TokenEvent& e) {
    if (e.token >= 0) o.tokens.push_back(e.token);
    o.text += e.text;
    if (e.finished) {
      ++o.finished;
      o.reason = e.reason;
      o.metrics = e.metrics;
    }
  };
}

std::vector<std::int32_t> solo(LoadedModel& lm, ThreadPool& pool, const std::vector<std::int32_t>& prompt, std::size_t n) {
  GenerateOptions g{.max_new_tokens = n, .sampling = {.temperature = 0.0f}, .stop_tokens = {lm.tokenizer().eos()}};
  std::vector<std::int32_t> out;
  generate(pool, lm.model(), prompt, g, [&](std::int32_t id) { out.push_back(id); return true; });
  return out;
}

std::vector<std::int32_t> random_prompt(SplitMix64& rng, std::size_t n, std::size_t vocab) {
  std::vector<std::int32_t> p = {1};
  while (p.size() < n) p.push_back(std::int32_t(3 + rng.next() % (vocab - 3)));
  return p;
}

void check_batched_equals_solo(LoadedModel& lm, std::size_t n_requests, std::size_t block_size) {
  ThreadPool pool(2);
  SplitMix64 rng(n_requests * 31 + block_size);
  EngineOptions opt{.max_batch_tokens = 64, .max_sequences = 32, .block_size = block_size, .kv_blocks = 512};
  Engine engine(lm, pool, opt);
  std::vector<std::vector<std::int32_t>> prompts;
  std::vector<std::size_t> lengths;
  std::vector<Outcome> got(n_requests);
  for (std::size_t i = 0; i < n_requests; ++i) {
    prompts.push_back(random_prompt(rng, 1 + rng.next() % 40, lm.config().vocab_size));
    lengths.push_back(1 + rng.next() % 24);
  }
  // Staggered arrival: a third up front, the rest a few steps apart.
  for (std::size_t i = 0; i < n_requests; ++i) {
    Request r{.tokens = prompts[i], .max_tokens = lengths[i], .sampling = {.temperature = 0.0f}};
    engine.submit(r, record(got[i]));
    if (i >= n_requests / 3) engine.step();
  }
  engine.run_until_idle();
  for (std::size_t i = 0; i < n_requests; ++i) {
    CAPTURE(i);
    CHECK(got[i].finished == 1);
    CHECK(got[i].tokens == solo(lm, pool, prompts[i], lengths[i]));
  }
  CHECK(engine.block_pool().n_used() == 0);
}

}  // namespace

TEST_CASE("engine: N greedy requests together give the tokens each gives alone (synthetic model)") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 21);
  for (std::size_t n : {1u, 2u, 5u, 16u, 32u}) {
    CAPTURE(n);
    check_batched_equals_solo(lm, n, 16);
  }
  check_batched_equals_solo(lm, 12, 3);   // blocks smaller than most prompts
}

TEST_CASE("engine: N greedy requests together give the tokens each gives alone (stories260K)") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadOptions o{.tokenizer_path = test::testdata("llama2c/tok512.bin").string()};
  LoadedModel lm = load(test::testdata("llama2c/stories260K.bin").string(), o);
  check_batched_equals_solo(lm, 20, 16);
}

TEST_CASE("engine stress: 2000 requests, random lengths and cancellations, a pool that forces preemption") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 22);
  ThreadPool pool(2);
  EngineOptions opt{.max_batch_tokens = 48, .max_sequences = 12, .block_size = 8, .kv_blocks = 24};
  Engine engine(lm, pool, opt);
  SplitMix64 rng(99);
  const std::size_t n = 2000;
  std::vector<Outcome> got(n);
  std::vector<RequestId> ids;
  std::size_t submitted = 0, max_waste_blocks_seen = 0;
  while (submitted < n || !engine.idle()) {
    for (int k = 0; k < 3 && submitted < n; ++k, ++submitted) {
      Request r{.tokens = random_prompt(rng, 1 + rng.next() % 60, lm.config().vocab_size),
                .max_tokens = 1 + rng.next() % 40,
                .sampling = {.temperature = 0.8f, .seed = submitted}};
      ids.push_back(engine.submit(r, record(got[submitted])));
    }
    if (rng.next() % 4 == 0 && !ids.empty()) engine.cancel(ids[rng.next() % ids.size()]);
    engine.step();
    engine.audit();   // block accounting after every step
    const EngineMetrics m = engine.metrics();
    REQUIRE(m.blocks_used + m.blocks_free == m.blocks_total);
    // KV waste: at most one partial block per running sequence.
    REQUIRE(m.slots_allocated - m.slots_used <= m.running * opt.block_size);
    max_waste_blocks_seen = std::max(max_waste_blocks_seen, (m.slots_allocated - m.slots_used) / opt.block_size);
  }
  std::size_t cancelled = 0;
  for (std::size_t i = 0; i < n; ++i) {
    REQUIRE(got[i].finished == 1);   // every request ends exactly once
    cancelled += got[i].reason == FinishReason::cancelled;
    if (got[i].reason == FinishReason::length) CHECK(got[i].tokens.size() >= 1);
  }
  const EngineMetrics m = engine.metrics();
  MESSAGE("stress: " << m.preemptions << " preemptions, " << cancelled << " cancelled, " << m.steps << " steps, prefix hit rate "
                     << m.prefix_hit_rate());
  CHECK(m.preemptions > 0);
  CHECK(cancelled > 0);
  CHECK(m.blocks_used == 0);   // no block leaked
}

TEST_CASE("engine prefix caching: a shared 3-block prefix is reused and changes no token") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 23);
  ThreadPool pool(2);
  SplitMix64 rng(5);
  const std::size_t bs = 8;
  auto prefix = random_prompt(rng, 3 * bs, lm.config().vocab_size);
  auto a = prefix, b = prefix;
  a.insert(a.end(), {10, 11, 12});
  b.insert(b.end(), {20, 21});
  std::vector<std::int32_t> plain_a, plain_b;
  for (bool caching : {false, true}) {
    Engine engine(lm, pool, {.block_size = bs, .kv_blocks = 64, .prefix_caching = caching});
    Outcome oa, ob;
    engine.submit({.tokens = a, .max_tokens = 10, .sampling = {.temperature = 0.0f}}, record(oa));
    engine.run_until_idle();
    engine.submit({.tokens = b, .max_tokens = 10, .sampling = {.temperature = 0.0f}}, record(ob));
    engine.run_until_idle();
    if (!caching) {
      plain_a = oa.tokens;
      plain_b = ob.tokens;
      CHECK(ob.metrics.cached_prompt_tokens == 0);
    } else {
      CHECK(oa.tokens == plain_a);
      CHECK(ob.tokens == plain_b);
      CHECK(ob.metrics.cached_prompt_tokens == 3 * bs);
      CHECK(engine.metrics().prefix_hits == 3);
    }
  }
}

TEST_CASE("engine: stop strings, length, cancellation and bad requests") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 24);
  ThreadPool pool(1);
  Engine engine(lm, pool, {.block_size = 8, .kv_blocks = 16, .max_waiting = 3});
  Outcome free_run;
  engine.submit({.prompt = "hello", .max_tokens = 12, .sampling = {.temperature = 0.0f}}, record(free_run));
  engine.run_until_idle();
  CHECK(free_run.reason == FinishReason::length);
  CHECK(free_run.tokens.size() == 12);
  // A stop string taken from the middle of that text ends the same request before it.
  REQUIRE(free_run.text.size() > 6);
  const std::string stop = free_run.text.substr(3, 3);
  Outcome stopped;
  engine.submit({.prompt = "hello", .max_tokens = 12, .sampling = {.temperature = 0.0f}, .stop = {stop}}, record(stopped));
  engine.run_until_idle();
  CHECK(stopped.reason == FinishReason::stop);
  CHECK(stopped.text == free_run.text.substr(0, free_run.text.find(stop)));

  Outcome c;
  const RequestId id = engine.submit({.prompt = "hello", .max_tokens = 100}, record(c));
  engine.step();
  engine.cancel(id);
  engine.run_until_idle();
  CHECK(c.reason == FinishReason::cancelled);
  CHECK(engine.block_pool().n_used() == 0);

  CHECK_THROWS_AS(engine.submit({.tokens = std::vector<std::int32_t>(200, 5)}, record(c)), Error);   // > 16 * 8 slots
  CHECK_THROWS_AS(engine.submit({.tokens = {100000}}, record(c)), Error);
  Outcome q1, q2, q3;
  engine.submit({.prompt = "a"}, record(q1));
  engine.submit({.prompt = "b"}, record(q2));
  engine.submit({.prompt = "c"}, record(q3));
  CHECK_THROWS_AS(engine.submit({.prompt = "d"}, record(c)), Error);   // queue bound
  engine.run_until_idle();
}

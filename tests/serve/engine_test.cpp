// The engine: batched greedy runs equal solo runs, a stress test with preemption and
// cancellations that leaks no block, prefix sharing, stop conditions, bad requests, logprobs.
#include <tinyllm/sample/json_schema.hpp>
#include <tinyllm/serve/engine.hpp>
#include <tinyllm/tinyllm.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
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

TEST_CASE("engine logprobs: each token's log-probability and top tokens are the log-softmax of the model's logits") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 23);
  ThreadPool pool(2);
  EngineOptions opt{.max_batch_tokens = 64, .max_sequences = 4, .kv_blocks = 64, .kv_type = KVType::f32};
  Engine engine(lm, pool, opt);
  const std::size_t vocab = lm.config().vocab_size;
  SplitMix64 rng(5);
  struct Got {
    std::vector<std::int32_t> tokens;
    std::vector<TokenLogprobs> logprobs;
    int finished = 0;
  };
  std::vector<std::vector<std::int32_t>> prompts;
  std::vector<Got> got(3);
  const int top_n[] = {0, 3, 7};
  for (std::size_t i = 0; i < 3; ++i) {
    prompts.push_back(random_prompt(rng, 5 + 4 * i, vocab));
    // sampled, so that the chosen token is not always the most likely one
    Request r{.tokens = prompts[i], .max_tokens = 10, .sampling = {.temperature = 1.5f, .top_k = 0, .top_p = 1.0f,
                                                                    .min_p = 0.0f, .seed = 77 + i}, .logprobs = top_n[i]};
    r.stop_at_eos = false;
    engine.submit(r, [&g = got[i]](const TokenEvent& e) {
      if (e.token >= 0) {
        REQUIRE(e.logprobs.has_value());
        CHECK(e.logprobs->chosen.token == e.token);
        g.tokens.push_back(e.token);
        g.logprobs.push_back(*e.logprobs);
      }
      g.finished += e.finished;
    });
  }
  Request plain{.tokens = prompts[0], .max_tokens = 3};
  engine.submit(plain, [](const TokenEvent& e) { CHECK_FALSE(e.logprobs.has_value()); });
  engine.run_until_idle();

  bool any_not_top = false;
  for (std::size_t i = 0; i < 3; ++i) {
    CAPTURE(i);
    REQUIRE(got[i].finished == 1);
    REQUIRE(got[i].tokens.size() == 10);
    // The reference: the whole sequence in one forward pass, then log-softmax in double precision.
    std::vector<std::int32_t> seq = prompts[i];
    seq.insert(seq.end(), got[i].tokens.begin(), got[i].tokens.end() - 1);
    std::vector<std::int32_t> pos(seq.size());
    for (std::size_t k = 0; k < pos.size(); ++k) pos[k] = std::int32_t(k);
    std::vector<float> logits(seq.size() * vocab);
    auto cache = lm.model().new_kv_cache(seq.size());
    lm.model().forward(pool, seq, pos, *cache, MatrixView<float>(logits.data(), seq.size(), vocab));
    for (std::size_t t = 0; t < got[i].tokens.size(); ++t) {
      CAPTURE(t);
      const float* row = logits.data() + (prompts[i].size() - 1 + t) * vocab;
      double m = row[0], sum = 0;
      for (std::size_t v = 0; v < vocab; ++v) m = std::max(m, double(row[v]));
      for (std::size_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - m);
      const auto logprob = [&](std::int32_t v) { return double(row[v]) - m - std::log(sum); };
      const TokenLogprobs& lp = got[i].logprobs[t];
      CHECK(std::fabs(lp.chosen.logprob - logprob(got[i].tokens[t])) < 2e-4);
      CHECK(lp.chosen.logprob <= 0.0f);
      REQUIRE(lp.top.size() == std::size_t(top_n[i]));
      std::vector<std::int32_t> order(vocab);
      for (std::size_t v = 0; v < vocab; ++v) order[v] = std::int32_t(v);
      std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return row[a] > row[b]; });
      for (std::size_t k = 0; k < lp.top.size(); ++k) {
        CHECK(std::fabs(lp.top[k].logprob - logprob(order[k])) < 2e-4);
        if (k + 1 < lp.top.size()) CHECK(lp.top[k].logprob >= lp.top[k + 1].logprob);
        if (std::fabs(row[order[k]] - row[order[k + 1]]) > 1e-3f) CHECK(lp.top[k].token == order[k]);
      }
      if (!lp.top.empty() && lp.top[0].token != got[i].tokens[t]) any_not_top = true;
    }
  }
  CHECK(any_not_top);   // sampling at temperature 1.5 picked something other than the top token
  CHECK(engine.block_pool().n_used() == 0);
  Request bad{.tokens = prompts[0], .max_tokens = 1, .logprobs = -2};
  CHECK_THROWS_AS(engine.submit(bad, [](const TokenEvent&) {}), Error);
}

namespace {

// Each sample of a request with n > 1, by TokenEvent::index; and how many events said
// request_finished.
struct Samples {
  std::vector<Outcome> by_index;
  int request_finished = 0;
  bool finished_after_last = true;   // request_finished came on the last finished event
};

Engine::Callback record_samples(Samples& s, std::size_t n) {
  s.by_index.resize(n);
  return [&s](const TokenEvent& e) {
    REQUIRE(e.index < s.by_index.size());
    record(s.by_index[e.index])(e);
    if (e.request_finished) {
      ++s.request_finished;
      for (const Outcome& o : s.by_index) s.finished_after_last = s.finished_after_last && o.finished == 1;
    }
  };
}

// The tokens of one request with n = 1 and `seed`, run alone.
std::vector<std::int32_t> solo_sampled(LoadedModel& lm, ThreadPool& pool, const std::vector<std::int32_t>& prompt,
                                       std::size_t max_tokens, SamplingParams sp) {
  Engine engine(lm, pool, EngineOptions{.kv_blocks = 64});
  Outcome o;
  engine.submit(Request{.tokens = prompt, .max_tokens = max_tokens, .sampling = sp}, record(o));
  engine.run_until_idle();
  REQUIRE(o.finished == 1);
  return o.tokens;
}

// Sample i of `got` equals a request with n = 1 and seed sp.seed + i, run alone.
void check_samples_equal_solo(const Samples& got, LoadedModel& lm, ThreadPool& pool, const std::vector<std::int32_t>& prompt,
                              std::size_t max_tokens, const SamplingParams& sp) {
  for (std::size_t i = 0; i < got.by_index.size(); ++i) {
    CAPTURE(i);
    REQUIRE(got.by_index[i].finished == 1);
    SamplingParams solo_sp = sp;
    solo_sp.seed = sp.seed + i;
    CHECK(got.by_index[i].tokens == solo_sampled(lm, pool, prompt, max_tokens, solo_sp));
    CHECK(got.by_index[i].metrics.prompt_tokens == prompt.size());
  }
}

}  // namespace

TEST_CASE("engine n > 1: each sample equals a solo request with its seed; the prompt's blocks are shared") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 24);
  ThreadPool pool(2);
  SplitMix64 rng(8);
  const auto prompt = random_prompt(rng, 40, lm.config().vocab_size);   // blocks of 16: 16 + 16 + 8
  const SamplingParams sp{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 1000};
  Engine engine(lm, pool, EngineOptions{.block_size = 16, .kv_blocks = 64});
  Samples got;
  Request r{.tokens = prompt, .max_tokens = 20, .sampling = sp};
  r.n = 4;
  r.stop_at_eos = false;
  engine.submit(r, record_samples(got, 4));
  // The step that computes the prompt forks it: 3 blocks, each held by all 4 samples.
  engine.step();
  CHECK(engine.block_pool().n_used() == 3);
  CHECK(engine.metrics().blocks_shared == 3);
  CHECK(engine.metrics().block_references == 12);
  for (BlockId b = 0; b < engine.block_pool().n_blocks(); ++b)
    if (engine.block_pool().ref_count(b) > 0) CHECK(engine.block_pool().ref_count(b) == 4);
  // The next step writes position 40 in the shared third block: three samples copy it.
  engine.step();
  CHECK(engine.block_pool().n_used() == 3 + 3);
  CHECK(engine.metrics().blocks_shared == 2);   // the two full prompt blocks
  engine.audit();
  engine.run_until_idle();
  CHECK(engine.block_pool().n_used() == 0);
  CHECK(got.request_finished == 1);
  CHECK(got.finished_after_last);
  check_samples_equal_solo(got, lm, pool, prompt, 20, sp);
  std::set<std::vector<std::int32_t>> distinct;
  for (const Outcome& o : got.by_index) distinct.insert(o.tokens);
  CHECK(distinct.size() > 1);   // the samples differ
}

TEST_CASE("engine n > 1 under pressure: preempted samples resume, cancellation ends every sample, nothing leaks") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 25);
  ThreadPool pool(2);
  SplitMix64 rng(9);
  const SamplingParams sp{.temperature = 0.9f, .seed = 50};
  // 12 blocks of 8 positions: 8 samples of 20 + 30 tokens cannot all be held at once.
  Engine engine(lm, pool, EngineOptions{.max_batch_tokens = 32, .block_size = 8, .kv_blocks = 12});
  const auto prompt = random_prompt(rng, 20, lm.config().vocab_size);
  Samples many, cancelled;
  Request r{.tokens = prompt, .max_tokens = 30, .sampling = sp};
  r.n = 8;
  r.stop_at_eos = false;
  engine.submit(r, record_samples(many, 8));
  Request c{.tokens = random_prompt(rng, 12, lm.config().vocab_size), .max_tokens = 30, .sampling = sp};
  c.n = 3;
  const RequestId cid = engine.submit(c, record_samples(cancelled, 3));
  for (int i = 0; i < 3; ++i) {
    engine.step();
    engine.audit();
  }
  engine.cancel(cid);
  while (engine.step()) engine.audit();
  CHECK(engine.metrics().preemptions > 0);
  CHECK(engine.block_pool().n_used() == 0);
  CHECK(many.request_finished == 1);
  CHECK(cancelled.request_finished == 1);
  check_samples_equal_solo(many, lm, pool, prompt, 30, sp);
  for (const Outcome& o : cancelled.by_index) CHECK(o.finished <= 1);
  Request bad{.tokens = prompt, .max_tokens = 1};
  bad.n = 0;
  CHECK_THROWS_AS(engine.submit(bad, [](const TokenEvent&) {}), Error);
}

TEST_CASE("engine stop_tokens end a sample as EOS does, without their text") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 26);
  ThreadPool pool(2);
  SplitMix64 rng(10);
  const auto prompt = random_prompt(rng, 10, lm.config().vocab_size);
  const auto free_run = solo(lm, pool, prompt, 12);
  REQUIRE(free_run.size() >= 6);
  Engine engine(lm, pool, EngineOptions{.kv_blocks = 64});
  Outcome o;
  Request r{.tokens = prompt, .max_tokens = 12, .sampling = {.temperature = 0.0f}};
  r.stop_tokens = {free_run[5]};
  engine.submit(r, record(o));
  engine.run_until_idle();
  const auto first = std::find(free_run.begin(), free_run.end(), free_run[5]);
  CHECK(o.tokens == std::vector<std::int32_t>(free_run.begin(), first + 1));   // the stop token is reported, then it ends
  CHECK(o.reason == FinishReason::eos);
}

TEST_CASE("engine constrained decoding: a random-weight model writes JSON its schema accepts, every seed") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 27);
  ThreadPool pool(2);
  const auto schema = nlohmann::ordered_json::parse(R"({
    "type": "object",
    "properties": {
      "name": {"type": "string", "maxLength": 6},
      "n": {"type": "integer"},
      "kind": {"enum": ["cat", "dog"]},
      "xs": {"type": "array", "items": {"type": "number"}, "maxItems": 3},
      "in": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    },
    "required": ["name", "n", "kind", "xs", "in"]})");
  const auto grammar = JsonSchemaGrammar::from_schema(schema);
  Engine engine(lm, pool, EngineOptions{.max_sequences = 8, .kv_blocks = 256});
  SplitMix64 rng(11);
  std::vector<Outcome> got(20);
  for (std::size_t i = 0; i < got.size(); ++i) {
    Request r{.tokens = random_prompt(rng, 6, lm.config().vocab_size), .max_tokens = 250,
              .sampling = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = i}};
    r.grammar = grammar;
    r.n = i % 5 == 0 ? 2 : 1;   // forks carry the grammar's state too
    engine.submit(r, [&o = got[i]](const TokenEvent& e) {
      if (e.index == 0) record(o)(e);
    });
  }
  engine.run_until_idle();
  CHECK(engine.block_pool().n_used() == 0);
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CAPTURE(got[i].text);
    REQUIRE(got[i].finished == 1);
    REQUIRE(got[i].reason != FinishReason::length);   // the schema bounds the document
    CHECK(got[i].reason == FinishReason::stop);   // at the closing brace, with no step for an end token
    const auto doc = nlohmann::json::parse(got[i].text);   // throws on a bad document
    REQUIRE(doc.is_object());
    CHECK(doc.size() == 5);
    CHECK((doc["name"].is_string() && doc["name"].get<std::string>().size() <= 6 * 4));
    CHECK(doc["n"].is_number_integer());
    CHECK((doc["kind"] == "cat" || doc["kind"] == "dog"));
    CHECK((doc["xs"].is_array() && doc["xs"].size() <= 3));
    for (const auto& x : doc["xs"]) CHECK(x.is_number());
    CHECK((doc["in"].is_object() && doc["in"].size() == 1 && doc["in"]["ok"].is_boolean()));
  }
}

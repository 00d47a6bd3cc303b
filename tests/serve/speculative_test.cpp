// Speculative decoding by prompt lookup: the drafts (serve/draft.hpp), and the engine's output with
// drafts equal to its output without them, token for token: greedy and sampled (same seed), with
// samples (n), logprobs, a grammar, stop strings, preemption; the distribution of sampled tokens
// with drafts equal to that without (a chi-square test over disjoint seeds); drafts kept on real text.
// Speculative decoding with a draft model (EngineOptions::draft_model): the same equalities, the
// model drafting for itself keeping every greedy draft, and drafts whose vocabulary differs refused.
#include <tinyllm/sample/json_schema.hpp>
#include <tinyllm/serve/draft.hpp>
#include <tinyllm/serve/engine.hpp>
#include <tinyllm/tinyllm.hpp>

#include <cmath>
#include <map>
#include <tuple>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

using Tokens = std::vector<std::int32_t>;

TEST_CASE("prompt_lookup_draft copies what followed the latest earlier occurrence of the longest suffix") {
  // Suffix "1 2" (n = 2) occurred at 0 and 4; the latest, at 4, was followed by 7 8 1 2.
  CHECK(prompt_lookup_draft(Tokens{1, 2, 3, 4, 1, 2, 7, 8, 1, 2}, 3, 3) == Tokens{7, 8, 1});
  CHECK(prompt_lookup_draft(Tokens{1, 2, 3, 4, 1, 2, 7, 8, 1, 2}, 3, 10) == Tokens{7, 8, 1, 2});
  // A longer match wins over a more recent shorter one: "5 1 2" occurred only at 0.
  CHECK(prompt_lookup_draft(Tokens{5, 1, 2, 9, 4, 1, 2, 6, 5, 1, 2}, 3, 2) == Tokens{9, 4});
  // ... but not beyond max_ngram: with n <= 2, "1 2" is latest at 5.
  CHECK(prompt_lookup_draft(Tokens{5, 1, 2, 9, 4, 1, 2, 6, 5, 1, 2}, 2, 2) == Tokens{6, 5});
  // Down to a single token.
  CHECK(prompt_lookup_draft(Tokens{4, 9, 3, 4}, 3, 5) == Tokens{9, 3, 4});
  // Nothing repeats, too short, no room.
  CHECK(prompt_lookup_draft(Tokens{1, 2, 3, 4}, 3, 4).empty());
  CHECK(prompt_lookup_draft(Tokens{7}, 3, 4).empty());
  CHECK(prompt_lookup_draft(Tokens{}, 3, 4).empty());
  CHECK(prompt_lookup_draft(Tokens{1, 1, 1}, 3, 0).empty());
  // A run of one token: the suffix "1 1" occurs at 0 and 1; the latest with a follower is 1.
  CHECK(prompt_lookup_draft(Tokens{1, 1, 1}, 2, 4) == Tokens{1});
  // A least match length: "9 4" matches only one token back (4), so with min_ngram 2 nothing.
  CHECK(prompt_lookup_draft(Tokens{4, 7, 8, 9, 4}, 3, 2, 1) == Tokens{7, 8});
  CHECK(prompt_lookup_draft(Tokens{4, 7, 8, 9, 4}, 3, 2, 2).empty());
  CHECK(prompt_lookup_draft(Tokens{5, 1, 2, 9, 4, 1, 2, 6, 5, 1, 2}, 3, 2, 3) == Tokens{9, 4});
}

struct Outcome {
  Tokens tokens;
  std::string text;
  std::vector<float> logprobs;
  FinishReason reason = FinishReason::none;
  RequestMetrics metrics;
};

// Runs every request through one engine; outcomes by request and sample index.
std::vector<std::vector<Outcome>> run_all(LoadedModel& lm, ThreadPool& pool, const std::vector<Request>& requests,
                                          EngineOptions opt = {.max_batch_tokens = 64, .max_sequences = 16,
                                                               .kv_blocks = 512},
                                          EngineMetrics* metrics = nullptr) {
  Engine engine(lm, pool, opt);
  std::vector<std::vector<Outcome>> out(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    out[i].resize(requests[i].n);
    engine.submit(requests[i], [&o = out[i]](const TokenEvent& e) {
      Outcome& s = o[e.index];
      if (e.token >= 0) s.tokens.push_back(e.token);
      if (e.logprobs) s.logprobs.push_back(e.logprobs->chosen.logprob);
      s.text += e.text;
      if (e.finished) s.reason = e.reason, s.metrics = e.metrics;
    });
  }
  while (engine.step()) engine.audit();
  CHECK(engine.block_pool().n_used() == 0);
  if (engine.draft_block_pool()) CHECK(engine.draft_block_pool()->n_used() == 0);
  if (metrics) *metrics = engine.metrics();
  return out;
}

std::vector<Request> with_drafts(std::vector<Request> requests, std::size_t n_draft, std::size_t ngram = 3,
                                 std::size_t ngram_min = 1) {
  for (Request& r : requests) r.draft_tokens = n_draft, r.draft_ngram = ngram, r.draft_ngram_min = ngram_min;
  return requests;
}

void check_same(const std::vector<std::vector<Outcome>>& a, const std::vector<std::vector<Outcome>>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    for (std::size_t k = 0; k < a[i].size(); ++k) {
      CAPTURE(i);
      CAPTURE(k);
      CHECK(a[i][k].tokens == b[i][k].tokens);
      CHECK(a[i][k].text == b[i][k].text);
      CHECK(a[i][k].reason == b[i][k].reason);
      REQUIRE(a[i][k].logprobs.size() == b[i][k].logprobs.size());
      for (std::size_t t = 0; t < a[i][k].logprobs.size(); ++t) CHECK(a[i][k].logprobs[t] == doctest::Approx(b[i][k].logprobs[t]).epsilon(1e-5));
    }
}

LoadedModel stories(std::optional<DType> quantize = {}) {
  LoadOptions o{.tokenizer_path = test::testdata("llama2c/tok512.bin").string()};
  o.quantize = quantize;
  return load(test::testdata("llama2c/stories260K.bin").string(), o);
}

const char* kPrompts[] = {"Once upon a time", "The little dog", "Lily wanted to", "One day, a big", "Tom and Sue went",
                          "There was a girl", "The sun was", "A cat sat", "Ben had a red", "The bird"};

}  // namespace

TEST_CASE("speculative greedy decoding gives the tokens of plain greedy decoding, and keeps drafts (stories260K)") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadedModel lm = stories();
  ThreadPool pool(2);
  std::vector<Request> requests;
  for (const char* p : kPrompts)
    requests.push_back({.prompt = p, .max_tokens = 200, .sampling = {.temperature = 0.0f}, .stop_at_eos = false});
  const auto plain = run_all(lm, pool, requests);
  for (const auto& [n_draft, ngram, ngram_min] : {std::tuple{4, 3, 1}, {8, 2, 1}, {1, 1, 1}, {4, 3, 3}}) {
    CAPTURE(n_draft);
    CAPTURE(ngram);
    CAPTURE(ngram_min);
    EngineMetrics m;
    check_same(plain, run_all(lm, pool, with_drafts(requests, n_draft, ngram, ngram_min), {.max_batch_tokens = 64, .max_sequences = 16, .kv_blocks = 512}, &m));
    MESSAGE("drafts of " << n_draft << " (n-grams of " << ngram_min << " to " << ngram << "): " << m.accepted_draft_tokens
                         << " of " << m.draft_tokens << " drafted tokens kept, " << m.steps << " engine steps");
    CHECK(m.accepted_draft_tokens > 0);
    CHECK(m.accepted_draft_tokens <= m.draft_tokens);
  }
}

TEST_CASE("speculative sampling gives the tokens of plain sampling with the same seed: penalties, n, logprobs, stop strings, preemption") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadedModel lm = stories();
  ThreadPool pool(2);
  std::vector<Request> requests;
  for (std::size_t i = 0; i < 12; ++i) {
    Request r{.prompt = kPrompts[i % 10], .max_tokens = 120,
              .sampling = {.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .min_p = 0.02f, .seed = 100 + i}};
    if (i % 3 == 1) r.sampling.repetition_penalty = 1.1f, r.sampling.frequency_penalty = 0.3f;
    if (i % 4 == 2) r.n = 3;
    if (i % 5 == 3) r.logprobs = 2;
    if (i == 7) r.stop = {"happy"};
    requests.push_back(r);
  }
  const auto plain = run_all(lm, pool, requests);
  EngineMetrics m;
  check_same(plain, run_all(lm, pool, with_drafts(requests, 6), {.max_batch_tokens = 64, .max_sequences = 16, .kv_blocks = 512}, &m));
  MESSAGE("sampled: " << m.accepted_draft_tokens << " of " << m.draft_tokens << " drafted tokens kept");
  CHECK(m.accepted_draft_tokens > 0);
  // A pool too small for all of them at once: sequences are preempted and recomputed, drafts or not.
  EngineMetrics small;
  check_same(plain, run_all(lm, pool, with_drafts(requests, 6), {.max_batch_tokens = 32, .max_sequences = 16, .block_size = 8, .kv_blocks = 40}, &small));
  MESSAGE("small pool: " << small.preemptions << " preemptions");
  CHECK(small.preemptions > 0);
}

TEST_CASE("speculative decoding under a grammar gives the tokens of plain constrained decoding") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 5);
  ThreadPool pool(2);
  const auto grammar = JsonSchemaGrammar::from_schema(nlohmann::ordered_json::parse(
      R"({"type": "object", "properties": {"a": {"type": "array", "items": {"enum": ["x", "y"]}}}, "required": ["a"]})"));
  std::vector<Request> requests;
  SplitMix64 rng(4);
  for (std::size_t i = 0; i < 8; ++i) {
    Request r{.max_tokens = 80, .sampling = {.temperature = i % 2 ? 0.0f : 1.0f, .seed = i}};
    r.tokens = {1};
    for (int k = 0; k < 12; ++k) r.tokens.push_back(std::int32_t(3 + rng.next() % 5));   // a repetitive prompt: drafts
    r.grammar = grammar;
    requests.push_back(r);
  }
  EngineMetrics m;
  check_same(run_all(lm, pool, requests), run_all(lm, pool, with_drafts(requests, 4, 1), {.max_batch_tokens = 64, .max_sequences = 16, .kv_blocks = 512}, &m));
  CHECK(m.draft_tokens > 0);
}

TEST_CASE("speculative sampling draws each token from the model's distribution: chi-square against plain sampling over other seeds") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadedModel lm = stories();
  ThreadPool pool(2);
  // The 12th generated token of 1500 samples each way, plain with seeds 0.., speculative with
  // seeds 100000..: a two-sample chi-square over the tokens seen at least 10 times in all (the
  // rest pooled), at p = 0.001.
  const std::size_t n = 1500, at = 11;
  std::map<std::int32_t, std::pair<std::size_t, std::size_t>> counts;
  EngineMetrics m;
  for (const bool speculative : {false, true}) {
    std::vector<Request> requests;
    for (std::size_t i = 0; i < n; ++i)
      requests.push_back({.prompt = "Lily and Ben", .max_tokens = at + 1,
                          .sampling = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                                       .seed = (speculative ? 100000 : 0) + i},
                          .stop_at_eos = false, .draft_tokens = speculative ? 4u : 0u, .draft_ngram = 1});
    const auto out = run_all(lm, pool, requests, {.max_batch_tokens = 256, .max_sequences = 64, .kv_blocks = 512},
                             speculative ? &m : nullptr);
    for (const auto& o : out) {
      REQUIRE(o[0].tokens.size() == at + 1);
      auto& c = counts[o[0].tokens[at]];
      (speculative ? c.second : c.first) += 1;
    }
  }
  double chi2 = 0;
  std::size_t bins = 0, rest_a = 0, rest_b = 0;
  for (const auto& [token, c] : counts) {
    if (c.first + c.second < 10) {
      rest_a += c.first, rest_b += c.second;
      continue;
    }
    chi2 += std::pow(double(c.first) - double(c.second), 2) / double(c.first + c.second);
    ++bins;
  }
  if (rest_a + rest_b > 0) chi2 += std::pow(double(rest_a) - double(rest_b), 2) / double(rest_a + rest_b), ++bins;
  const double df = double(bins - 1), z = 3.09;   // upper 0.1 % of the normal
  const double critical = df * std::pow(1 - 2 / (9 * df) + z * std::sqrt(2 / (9 * df)), 3);   // Wilson-Hilferty
  MESSAGE("chi-square " << chi2 << " over " << bins << " bins (critical " << critical << "); drafts kept: "
                        << m.accepted_draft_tokens << " of " << m.draft_tokens);
  CHECK(bins >= 5);
  CHECK(chi2 < critical);
  CHECK(m.accepted_draft_tokens > 40);   // the accept path ran, not only rejections
  CHECK(m.draft_tokens > m.accepted_draft_tokens);
}

TEST_CASE("speculative decoding: requests the engine refuses") {
  LoadedModel lm = load_synthetic("tiny", DType::F32, 5);
  ThreadPool pool(1);
  Engine engine(lm, pool, {.max_batch_tokens = 16});
  CHECK_THROWS_WITH_AS(engine.submit({.prompt = "a", .draft_tokens = 16}, {}), doctest::Contains("draft_tokens 16"), Error);
  CHECK_THROWS_WITH_AS(engine.submit({.prompt = "a", .draft_tokens = 2, .draft_ngram = 0}, {}), doctest::Contains("draft_ngram >= 1"), Error);
  CHECK_NOTHROW(engine.submit({.prompt = "a", .max_tokens = 3, .draft_tokens = 15}, [](const TokenEvent&) {}));
  engine.run_until_idle();
}

TEST_CASE("speculative decoding with a draft model gives the tokens of plain decoding: greedy, sampled, preempted") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadedModel lm = stories();
  ThreadPool pool(2);
  std::vector<Request> greedy, sampled;
  for (const char* p : kPrompts)
    greedy.push_back({.prompt = p, .max_tokens = 200, .sampling = {.temperature = 0.0f}, .stop_at_eos = false});
  for (std::size_t i = 0; i < 12; ++i) {
    Request r{.prompt = kPrompts[i % 10], .max_tokens = 120,
              .sampling = {.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .min_p = 0.02f, .seed = 300 + i}};
    if (i % 3 == 1) r.sampling.repetition_penalty = 1.1f;
    if (i % 4 == 2) r.n = 3;
    if (i % 5 == 3) r.logprobs = 2;
    sampled.push_back(r);
  }
  const auto plain_greedy = run_all(lm, pool, greedy), plain_sampled = run_all(lm, pool, sampled);

  SUBCASE("the model drafting for itself: every greedy draft is kept") {
    // Its logits do not depend on the batch, so its greedy drafts are the tokens greedy decoding picks.
    EngineMetrics m;
    check_same(plain_greedy, run_all(lm, pool, with_drafts(greedy, 4),
                                     {.max_batch_tokens = 64, .max_sequences = 16, .kv_blocks = 512, .draft_model = &lm}, &m));
    MESSAGE("self-drafting: " << m.accepted_draft_tokens << " of " << m.draft_tokens << " kept, " << m.steps << " steps");
    CHECK(m.draft_tokens > 1000);
    CHECK(m.accepted_draft_tokens == m.draft_tokens);
  }
  SUBCASE("a quantized copy drafts") for (const DType type : {DType::Q8_0, DType::Q4_0}) {
    // A smaller copy of the model (its weights quantized by the library) drafts: most drafts are
    // kept, some are not, and the output stays that of plain decoding.
    CAPTURE(name(type));
    LoadedModel draft = stories(type);
    EngineMetrics m, ms, small;
    const EngineOptions opt{.max_batch_tokens = 64, .max_sequences = 16, .kv_blocks = 512, .draft_model = &draft};
    check_same(plain_greedy, run_all(lm, pool, with_drafts(greedy, 5), opt, &m));
    MESSAGE(name(type) << " draft, greedy: " << m.accepted_draft_tokens << " of " << m.draft_tokens << " kept, "
                       << m.draft_model_tokens << " tokens through the draft model");
    CHECK(m.accepted_draft_tokens > m.draft_tokens / 2);
    CHECK(m.accepted_draft_tokens < m.draft_tokens);
    check_same(plain_sampled, run_all(lm, pool, with_drafts(sampled, 3), opt, &ms));
    MESSAGE(name(type) << " draft, sampled: " << ms.accepted_draft_tokens << " of " << ms.draft_tokens << " kept");
    CHECK(ms.accepted_draft_tokens > 0);
    CHECK(ms.accepted_draft_tokens < ms.draft_tokens);
    // Pools too small for everything: sequences are preempted (their draft caches freed with them)
    // and some drafts cannot get blocks; the draft model's batch is smaller than a prompt.
    check_same(plain_sampled, run_all(lm, pool, with_drafts(sampled, 3),
                                      {.max_batch_tokens = 32, .max_sequences = 16, .block_size = 8, .kv_blocks = 40,
                                       .draft_model = &draft}, &small));
    MESSAGE("small pools: " << small.preemptions << " preemptions, " << small.accepted_draft_tokens << " of "
                            << small.draft_tokens << " kept");
    CHECK(small.preemptions > 0);
    CHECK(small.draft_tokens > 0);
  }
  SUBCASE("drafts stop at an unlikely token (draft_p_min)") {
    LoadedModel draft = stories(DType::Q8_0);
    EngineMetrics all, sure;
    run_all(lm, pool, with_drafts(greedy, 6), {.max_batch_tokens = 64, .max_sequences = 16, .kv_blocks = 512, .draft_model = &draft}, &all);
    check_same(plain_greedy, run_all(lm, pool, with_drafts(greedy, 6),
                                     {.max_batch_tokens = 64, .max_sequences = 16, .kv_blocks = 512,
                                      .draft_model = &draft, .draft_p_min = 0.9f}, &sure));
    MESSAGE("p_min 0.9: " << sure.accepted_draft_tokens << " of " << sure.draft_tokens << " kept; without: "
                          << all.accepted_draft_tokens << " of " << all.draft_tokens);
    CHECK(sure.draft_tokens < all.draft_tokens);
    CHECK(sure.draft_acceptance() > all.draft_acceptance());
  }
}

TEST_CASE("speculative decoding: a draft model must share the model's vocabulary") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadedModel lm = stories();
  LoadedModel other = load_synthetic("tiny", DType::F32, 5);
  ThreadPool pool(1);
  CHECK_THROWS_WITH_AS(Engine(lm, pool, {.draft_model = &other}), doctest::Contains("draft model"), Error);
  CHECK_THROWS_WITH_AS(Engine(other, pool, {.draft_model = &lm}), doctest::Contains("draft model"), Error);
}

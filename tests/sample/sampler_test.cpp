#include <tinyllm/core/error.hpp>
#include <tinyllm/sample/random.hpp>
#include <tinyllm/sample/sampler.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

SamplingParams plain(float temperature, std::uint64_t seed = 1) {
  return {.temperature = temperature, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = seed};
}

std::vector<double> softmax(const std::vector<float>& logits, double temperature) {
  const double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (std::size_t i = 0; i < p.size(); ++i)
    sum += p[i] = std::exp((logits[i] - max) / temperature);
  for (double& x : p) x /= sum;
  return p;
}

// Logits whose softmax at temperature 1 is exactly `probs`.
std::vector<float> logits_for(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (const double p : probs) logits.push_back(p > 0 ? float(std::log(p)) : -kInf);
  return logits;
}

std::vector<int> histogram(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::vector<int> counts(logits.size(), 0);
  std::vector<float> scratch;
  for (int i = 0; i < draws; ++i) {
    scratch = logits;
    ++counts[std::size_t(sampler.sample(scratch, {}))];
  }
  return counts;
}

// The largest gap between observed frequencies and probabilities.
double max_deviation(const std::vector<int>& counts, const std::vector<double>& probs, int draws) {
  double worst = 0;
  for (std::size_t i = 0; i < counts.size(); ++i)
    worst = std::max(worst, std::abs(double(counts[i]) / draws - probs[i]));
  return worst;
}

}  // namespace

TEST_CASE("Xoshiro256 draws the reference sequence") {
  // splitmix64(0)'s first output is the published 0xE220A8397B1DCDAF; the rest were computed with
  // an independent Python transcription of xoshiro256**.
  Xoshiro256 rng(0);
  CHECK(rng.next() == 0x99ec5f36cb75f2b4ull);
  CHECK(rng.next() == 0xbf6e1f784956452aull);
  CHECK(rng.uniform() == float(0x1a5f849d4933e6e0ull >> 40) / float(1 << 24));
  CHECK(rng.uniform() == float(0x6aa594f1262d2d2cull >> 40) / float(1 << 24));
}

TEST_CASE("argmax takes the lowest index on ties and skips NaN") {
  CHECK(argmax(std::vector<float>{1, 3, 2, 3}) == 1);
  CHECK(argmax(std::vector<float>{-kInf, -kInf}) == 0);
  CHECK(argmax(std::vector<float>{std::nanf(""), 1, 5, std::nanf(""), 5}) == 2);
  CHECK(argmax(std::vector<float>{7}) == 0);
  CHECK_THROWS_AS(argmax(std::vector<float>{}), Error);
}

TEST_CASE("Sampler validates its parameters and inputs") {
  const float nan = std::nanf("");
  CHECK_THROWS_AS(Sampler({.temperature = nan}, 10), Error);
  CHECK_THROWS_AS(Sampler({.temperature = kInf}, 10), Error);
  CHECK_THROWS_AS(Sampler({.top_p = -0.1f}, 10), Error);
  CHECK_THROWS_AS(Sampler({.top_p = nan}, 10), Error);
  CHECK_THROWS_AS(Sampler({.min_p = nan}, 10), Error);
  CHECK_THROWS_AS(Sampler({.min_p = 1.5f}, 10), Error);
  CHECK_THROWS_AS(Sampler({.repetition_penalty = 0.0f}, 10), Error);
  CHECK_THROWS_AS(Sampler({.repetition_penalty = nan}, 10), Error);
  CHECK_THROWS_AS(Sampler({.repeat_last_n = -1}, 10), Error);
  CHECK_THROWS_AS(Sampler({}, 0), Error);
  CHECK_NOTHROW(Sampler({.temperature = -1.0f, .top_k = -5, .top_p = 2.0f, .min_p = -1.0f}, 10));

  Sampler sampler({}, 3);
  std::vector<float> wrong_size(4, 0.0f), with_nan = {0, nan, 1}, with_inf = {0, kInf, 1},
                                          all_masked(3, -kInf);
  CHECK_THROWS_AS(sampler.sample(wrong_size, {}), Error);
  CHECK_THROWS_AS(sampler.sample(with_nan, {}), Error);
  CHECK_THROWS_AS(sampler.sample(with_inf, {}), Error);
  CHECK_THROWS_AS(sampler.sample(all_masked, {}), Error);
}

TEST_CASE("Sampler, greedy: the argmax whatever the other settings") {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (const float temperature : {0.0f, -1.0f}) {
    Sampler sampler({.temperature = temperature, .top_k = 3, .top_p = 0.1f, .min_p = 0.5f}, 1000);
    for (int round = 0; round < 20; ++round) {
      std::vector<float> logits(1000);
      for (float& x : logits) x = normal(rng);
      const std::int32_t expected = argmax(logits);
      CHECK(sampler.sample(logits, {}) == expected);
    }
  }
}

TEST_CASE("Sampler: a seed fixes the sequence") {
  const std::vector<float> logits = {0.1f, 0.5f, 0.3f, 0.2f, 0.4f, 0.0f, 0.25f, 0.35f};
  const auto draw = [&](Sampler& sampler) {
    std::vector<std::int32_t> tokens;
    for (int i = 0; i < 64; ++i) {
      std::vector<float> scratch = logits;
      tokens.push_back(sampler.sample(scratch, {}));
    }
    return tokens;
  };
  Sampler a(plain(1.0f, 123), logits.size()), b(plain(1.0f, 123), logits.size()),
      c(plain(1.0f, 124), logits.size());
  const auto first = draw(a);
  CHECK(first == draw(b));
  CHECK(first != draw(c));
  a.reseed(123);
  CHECK(draw(a) == first);
}

TEST_CASE("Sampler: a seed draws the same tokens on every platform") {
  // Computed by an independent Python transcription (softmax in float64, xoshiro256**, the
  // cumulative walk in token order); every uniform number lies at least 0.008 from a boundary,
  // far beyond float32 rounding, so any correct implementation draws exactly these.
  const std::vector<float> logits = {0.1f, 0.5f, 0.3f, 0.2f, 0.4f, 0.0f, 0.25f, 0.35f};
  const std::vector<std::int32_t> expected = {0, 2, 5, 7, 7, 6, 5, 6, 6, 4, 5, 2,
                                              6, 2, 5, 7, 4, 6, 5, 5, 0, 1, 3, 4};
  Sampler sampler(plain(1.0f, 42), logits.size());
  std::vector<std::int32_t> drawn;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    std::vector<float> scratch = logits;
    drawn.push_back(sampler.sample(scratch, {}));
  }
  CHECK(drawn == expected);
}

TEST_CASE("Sampler: frequencies follow the softmax at the temperature") {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f, 2.5f, -0.5f};
  const int draws = 200000;
  for (const float temperature : {0.7f, 1.0f, 1.6f}) {
    CAPTURE(temperature);
    Sampler sampler(plain(temperature, 99), logits.size());
    const std::vector<int> counts = histogram(sampler, logits, draws);
    const std::vector<double> probs = softmax(logits, temperature);
    double chi_square = 0;
    for (std::size_t i = 0; i < probs.size(); ++i) {
      const double expected = probs[i] * draws;
      chi_square += (counts[i] - expected) * (counts[i] - expected) / expected;
    }
    // 7 degrees of freedom: 24.32 is the 0.1% critical value. The seed is fixed, so this is a
    // deterministic check that would fail for a biased draw.
    CHECK(chi_square < 24.32);
    CHECK(max_deviation(counts, probs, draws) < 0.005);
  }
}

TEST_CASE("Sampler, top-k: never a token outside the k largest, even in a 128k vocabulary") {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(128000);
  for (float& x : logits) x = normal(rng);
  std::vector<std::int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + 40, order.end(),
                    [&](std::int32_t a, std::int32_t b) { return logits[a] > logits[b]; });
  const std::set<std::int32_t> top(order.begin(), order.begin() + 40);

  Sampler sampler({.temperature = 5.0f, .top_k = 40, .top_p = 1.0f, .min_p = 0.0f, .seed = 5},
                  logits.size());
  std::set<std::int32_t> seen;
  for (int i = 0; i < 1000; ++i) {
    std::vector<float> scratch = logits;
    const std::int32_t token = sampler.sample(scratch, {});
    REQUIRE(top.count(token) == 1);
    seen.insert(token);
  }
  CHECK(seen.size() == 40);  // at temperature 5 the 40 are close to uniform; all of them show up
}

TEST_CASE("Sampler, top-p: only the smallest prefix whose mass reaches p") {
  // Probabilities in a scrambled order; sorted they are 0.4 0.25 0.15 0.1 0.05 0.05.
  const std::vector<double> probs = {0.05, 0.25, 0.1, 0.4, 0.05, 0.15};
  const std::vector<float> logits = logits_for(probs);
  const int draws = 100000;
  struct Case {
    float top_p;
    std::vector<double> kept;
  };
  for (const Case& c :
       {Case{0.3f, {0, 0, 0, 1, 0, 0}}, Case{0.5f, {0, 0.25, 0, 0.4, 0, 0}},
        Case{0.75f, {0, 0.25, 0, 0.4, 0, 0.15}}, Case{0.85f, {0, 0.25, 0.1, 0.4, 0, 0.15}},
        Case{0.0f, {0, 0, 0, 1, 0, 0}}}) {
    CAPTURE(c.top_p);
    Sampler sampler({.temperature = 1.0f, .top_k = 0, .top_p = c.top_p, .min_p = 0.0f, .seed = 11},
                    logits.size());
    const std::vector<int> counts = histogram(sampler, logits, draws);
    const double mass = std::accumulate(c.kept.begin(), c.kept.end(), 0.0);
    std::vector<double> renormalised = c.kept;
    for (double& p : renormalised) p /= mass;
    for (std::size_t i = 0; i < counts.size(); ++i)
      if (c.kept[i] == 0) CHECK(counts[i] == 0);
    CHECK(max_deviation(counts, renormalised, draws) < 0.006);
  }
}

TEST_CASE("Sampler, min-p: keeps tokens with p >= min_p * p_max") {
  const std::vector<double> probs = {0.04, 0.5, 0.1, 0.2, 0.06, 0.07, 0.03};
  const std::vector<float> logits = logits_for(probs);
  Sampler sampler({.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.15f, .seed = 4},
                  logits.size());
  const int draws = 100000;
  const std::vector<int> counts = histogram(sampler, logits, draws);
  // Threshold 0.075: 0.5, 0.2 and 0.1 stay, renormalised over 0.8.
  const std::vector<double> kept = {0, 0.5 / 0.8, 0.1 / 0.8, 0.2 / 0.8, 0, 0, 0};
  for (std::size_t i = 0; i < counts.size(); ++i)
    if (kept[i] == 0) CHECK(counts[i] == 0);
  CHECK(max_deviation(counts, kept, draws) < 0.006);
}

TEST_CASE("Sampler, repetition penalty: the CTRL rule, once per distinct token, in the window") {
  const SamplingParams greedy = {
      .temperature = 0.0f, .repetition_penalty = 1.5f, .repeat_last_n = 2};
  Sampler sampler(greedy, 4);
  SUBCASE("a positive logit is divided and the argmax moves") {
    std::vector<float> logits = {2.0f, 1.9f, -1.0f, 0.5f};
    CHECK(sampler.sample(logits, std::vector<std::int32_t>{0, 0}) == 1);
    CHECK(logits == std::vector<float>{2.0f / 1.5f, 1.9f, -1.0f, 0.5f});
  }
  SUBCASE("a negative logit is multiplied") {
    std::vector<float> logits = {2.0f, 1.9f, -1.0f, 0.5f};
    CHECK(sampler.sample(logits, std::vector<std::int32_t>{2, 3}) == 0);
    CHECK(logits == std::vector<float>{2.0f, 1.9f, -1.5f, 0.5f / 1.5f});
  }
  SUBCASE("only the last repeat_last_n tokens count") {
    std::vector<float> logits = {2.0f, 1.9f, -1.0f, 0.5f};
    CHECK(sampler.sample(logits, std::vector<std::int32_t>{0, 3, 3}) == 0);
    CHECK(logits == std::vector<float>{2.0f, 1.9f, -1.0f, 0.5f / 1.5f});
  }
  SUBCASE("a bad history token throws and leaves the sampler usable") {
    std::vector<float> logits = {2.0f, 1.9f, -1.0f, 0.5f};
    CHECK_THROWS_AS(sampler.sample(logits, std::vector<std::int32_t>{0, 4}), Error);
    logits = {2.0f, 1.9f, -1.0f, 0.5f};
    CHECK(sampler.sample(logits, std::vector<std::int32_t>{3, 3}) == 0);
    CHECK(logits == std::vector<float>{2.0f, 1.9f, -1.0f, 0.5f / 1.5f});
  }
  SUBCASE("a penalty of 1 changes nothing") {
    Sampler off({.temperature = 0.0f, .repetition_penalty = 1.0f}, 4);
    std::vector<float> logits = {2.0f, 1.9f, -1.0f, 0.5f};
    CHECK(off.sample(logits, std::vector<std::int32_t>{0, 1, 2, 3}) == 0);
    CHECK(logits == std::vector<float>{2.0f, 1.9f, -1.0f, 0.5f});
  }
}

TEST_CASE("Sampler, degenerate inputs: equal logits, -inf entries, a vocabulary of one") {
  const int draws = 40000;
  SUBCASE("all logits equal: uniform, and greedy takes the first") {
    const std::vector<float> logits(4, 1.5f);
    Sampler sampler({.seed = 8}, logits.size());  // the defaults: top-k 40, top-p 0.95, min-p 0.05
    const std::vector<int> counts = histogram(sampler, logits, draws);
    CHECK(max_deviation(counts, std::vector<double>(4, 0.25), draws) < 0.01);
    Sampler greedy(plain(0.0f), logits.size());
    std::vector<float> scratch = logits;
    CHECK(greedy.sample(scratch, {}) == 0);
  }
  SUBCASE("-inf entries are never drawn") {
    const std::vector<float> logits = {-kInf, 0.0f, -kInf, 0.0f, -kInf};
    Sampler sampler(plain(1.0f, 9), logits.size());
    const std::vector<int> counts = histogram(sampler, logits, draws);
    CHECK(counts[0] + counts[2] + counts[4] == 0);
    CHECK(max_deviation(counts, {0, 0.5, 0, 0.5, 0}, draws) < 0.01);
  }
  SUBCASE("a single token") {
    for (const SamplingParams& params : {SamplingParams{}, plain(1.0f), plain(0.0f)}) {
      Sampler sampler(params, 1);
      std::vector<float> logits = {-3.0f};
      CHECK(sampler.sample(logits, std::vector<std::int32_t>{0}) == 0);
    }
  }
}

TEST_CASE("Sampler, presence and frequency penalties: OpenAI's rule over the generated tokens only") {
  // logit[t] -= presence * (count[t] > 0) + frequency * count[t], counts over the tokens after the
  // prompt (the history of the first call). Every expected logit below is worked out by hand.
  const SamplingParams greedy = {
      .temperature = 0.0f, .presence_penalty = 0.5f, .frequency_penalty = 0.25f};
  Sampler sampler(greedy, 5);
  std::vector<std::int32_t> history = {4, 4, 1};  // the prompt: repeats in it are not penalised
  const std::vector<float> raw = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f};

  std::vector<float> logits = raw;
  CHECK(sampler.sample(logits, history) == 4);
  CHECK(logits == raw);
  CHECK(sampler.prompt_length() == 3u);

  history.insert(history.end(), {0, 2, 0});  // generated: token 0 twice, token 2 once
  logits = raw;
  CHECK(sampler.sample(logits, history) == 4);
  // 1 - 0.5 - 2 * 0.25 = 0; 0.5 - 0.5 - 0.25 = -0.25
  CHECK(logits == std::vector<float>{0.0f, 2.0f, -0.25f, -1.0f, 3.0f});

  history.insert(history.end(), {4, 4, 4, 4});  // token 4 four times: 3 - 0.5 - 4 * 0.25 = 1.5
  logits = raw;
  CHECK(sampler.sample(logits, history) == 1);  // the argmax moves to token 1
  CHECK(logits == std::vector<float>{0.0f, 2.0f, -0.25f, -1.0f, 1.5f});

  SUBCASE("a history shorter than the prompt is an error") {
    logits = raw;
    CHECK_THROWS_AS(sampler.sample(logits, std::vector<std::int32_t>{4, 4}), Error);
  }
}

TEST_CASE("Sampler, presence and frequency penalties: negative values favour repeats, 0 is off") {
  SUBCASE("negative presence adds to every generated token once") {
    Sampler sampler({.temperature = 0.0f, .presence_penalty = -1.0f}, 3);
    std::vector<float> logits = {1.0f, 0.5f, 0.25f};
    CHECK(sampler.sample(logits, {}) == 0);  // an empty prompt
    logits = {1.0f, 0.5f, 0.25f};
    CHECK(sampler.sample(logits, std::vector<std::int32_t>{1, 1, 2}) == 1);
    CHECK(logits == std::vector<float>{1.0f, 1.5f, 1.25f});
  }
  SUBCASE("negative frequency adds per occurrence") {
    Sampler sampler({.temperature = 0.0f, .frequency_penalty = -0.5f}, 3);
    std::vector<float> logits = {1.0f, 0.5f, 0.25f};
    CHECK(sampler.sample(logits, std::vector<std::int32_t>{2}) == 0);
    logits = {1.0f, 0.5f, 0.25f};
    CHECK(sampler.sample(logits, std::vector<std::int32_t>{2, 2, 2, 1}) == 2);
    CHECK(logits == std::vector<float>{1.0f, 1.0f, 1.25f});  // 0.25 + 2 * 0.5 (the prompt's 2 not counted)
  }
  SUBCASE("both 0: the logits are untouched") {
    Sampler sampler({.temperature = 0.0f}, 3);
    std::vector<float> logits = {1.0f, 0.5f, 0.25f};
    CHECK(sampler.sample(logits, {}) == 0);
    CHECK(sampler.sample(logits, std::vector<std::int32_t>{0, 0, 0}) == 0);
    CHECK(logits == std::vector<float>{1.0f, 0.5f, 0.25f});
  }
  SUBCASE("after the repetition penalty, which counts the prompt too") {
    Sampler sampler({.temperature = 0.0f, .repetition_penalty = 2.0f, .presence_penalty = 0.5f}, 3);
    std::vector<float> logits = {3.0f, 0.5f, 0.25f};
    CHECK(sampler.sample(logits, std::vector<std::int32_t>{1}) == 0);
    CHECK(logits == std::vector<float>{3.0f, 0.25f, 0.25f});      // 0.5 / 2; no presence: a prompt token
    logits = {3.0f, 0.5f, 0.25f};
    CHECK(sampler.sample(logits, std::vector<std::int32_t>{1, 0}) == 0);
    CHECK(logits == std::vector<float>{1.0f, 0.25f, 0.25f});      // 3 / 2 - 0.5, not (3 - 0.5) / 2
  }
  SUBCASE("a bad token id among the generated ones throws") {
    Sampler sampler({.temperature = 0.0f, .frequency_penalty = 1.0f}, 3);
    std::vector<float> logits = {1.0f, 0.5f, 0.25f};
    CHECK(sampler.sample(logits, {}) == 0);
    CHECK_THROWS_AS(sampler.sample(logits, std::vector<std::int32_t>{3}), Error);
  }
}

TEST_CASE("Sampler validates presence and frequency penalties: finite, in [-2, 2]") {
  const float nan = std::nanf("");
  for (const float bad : {2.5f, -2.01f, nan, kInf, -kInf}) {
    CHECK_THROWS_AS(Sampler({.presence_penalty = bad}, 10), Error);
    CHECK_THROWS_AS(Sampler({.frequency_penalty = bad}, 10), Error);
  }
  CHECK_NOTHROW(Sampler({.presence_penalty = 2.0f, .frequency_penalty = -2.0f}, 10));
  CHECK_NOTHROW(Sampler({.presence_penalty = -2.0f, .frequency_penalty = 2.0f}, 10));
  try {
    Sampler({.frequency_penalty = 3.0f}, 10);
    FAIL("no error");
  } catch (const Error& e) {
    const std::string what = e.what();
    CHECK(what.find("frequency_penalty") != std::string::npos);
    CHECK(what.find("[-2, 2]") != std::string::npos);
  }
}

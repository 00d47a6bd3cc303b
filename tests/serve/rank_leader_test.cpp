// Serving a split model (serve/rank_leader.hpp) with ranks as threads: rank 0 leads (the Engine
// or generate() on its model), the others follow; the tokens must be those of one process.
#include <tinyllm/tinyllm.hpp>

#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

struct Job {
  Request request;
  std::vector<std::vector<std::int32_t>> tokens;   // per sample
};

// Greedy requests with shared prefixes and staggered arrival, a sampled request with n = 4 (its
// prompt's last block copied on write), speculative drafts (every token's logits); a pool small
// enough to preempt.
std::vector<Job> jobs(std::size_t vocab) {
  std::vector<Job> out;
  SplitMix64 rng(5);
  std::vector<std::int32_t> shared = {1};
  while (shared.size() < 40) shared.push_back(std::int32_t(3 + rng.next() % (vocab - 3)));
  for (std::size_t i = 0; i < 10; ++i) {
    Job j;
    j.request.tokens = i % 2 ? shared : std::vector<std::int32_t>{1};
    while (j.request.tokens.size() < (i % 2 ? 48u : 8u + 4 * i)) j.request.tokens.push_back(std::int32_t(3 + rng.next() % (vocab - 3)));
    j.request.max_tokens = 12 + 3 * i;
    j.request.sampling.temperature = 0.0f;
    j.request.stop_at_eos = false;
    out.push_back(j);
  }
  Job sampled;
  sampled.request.tokens = shared;   // 40 tokens and 4 more: the samples share a partly filled block
  sampled.request.tokens.insert(sampled.request.tokens.end(), {5, 6, 7, 8});
  sampled.request.max_tokens = 20;
  sampled.request.sampling = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 77};
  sampled.request.n = 4;
  sampled.request.stop_at_eos = false;
  out.push_back(sampled);
  Job drafted = out[1];
  drafted.request.draft_tokens = 4;
  out.push_back(drafted);
  return out;
}

std::vector<Job> serve(LoadedModel& lm, ThreadPool& pool, std::size_t& preemptions) {
  std::vector<Job> js = jobs(lm.config().vocab_size);
  {
    Engine engine(lm, pool, EngineOptions{.max_batch_tokens = 48, .max_sequences = 8, .block_size = 8, .kv_blocks = 24});
    for (std::size_t i = 0; i < js.size(); ++i) {
      js[i].tokens.resize(js[i].request.n);
      engine.submit(js[i].request, [&js, i](const TokenEvent& e) {
        if (e.token >= 0) js[i].tokens[e.index].push_back(e.token);
      });
      if (i % 3 == 2) engine.step();
    }
    engine.run_until_idle();
    preemptions = engine.metrics().preemptions;
  }
  return js;
}

}  // namespace

TEST_CASE("an Engine on rank 0 drives 2 and 3 ranks: every request's tokens are one process's") {
  TINYLLM_REQUIRE_TESTDATA("arch/stories260K.gguf");
  const std::string path = test::testdata("arch/stories260K.gguf").string();
  ThreadPool pool(1);
  LoadedModel whole = load(path);
  std::size_t preemptions = 0;
  const std::vector<Job> want = serve(whole, pool, preemptions);
  CHECK(preemptions > 0);
  for (std::size_t ranks : {2u, 3u}) {
    CAPTURE(ranks);
    const auto got = test::on_ranks(ranks, [&](Communicator& comm) {
      LoadOptions opt;
      opt.comm = &comm;
      LoadedModel part = load(path, opt);
      ThreadPool one(1);
      if (comm.rank() > 0) {
        follow_leader(part, one, comm);   // until rank 0's model is destroyed
        return std::vector<Job>{};
      }
      lead(part, comm);
      std::size_t ignored = 0;
      return serve(part, one, ignored);
    });
    REQUIRE(got[0].size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
      CAPTURE(i);
      CHECK(got[0][i].tokens == want[i].tokens);
    }
  }
}

TEST_CASE("generate() on rank 0 drives the followers: stories260K's greedy text; a failed step is reported on rank 0 only") {
  TINYLLM_REQUIRE_TESTDATA("arch/stories260K.gguf");
  const std::string path = test::testdata("arch/stories260K.gguf").string();
  ThreadPool pool(1);
  LoadedModel whole = load(path);
  const std::string want = test::stories_greedy_text(whole, pool);
  const auto got = test::on_ranks(2, [&](Communicator& comm) {
    LoadOptions opt;
    opt.comm = &comm;
    LoadedModel part = load(path, opt);
    ThreadPool one(1);
    if (comm.rank() > 0) {
      follow_leader(part, one, comm);
      return std::string("follower returned");
    }
    lead(part, comm);
    // A position beyond the cache: the Error reaches rank 0's caller; the follower skips the step.
    auto cache = part.model().new_kv_cache(4);
    const std::int32_t token = 1, position = 9;
    std::vector<float> logits(part.config().vocab_size);
    std::string error;
    try {
      part.model().forward(one, std::span(&token, 1), std::span(&position, 1), *cache,
                           MatrixView<float>(logits.data(), 1, logits.size()));
    } catch (const Error& e) {
      error = e.what();
    }
    return error + "|" + test::stories_greedy_text(part, one);
  });
  CHECK(got[1] == "follower returned");
  CHECK(got[0].find("does not fit the KV cache") != std::string::npos);
  CHECK(got[0].substr(got[0].find('|') + 1) == want);
}

// tinyllm-serve-bench: aggregate throughput of the continuous-batching engine for several
// numbers of concurrent streams, each a random prompt of -p tokens and -n generated tokens
// (EOS ignored), like llama.cpp's llama-batched-bench.
//   tinyllm-serve-bench -m model.gguf -c 1,4,8,16 -p 128 -n 128 -t 2 [--kv-type f32] [--json] [--lora A.gguf ...]
// With --lora (repeatable) each concurrency runs twice: without adapters, then stream s with
// adapter s mod (number of adapters), all in the same batches.
// Prompt t/s: all prompt tokens / time until every stream has its first token. Generation t/s:
// the remaining generated tokens / the rest of the time.
// --samples N (> 1) then measures KV sharing: one request with n = N samples of the -p prompt
// (-n tokens each, sampled) against one with n = 1: the most KV blocks each held at once, and
// the ratio of the first to what one sample plus the others' generated tokens need.
// --draft N runs each configuration again with speculative decoding by prompt lookup (up to N
// drafted tokens a step) and checks that every stream's tokens equal those without (exit 2 if not);
// --prompt TEXT gives every stream that text as its prompt (drafts need text that repeats).
// --draft-model FILE drafts with that model (same vocabulary, greedy) instead of prompt lookup;
// --draft-p-min P stops a draft at a token it gives less than P.
#include <tinyllm/tinyllm.hpp>

#include "../examples/common/device_flag.hpp"

#include <CLI/CLI.hpp>

#include <optional>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace {

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, std::size_t(q * double(v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-serve-bench: engine throughput at several concurrencies"};
  std::string model_path;
  std::vector<std::size_t> concurrency = {1, 4, 8, 16};
  std::size_t n_prompt = 128, n_gen = 128;
  unsigned threads = 2;
  bool json = false;
  std::string kv_type = "f16";  // as llama.cpp's default cache type
  app.add_option("-m,--model", model_path, "model file; default: the embedded random model");
  app.add_option("-c,--concurrency", concurrency, "concurrent streams (comma separated)")->delimiter(',')->capture_default_str();
  app.add_option("-p,--n-prompt", n_prompt, "prompt tokens per stream")->capture_default_str();
  app.add_option("-n,--n-gen", n_gen, "generated tokens per stream")->capture_default_str();
  app.add_option("-t,--threads", threads, "threads")->capture_default_str();
  app.add_option("--kv-type", kv_type, "K/V storage: f16 (twice the blocks of f32 in the budget), q8_0 (1.88x f16's) or f32")
      ->check(CLI::IsMember({"f32", "f16", "q8_0"}))->capture_default_str();
  app.add_flag("--json", json, "print one JSON object instead of a table");
  std::size_t samples = 1;
  bool json_object = false;
  app.add_flag("--json-object", json_object, "run each concurrency again with every stream constrained to a JSON object "
                                            "(response_format json_object: a grammar mask on each token)");
  std::string prompt_text;
  std::size_t draft = 0;
  app.add_option("--prompt", prompt_text, "every stream's prompt is this text (with BOS) instead of -p random tokens");
  app.add_option("--draft", draft, "run each configuration again with speculative decoding by prompt lookup, drafting "
                                   "up to DRAFT tokens a step (Request::draft_tokens); the outputs must match");
  std::string draft_model_path;
  float draft_p_min = 0;
  std::size_t draft_ngram_min = tinyllm::Request{}.draft_ngram_min;
  app.add_option("--draft-ngram-min", draft_ngram_min, "with --draft (prompt lookup): only suffixes of at least this many "
                                                       "tokens are looked up (Request::draft_ngram_min)")->capture_default_str();
  app.add_option("--draft-model", draft_model_path, "with --draft: this model (same vocabulary) drafts instead of prompt lookup");
  app.add_option("--draft-p-min", draft_p_min, "with --draft-model: a draft stops at a token the draft model gives less "
                                               "than this probability")->capture_default_str();
  app.add_option("--samples", samples, "also measure the KV blocks of one request with n = SAMPLES (shared prompt) "
                                       "against n = 1")->capture_default_str();
  std::vector<std::string> loras;
  app.add_option("--lora", loras, "LoRA adapters (GGUF): stream s uses adapter s mod their number, after a run without");
  programs::DeviceFlag device;
  device.add(app);
  CLI11_PARSE(app, argc, argv);
  using Clock = std::chrono::steady_clock;
  try {
    tinyllm::LoadedModel lm = model_path.empty() ? device.load_synthetic() : device.load(model_path);
    tinyllm::ThreadPool pool(threads);
    std::optional<tinyllm::LoadedModel> draft_model;
    if (!draft_model_path.empty()) draft_model.emplace(tinyllm::load(draft_model_path));
    const tinyllm::KVType kv = tinyllm::kv_type_from_name(kv_type);
    const std::size_t max_c = *std::max_element(concurrency.begin(), concurrency.end());
    const std::vector<std::int32_t> text_prompt = prompt_text.empty() ? std::vector<std::int32_t>{}
                                                                      : lm.tokenizer().encode(prompt_text, true);
    if (!text_prompt.empty()) n_prompt = text_prompt.size();
    const std::size_t per_stream = n_prompt + n_gen;
    tinyllm::SplitMix64 rng(7);
    std::string rows;
    std::vector<tinyllm::AdapterRef> adapters;
    for (const auto& f : loras) adapters.push_back({tinyllm::LoraAdapter::load(f, lm.config()), 1.0f});
    if (!json) std::printf("| streams | adapters | JSON | draft (kept) | prompt t/s | generation t/s | TTFT p50 ms | TTFT p90 ms | token latency p50 ms | p90 ms | p99 ms |\n"
                           "| ---: | ---: | :---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    const auto any_object = tinyllm::JsonSchemaGrammar::any_object();
    std::vector<bool> constrained = {false};
    if (json_object) constrained.push_back(true);
    std::vector<std::size_t> adapter_counts = {0};   // then with all of them, when given
    if (!adapters.empty()) adapter_counts.push_back(adapters.size());
    std::vector<std::size_t> drafts = {0};
    if (draft > 0) drafts.push_back(draft);
    bool all_same = true;
    for (std::size_t c : concurrency)
    for (const std::size_t n_adapters : adapter_counts)
    for (const bool grammar : constrained) {
    std::vector<std::vector<std::int32_t>> plain_output;   // each stream's tokens without drafts
    const std::uint64_t prompt_seed = rng.next();
    for (const std::size_t n_draft : drafts) {
      tinyllm::SplitMix64 prompt_rng(prompt_seed);   // the same prompts with and without drafts
      const std::size_t bs = 16;
      tinyllm::Engine engine(lm, pool, {.max_batch_tokens = 512, .max_sequences = max_c, .block_size = bs,
                                        .kv_blocks = max_c * ((per_stream + bs - 1) / bs + 1), .kv_type = kv,
                                        .prefix_caching = false,
                                        .draft_model = n_draft > 0 && draft_model ? &*draft_model : nullptr,
                                        .draft_p_min = draft_p_min});
      std::vector<double> ttft, gaps;
      std::vector<Clock::time_point> last(c);
      std::vector<std::size_t> produced(c, 0);
      std::vector<std::vector<std::int32_t>> output(c);
      Clock::time_point all_first;
      std::size_t with_first = 0;
      const auto t0 = Clock::now();
      // Stream s asks for n_gen tokens. A constrained stream whose JSON closes early goes on with
      // a new request (a one-token prompt) for the tokens it has left, as on a busy server, so
      // that every run decodes full batches and the runs compare like with like.
      std::function<void(std::size_t, std::vector<std::int32_t>)> start = [&](std::size_t s, std::vector<std::int32_t> prompt) {
        tinyllm::Request r{.tokens = std::move(prompt), .max_tokens = n_gen - produced[s], .sampling = {.temperature = 0.0f},
                           .stop_at_eos = false, .draft_tokens = n_draft,
                           .draft_ngram = std::max(tinyllm::Request{}.draft_ngram, draft_ngram_min), .draft_ngram_min = draft_ngram_min};
        if (n_adapters > 0) r.adapters = {adapters[s % n_adapters]};
        if (grammar) r.grammar = any_object;
        engine.submit(r, [&, s](const tinyllm::TokenEvent& e) {
          const auto now = Clock::now();
          if (e.token >= 0) {
            ++produced[s];
            output[s].push_back(e.token);
            if (last[s] == Clock::time_point{}) {
              ttft.push_back(std::chrono::duration<double>(now - t0).count());
              if (++with_first == c) all_first = now;
            } else {
              gaps.push_back(std::chrono::duration<double>(now - last[s]).count());
            }
            last[s] = now;
          }
          if (grammar && e.finished && produced[s] < n_gen) start(s, {3});
        });
      };
      for (std::size_t s = 0; s < c; ++s) {
        std::vector<std::int32_t> prompt = text_prompt;
        if (prompt.empty()) {
          prompt.resize(n_prompt);
          for (auto& id : prompt) id = std::int32_t(3 + prompt_rng.next() % (lm.config().vocab_size - 3));
        }
        start(s, std::move(prompt));
      }
      engine.run_until_idle();
      const tinyllm::EngineMetrics em = engine.metrics();
      if (n_draft == 0) plain_output = output;
      else all_same = all_same && output == plain_output;
      char kept[64] = "-";
      if (n_draft > 0) std::snprintf(kept, sizeof kept, "%zu (%.0f %%)", n_draft, 100 * em.draft_acceptance());
      const auto t1 = Clock::now();
      const double t_pp = std::chrono::duration<double>(all_first - t0).count();
      const double t_tg = std::chrono::duration<double>(t1 - all_first).count();
      // Tokens after each stream's first, counted (a constrained stream may end early).
      const double pp = double(c * n_prompt) / t_pp, tg = double(gaps.size()) / t_tg;
      if (json) {
        char buf[512];
        std::snprintf(buf, sizeof buf,
                      "%s{\"streams\": %zu, \"adapters\": %zu, \"json_object\": %s, \"draft\": %zu, \"draft_acceptance\": %.3f, \"prompt_tps\": %.2f, \"generation_tps\": %.2f, \"ttft_p50_ms\": %.1f, "
                      "\"ttft_p90_ms\": %.1f, \"token_latency_p50_ms\": %.2f, \"token_latency_p90_ms\": %.2f, \"token_latency_p99_ms\": %.2f}",
                      rows.empty() ? "" : ", ", c, n_adapters, grammar ? "true" : "false", n_draft, em.draft_acceptance(), pp, tg, 1e3 * percentile(ttft, 0.5), 1e3 * percentile(ttft, 0.9),
                      1e3 * percentile(gaps, 0.5), 1e3 * percentile(gaps, 0.9), 1e3 * percentile(gaps, 0.99));
        rows += buf;
      } else {
        std::printf("| %zu | %zu | %s | %s | %.2f | %.2f | %.1f | %.1f | %.2f | %.2f | %.2f |\n", c, n_adapters, grammar ? "yes" : "no", kept, pp, tg,
                    1e3 * percentile(ttft, 0.5),
                    1e3 * percentile(ttft, 0.9), 1e3 * percentile(gaps, 0.5), 1e3 * percentile(gaps, 0.9),
                    1e3 * percentile(gaps, 0.99));
        std::fflush(stdout);
      }
    }
    }
    if (draft > 0 && !json) std::printf("\noutput with drafts %s the output without\n", all_same ? "equals" : "DIFFERS FROM");
    std::string sharing;
    if (samples > 1) {
      // The most blocks a request with n samples holds at once (EOS ignored, so every sample runs
      // to -n tokens).
      const std::size_t bs = 16;
      auto peak_blocks = [&](std::size_t n) {
        tinyllm::Engine engine(lm, pool, {.max_batch_tokens = 512, .max_sequences = n, .block_size = bs,
                                          .kv_blocks = n * ((per_stream + bs - 1) / bs + 1), .kv_type = kv,
                                          .prefix_caching = false});
        std::vector<std::int32_t> prompt(n_prompt);
        for (auto& id : prompt) id = std::int32_t(3 + rng.next() % (lm.config().vocab_size - 3));
        tinyllm::Request r{.tokens = prompt, .max_tokens = n_gen, .sampling = {.temperature = 0.8f, .seed = 1},
                           .stop_at_eos = false};
        r.n = n;
        engine.submit(r, [](const tinyllm::TokenEvent&) {});
        std::size_t peak = 0;
        while (engine.step()) peak = std::max(peak, engine.metrics().blocks_used);
        return peak;
      };
      const std::size_t one = peak_blocks(1), many = peak_blocks(samples);
      const std::size_t need = one + (samples - 1) * ((n_gen + bs - 1) / bs);   // one sample + the others' tokens
      const std::size_t unshared = samples * one;
      const double ratio = double(many) / double(need);
      char buf[512];
      if (json)
        std::snprintf(buf, sizeof buf, "\"sharing\": {\"samples\": %zu, \"blocks_n1\": %zu, \"blocks\": %zu, "
                      "\"one_plus_generated\": %zu, \"ratio\": %.3f, \"unshared\": %zu}, ", samples, one, many, need, ratio, unshared);
      else
        std::snprintf(buf, sizeof buf, "\nn = %zu samples of %zu prompt tokens, %zu generated each: n = 1 holds %zu KV blocks "
                      "at most, n = %zu %zu: %.3fx one sample plus the others' generated tokens (%zu blocks); unshared: %zu\n",
                      samples, n_prompt, n_gen, one, samples, many, ratio, need, unshared);
      sharing = buf;
    }
    if (json) std::printf("{\"model\": \"%s\", \"n_prompt\": %zu, \"n_gen\": %zu, \"threads\": %u, \"kv_type\": \"%s\", %s\"draft_output_same\": %s, \"results\": [%s]}\n",
                          model_path.empty() ? "embedded" : model_path.c_str(), n_prompt, n_gen, pool.size(),
                          kv_type.c_str(), sharing.c_str(), all_same ? "true" : "false", rows.c_str());
    else std::fputs(sharing.c_str(), stdout);
    if (!all_same) {
      std::fprintf(stderr, "tinyllm-serve-bench: the output with drafts differs from the output without\n");
      return 2;
    }
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}

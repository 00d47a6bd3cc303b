// tinyllm-serve-bench: aggregate throughput of the continuous-batching engine for several
// numbers of concurrent streams, each a random prompt of -p tokens and -n generated tokens
// (EOS ignored), like llama.cpp's llama-batched-bench.
//   tinyllm-serve-bench -m model.gguf -c 1,4,8,16 -p 128 -n 128 -t 2 [--kv-type f32] [--json] [--lora A.gguf ...]
// With --lora (repeatable) each concurrency runs twice: without adapters, then stream s with
// adapter s mod (number of adapters), all in the same batches.
// Prompt t/s: all prompt tokens / time until every stream has its first token. Generation t/s:
// the remaining generated tokens / the rest of the time.
#include <tinyllm/tinyllm.hpp>

#include "../examples/common/device_flag.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
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
  app.add_option("--kv-type", kv_type, "K/V storage: f16 or f32")
      ->check(CLI::IsMember({"f32", "f16"}))->capture_default_str();
  app.add_flag("--json", json, "print one JSON object instead of a table");
  std::vector<std::string> loras;
  app.add_option("--lora", loras, "LoRA adapters (GGUF): stream s uses adapter s mod their number, after a run without");
  programs::DeviceFlag device;
  device.add(app);
  CLI11_PARSE(app, argc, argv);
  using Clock = std::chrono::steady_clock;
  try {
    tinyllm::LoadedModel lm = model_path.empty() ? device.load_synthetic() : device.load(model_path);
    tinyllm::ThreadPool pool(threads);
    const tinyllm::KVType kv = kv_type == "f16" ? tinyllm::KVType::f16 : tinyllm::KVType::f32;
    const std::size_t max_c = *std::max_element(concurrency.begin(), concurrency.end());
    const std::size_t per_stream = n_prompt + n_gen;
    tinyllm::SplitMix64 rng(7);
    std::string rows;
    std::vector<tinyllm::AdapterRef> adapters;
    for (const auto& f : loras) adapters.push_back({tinyllm::LoraAdapter::load(f, lm.config()), 1.0f});
    if (!json) std::printf("| streams | adapters | prompt t/s | generation t/s | TTFT p50 ms | TTFT p90 ms | token latency p50 ms | p90 ms | p99 ms |\n"
                           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    std::vector<std::size_t> adapter_counts = {0};   // then with all of them, when given
    if (!adapters.empty()) adapter_counts.push_back(adapters.size());
    for (std::size_t c : concurrency)
    for (const std::size_t n_adapters : adapter_counts) {
      const std::size_t bs = 16;
      tinyllm::Engine engine(lm, pool, {.max_batch_tokens = 512, .max_sequences = max_c, .block_size = bs,
                                        .kv_blocks = max_c * ((per_stream + bs - 1) / bs + 1), .kv_type = kv,
                                        .prefix_caching = false});
      std::vector<double> ttft, gaps;
      std::vector<Clock::time_point> last(c);
      Clock::time_point all_first;
      std::size_t with_first = 0;
      const auto t0 = Clock::now();
      for (std::size_t s = 0; s < c; ++s) {
        std::vector<std::int32_t> prompt(n_prompt);
        for (auto& id : prompt) id = std::int32_t(3 + rng.next() % (lm.config().vocab_size - 3));
        tinyllm::Request r{.tokens = prompt, .max_tokens = n_gen, .sampling = {.temperature = 0.0f}, .stop_at_eos = false};
        if (n_adapters > 0) r.adapters = {adapters[s % n_adapters]};
        engine.submit(r, [&, s](const tinyllm::TokenEvent& e) {
          const auto now = Clock::now();
          if (e.token < 0) return;
          if (last[s] == Clock::time_point{}) {
            ttft.push_back(std::chrono::duration<double>(now - t0).count());
            if (++with_first == c) all_first = now;
          } else {
            gaps.push_back(std::chrono::duration<double>(now - last[s]).count());
          }
          last[s] = now;
        });
      }
      engine.run_until_idle();
      const auto t1 = Clock::now();
      const double t_pp = std::chrono::duration<double>(all_first - t0).count();
      const double t_tg = std::chrono::duration<double>(t1 - all_first).count();
      const double pp = double(c * n_prompt) / t_pp, tg = double(c * (n_gen - 1)) / t_tg;
      if (json) {
        char buf[512];
        std::snprintf(buf, sizeof buf,
                      "%s{\"streams\": %zu, \"adapters\": %zu, \"prompt_tps\": %.2f, \"generation_tps\": %.2f, \"ttft_p50_ms\": %.1f, "
                      "\"ttft_p90_ms\": %.1f, \"token_latency_p50_ms\": %.2f, \"token_latency_p90_ms\": %.2f, \"token_latency_p99_ms\": %.2f}",
                      rows.empty() ? "" : ", ", c, n_adapters, pp, tg, 1e3 * percentile(ttft, 0.5), 1e3 * percentile(ttft, 0.9),
                      1e3 * percentile(gaps, 0.5), 1e3 * percentile(gaps, 0.9), 1e3 * percentile(gaps, 0.99));
        rows += buf;
      } else {
        std::printf("| %zu | %zu | %.2f | %.2f | %.1f | %.1f | %.2f | %.2f | %.2f |\n", c, n_adapters, pp, tg, 1e3 * percentile(ttft, 0.5),
                    1e3 * percentile(ttft, 0.9), 1e3 * percentile(gaps, 0.5), 1e3 * percentile(gaps, 0.9),
                    1e3 * percentile(gaps, 0.99));
        std::fflush(stdout);
      }
    }
    if (json) std::printf("{\"model\": \"%s\", \"n_prompt\": %zu, \"n_gen\": %zu, \"threads\": %u, \"kv_type\": \"%s\", \"results\": [%s]}\n",
                          model_path.empty() ? "embedded" : model_path.c_str(), n_prompt, n_gen, pool.size(),
                          kv_type.c_str(), rows.c_str());
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}

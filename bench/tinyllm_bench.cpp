// tinyllm-bench: whole-model prompt processing (pp) and text generation (tg) speed, printed as a
// llama-bench-style markdown table so the same GGUF file can be measured side by side.
//   tinyllm-bench -m model.gguf -p 512 -n 128 -t 1,2 -r 3
// ppN: N tokens fed as one batch into an empty cache. tgN: N tokens fed one at a time (each a
// full decode step), from an empty cache. Random token ids; each test runs once to warm up.
#include <tinyllm/tinyllm.hpp>

#include "../examples/common/device_flag.hpp"
#include "../examples/common/progress.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <sys/resource.h>

namespace {

struct Result { double mean, sd; };

// The bar (on a terminal only) counts the runs, the warm-up included.
Result measure(int reps, const std::function<void()>& run, std::size_t n_tokens, const std::string& what) {
  programs::ProgressBar bar(what);
  const std::size_t runs = std::size_t(reps) + 1;
  bar.update(0, runs);
  run();   // warm-up: page in the weights, size the workspace
  bar.update(1, runs);
  std::vector<double> tps;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    tps.push_back(double(n_tokens) / s);
    bar.update(std::size_t(r) + 2, runs);
  }
  bar.clear();   // before the table's row goes to stdout
  double mean = 0, var = 0;
  for (double v : tps) mean += v / tps.size();
  for (double v : tps) var += (v - mean) * (v - mean) / std::max<std::size_t>(1, tps.size() - 1);
  return {mean, std::sqrt(var)};
}

std::string weight_type(const tinyllm::Model& m) {
  const auto& l = m.weights().layers;
  return l.empty() ? "?" : std::string(tinyllm::name(l[0].wq.type));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-bench: prompt and generation tokens/s"};
  std::vector<std::string> models;
  std::vector<std::size_t> pp = {512}, tg = {128};
  std::vector<unsigned> threads = {2};
  int reps = 3;
  app.add_option("-m,--model", models, "model files; none = the embedded random model");
  app.add_option("-p,--n-prompt", pp, "prompt lengths (comma separated; 0 = skip)")->delimiter(',')->capture_default_str();
  app.add_option("-n,--n-gen", tg, "generation lengths (comma separated; 0 = skip)")->delimiter(',')->capture_default_str();
  app.add_option("-t,--threads", threads, "thread counts (comma separated)")->delimiter(',')->capture_default_str();
  app.add_option("-r,--repetitions", reps, "timed repetitions per test")->capture_default_str()->check(CLI::Range(1, 1000));
  std::vector<std::string> targets;
  app.add_option("--target", targets,
                 "kernel targets to measure side by side, e.g. AVX3_DL,AVX2 (comma separated; default: this CPU's best)")
      ->delimiter(',');
  std::vector<std::string> loras;
  app.add_option("--lora", loras, "LoRA adapters (GGUF, scale 1): every test runs without them, then with them all");
  programs::DeviceFlag device;
  device.add(app);
  CLI11_PARSE(app, argc, argv);
  if (models.empty()) models.push_back("");
  if (targets.empty()) targets.push_back("");

  try {
    for (const auto& target : targets) tinyllm::cpu::use_kernel_target(target);  // each exists, or an Error now
    std::printf("| model | size | params | backend | threads | test | t/s |\n");
    std::printf("| --- | ---: | ---: | --- | ---: | ---: | ---: |\n");
    for (const auto& path : models) {
      tinyllm::LoadOptions opt;
      opt.max_batch = *std::max_element(pp.begin(), pp.end());
      programs::show_load_progress(opt, path.empty() ? "the embedded model" : path);
      tinyllm::LoadedModel lm = path.empty() ? device.load_synthetic(opt) : device.load(path, opt);
      tinyllm::Model& model = lm.model();
      const auto& cfg = model.config();
      std::vector<tinyllm::AdapterRef> adapters;
      for (const auto& f : loras) adapters.push_back({tinyllm::LoraAdapter::load(f, cfg), 1.0f});
      char label[128], size[32], params[32];
      std::snprintf(label, sizeof label, "%s %.2fB %s", cfg.arch.c_str(), model.n_params() / 1e9, weight_type(model).c_str());
      std::snprintf(size, sizeof size, "%.2f MiB", model.weight_bytes() / 1048576.0);
      std::snprintf(params, sizeof params, "%.2f M", model.n_params() / 1e6);
      tinyllm::SplitMix64 rng(1234);
      auto random_tokens = [&](std::size_t n) {
        std::vector<std::int32_t> ids(n);
        for (auto& id : ids) id = std::int32_t(rng.next() % cfg.vocab_size);
        return ids;
      };
      std::vector<float> logits(cfg.vocab_size);
      tinyllm::MatrixView<float> last(logits.data(), 1, cfg.vocab_size);
      // Times `run` (n tokens) on each kernel target in turn, a table row each.
      auto on_each_target = [&](tinyllm::ThreadPool& pool, const std::string& test, std::size_t n,
                                const std::function<void()>& run) {
        for (const auto& target : targets)
          for (const bool with_lora : {false, true}) {
            if (with_lora && adapters.empty()) continue;
            model.set_adapters(with_lora ? adapters : std::vector<tinyllm::AdapterRef>{});
            tinyllm::cpu::use_kernel_target(target);
            const Result r = measure(reps, run, n, test + ", " + std::to_string(pool.size()) + " threads");
            const std::string backend = (device.device == "cpu" ? std::string("CPU ") + tinyllm::cpu::kernel_target()
                                                                 : device.describe()) +
                                        (with_lora ? " +" + std::to_string(adapters.size()) + " LoRA" : "");
            std::printf("| %s | %s | %s | %s | %u | %s | %.2f ± %.2f |\n", label, size, params, backend.c_str(),
                        pool.size(), test.c_str(), r.mean, r.sd);
            std::fflush(stdout);
          }
        model.set_adapters({});
      };
      for (unsigned t : threads) {
        tinyllm::ThreadPool pool(t);
        for (std::size_t n : pp) {
          if (n == 0) continue;
          if (n > cfg.context) throw tinyllm::Error("-p " + std::to_string(n) + " exceeds the model's context", path, "<= " + std::to_string(cfg.context));
          auto cache = model.new_kv_cache(n);
          const auto ids = random_tokens(n);
          std::vector<std::int32_t> pos(n);
          for (std::size_t i = 0; i < n; ++i) pos[i] = std::int32_t(i);
          on_each_target(pool, "pp" + std::to_string(n), n, [&] { model.forward(pool, ids, pos, *cache, last); });
        }
        for (std::size_t n : tg) {
          if (n == 0) continue;
          if (n > cfg.context) throw tinyllm::Error("-n " + std::to_string(n) + " exceeds the model's context", path, "<= " + std::to_string(cfg.context));
          auto cache = model.new_kv_cache(n);
          const auto ids = random_tokens(n);
          on_each_target(pool, "tg" + std::to_string(n), n, [&] {
            for (std::size_t i = 0; i < n; ++i) {
              const std::int32_t p = std::int32_t(i);
              model.forward(pool, std::span(&ids[i], 1), std::span(&p, 1), *cache, last);
            }
          });
        }
      }
    }
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("\npeak resident memory: %.1f MiB\n", ru.ru_maxrss / 1024.0);
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}

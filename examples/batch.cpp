// tinyllm-batch: one completion per line of a prompts file, through the continuous-batching
// engine; prints one JSON object per line, {"index": i, "text": completion}, as each finishes.
//   tinyllm-batch -m model.gguf -f prompts.txt -n 64 --temp 0.8 --parallel 8
#include <tinyllm/tinyllm.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"tinyllm-batch: complete every line of a file with continuous batching"};
  std::string model_path, tokenizer_path, prompts_path;
  std::size_t n_new = 64, parallel = 8, kv_mib = 256;
  unsigned threads = 0;
  tinyllm::SamplingParams sp;
  std::string kv_type = "f16";  // as llama.cpp's default cache type
  app.add_option("-m,--model", model_path, "model file (.gguf or llama2.c .bin); default: the embedded random model");
  app.add_option("-z,--tokenizer", tokenizer_path, "llama2.c tokenizer .bin");
  app.add_option("-f,--file", prompts_path, "prompts, one per line")->required();
  app.add_option("-n,--n-predict", n_new, "tokens to generate per prompt at most")->capture_default_str();
  app.add_option("--temp", sp.temperature, "temperature; 0 = greedy")->capture_default_str();
  app.add_option("--seed", sp.seed, "random seed (request i uses seed + i)")->capture_default_str();
  app.add_option("--parallel", parallel, "sequences decoded together at most")->capture_default_str();
  app.add_option("--kv-mib", kv_mib, "KV cache budget in MiB")->capture_default_str();
  app.add_option("--kv-type", kv_type, "K/V storage: f16 (twice the blocks of f32 in the budget), q8_0 (1.88x f16's) or f32")
      ->check(CLI::IsMember({"f32", "f16", "q8_0"}))->capture_default_str();
  app.add_option("-t,--threads", threads, "threads; 0 = all cores");
  CLI11_PARSE(app, argc, argv);
  try {
    tinyllm::LoadOptions opt{.tokenizer_path = tokenizer_path};
    tinyllm::LoadedModel lm = model_path.empty() ? tinyllm::load_synthetic("tiny", tinyllm::DType::F32, 42, opt)
                                                 : tinyllm::load(model_path, opt);
    std::ifstream in(prompts_path);
    if (!in) throw tinyllm::Error("cannot read the prompts file", prompts_path);
    std::vector<std::string> prompts;
    for (std::string line; std::getline(in, line);) prompts.push_back(line);

    tinyllm::ThreadPool pool(threads);
    const tinyllm::KVType kv = tinyllm::kv_type_from_name(kv_type);
    tinyllm::Engine engine(lm, pool, {.max_sequences = parallel, .kv_bytes = kv_mib << 20, .kv_type = kv});
    std::vector<std::string> texts(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      tinyllm::Request r{.prompt = prompts[i], .max_tokens = n_new, .sampling = sp};
      r.sampling.seed = sp.seed + i;
      engine.submit(r, [&, i](const tinyllm::TokenEvent& e) {
        texts[i] += e.text;
        if (e.finished) {
          std::printf("%s\n", nlohmann::json{{"index", i}, {"text", texts[i]}}.dump(-1, ' ', false,
                                                                                      nlohmann::json::error_handler_t::replace).c_str());
          std::fflush(stdout);
        }
      });
    }
    engine.run_until_idle();
  } catch (const tinyllm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}

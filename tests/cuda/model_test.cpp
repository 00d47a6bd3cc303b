// Whole models on the CUDA backend (load<CudaBackend>): every ../shared/testdata/arch file
// against llama.cpp's logits with the CPU's tolerances, stories260K's greedy text against
// llama2.c's, and the engine (paged KV blocks in device memory) batched against solo runs. Each
// case skips without a usable device.
#include <tinyllm/kernels/cuda/backend.hpp>
#include <tinyllm/serve/engine.hpp>
#include <tinyllm/tinyllm.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

#define TINYLLM_REQUIRE_CUDA()                                                            \
  do {                                                                                    \
    std::string why_;                                                                     \
    if (cuda::usable_devices(&why_) == 0) {                                               \
      MESSAGE("TINYLLM_SKIP: no usable CUDA device (" << why_ << ")");                    \
      return;                                                                             \
    }                                                                                     \
  } while (0)

// As tests/model/arch_test.cpp, on the GPU.
void check_against_llama_cpp(const std::string& model, const std::string& ref, float tol) {
  LoadedModel lm = load<CudaBackend>(test::testdata("arch/" + model + ".gguf").string());
  ThreadPool pool(1);
  const auto d = test::against_llama_cpp(lm.model(), ref, pool);
  CHECK(d.prompt <= tol);
  CHECK(d.decode <= tol);
}

}  // namespace

TEST_CASE("cuda model: every architecture file matches llama.cpp within the CPU's tolerances") {
  TINYLLM_REQUIRE_CUDA();
  // Tolerances of tests/model/arch_test.cpp: the Gemma family's GELU is an fp16 table in ggml.
  const std::pair<const char*, float> files[] = {{"llama", 1e-3f}, {"llama3rope", 1e-3f}, {"qwen2", 1e-3f},
                                                 {"qwen3", 1e-3f}, {"gemma", 2e-3f},      {"gemma2", 2e-3f},
                                                 {"gemma3", 2e-3f}};
  int checked = 0;
  for (const auto& [name, tol] : files) {
    // A GPU machine may hold only part of the data (bench/cuda/stage_testdata.sh): each file
    // present is checked, each absent one named.
    if (!std::filesystem::exists(test::testdata(std::string("arch/") + name + ".gguf"))) {
      MESSAGE("absent, not checked: arch/" << name << ".gguf");
      continue;
    }
    CAPTURE(name);
    check_against_llama_cpp(name, name, tol);
    ++checked;
  }
  if (checked == 0) MESSAGE("TINYLLM_SKIP: no architecture file in " << test::testdata_dir().string());
}

TEST_CASE("cuda model: quantized llama files (Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K) match llama.cpp within 0.05") {
  TINYLLM_REQUIRE_CUDA();
  for (const std::string type : {"Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"}) {
    TINYLLM_REQUIRE_TESTDATA("arch/llama-" + type + ".gguf");
    CAPTURE(type);
    check_against_llama_cpp("llama-" + type, "llama-" + type + ".norepack", 0.05f);
  }
}

TEST_CASE("cuda model: stories260K greedy -n 200 reproduces llama2.c's text byte for byte") {
  TINYLLM_REQUIRE_CUDA();
  TINYLLM_REQUIRE_TESTDATA("reference/Once_upon_a_time_n200.txt");
  LoadOptions opt;
  opt.tokenizer_path = test::testdata("llama2c/tok512.bin").string();
  LoadedModel lm = load<CudaBackend>(test::testdata("llama2c/stories260K.bin").string(), opt);
  ThreadPool pool(1);
  const std::string text = test::stories_greedy_text(lm, pool);
  const auto want_bytes = test::read_bytes(test::testdata("reference/Once_upon_a_time_n200.txt"));
  CHECK(text == std::string(want_bytes.begin(), want_bytes.end()));
}

// Steps of at most 32 tokens keep every matmul on the matvec kernels, whose result for a token
// does not depend on the other tokens of the batch (the GEMM path rounds activations to F16,
// the matvec to 8 bits: a batch that crossed between them could flip a near-tie).
TEST_CASE("cuda engine: N greedy requests together give the tokens each gives alone (stories260K)") {
  TINYLLM_REQUIRE_CUDA();
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadOptions o{.tokenizer_path = test::testdata("llama2c/tok512.bin").string()};
  LoadedModel lm = load<CudaBackend>(test::testdata("llama2c/stories260K.bin").string(), o);
  REQUIRE(lm.model().memory() != nullptr);
  ThreadPool pool(1);
  SplitMix64 rng(5);
  const std::size_t n_requests = 24, vocab = lm.config().vocab_size;
  Engine engine(lm, pool, {.max_batch_tokens = 32, .max_sequences = 32, .block_size = 16, .kv_blocks = 256});
  std::vector<std::vector<std::int32_t>> prompts(n_requests), got(n_requests);
  std::vector<std::size_t> lengths(n_requests);
  for (std::size_t i = 0; i < n_requests; ++i) {
    prompts[i] = {1};
    while (prompts[i].size() < 1 + rng.next() % 30) prompts[i].push_back(std::int32_t(3 + rng.next() % (vocab - 3)));
    lengths[i] = 1 + rng.next() % 40;
    engine.submit({.tokens = prompts[i], .max_tokens = lengths[i], .sampling = {.temperature = 0.0f}},
                  [&got, i](const TokenEvent& e) {
                    if (e.token >= 0) got[i].push_back(e.token);
                  });
    if (i >= n_requests / 3) engine.step();
  }
  engine.run_until_idle();
  for (std::size_t i = 0; i < n_requests; ++i) {
    CAPTURE(i);
    GenerateOptions g{.max_new_tokens = lengths[i], .sampling = {.temperature = 0.0f},
                      .stop_tokens = {lm.tokenizer().eos()}};
    std::vector<std::int32_t> alone;
    generate(pool, lm.model(), prompts[i], g, [&](std::int32_t id) { alone.push_back(id); return true; });
    CHECK(got[i] == alone);
  }
  CHECK(engine.block_pool().n_used() == 0);
}

TEST_CASE("cuda model: the same logits as the CPU backend on a synthetic Q4_0 model, batched prompt and decode") {
  TINYLLM_REQUIRE_CUDA();
  GGUFWriter w;
  write_synthetic_llama(w, synthetic_shape("small"), weight_mix("Q4_0"), 3);
  const auto bytes = w.to_bytes();
  LoadedModel gpu = load_gguf_bytes<CudaBackend>(bytes, "q4_0");
  LoadedModel cpu = load_gguf_bytes(bytes, "q4_0");
  const std::size_t n = 40, vocab = cpu.config().vocab_size;
  std::vector<std::int32_t> ids(n), pos(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = std::int32_t(3 + (i * 131) % (vocab - 3)), pos[i] = std::int32_t(i);
  ThreadPool pool(2);
  // Both round activations (8 bits on the CPU and in the matvec, F16 in the GEMM): relative to the
  // logits' RMS, as the quantized-file bounds of arch_test.cpp.
  for (const std::size_t batch : {std::size_t(1), std::size_t(5), n}) {
    CAPTURE(batch);
    auto cg = gpu.model().new_kv_cache(n), cc = cpu.model().new_kv_cache(n);
    std::vector<float> lg(n * vocab), lc(n * vocab);
    for (std::size_t first = 0; first < n; first += batch) {
      const std::size_t m = std::min(batch, n - first);
      gpu.model().forward(pool, std::span(ids).subspan(first, m), std::span(pos).subspan(first, m), *cg,
                          MatrixView<float>(lg.data() + first * vocab, m, vocab));
      cpu.model().forward(pool, std::span(ids).subspan(first, m), std::span(pos).subspan(first, m), *cc,
                          MatrixView<float>(lc.data() + first * vocab, m, vocab));
    }
    double rms = 0, worst = 0;
    for (float v : lc) rms += double(v) * v / lc.size();
    rms = std::sqrt(rms);
    for (std::size_t i = 0; i < lc.size(); ++i) worst = std::max(worst, std::fabs(double(lg[i]) - lc[i]) / rms);
    MESSAGE("worst difference to the CPU, relative to the logits' RMS " << rms << ": " << worst);
    CHECK(worst < 0.1);
  }
}

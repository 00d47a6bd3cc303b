// Random-weight models of each architecture against llama.cpp's logits (../shared/testdata/arch):
// the 64 prompt rows as one batch, then the 16 decode rows fed one token at a time with
// llama.cpp's greedy ids (on random weights greedy choices are near-ties, so ours are not used).
#include <tinyllm/tinyllm.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

// NAME.gguf against llama.cpp's references REF.*, on this CPU's best kernels and on AVX2's.
void check_against_llama_cpp(const std::string& model, const std::string& ref, float tol) {
  LoadedModel lm = load(test::testdata("arch/" + model + ".gguf").string());
  ThreadPool pool(2);
  test::on_best_and_avx2([&] {
    const auto d = test::against_llama_cpp(lm.model(), ref, pool);
    CHECK(d.prompt <= tol);
    CHECK(d.decode <= tol);
  });
}

}  // namespace

TEST_CASE("llama (F32) matches llama.cpp within 1e-3") {
  TINYLLM_REQUIRE_TESTDATA("arch/llama.gguf");
  check_against_llama_cpp("llama", "llama", 1e-3f);
}

TEST_CASE("stories260K from GGUF matches its llama2.c file") {
  TINYLLM_REQUIRE_TESTDATA("arch/stories260K.gguf");
  LoadOptions opt;
  LoadedModel g = load(test::testdata("arch/stories260K.gguf").string());
  opt.tokenizer_path = test::testdata("llama2c/tok512.bin").string();
  LoadedModel b = load(test::testdata("llama2c/stories260K.bin").string(), opt);
  const auto ids = g.tokenizer().encode("Once upon a time", true);
  CHECK(ids == b.tokenizer().encode("Once upon a time", true));
  const std::size_t vocab = g.config().vocab_size, n = ids.size();
  std::vector<std::int32_t> pos(n);
  for (std::size_t i = 0; i < n; ++i) pos[i] = std::int32_t(i);
  std::vector<float> lg(n * vocab), lb(n * vocab);
  ThreadPool pool(1);
  auto cg = g.model().new_kv_cache(n), cb = b.model().new_kv_cache(n);
  g.model().forward(pool, ids, pos, *cg, MatrixView<float>(lg.data(), n, vocab));
  b.model().forward(pool, ids, pos, *cb, MatrixView<float>(lb.data(), n, vocab));
  float worst = 0;
  for (std::size_t i = 0; i < lg.size(); ++i) worst = std::max(worst, std::fabs(lg[i] - lb[i]));
  CHECK(worst < 1e-5f);
}

TEST_CASE("Llama 3.1 RoPE scaling (rope_freqs) matches llama.cpp within 1e-3") {
  TINYLLM_REQUIRE_TESTDATA("arch/llama3rope.gguf");
  check_against_llama_cpp("llama3rope", "llama3rope", 1e-3f);
}

TEST_CASE("Qwen2 (Q/K/V biases) matches llama.cpp within 1e-3") {
  TINYLLM_REQUIRE_TESTDATA("arch/qwen2.gguf");
  check_against_llama_cpp("qwen2", "qwen2", 1e-3f);
}

TEST_CASE("Qwen3 (QK-norm) matches llama.cpp within 1e-3") {
  TINYLLM_REQUIRE_TESTDATA("arch/qwen3.gguf");
  check_against_llama_cpp("qwen3", "qwen3", 1e-3f);
}

// The Gemma family: ggml's GELU goes through an fp16 table, so 2e-3 against an exact tanh-GELU.
TEST_CASE("Gemma (GeGLU, scaled embeddings) matches llama.cpp within 2e-3") {
  TINYLLM_REQUIRE_TESTDATA("arch/gemma.gguf");
  check_against_llama_cpp("gemma", "gemma", 2e-3f);
}

TEST_CASE("Gemma 2 (soft-capping, post-norms, alternating sliding window) matches llama.cpp within 2e-3") {
  TINYLLM_REQUIRE_TESTDATA("arch/gemma2.gguf");
  check_against_llama_cpp("gemma2", "gemma2", 2e-3f);
}

TEST_CASE("Gemma 3 (QK-norm, 5 local : 1 global, two RoPE bases) matches llama.cpp within 2e-3") {
  TINYLLM_REQUIRE_TESTDATA("arch/gemma3.gguf");
  check_against_llama_cpp("gemma3", "gemma3", 2e-3f);
}

// llama.gguf quantized by llama-quantize, against llama.cpp's plain (non-repacked) path. Its
// activations are rounded to 8 bits too, but not always to the same values as ours: 0.05.
TEST_CASE("quantized llama files (Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K) match llama.cpp within 0.05") {
  for (const std::string type : {"Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"}) {
    TINYLLM_REQUIRE_TESTDATA("arch/llama-" + type + ".gguf");
    CAPTURE(type);
    check_against_llama_cpp("llama-" + type, "llama-" + type + ".norepack", 0.05f);
  }
}

TEST_CASE("a synthetic model quantized to each type stays close to its F32 original") {
  ThreadPool pool(2);
  const auto& shape = synthetic_shape("small");
  auto logits_of = [&](const std::string& mix) {
    GGUFWriter w;
    write_synthetic_llama(w, shape, weight_mix(mix), 17);
    LoadedModel lm = load_gguf_bytes(w.to_bytes(), mix);
    const std::size_t n = 32, vocab = lm.config().vocab_size;
    std::vector<std::int32_t> ids(n), pos(n);
    for (std::size_t i = 0; i < n; ++i) {
      ids[i] = std::int32_t(3 + (i * 97) % (vocab - 3));
      pos[i] = std::int32_t(i);
    }
    std::vector<float> out(n * vocab);
    auto cache = lm.model().new_kv_cache(n);
    lm.model().forward(pool, ids, pos, *cache, MatrixView<float>(out.data(), n, vocab));
    return out;
  };
  const auto f32 = logits_of("F32");
  double rms = 0;
  for (float v : f32) rms += double(v) * v / f32.size();
  rms = std::sqrt(rms);
  // Relative to the RMS of the F32 logits; bounds are about twice what was measured (mean 0.0005,
  // 0.015, 0.039, 0.069, 0.148, 0.181 in this order): activations are rounded to 8 bits as well.
  const std::pair<std::string, double> bounds[] = {{"F16", 0.001}, {"Q8_0", 0.03}, {"Q6_K", 0.08},
                                                   {"Q5_K_M", 0.14}, {"Q4_K_M", 0.3}, {"Q4_0", 0.36}};
  for (const auto& [mix, bound] : bounds) {
    CAPTURE(mix);
    const auto q = logits_of(mix);
    double mean = 0, worst = 0;
    for (std::size_t i = 0; i < q.size(); ++i) {
      const double e = std::fabs(double(q[i]) - f32[i]) / rms;
      mean += e / q.size();
      worst = std::max(worst, e);
    }
    MESSAGE(mix << ": mean relative error " << mean << ", max " << worst << " (of the F32 logits' RMS " << rms << ")");
    CHECK(mean < bound);
    CHECK(worst < 6 * bound);
  }
}

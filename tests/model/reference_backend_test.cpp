// Whole models on the scalar reference backend (kernels/reference_backend.hpp), an end-to-end
// specification: stories260K against llama2.c's logits, and architecture files of
// ../shared/testdata/arch against llama.cpp's logits and against the CPU backend.
#include <tinyllm/tinyllm.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

LoadedModel load_stories_on_reference() {
  LoadOptions opt;
  opt.tokenizer_path = test::testdata("llama2c/tok512.bin").string();
  return load<ReferenceBackend>(test::testdata("llama2c/stories260K.bin").string(), opt);
}

// The largest |got - want|, after checking the argmax of every row whose top-two gap in `want`
// is above clear_gap.
float worst_difference(const std::vector<float>& got, const std::vector<float>& want, std::size_t vocab,
                       float clear_gap, const std::string& what) {
  REQUIRE(got.size() == want.size());
  for (std::size_t r = 0; r < want.size() / vocab; ++r) {
    const float* g = got.data() + r * vocab;
    const float* w = want.data() + r * vocab;
    if (test::top2_gap(w, vocab) > clear_gap)
      CHECK_MESSAGE(argmax(std::span(g, vocab)) == argmax(std::span(w, vocab)), what << " row " << r);
  }
  const float worst = test::max_abs_diff(got, want);
  MESSAGE(what << ": max abs difference " << worst);
  return worst;
}

// arch_test.cpp's protocol: the ids as one batch (every row), then greedy[s] at position n + s,
// one token at a time; the prompt rows then the decode rows.
std::vector<float> prompt_then_decode(LoadedModel& lm, const std::vector<std::int32_t>& ids,
                                      const std::vector<std::int32_t>& greedy, std::size_t steps) {
  const std::size_t vocab = lm.config().vocab_size, n = ids.size();
  ThreadPool pool(2);
  auto cache = lm.model().new_kv_cache(n + steps);
  std::vector<float> out((n + steps) * vocab);
  lm.model().forward(pool, ids, test::iota(n), *cache, MatrixView<float>(out.data(), n, vocab));
  for (std::size_t s = 0; s < steps; ++s) {
    const std::int32_t p = std::int32_t(n + s);
    lm.model().forward(pool, std::span(&greedy[s], 1), std::span(&p, 1), *cache,
                       MatrixView<float>(out.data() + (n + s) * vocab, 1, vocab));
  }
  return out;
}

bool any_packed(const TransformerWeights& w) {
  bool packed = bool(w.output.packed) || bool(w.token_embd.packed);
  for (const LayerWeights& l : w.layers)
    for (const WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) packed = packed || m->packed;
  return packed;
}

}  // namespace

TEST_CASE("reference backend: stories260K gives llama2.c's logits within 1e-4, batched and one by one") {
  TINYLLM_REQUIRE_TESTDATA("reference/once_upon_a_time_p25.logits.f32");
  LoadedModel lm = load_stories_on_reference();
  const auto ids = test::header_ids(test::testdata("reference/once_upon_a_time_p25.header.txt"), "input_tokens");
  const auto want = test::read_f32(test::testdata("reference/once_upon_a_time_p25.logits.f32"));
  const std::size_t vocab = lm.config().vocab_size, n = ids.size();
  REQUIRE(n == 25);
  const auto pos = test::iota(n);
  ThreadPool pool(2);

  std::vector<float> batch(n * vocab);
  auto cache = lm.model().new_kv_cache();
  lm.model().forward(pool, ids, pos, *cache, MatrixView<float>(batch.data(), n, vocab));
  CHECK(worst_difference(batch, want, vocab, 0.0f, "one batch vs llama2.c") <= 1e-4f);

  std::vector<float> one_by_one(n * vocab);
  cache = lm.model().new_kv_cache();
  for (std::size_t i = 0; i < n; ++i)
    lm.model().forward(pool, std::span(&ids[i], 1), std::span(&pos[i], 1), *cache,
                       MatrixView<float>(one_by_one.data() + i * vocab, 1, vocab));
  CHECK(worst_difference(one_by_one, want, vocab, 0.0f, "one by one vs llama2.c") <= 1e-4f);
}

TEST_CASE("reference backend: two sequences in one step give the logits each gives alone") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  LoadedModel lm = load_stories_on_reference();
  Model& m = lm.model();
  const std::size_t vocab = lm.config().vocab_size;
  const std::vector<std::int32_t> a = {1, 403, 407, 261, 378}, b = {1, 30, 40, 50, 60, 70, 80};
  ThreadPool pool(1);
  auto last_alone = [&](const std::vector<std::int32_t>& ids) {
    std::vector<float> out(vocab);
    auto cache = m.new_kv_cache();
    m.forward(pool, ids, test::iota(ids.size()), *cache, MatrixView<float>(out.data(), 1, vocab));
    return out;
  };
  // a's prompt, then a's last token and b's whole prompt in one step.
  auto ca = m.new_kv_cache(), cb = m.new_kv_cache();
  std::vector<float> ignored(vocab);
  m.forward(pool, std::span(a).first(a.size() - 1), test::iota(a.size() - 1), *ca,
            MatrixView<float>(ignored.data(), 1, vocab));
  std::vector<std::int32_t> tokens = {a.back()}, positions = {std::int32_t(a.size() - 1)};
  tokens.insert(tokens.end(), b.begin(), b.end());
  for (std::int32_t p : test::iota(b.size())) positions.push_back(p);
  const SequenceSlice seqs[] = {{ca.get(), 0, 1, true}, {cb.get(), 1, b.size(), true}};
  std::vector<float> both(2 * vocab);
  m.forward_batch(pool, tokens, positions, seqs, MatrixView<float>(both.data(), 2, vocab));
  CHECK(test::max_abs_diff(std::vector<float>(both.begin(), both.begin() + vocab), last_alone(a)) < 1e-5f);
  CHECK(test::max_abs_diff(std::vector<float>(both.begin() + vocab, both.end()), last_alone(b)) < 1e-5f);
}

// Prompt (64 tokens) and decode (16 steps) rows of each file on both backends, with arch_test's
// tolerances against llama.cpp. F32 files: the two backends differ by float rounding only. The
// reference keeps activations in f32 where the CPU backend (and llama.cpp) round them to 8 bits
// for quantized weights, so on a quantized file the two differ by about what either differs from
// llama.cpp.
TEST_CASE("reference backend: architecture files give llama.cpp's logits and the CPU backend's") {
  struct Case {
    std::string model, ref;
    float vs_llama_cpp, vs_cpu;
  };
  const Case cases[] = {{"llama", "llama", 1e-3f, 1e-5f},
                        {"qwen3", "qwen3", 1e-3f, 1e-5f},
                        {"gemma2", "gemma2", 2e-3f, 1e-5f},
                        {"gemma3", "gemma3", 2e-3f, 1e-5f},
                        {"llama-Q8_0", "llama-Q8_0.norepack", 0.05f, 0.05f},
                        {"llama-Q4_K_M", "llama-Q4_K_M.norepack", 0.05f, 0.05f}};
  for (const Case& c : cases) {
    TINYLLM_REQUIRE_TESTDATA("arch/" + c.model + ".gguf");
    CAPTURE(c.model);
    const auto dir = test::testdata("arch");
    const std::string path = (dir / (c.model + ".gguf")).string();
    LoadedModel on_ref = load<ReferenceBackend>(path), on_cpu = load(path);
    CHECK_FALSE(any_packed(on_ref.model().weights()));   // the reference reads the file's layout

    const auto header = dir / (c.ref + ".header.txt");
    const auto ids = test::header_ids(header, "ids"), greedy = test::header_ids(header, "greedy_ids");
    auto want = test::read_f32(dir / (c.ref + ".logits.f32"));
    const auto decode_want = test::read_f32(dir / (c.ref + ".decode.f32"));
    want.insert(want.end(), decode_want.begin(), decode_want.end());
    const std::size_t vocab = on_ref.config().vocab_size, steps = decode_want.size() / vocab;
    REQUIRE(want.size() == (ids.size() + steps) * vocab);

    const auto ref_logits = prompt_then_decode(on_ref, ids, greedy, steps);
    const auto cpu_logits = prompt_then_decode(on_cpu, ids, greedy, steps);
    CHECK(worst_difference(ref_logits, want, vocab, 1e-2f, c.model + ", reference vs llama.cpp") <= c.vs_llama_cpp);
    CHECK(worst_difference(ref_logits, cpu_logits, vocab, 1e-2f, c.model + ", reference vs CPU") <= c.vs_cpu);
  }
}

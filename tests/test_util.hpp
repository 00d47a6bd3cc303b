#pragma once
// Helpers shared by the tests: where the shared test data lives, and how a test skips without it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <hwy/targets.h>

#include <tinyllm/comm/thread_group.hpp>
#include <tinyllm/kernels/cpu/cpu.hpp>
#include <tinyllm/model/load.hpp>
#include <tinyllm/sample/sampler.hpp>
#include <tinyllm/serve/generate.hpp>

namespace tinyllm::test {

// Runs f() once for every kernel target: under run-time dispatch, for each target the binary
// has and this CPU supports (SSE4, AVX2, AVX3, AVX3_DL on an AVX-512 VNNI machine), forcing the
// dispatch to it; under static dispatch, once. A failure names the target.
template <class F>
void for_each_target(F&& f) {
#if defined(TINYLLM_DYNAMIC_DISPATCH)
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string name = cpu::kernel_target();
    REQUIRE(name == hwy::TargetName(target));
    CAPTURE(name);
    f();
  }
  hwy::SetSupportedTargetsForTest(0);
#else
  const std::string name = cpu::kernel_target();
  CAPTURE(name);
  f();
#endif
}

// Runs f() on this CPU's best kernels, then with AVX2 forced (the path of every x86 CPU without
// AVX-512) where the build and the CPU have it.
template <class F>
void on_best_and_avx2(F&& f) {
  for (const char* target : {"", "AVX2"}) {
    try {
      cpu::use_kernel_target(target);
    } catch (const Error&) {
      MESSAGE("no AVX2 kernels in this build on this CPU: checked on " << cpu::kernel_target() << " only");
      continue;
    }
    const std::string name = cpu::kernel_target();
    CAPTURE(name);
    f();
  }
  cpu::use_kernel_target("");
}

inline std::filesystem::path testdata_dir() {
  if (const char* env = std::getenv("TINYLLM_TESTDATA")) return env;
  return TINYLLM_TESTDATA_DIR;
}

inline std::filesystem::path testdata(const std::string& rel) { return testdata_dir() / rel; }

inline std::vector<char> read_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

inline std::vector<float> read_f32(const std::filesystem::path& p) {
  const auto b = read_bytes(p);
  std::vector<float> v(b.size() / sizeof(float));
  std::memcpy(v.data(), b.data(), v.size() * sizeof(float));
  return v;
}

// The ids after "key:" on the first line of a reference header that starts with it (up to a "#").
inline std::vector<std::int32_t> header_ids(const std::filesystem::path& header, const std::string& key) {
  std::ifstream in(header);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream words(line.substr(key.size() + 1));
    std::vector<std::int32_t> ids;
    for (std::string w; words >> w && w != "#";) ids.push_back(std::stoi(w));
    return ids;
  }
  FAIL("no '" << key << "' line in " << header);
  return {};
}

// The gap between the largest and the second largest of n logits.
inline float top2_gap(const float* row, std::size_t n) {
  float a = -INFINITY, b = -INFINITY;
  for (std::size_t i = 0; i < n; ++i) {
    if (row[i] > a) { b = a; a = row[i]; } else if (row[i] > b) { b = row[i]; }
  }
  return a - b;
}

// Positions from, from + 1, ..., from + n - 1.
inline std::vector<std::int32_t> iota(std::size_t n, std::int32_t from = 0) {
  std::vector<std::int32_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = from + std::int32_t(i);
  return v;
}

// The largest |a[i] - b[i]|.
inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// The DType of each quantized block type, for tests templated on the block.
template <class Block> constexpr DType kBlockDType = DType::F32;
template <> constexpr DType kBlockDType<BlockQ8_0> = DType::Q8_0;
template <> constexpr DType kBlockDType<BlockQ4_0> = DType::Q4_0;
template <> constexpr DType kBlockDType<BlockQ4_K> = DType::Q4_K;
template <> constexpr DType kBlockDType<BlockQ5_K> = DType::Q5_K;
template <> constexpr DType kBlockDType<BlockQ6_K> = DType::Q6_K;

// A sane f16 block scale of either sign (kernels must not assume one).
inline std::uint16_t random_scale(std::mt19937& rng) {
  std::uniform_real_distribution<float> u(1e-3f, 2e-2f);
  return f32_to_f16(rng() % 2 ? u(rng) : -u(rng));
}

// f(rank's communicator) on one thread per rank of a ThreadGroup (tensor parallelism); the
// results in rank order. A rank's exception fails the test after every thread has ended.
template <class F>
auto on_ranks(std::size_t n, F f) {
  ThreadGroup group(n);
  std::vector<decltype(f(group.rank(0)))> out(n);
  std::vector<std::string> errors(n);
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        out[r] = f(group.rank(r));
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (std::size_t r = 0; r < n; ++r) CHECK_MESSAGE(errors[r].empty(), "rank " << r << ": " << errors[r]);
  return out;
}

struct LlamaCppDifference {
  float prompt = 0, decode = 0;
};
// The logits `model` gives for the inputs of llama.cpp's reference REF (arch/REF.header.txt):
// its 64 prompt ids as one batch, then its greedy ids one at a time. No doctest assertions, so
// that threads may call it.
struct ReferenceRun {
  std::vector<float> prompt, decode;   // [64, vocab], [steps, vocab]
};
inline ReferenceRun run_reference_inputs(Model& model, const std::string& ref, ThreadPool& pool) {
  const auto header = testdata("arch") / (ref + ".header.txt");
  const auto ids = header_ids(header, "ids");
  const auto greedy = header_ids(header, "greedy_ids");
  const std::size_t vocab = model.config().vocab_size, n = ids.size();
  const std::size_t steps = std::filesystem::file_size(testdata("arch") / (ref + ".decode.f32")) / sizeof(float) / vocab;
  if (greedy.size() < steps) throw std::runtime_error(ref + ": fewer greedy ids than decode rows");
  auto cache = model.new_kv_cache(n + steps);
  const auto pos = iota(n);
  ReferenceRun r{std::vector<float>(n * vocab), std::vector<float>(steps * vocab)};
  model.forward(pool, ids, pos, *cache, MatrixView<float>(r.prompt.data(), n, vocab));
  for (std::size_t s = 0; s < steps; ++s) {
    const std::int32_t p = std::int32_t(n + s);
    model.forward(pool, std::span(&greedy[s], 1), std::span(&p, 1), *cache,
                  MatrixView<float>(r.decode.data() + s * vocab, 1, vocab));
  }
  return r;
}
// A model against one of ../shared/testdata/arch's llama.cpp references (REF.header.txt, its
// .logits.f32 and .decode.f32): the prompt ids as one batch, then the greedy ids one at a time;
// the argmax of each row checked where the reference's top two are clearly apart. The largest
// |logit difference| of the prompt rows and of the decode rows.
inline LlamaCppDifference against_llama_cpp(Model& model, const std::string& ref, ThreadPool& pool) {
  const auto dir = testdata("arch");
  const auto prompt_want = read_f32(dir / (ref + ".logits.f32"));
  const auto decode_want = read_f32(dir / (ref + ".decode.f32"));
  const std::size_t vocab = model.config().vocab_size;
  const auto [prompt, decode] = run_reference_inputs(model, ref, pool);
  REQUIRE(prompt_want.size() == prompt.size());
  REQUIRE(decode_want.size() == decode.size());
  auto argmax_where_clear = [&](const std::vector<float>& got, const std::vector<float>& want, const char* what) {
    for (std::size_t r = 0; r < want.size() / vocab; ++r) {
      const float* w = want.data() + r * vocab;
      if (top2_gap(w, vocab) > 1e-2f)
        CHECK_MESSAGE(argmax(std::span(got.data() + r * vocab, vocab)) == argmax(std::span(w, vocab)), what << " row " << r);
    }
  };
  argmax_where_clear(prompt, prompt_want, "prompt");
  argmax_where_clear(decode, decode_want, "decode");
  const LlamaCppDifference d{max_abs_diff(prompt, prompt_want), max_abs_diff(decode, decode_want)};
  MESSAGE(ref << ": max abs difference to llama.cpp: prompt " << d.prompt << ", decode " << d.decode);
  return d;
}

// What llama2.c prints for stories260K with -i "Once upon a time" -n 200 -t 0 (the prompt
// teacher-forced, then greedy tokens up to position 199, then a newline), generated by `lm`.
inline std::string stories_greedy_text(LoadedModel& lm, ThreadPool& pool) {
  const Tokenizer& tok = lm.tokenizer();
  const auto prompt = tok.encode("Once upon a time", true);
  GenerateOptions g;
  g.max_new_tokens = 200 - prompt.size() + 1;
  g.sampling.temperature = 0.0f;
  g.stop_tokens = {tok.bos()};
  std::string text;
  for (std::size_t i = 1; i < prompt.size(); ++i) text += tok.decode(prompt[i - 1], prompt[i]);
  std::int32_t prev = prompt.back();
  generate(pool, lm.model(), prompt, g, [&](std::int32_t id) {
    text += tok.decode(prev, id);
    prev = id;
    return true;
  });
  return text + "\n";
}

}  // namespace tinyllm::test

// Ends the current test case, reported by CTest as skipped, when a shared test file is missing.
#define TINYLLM_REQUIRE_TESTDATA(rel)                                                     \
  do {                                                                                    \
    if (!std::filesystem::exists(::tinyllm::test::testdata(rel))) {                       \
      MESSAGE("TINYLLM_SKIP: test data " << ::tinyllm::test::testdata(rel).string()       \
                                         << " is absent (../shared/testdata not beside the clone)"); \
      return;                                                                             \
    }                                                                                     \
  } while (0)

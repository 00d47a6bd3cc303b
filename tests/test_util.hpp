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
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <hwy/targets.h>

#include <tinyllm/kernels/cpu/cpu.hpp>

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

#pragma once
// Helpers shared by the tests: where the shared test data lives, and how a test skips without it.
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <doctest/doctest.h>

namespace tinyllm::test {

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

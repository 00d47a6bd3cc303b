#pragma once
// What the fuzz targets share: reporting the Errors an input raises, a sink that keeps results
// alive, and the checks that turn a wrong but quiet answer into a finding (abort).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/text/tokenizer.hpp>

namespace fuzz {

// TINYLLM_FUZZ_VERBOSE=1 prints the Errors an input raises (to see how far a seed gets).
inline void note(const tinyllm::Error& e) {
  static const bool verbose = std::getenv("TINYLLM_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "%s\n", e.what());
}

inline volatile std::uint64_t sink;

// f() must throw an Error: `id` is outside the vocabulary.
template <class F>
void expect_error(const tinyllm::Tokenizer& tok, std::int32_t id, const char* what, F f) {
  try {
    f();
  } catch (const tinyllm::Error&) {
    return;
  }
  std::fprintf(stderr, "%s accepted token id %d in a vocabulary of %zu tokens\n", what, id, tok.size());
  std::abort();
}

// Every id encode gave must be a token of the vocabulary.
inline void check_ids(const std::vector<std::int32_t>& ids, std::int32_t n) {
  for (const std::int32_t id : ids)
    if (id < 0 || id >= n) {
      std::fprintf(stderr, "encode gave id %d in a vocabulary of %d tokens\n", id, n);
      std::abort();
    }
}

}  // namespace fuzz

#pragma once
// Drafts for speculative decoding by prompt lookup (n-gram matching, as llama.cpp's lookup
// decoding and vLLM's "ngram" speculator do it): text that repeats itself (code, quotes, names, a
// summary of its prompt) is predicted by what followed the same few tokens the last time.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace tinyllm {

// Up to max_draft tokens that followed the latest earlier occurrence of the last n tokens of
// `tokens`, for n from max_ngram down to min_ngram (the longest match wins; the most recent
// occurrence of it). Empty when no suffix of min_ngram to max_ngram tokens occurred before. A
// longer least match drafts less often but keeps more of what it drafts.
inline std::vector<std::int32_t> prompt_lookup_draft(std::span<const std::int32_t> tokens, std::size_t max_ngram,
                                                     std::size_t max_draft, std::size_t min_ngram = 1) {
  const std::size_t len = tokens.size();
  for (std::size_t n = std::min(max_ngram, len > 0 ? len - 1 : 0); n >= std::max<std::size_t>(min_ngram, 1) && max_draft > 0; --n) {
    const auto suffix = tokens.subspan(len - n);
    // Occurrences starting at j with j + n < len (something follows them), latest first.
    for (std::size_t j = len - n; j-- > 0;) {
      if (!std::equal(suffix.begin(), suffix.end(), tokens.begin() + std::ptrdiff_t(j))) continue;
      const std::size_t from = j + n, count = std::min(max_draft, len - from);
      return {tokens.begin() + std::ptrdiff_t(from), tokens.begin() + std::ptrdiff_t(from + count)};
    }
  }
  return {};
}

}  // namespace tinyllm

#pragma once
// The merge table of a BPE vocabulary: for a pair of adjacent tokens, the rank of their merge
// (lower merges first) and the token it makes. GGUF stores merges as "left right" lines
// (tokenizer.ggml.merges); Hugging Face's tokenizer.json as such lines or as [left, right] pairs.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include <tinyllm/text/vocab.hpp>

namespace tinyllm {

class MergeRanks {
 public:
  struct Merge {
    std::int32_t rank;
    std::int32_t merged;
  };

  // Appends the next merge in rank order. A merge whose sides or result are no tokens is left
  // out; of repeated pairs the first (lowest) rank counts.
  void add(const Vocab& vocab, std::string_view left, std::string_view right) {
    joined_.assign(left).append(right);
    const std::int32_t l = vocab.find(left), r = vocab.find(right), merged = vocab.find(joined_);
    if (l >= 0 && r >= 0 && merged >= 0) merges_.try_emplace(key(l, r), Merge{next_rank_, merged});
    ++next_rank_;
  }

  // A "left right" line, split at its first space after the first byte (a side may start with ' ',
  // as llama.cpp splits). A line without a space is skipped.
  void add_line(const Vocab& vocab, std::string_view line) {
    const std::size_t space = line.find(' ', 1);
    if (space == std::string_view::npos) {
      ++next_rank_;
      return;
    }
    add(vocab, line.substr(0, space), line.substr(space + 1));
  }

  const Merge* find(std::int32_t left, std::int32_t right) const {
    const auto it = merges_.find(key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  bool empty() const noexcept { return merges_.empty(); }

 private:
  static std::uint64_t key(std::int32_t left, std::int32_t right) {
    return static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32 | static_cast<std::uint32_t>(right);
  }

  std::unordered_map<std::uint64_t, Merge> merges_;
  std::int32_t next_rank_ = 0;
  std::string joined_;  // scratch
};

}  // namespace tinyllm

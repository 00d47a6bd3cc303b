#pragma once
// Special tokens written in a text: control and unknown tokens (only when the caller asks for
// them, parse_special) and user-defined tokens (always) are cut out of the text before it is
// tokenized, as llama.cpp's tokenizer_st_partition does: longest token text first, each token's
// occurrences left to right in every piece of text still uncut.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include <tinyllm/text/vocab.hpp>

namespace tinyllm {

// A piece of a text: a special token, or the bytes [begin, end) to tokenize.
struct TextFragment {
  std::int32_t token;  // -1 for text
  std::size_t begin, end;
};

class SpecialTokens {
 public:
  SpecialTokens() = default;

  explicit SpecialTokens(const Vocab& vocab) {
    for (std::int32_t id = 0; id < vocab.size(); ++id) {
      const TokenType type = vocab.type(id);
      if (type == TokenType::control || type == TokenType::unknown || type == TokenType::user_defined)
        entries_.push_back({id, type == TokenType::user_defined, false, false});
    }
    // llama.cpp sorts by length alone with std::sort; equal lengths here keep id order.
    std::stable_sort(entries_.begin(), entries_.end(), [&](const Entry& a, const Entry& b) {
      return vocab.text(a.id).size() > vocab.text(b.id).size();
    });
    nodes_.emplace_back();
    for (std::size_t e = 0; e < entries_.size(); ++e) insert(vocab.text(entries_[e].id), e);
  }

  // Whether spaces after (rstrip) or before (lstrip) the token are dropped where it is found; llama.cpp
  // sets these by model name, as GGUF does not carry them.
  void set_strip(std::int32_t id, bool lstrip, bool rstrip) {
    for (Entry& e : entries_)
      if (e.id == id) e.lstrip = lstrip, e.rstrip = rstrip;
  }
  void set_strip_all(bool lstrip, bool rstrip) {
    for (Entry& e : entries_) e.lstrip = lstrip, e.rstrip = rstrip;
  }

  std::vector<TextFragment> split(const Vocab& vocab, std::string_view text, bool parse_special) const {
    std::vector<TextFragment> fragments;
    if (text.empty()) return fragments;
    fragments.push_back({-1, 0, text.size()});
    const std::vector<bool> present = find_present(text, parse_special);
    std::vector<TextFragment> next;
    for (std::size_t e = 0; e < entries_.size(); ++e) {
      if (!present[e]) continue;
      const Entry& entry = entries_[e];
      const std::string_view needle = vocab.text(entry.id);
      next.clear();
      for (const TextFragment& f : fragments) {
        if (f.token >= 0) {
          next.push_back(f);
          continue;
        }
        std::size_t begin = f.begin;
        while (begin < f.end) {
          const std::size_t match = text.substr(0, f.end).find(needle, begin);
          if (match == std::string_view::npos) break;
          std::size_t left_end = match;
          if (entry.lstrip)
            while (left_end > begin && is_c_space(text[left_end - 1])) --left_end;
          if (left_end > begin) next.push_back({-1, begin, left_end});
          next.push_back({entry.id, match, match + needle.size()});
          begin = match + needle.size();
          if (entry.rstrip)
            while (begin < f.end && is_c_space(text[begin])) ++begin;
        }
        if (begin < f.end) next.push_back({-1, begin, f.end});
      }
      fragments.swap(next);
    }
    return fragments;
  }

 private:
  struct Entry {
    std::int32_t id;
    bool always;  // user-defined: matched without parse_special
    bool lstrip, rstrip;
  };

  // A trie of the token texts, to learn in one pass which tokens occur at all.
  struct Node {
    std::vector<std::pair<unsigned char, std::uint32_t>> children;  // sorted by byte
    std::int64_t entry = -1;                                        // into entries_
  };

  // isspace in the C locale, as llama.cpp strips.
  static bool is_c_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

  using Children = std::vector<std::pair<unsigned char, std::uint32_t>>;

  static Children::const_iterator find_child(const Children& c, unsigned char byte) {
    return std::lower_bound(c.begin(), c.end(), byte, [](const auto& p, unsigned char b) { return p.first < b; });
  }

  // The child of `node` along `byte`, 0 for none.
  std::uint32_t child(std::uint32_t node, unsigned char byte) const {
    const Children& c = nodes_[node].children;
    const auto it = find_child(c, byte);
    return it != c.end() && it->first == byte ? it->second : 0;
  }

  void insert(std::string_view key, std::size_t entry) {
    std::uint32_t node = 0;
    for (const char ch : key) {
      const auto byte = static_cast<unsigned char>(ch);
      std::uint32_t next = child(node, byte);
      if (next == 0) {
        next = static_cast<std::uint32_t>(nodes_.size());
        nodes_.emplace_back();
        Children& c = nodes_[node].children;
        c.insert(find_child(c, byte), {byte, next});
      }
      node = next;
    }
    // Should two tokens share a text, the first in order finds every occurrence, as in llama.cpp.
    if (nodes_[node].entry < 0) nodes_[node].entry = static_cast<std::int64_t>(entry);
  }

  std::vector<bool> find_present(std::string_view text, bool parse_special) const {
    std::vector<bool> present(entries_.size(), false);
    if (entries_.empty()) return present;
    for (std::size_t pos = 0; pos < text.size(); ++pos) {
      std::uint32_t node = 0;
      for (std::size_t k = pos; k < text.size(); ++k) {
        node = child(node, static_cast<unsigned char>(text[k]));
        if (node == 0) break;
        const std::int64_t e = nodes_[node].entry;
        if (e >= 0 && (parse_special || entries_[e].always)) present[e] = true;
      }
    }
    return present;
  }

  std::vector<Entry> entries_;  // longest text first
  std::vector<Node> nodes_;     // node 0 is the root
};

}  // namespace tinyllm

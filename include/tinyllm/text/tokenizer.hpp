#pragma once
// Tokenizer: SentencePiece-style BPE driven by piece scores, encoding and decoding as llama2.c's
// run.c does. The vocabulary is plain data (pieces with ' ' for spaces, and scores); io/ loads it.
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/text/utf8.hpp>

namespace tinyllm {

class Tokenizer {
 public:
  // pieces[i] is token i's text, spaces as plain ' '. Byte-fallback tokens are the pieces
  // "<0x00>".."<0xFF>" wherever they sit in the vocabulary.
  Tokenizer(std::vector<std::string> pieces, std::vector<float> scores, std::int32_t bos = 1,
            std::int32_t eos = 2)
      : pieces_(std::move(pieces)), scores_(std::move(scores)), bos_(bos), eos_(eos) {
    if (pieces_.empty()) throw Error("the vocabulary is empty", "Tokenizer", "at least one piece");
    if (pieces_.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
      throw Error("the vocabulary has " + std::to_string(pieces_.size()) + " pieces", "Tokenizer",
                  "fewer than 2^31");
    if (scores_.size() != pieces_.size())
      throw Error("the vocabulary has " + std::to_string(pieces_.size()) + " pieces but " +
                      std::to_string(scores_.size()) + " scores",
                  "Tokenizer", "one score per piece");
    check_id(bos_, "Tokenizer, BOS id");
    check_id(eos_, "Tokenizer, EOS id");
    byte_ids_.fill(-1);
    ids_.reserve(pieces_.size());
    for (std::int32_t id = 0; id < static_cast<std::int32_t>(pieces_.size()); ++id) {
      if (std::isnan(scores_[id]))
        throw Error("score is NaN", "Tokenizer, token " + std::to_string(id), "a number");
      // Byte tokens are reached only through byte fallback and control tokens never from text,
      // so neither may be spelled by, or merged from, the input.
      if (const int byte = byte_value(pieces_[id]); byte >= 0) {
        if (byte_ids_[byte] < 0) byte_ids_[byte] = id;
      } else if (id != bos_ && id != eos_) {
        ids_.emplace(pieces_[id], id);  // the first of duplicate pieces wins
      }
    }
  }

  // Encodes like llama2.c: optional BOS; a dummy space before non-empty text; each code point as
  // its piece, else its bytes as byte tokens (so are bytes of ill-formed UTF-8); then, repeatedly,
  // the adjacent pair whose concatenation is a piece of the highest score is merged (leftmost on
  // ties); optional EOS. Throws when a byte needs fallback and the vocabulary lacks its token.
  std::vector<std::int32_t> encode(std::string_view text, bool add_bos,
                                   bool add_eos = false) const {
    std::vector<std::int32_t> tokens;
    if (add_bos) tokens.push_back(bos_);
    if (!text.empty()) {
      if (text.size() >= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
        throw Error("text of " + std::to_string(text.size()) + " bytes", "Tokenizer::encode",
                    "fewer than 2^31 - 1 bytes");
      std::vector<Symbol> symbols;  // a doubly linked list in the order of the text
      symbols.reserve(text.size() + 1);
      split_into_symbols(" ", symbols);
      split_into_symbols(text, symbols);
      merge(symbols);
      for (std::int32_t i = 0; i >= 0; i = symbols[i].next) tokens.push_back(symbols[i].id);
    }
    if (add_eos) tokens.push_back(eos_);
    return tokens;
  }

  // The text of `token` printed after `prev`, as llama2.c prints it: after BOS a leading space is
  // dropped, and a "<0xAB>" piece is the raw byte. BOS and EOS print nothing: llama2.c never
  // prints them, and their stored pieces ("\n<s>\n") are an artefact of its export script.
  std::string decode(std::int32_t prev, std::int32_t token) const {
    std::string text;
    append_decoded(text, prev, token);
    return text;
  }

  // The whole sequence, each token decoded after the one before it (the first after none).
  std::string decode(std::span<const std::int32_t> tokens) const {
    std::string text;
    std::int32_t prev = -1;
    for (const std::int32_t token : tokens) {
      append_decoded(text, prev, token);
      prev = token;
    }
    return text;
  }

  std::int32_t bos() const noexcept { return bos_; }
  std::int32_t eos() const noexcept { return eos_; }
  std::size_t size() const noexcept { return pieces_.size(); }

  const std::string& piece(std::int32_t id) const {
    check_id(id, "Tokenizer::piece");
    return pieces_[id];
  }

 private:
  struct Symbol {
    std::int32_t id;          // -1 once merged into its left neighbour
    std::int32_t prev, next;  // indices into the symbol list; -1 at either end
    bool from_byte_fallback;  // a byte token never merges
  };

  // A mergeable adjacent pair, as it was when queued; stale once either side has changed.
  struct Pair {
    float score;
    std::int32_t left, right;        // symbol indices
    std::int32_t left_id, right_id;  // their tokens when queued
    std::int32_t merged_id;
  };

  // Highest score first; on ties the leftmost pair, as llama2.c's scan picks it.
  struct PairOrder {
    bool operator()(const Pair& a, const Pair& b) const noexcept {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };

  // The byte a piece "<0xAB>" stands for (uppercase hex, as SentencePiece writes it), else -1.
  static int byte_value(std::string_view piece) noexcept {
    if (piece.size() != 6 || !piece.starts_with("<0x") || piece[5] != '>') return -1;
    const auto hex = [](char c) {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    };
    const int hi = hex(piece[3]), lo = hex(piece[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }

  void check_id(std::int32_t id, const char* where) const {
    if (id < 0 || static_cast<std::size_t>(id) >= pieces_.size())
      throw Error("token id " + std::to_string(id) + " is out of range", where,
                  "an id in [0, " + std::to_string(pieces_.size()) + ")");
  }

  void append_decoded(std::string& text, std::int32_t prev, std::int32_t token) const {
    check_id(token, "Tokenizer::decode");
    if (token == bos_ || token == eos_) return;
    std::string_view piece = pieces_[token];
    if (prev == bos_ && piece.starts_with(' ')) piece.remove_prefix(1);
    if (const int byte = byte_value(piece); byte >= 0) {
      text.push_back(static_cast<char>(byte));
    } else {
      text.append(piece);
    }
  }

  void push_symbol(std::vector<Symbol>& symbols, std::int32_t id, bool from_byte_fallback) const {
    const auto index = static_cast<std::int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, from_byte_fallback});
    if (index > 0) symbols[index - 1].next = index;
  }

  void split_into_symbols(std::string_view text, std::vector<Symbol>& symbols) const {
    for (std::size_t pos = 0; pos < text.size();) {
      const Utf8Sequence seq = next_utf8_sequence(text.substr(pos));
      // An incomplete sequence at the end of the text is as ill-formed as an invalid one.
      const std::size_t length = seq.kind == Utf8Sequence::Kind::complete ? seq.length : 1;
      const std::string_view code_point = text.substr(pos, length);
      const auto it = seq.kind == Utf8Sequence::Kind::complete ? ids_.find(code_point) : ids_.end();
      if (it != ids_.end()) {
        push_symbol(symbols, it->second, false);
      } else {
        for (const char c : code_point) push_symbol(symbols, byte_token(c), true);
      }
      pos += length;
    }
  }

  std::int32_t byte_token(char c) const {
    const auto byte = static_cast<unsigned char>(c);
    if (byte_ids_[byte] < 0) {
      static constexpr char digits[] = "0123456789ABCDEF";
      const std::string piece = std::string("<0x") + digits[byte >> 4] + digits[byte & 15] + ">";
      throw Error("byte " + piece + " has no piece of its own and no byte-fallback token",
                  "Tokenizer::encode", "the piece \"" + piece + "\" in the vocabulary");
    }
    return byte_ids_[byte];
  }

  // llama2.c rescans all pairs after each merge (O(n^2)); a priority queue of adjacent pairs with
  // lazy deletion makes the same choices in O(n log n).
  void merge(std::vector<Symbol>& symbols) const {
    std::priority_queue<Pair, std::vector<Pair>, PairOrder> queue;
    std::string joined;
    const auto queue_pair = [&](std::int32_t left, std::int32_t right) {
      if (left < 0 || right < 0) return;
      const Symbol& l = symbols[left];
      const Symbol& r = symbols[right];
      if (l.from_byte_fallback || r.from_byte_fallback) return;
      joined.assign(pieces_[l.id]).append(pieces_[r.id]);
      if (const auto it = ids_.find(joined); it != ids_.end())
        queue.push({scores_[it->second], left, right, l.id, r.id, it->second});
    };
    for (std::int32_t i = 0; i + 1 < static_cast<std::int32_t>(symbols.size()); ++i)
      queue_pair(i, i + 1);
    while (!queue.empty()) {
      const Pair pair = queue.top();
      queue.pop();
      Symbol& left = symbols[pair.left];
      Symbol& right = symbols[pair.right];
      if (left.id != pair.left_id || right.id != pair.right_id) continue;
      left.id = pair.merged_id;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = pair.left;
      right.id = -1;
      queue_pair(left.prev, pair.left);
      queue_pair(pair.left, left.next);
    }
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::int32_t bos_, eos_;
  std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>> ids_;  // text -> token
  std::array<std::int32_t, 256> byte_ids_{};  // byte -> its fallback token, -1 where absent
};

}  // namespace tinyllm

#pragma once
// Byte-level BPE as llama.cpp runs it for tokenizer.ggml.model "gpt2" (llm_tokenizer_bpe): the
// text is split into words by the pre-tokenizer; each word's bytes become GPT-2's printable code
// points, one symbol per byte; the adjacent pair with the lowest merge rank
// (tokenizer.ggml.merges, "left right" per line) is merged, the leftmost on ties, until no pair
// has a rank.
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <queue>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/text/merges.hpp>
#include <tinyllm/text/pretokenize.hpp>
#include <tinyllm/text/unicode.hpp>
#include <tinyllm/text/vocab.hpp>

namespace tinyllm {

class ByteLevelBpe {
 public:
  ByteLevelBpe() { byte_tokens_.fill(-1); }

  // A merge whose sides or result are no tokens is left out (MergeRanks). llama.cpp would make it,
  // and then drop the bytes of a merged symbol that is no token; here they keep the tokens they had.
  ByteLevelBpe(const Vocab& vocab, MergeRanks merges, PreTokenizerPreset preset, std::int32_t unk)
      : preset_(preset), unk_(unk), merges_(std::move(merges)) {
    for (int b = 0; b < 256; ++b) {
      std::string code_point;
      append_utf8(code_point, kGpt2ByteCodePoints[b]);
      byte_tokens_[b] = vocab.find(code_point);
    }
  }

  // Appends the tokens of `text` to `out`.
  void encode(const Vocab& vocab, std::string_view text, std::vector<std::int32_t>& out) const {
    std::vector<Symbol> symbols;
    std::string encoded;
    for (const std::string_view word : pre_tokenize(preset_.split, text)) {
      if (preset_.ignore_merges) {
        encoded.clear();
        for (const char c : word) append_utf8(encoded, kGpt2ByteCodePoints[static_cast<unsigned char>(c)]);
        if (const std::int32_t id = vocab.find(encoded); id >= 0) {
          out.push_back(id);
          continue;
        }
      }
      merge_word(word, symbols, out);
    }
  }

  PreTokenizerPreset preset() const noexcept { return preset_; }

  // The bytes a byte-level token text stands for. A code point outside GPT-2's byte encoder is
  // kept as its UTF-8 bytes (llama.cpp writes "[UNK_BYTE_0x..]" there).
  static void append_decoded(std::string& out, std::string_view token_text) {
    for (std::size_t pos = 0; pos < token_text.size();) {
      const Utf8Sequence seq = next_utf8_sequence(token_text.substr(pos));
      const std::size_t length = seq.kind == Utf8Sequence::Kind::complete ? seq.length : 1;
      const std::string_view sequence = token_text.substr(pos, length);
      const int byte = seq.kind == Utf8Sequence::Kind::complete ? gpt2_code_point_byte(decode_utf8(sequence)) : -1;
      if (byte >= 0) {
        out += static_cast<char>(byte);
      } else {
        out.append(sequence);
      }
      pos += length;
    }
  }

 private:
  struct Symbol {
    std::int32_t id;          // -1: no token (or merged away)
    std::int32_t prev, next;  // indices into the symbol list; -1 at either end
  };

  struct Pair {
    std::int32_t rank;
    std::int32_t left, right;        // symbol indices
    std::int32_t left_id, right_id;  // their tokens when queued
    std::int32_t merged;
  };

  // Lowest rank first; on ties the leftmost pair.
  struct PairOrder {
    bool operator()(const Pair& a, const Pair& b) const noexcept {
      return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
  };

  void merge_word(std::string_view word, std::vector<Symbol>& symbols, std::vector<std::int32_t>& out) const {
    if (word.size() >= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
      throw Error("a word of " + std::to_string(word.size()) + " bytes", "Tokenizer::encode",
                  "fewer than 2^31 - 1 bytes");
    symbols.clear();
    const auto n = static_cast<std::int32_t>(word.size());
    for (std::int32_t i = 0; i < n; ++i)
      symbols.push_back({byte_tokens_[static_cast<unsigned char>(word[i])], i - 1, i + 1 < n ? i + 1 : -1});
    std::priority_queue<Pair, std::vector<Pair>, PairOrder> queue;
    const auto queue_pair = [&](std::int32_t left, std::int32_t right) {
      if (left < 0 || right < 0 || symbols[left].id < 0 || symbols[right].id < 0) return;
      if (const MergeRanks::Merge* m = merges_.find(symbols[left].id, symbols[right].id))
        queue.push({m->rank, left, right, symbols[left].id, symbols[right].id, m->merged});
    };
    for (std::int32_t i = 1; i < n; ++i) queue_pair(i - 1, i);
    while (!queue.empty()) {
      const Pair pair = queue.top();
      queue.pop();
      Symbol& left = symbols[pair.left];
      Symbol& right = symbols[pair.right];
      if (left.id != pair.left_id || right.id != pair.right_id) continue;  // stale
      left.id = pair.merged;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = pair.left;
      right.id = -1;
      queue_pair(left.prev, pair.left);
      queue_pair(pair.left, left.next);
    }
    // A byte whose code point is no token (Falcon lacks 28 of them) becomes UNK, or, as in
    // llama.cpp, nothing.
    for (std::int32_t i = 0; i >= 0 && i < n; i = symbols[i].next) {
      if (symbols[i].id >= 0) {
        out.push_back(symbols[i].id);
      } else if (unk_ >= 0) {
        out.push_back(unk_);
      }
    }
  }

  PreTokenizerPreset preset_{PreTokenizer::gpt2};
  std::int32_t unk_ = -1;
  std::array<std::int32_t, 256> byte_tokens_;  // byte -> the token of its code point, -1 where absent
  MergeRanks merges_;
};

}  // namespace tinyllm

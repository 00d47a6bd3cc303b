#pragma once
// SentencePiece BPE as llama.cpp runs it for tokenizer.ggml.model "llama" (llm_tokenizer_spm):
// the text, spaces already written as U+2581, is cut into UTF-8 characters; the adjacent pair
// whose concatenation is a token of the highest score is merged, the leftmost on ties, until no
// pair is a token; a piece that is no token becomes its bytes' tokens ("<0xAB>").
// One difference, for ill-formed UTF-8 only: each such byte is a character of its own, where
// llama.cpp takes as many bytes as a lead byte announces and so can swallow the first byte of the
// next character; were that a space's U+2581, the space would come back from decoding as U+2581.
// Hugging Face's tokenizer.json states the same vocabularies as BPE with a merge table
// ("byte_fallback": true): there the adjacent pair of tokens with the lowest merge rank is merged.
#include <algorithm>
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
#include <tinyllm/text/utf8.hpp>
#include <tinyllm/text/vocab.hpp>

namespace tinyllm {

class SentencePieceBpe {
 public:
  SentencePieceBpe() { byte_tokens_.fill(-1); }

  // A byte becomes the token "<0xAB>", else the token of that one byte, else `unk` (-1: none).
  SentencePieceBpe(const Vocab& vocab, std::int32_t unk) {
    static constexpr char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      const char name[] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
      std::int32_t id = vocab.find(std::string_view(name, sizeof(name)));
      if (id < 0) id = vocab.find(std::string(1, static_cast<char>(b)));
      byte_tokens_[b] = id >= 0 ? id : unk;
    }
  }

  // Merges by rank (tokenizer.json). As there, a piece that is no token becomes its bytes' tokens
  // "<0xAB>" when the vocabulary has all of them and byte_fallback is on, else one UNK; with
  // fuse_unk a run of such pieces is one UNK.
  SentencePieceBpe(const Vocab& vocab, std::int32_t unk, MergeRanks merges, bool byte_fallback, bool fuse_unk)
      : merges_(std::move(merges)), ranked_(true), unk_(unk), fuse_unk_(fuse_unk) {
    static constexpr char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      const char name[] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
      byte_tokens_[b] = byte_fallback ? vocab.find(std::string_view(name, sizeof(name))) : -1;
    }
  }

  // Appends the tokens of `text` to `out`.
  void encode(const Vocab& vocab, std::string_view text, std::vector<std::int32_t>& out) const {
    if (text.empty()) return;
    if (text.size() >= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
      throw Error("text of " + std::to_string(text.size()) + " bytes, spaces written as U+2581",
                  "Tokenizer::encode", "fewer than 2^31 - 1 bytes");
    std::vector<Symbol> symbols;
    symbols.reserve(text.size());
    for (std::size_t pos = 0; pos < text.size();) {
      const Utf8Sequence seq = next_utf8_sequence(text.substr(pos));
      const std::size_t length = seq.kind == Utf8Sequence::Kind::complete ? seq.length : 1;
      const auto index = static_cast<std::int32_t>(symbols.size());
      const std::int32_t id = seq.kind == Utf8Sequence::Kind::complete ? vocab.find(text.substr(pos, length)) : -1;
      symbols.push_back({pos, length, id, index - 1, pos + length == text.size() ? -1 : index + 1});
      pos += length;
    }
    std::priority_queue<Pair, std::vector<Pair>, PairOrder> queue;
    const auto queue_pair = [&](std::int32_t left, std::int32_t right) {
      if (left < 0 || right < 0) return;
      const std::size_t length = symbols[left].length + symbols[right].length;
      if (ranked_) {
        if (symbols[left].id < 0 || symbols[right].id < 0) return;
        if (const MergeRanks::Merge* m = merges_.find(symbols[left].id, symbols[right].id))
          queue.push({-static_cast<double>(m->rank), left, right, length, m->merged});
        return;
      }
      const std::int32_t id = vocab.find(text.substr(symbols[left].begin, length));
      if (id >= 0) queue.push({vocab.score(id), left, right, length, id});
    };
    for (std::int32_t i = 1; i < static_cast<std::int32_t>(symbols.size()); ++i) queue_pair(i - 1, i);
    while (!queue.empty()) {
      const Pair pair = queue.top();
      queue.pop();
      Symbol& left = symbols[pair.left];
      Symbol& right = symbols[pair.right];
      // Stale once either side has been merged into another symbol.
      if (left.length == 0 || right.length == 0 || left.length + right.length != pair.length) continue;
      left.length += right.length;
      left.id = pair.merged;
      right.length = 0;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = pair.left;
      queue_pair(left.prev, pair.left);
      queue_pair(pair.left, left.next);
    }
    bool after_unk = false;
    for (std::int32_t i = 0; i >= 0; i = symbols[i].next) {
      const std::string_view piece = text.substr(symbols[i].begin, symbols[i].length);
      if (symbols[i].id >= 0) {
        out.push_back(symbols[i].id);
        after_unk = false;
        continue;
      }
      const auto has_byte_token = [&](char c) { return byte_tokens_[static_cast<unsigned char>(c)] >= 0; };
      if (ranked_ && !std::all_of(piece.begin(), piece.end(), has_byte_token)) {
        if (unk_ < 0)
          throw Error("'" + std::string(piece) + "' is no token, has no byte tokens, and the vocabulary has no UNK",
                      "Tokenizer::encode", "an UNK token");
        if (!(fuse_unk_ && after_unk)) out.push_back(unk_);
        after_unk = true;
        continue;
      }
      after_unk = false;
      for (const char c : piece) {
        const std::int32_t id = byte_tokens_[static_cast<unsigned char>(c)];
        if (id < 0) {
          static constexpr char hex[] = "0123456789ABCDEF";
          const auto b = static_cast<unsigned char>(c);
          const std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
          throw Error("byte " + name + " has no token and the vocabulary no UNK", "Tokenizer::encode",
                      "the token \"" + name + "\"");
        }
        out.push_back(id);
      }
    }
  }

 private:
  struct Symbol {
    std::size_t begin, length;  // bytes of the text; length 0 once merged into its left neighbour
    std::int32_t id;            // its token, -1 for a piece that is none
    std::int32_t prev, next;    // indices into the symbol list; -1 at either end
  };

  struct Pair {
    double score;               // the token's score, or minus the merge's rank
    std::int32_t left, right;
    std::size_t length;         // of both symbols together when queued
    std::int32_t merged;
  };

  // Highest score first; on ties the leftmost pair.
  struct PairOrder {
    bool operator()(const Pair& a, const Pair& b) const noexcept {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  std::array<std::int32_t, 256> byte_tokens_;
  MergeRanks merges_;
  bool ranked_ = false;
  std::int32_t unk_ = -1;
  bool fuse_unk_ = false;
};

}  // namespace tinyllm

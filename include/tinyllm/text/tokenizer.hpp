#pragma once
// Tokenizer: text to token ids and back. One class, three kinds of vocabulary:
//   llama2c         SentencePiece-style BPE driven by piece scores, encoding and decoding as
//                   llama2.c's run.c does; the vocabulary is plain data (pieces with ' ' for spaces,
//                   and scores) that io/ loads.
//   sentencepiece   GGUF tokenizer.ggml.model "llama", as llama.cpp tokenizes it (spm.hpp).
//   byte_level_bpe  GGUF tokenizer.ggml.model "gpt2", as llama.cpp tokenizes it (bpe.hpp, with
//                   the pre-tokenizer tokenizer.ggml.pre names, pretokenize.hpp).
// GGUF vocabularies carry token types; control and user-defined tokens written in a text are
// found as special_tokens.hpp describes. Hugging Face's tokenizer.json states the same two GGUF
// kinds as a pipeline (text/hf_tokenizer.hpp reads it), with a few more text steps (NFC, Metaspace
// splits, merges by rank instead of by score).
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

#include <nlohmann/json_fwd.hpp>

#include <tinyllm/core/error.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/text/bpe.hpp>
#include <tinyllm/text/nfc.hpp>
#include <tinyllm/text/pretokenize.hpp>
#include <tinyllm/text/special_tokens.hpp>
#include <tinyllm/text/spm.hpp>
#include <tinyllm/text/utf8.hpp>
#include <tinyllm/text/vocab.hpp>

namespace tinyllm {

class Tokenizer {
 public:
  enum class Kind { llama2c, sentencepiece, byte_level_bpe };

  // Spell the options out, encode(text, {.parse_special = true}) or encode(text, EncodeOptions{}):
  // a bare {} picks encode(text, add_bos = false).
  struct EncodeOptions {
    bool add_special = true;     // BOS and EOS where the vocabulary asks for them: adds_bos(), adds_eos()
    bool parse_special = false;  // control tokens written in the text ("<s>", "<|endoftext|>") are
                                 // those tokens
  };

  // A llama2.c vocabulary. pieces[i] is token i's text, spaces as plain ' '. Byte-fallback tokens
  // are the pieces "<0x00>".."<0xFF>" wherever they sit in the vocabulary.
  Tokenizer(std::vector<std::string> pieces, std::vector<float> scores, std::int32_t bos = 1,
            std::int32_t eos = 2)
      : bos_(bos), eos_(eos) {
    if (pieces.empty()) throw Error("the vocabulary is empty", "Tokenizer", "at least one piece");
    if (pieces.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
      throw Error("the vocabulary has " + std::to_string(pieces.size()) + " pieces", "Tokenizer",
                  "fewer than 2^31");
    if (scores.size() != pieces.size())
      throw Error("the vocabulary has " + std::to_string(pieces.size()) + " pieces but " +
                      std::to_string(scores.size()) + " scores",
                  "Tokenizer", "one score per piece");
    const auto n = static_cast<std::int32_t>(pieces.size());
    for (const std::int32_t id : {bos_, eos_})
      if (id < 0 || id >= n)
        throw Error("token id " + std::to_string(id) + " is out of range",
                    id == bos_ ? "Tokenizer, BOS id" : "Tokenizer, EOS id",
                    "an id in [0, " + std::to_string(n) + ")");
    byte_ids_.fill(-1);
    ids_.reserve(pieces.size());
    std::vector<TokenType> types(pieces.size(), TokenType::normal);
    for (std::int32_t id = 0; id < n; ++id) {
      if (std::isnan(scores[id]))
        throw Error("score is NaN", "Tokenizer, token " + std::to_string(id), "a number");
      // Byte tokens are reached only through byte fallback and control tokens never from text,
      // so neither may be spelled by, or merged from, the input.
      if (const int byte = byte_value(pieces[id]); byte >= 0) {
        if (byte_ids_[byte] < 0) byte_ids_[byte] = id;
        types[id] = TokenType::byte;
      } else if (id != bos_ && id != eos_) {
        ids_.emplace(pieces[id], id);  // the first of duplicate pieces wins
      } else {
        types[id] = TokenType::control;
      }
    }
    vocab_ = Vocab(std::move(pieces), std::move(scores), std::move(types), "Tokenizer");
  }

  // The vocabulary a GGUF file's tokenizer.ggml.* metadata describes, as llama.cpp reads it.
  static Tokenizer from_gguf(const GGUFFile& file);

  // Hugging Face's tokenizer.json (and tokenizer_config.json): text/hf_tokenizer.hpp.
  friend Tokenizer tokenizer_from_hf_json(const nlohmann::json& tokenizer, const nlohmann::json& config,
                                          const std::string& where);
  friend void write_gguf_tokenizer(const Tokenizer& t, const nlohmann::json& tokenizer, GGUFWriter& out,
                                   std::size_t vocab_size);

  // llama2c: encodes like llama2.c: optional BOS; a dummy space before non-empty text; each code
  // point as its piece, else its bytes as byte tokens (so are bytes of ill-formed UTF-8); then,
  // repeatedly, the adjacent pair whose concatenation is a piece of the highest score is merged
  // (leftmost on ties); optional EOS. Throws when a byte needs fallback and the vocabulary lacks
  // its token.
  // GGUF vocabularies: the text as llama.cpp's llama_tokenize(add_special = false,
  // parse_special = false) gives it, between the optional BOS and EOS.
  std::vector<std::int32_t> encode(std::string_view text, bool add_bos,
                                   bool add_eos = false) const {
    if (kind_ != Kind::llama2c) return encode_gguf(text, add_bos, add_eos, false);
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

  // As llama.cpp's llama_tokenize(text, add_special, parse_special). A llama2.c vocabulary knows
  // no special tokens but BOS (which add_special adds) and EOS.
  std::vector<std::int32_t> encode(std::string_view text, const EncodeOptions& options) const {
    const bool add_bos = options.add_special && add_bos_, add_eos = options.add_special && add_eos_;
    if (kind_ == Kind::llama2c) return encode(text, add_bos, add_eos);
    return encode_gguf(text, add_bos, add_eos, options.parse_special);
  }

  // The bytes of `token` printed after `prev`. Bytes, not text: a byte token may hold part of a
  // character, so a stream of them goes through Utf8Stream.
  // llama2c, as llama2.c prints it: after BOS a leading space is dropped, and a "<0xAB>" piece is
  // the raw byte. BOS and EOS print nothing: llama2.c never prints them, and their stored pieces
  // ("\n<s>\n") are an artefact of its export script.
  // GGUF vocabularies, as llama.cpp's llama_token_to_piece(special = false): control, unknown and
  // unused tokens print nothing, user-defined tokens their text, byte tokens their byte;
  // SentencePiece writes U+2581 as a space, and after BOS drops the space it added before the text;
  // byte-level BPE turns GPT-2's code points back into bytes.
  std::string decode(std::int32_t prev, std::int32_t token) const {
    std::string text;
    append_decoded(text, prev, token);
    return text;
  }

  // The bytes of `token` on their own, after no token.
  std::string decode(std::int32_t token) const { return decode(-1, token); }

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

  Kind kind() const noexcept { return kind_; }
  std::int32_t bos() const noexcept { return bos_; }  // -1: none
  std::int32_t eos() const noexcept { return eos_; }  // -1: none
  std::int32_t unk() const noexcept { return unk_; }  // -1: none
  std::int32_t pad() const noexcept { return pad_; }  // -1: none
  // Whether encode(text, {.add_special = true}) adds BOS, EOS (tokenizer.ggml.add_bos_token, ...).
  bool adds_bos() const noexcept { return add_bos_; }
  bool adds_eos() const noexcept { return add_eos_; }
  std::size_t size() const noexcept { return static_cast<std::size_t>(vocab_.size()); }

  // Token `id`'s text as the vocabulary stores it: for GGUF vocabularies with U+2581 for spaces
  // (SentencePiece) or in GPT-2's code points (byte-level BPE).
  const std::string& piece(std::int32_t id) const {
    check_id(id, "Tokenizer::piece");
    return vocab_.text(id);
  }

  TokenType token_type(std::int32_t id) const {
    check_id(id, "Tokenizer::token_type");
    return vocab_.type(id);
  }

 private:
  Tokenizer() = default;

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
    if (!vocab_.contains(id))
      throw Error("token id " + std::to_string(id) + " is out of range", where,
                  "an id in [0, " + std::to_string(vocab_.size()) + ")");
  }

  void append_decoded(std::string& text, std::int32_t prev, std::int32_t token) const {
    check_id(token, "Tokenizer::decode");
    if (kind_ != Kind::llama2c) return append_gguf_decoded(text, prev, token);
    if (token == bos_ || token == eos_) return;
    std::string_view piece = vocab_.text(token);
    if (prev == bos_ && piece.starts_with(' ')) piece.remove_prefix(1);
    if (const int byte = byte_value(piece); byte >= 0) {
      text.push_back(static_cast<char>(byte));
    } else {
      text.append(piece);
    }
  }

  void append_gguf_decoded(std::string& text, std::int32_t prev, std::int32_t token) const {
    const std::string& piece = vocab_.text(token);
    switch (vocab_.type(token)) {
      case TokenType::normal:
        if (kind_ == Kind::byte_level_bpe) {
          ByteLevelBpe::append_decoded(text, piece);
        } else {
          const std::size_t start = text.size();
          for (std::size_t i = 0; i < piece.size(); ++i) {
            if (piece.compare(i, kSpaceMarker.size(), kSpaceMarker) == 0) {
              text += ' ';
              i += kSpaceMarker.size() - 1;
            } else {
              text += piece[i];
            }
          }
          if (bos_ >= 0 && prev == bos_ && add_space_prefix_ && text.size() > start && text[start] == ' ')
            text.erase(start, 1);
        }
        return;
      case TokenType::user_defined:
        text.append(piece);
        return;
      case TokenType::byte:
        if (const int byte = hex_byte_value(piece); byte >= 0) text.push_back(static_cast<char>(byte));
        return;
      default:  // control, unknown, unused, undefined
        return;
    }
  }

  // The byte of a byte token "<0xab>", either case, as llama.cpp reads it; -1 if malformed.
  static int hex_byte_value(std::string_view piece) noexcept {
    if (piece.size() != 6 || !piece.starts_with("<0x") || piece[5] != '>') return -1;
    const auto hex = [](char c) {
      const int lower = c | 0x20;
      return c >= '0' && c <= '9' ? c - '0' : lower >= 'a' && lower <= 'f' ? lower - 'a' + 10 : -1;
    };
    const int hi = hex(piece[3]), lo = hex(piece[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }

  std::vector<std::int32_t> encode_gguf(std::string_view text, bool add_bos, bool add_eos,
                                        bool parse_special) const {
    std::vector<std::int32_t> tokens;
    if (add_bos) {
      if (bos_ < 0) throw Error("BOS was asked for but the vocabulary has none", "Tokenizer::encode");
      tokens.push_back(bos_);
    }
    std::string normalized, escaped;
    bool after_special = true;  // SentencePiece: text at the start or after a special token gets a space first
    for (const TextFragment& f : special_.split(vocab_, text, parse_special)) {
      if (f.token >= 0) {
        tokens.push_back(f.token);
        after_special = true;
        continue;
      }
      std::string_view fragment = text.substr(f.begin, f.end - f.begin);
      if (nfc_) fragment = normalized = nfc(fragment);
      if (kind_ == Kind::byte_level_bpe) {
        if (byte_level_space_prefix_ && !fragment.starts_with(' ')) fragment = normalized = " " + std::string(fragment);
        bpe_.encode(vocab_, fragment, tokens);
        continue;
      }
      escaped.clear();
      if (add_space_prefix_ && after_special && !(space_prefix_first_only_ && f.begin != 0)) escaped += kSpaceMarker;
      for (const char c : fragment) {
        if (c == ' ' && escape_spaces_) {
          escaped += kSpaceMarker;
        } else {
          escaped += c;
        }
      }
      if (split_at_space_marker_) {  // each word starts at a space (Hugging Face's Metaspace split)
        std::size_t begin = 0;
        for (std::size_t at = escaped.find(kSpaceMarker, 1); at != std::string::npos;
             at = escaped.find(kSpaceMarker, at + kSpaceMarker.size())) {
          spm_.encode(vocab_, std::string_view(escaped).substr(begin, at - begin), tokens);
          begin = at;
        }
        spm_.encode(vocab_, std::string_view(escaped).substr(begin), tokens);
      } else {
        spm_.encode(vocab_, escaped, tokens);
      }
      after_special = false;
    }
    if (add_eos) {
      if (eos_ < 0) throw Error("EOS was asked for but the vocabulary has none", "Tokenizer::encode");
      tokens.push_back(eos_);
    }
    return tokens;
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
      joined.assign(vocab_.text(l.id)).append(vocab_.text(r.id));
      if (const auto it = ids_.find(joined); it != ids_.end())
        queue.push({vocab_.score(it->second), left, right, l.id, r.id, it->second});
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

  static constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581, SentencePiece's space

  Kind kind_ = Kind::llama2c;
  Vocab vocab_;
  std::int32_t bos_ = -1, eos_ = -1, unk_ = -1, pad_ = -1;
  bool add_bos_ = true, add_eos_ = false;
  bool add_space_prefix_ = true;  // SentencePiece: a space before the text (tokenizer.ggml.add_space_prefix)
  // The text steps that tokenizer.json states and GGUF implies (text/hf_tokenizer.hpp).
  bool nfc_ = false;                      // Unicode NFC first
  bool escape_spaces_ = true;             // SentencePiece: spaces written as U+2581
  bool space_prefix_first_only_ = false;  // SentencePiece: the space prefix before the text only, not after specials
  bool split_at_space_marker_ = false;    // SentencePiece: merges never cross a word's leading U+2581
  bool byte_level_space_prefix_ = false;  // byte-level: a space before text that starts without one

  // llama2c
  std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>> ids_;  // text -> token
  std::array<std::int32_t, 256> byte_ids_{};  // byte -> its fallback token, -1 where absent

  // GGUF vocabularies
  SpecialTokens special_;
  SentencePieceBpe spm_;
  ByteLevelBpe bpe_;
};

inline Tokenizer Tokenizer::from_gguf(const GGUFFile& file) {
  const std::string& name = file.name();
  const auto at = [&](std::string_view key) { return name + ", key " + std::string(key); };
  Tokenizer t;
  const std::string model = file.get_string("tokenizer.ggml.model");
  if (model == "llama") {
    t.kind_ = Kind::sentencepiece;
  } else if (model == "gpt2") {
    t.kind_ = Kind::byte_level_bpe;
  } else {
    throw Error("unsupported tokenizer model '" + model + "'", at("tokenizer.ggml.model"),
                "\"llama\" (SentencePiece) or \"gpt2\" (byte-level BPE)");
  }

  std::vector<std::string> texts = file.get_string_array("tokenizer.ggml.tokens");
  const std::size_t n = texts.size();
  for (std::size_t i = 0; i < n; ++i)  // as llama.cpp names them, so that texts stay unique
    if (texts[i].empty()) texts[i] = "[EMPTY_" + std::to_string(i) + "]";
  std::vector<float> scores(n, 0.0f);
  if (const GGUFValue* v = file.find("tokenizer.ggml.scores")) {
    if (v->type() == GGUFType::ARRAY && v->array_type() == GGUFType::INT32) {
      const std::vector<std::int32_t> ints = file.get_i32_array("tokenizer.ggml.scores");
      scores.assign(ints.begin(), ints.end());
    } else {
      scores = file.get_f32_array("tokenizer.ggml.scores");
    }
    if (scores.size() < n)
      throw Error(std::to_string(scores.size()) + " scores for " + std::to_string(n) + " tokens",
                  at("tokenizer.ggml.scores"), "one score per token");
    scores.resize(n);
  }
  std::vector<TokenType> types(n, TokenType::normal);
  if (file.has("tokenizer.ggml.token_type")) {
    const std::vector<std::int32_t> raw = file.get_i32_array("tokenizer.ggml.token_type");
    if (raw.size() < n)
      throw Error(std::to_string(raw.size()) + " token types for " + std::to_string(n) + " tokens",
                  at("tokenizer.ggml.token_type"), "one type per token");
    for (std::size_t i = 0; i < n; ++i)
      types[i] = raw[i] >= 1 && raw[i] <= 6 ? static_cast<TokenType>(raw[i]) : TokenType::undefined;
  }
  t.vocab_ = Vocab(std::move(texts), std::move(scores), std::move(types), at("tokenizer.ggml.tokens"));
  const Vocab& vocab = t.vocab_;
  for (std::int32_t id = 0; id < vocab.size(); ++id)
    if (const std::int32_t first = vocab.find(vocab.text(id)); first != id)
      throw Error("token " + std::to_string(id) + " repeats the text of token " + std::to_string(first) +
                      ", '" + vocab.text(id) + "'",
                  at("tokenizer.ggml.tokens"), "unique token texts");

  // llama.cpp's defaults per model, then the file's keys.
  const bool spm = t.kind_ == Kind::sentencepiece;
  PreTokenizerPreset preset{PreTokenizer::default_};
  if (!spm) {
    const std::string pre = file.has("tokenizer.ggml.pre") ? file.get_string("tokenizer.ggml.pre") : "default";
    const auto found = find_pre_tokenizer(pre);
    if (!found)
      throw Error("unknown pre-tokenizer '" + pre + "'", at("tokenizer.ggml.pre"),
                  "one of default, gpt-2, llama3 (llama-bpe), falcon, deepseek-llm, deepseek-coder, qwen2, "
                  "starcoder, refact, mpt, or a name llama.cpp maps to one of these");
    preset = *found;
  }
  const auto id_or_none = [&](std::int32_t id) { return vocab.contains(id) ? id : -1; };
  t.bos_ = id_or_none(spm ? 1 : 11);
  t.eos_ = id_or_none(spm ? 2 : 11);
  t.unk_ = spm ? id_or_none(0) : -1;
  t.pad_ = -1;
  // A key whose id is outside the vocabulary leaves the default, as llama.cpp does.
  const auto read_id = [&](std::string_view key, std::int32_t& id) {
    const GGUFValue* v = file.find(key);
    if (!v) return;
    const auto value = v->to_integer<std::int64_t>();
    if (!value) throw Error("metadata key has type " + std::string(gguf_type_name(v->type())), at(key), "an integer");
    if (*value >= 0 && *value < vocab.size()) id = static_cast<std::int32_t>(*value);
  };
  read_id("tokenizer.ggml.bos_token_id", t.bos_);
  read_id("tokenizer.ggml.eos_token_id", t.eos_);
  read_id("tokenizer.ggml.unknown_token_id", t.unk_);
  read_id("tokenizer.ggml.padding_token_id", t.pad_);
  t.add_bos_ = file.get_bool_or("tokenizer.ggml.add_bos_token", spm || preset.add_bos);
  t.add_eos_ = file.get_bool_or("tokenizer.ggml.add_eos_token", false);
  t.add_space_prefix_ = spm && file.get_bool_or("tokenizer.ggml.add_space_prefix", true);
  if (t.add_bos_ && t.bos_ < 0)
    throw Error("BOS is to be added but there is no BOS token", at("tokenizer.ggml.add_bos_token"),
                "tokenizer.ggml.bos_token_id");
  if (t.add_eos_ && t.eos_ < 0)
    throw Error("EOS is to be added but there is no EOS token", at("tokenizer.ggml.add_eos_token"),
                "tokenizer.ggml.eos_token_id");

  t.special_ = SpecialTokens(vocab);
  // GGUF has no per-token strip flags; llama.cpp sets Phi-3's by model name: its special tokens
  // swallow the spaces after them, but for <unk>, <s> and <|endoftext|>.
  std::string model_name = file.has("general.name") ? file.get_string("general.name") : "";
  for (char& c : model_name)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  if (model_name.find("phi-3") != std::string::npos || model_name.find("phi3") != std::string::npos) {
    t.special_.set_strip_all(false, true);
    for (const std::string_view text : {"<unk>", "<s>", "<|endoftext|>"})
      if (const std::int32_t id = vocab.find(text); id >= 0) t.special_.set_strip(id, false, false);
  }

  if (spm) {
    t.spm_ = SentencePieceBpe(vocab, t.unk_);
  } else {
    MergeRanks merges;
    for (const std::string& line : file.get_string_array("tokenizer.ggml.merges")) merges.add_line(vocab, line);
    t.bpe_ = ByteLevelBpe(vocab, std::move(merges), preset, t.unk_);
  }
  return t;
}

// What a model loader calls: the tokenizer of a GGUF file.
inline Tokenizer tokenizer_from_gguf(const GGUFFile& file) { return Tokenizer::from_gguf(file); }

}  // namespace tinyllm

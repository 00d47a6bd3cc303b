#pragma once
// A tokenizer's vocabulary: each token's text, score and type, and the lookup from text to token.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <tinyllm/core/error.hpp>

namespace tinyllm {

// GGUF's tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : std::uint8_t {
  undefined = 0,
  normal = 1,
  unknown = 2,       // UNK
  control = 3,       // BOS, EOS, chat markers: written in the text only with parse_special
  user_defined = 4,  // always matched in the text, before any other splitting
  unused = 5,
  byte = 6,          // "<0xAB>": the byte 0xAB
};

class Vocab {
 public:
  Vocab() = default;

  Vocab(std::vector<std::string> texts, std::vector<float> scores, std::vector<TokenType> types,
        const std::string& where)
      : texts_(std::move(texts)), scores_(std::move(scores)), types_(std::move(types)) {
    if (texts_.empty()) throw Error("the vocabulary is empty", where, "at least one token");
    if (texts_.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
      throw Error("the vocabulary has " + std::to_string(texts_.size()) + " tokens", where, "fewer than 2^31");
    if (scores_.size() != texts_.size() || types_.size() != texts_.size())
      throw Error("the vocabulary has " + std::to_string(texts_.size()) + " tokens but " +
                      std::to_string(scores_.size()) + " scores and " + std::to_string(types_.size()) + " types",
                  where, "one score and one type per token");
    ids_.reserve(texts_.size());
    for (std::int32_t id = 0; id < size(); ++id) {
      if (std::isnan(scores_[id]))
        throw Error("score is NaN", where + ", token " + std::to_string(id), "a number");
      ids_.try_emplace(texts_[id], id);
    }
  }

  std::int32_t size() const noexcept { return static_cast<std::int32_t>(texts_.size()); }
  bool contains(std::int32_t id) const noexcept { return id >= 0 && id < size(); }

  // Unchecked: id must be in [0, size()).
  const std::string& text(std::int32_t id) const { return texts_[id]; }
  float score(std::int32_t id) const { return scores_[id]; }
  TokenType type(std::int32_t id) const { return types_[id]; }

  // The first token whose text is `text`, or -1.
  std::int32_t find(std::string_view text) const {
    const auto it = ids_.find(text);
    return it == ids_.end() ? -1 : it->second;
  }

 private:
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };

  std::vector<std::string> texts_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>> ids_;
};

}  // namespace tinyllm

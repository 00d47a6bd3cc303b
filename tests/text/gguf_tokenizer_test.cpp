#include <tinyllm/core/error.hpp>
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/io/llama2c.hpp>
#include <tinyllm/text/tokenizer.hpp>
#include <tinyllm/text/unicode.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;
using Ids = std::vector<std::int32_t>;

namespace {

const std::vector<std::string> kVocabs = {"llama-spm", "phi-3", "gpt-2", "falcon", "deepseek-llm"};

std::string vocab_path(const std::string& name) { return "vocab/ggml-vocab-" + name + ".gguf"; }

Tokenizer load(const std::string& name) {
  return tokenizer_from_gguf(GGUFFile::open(test::testdata(vocab_path(name)).string()));
}

std::string read_text(const std::string& rel) {
  const std::vector<char> bytes = test::read_bytes(test::testdata(rel));
  return std::string(bytes.begin(), bytes.end());
}

Ids parse_ids(const std::string& line) {
  Ids ids;
  std::istringstream in(line);
  for (std::int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// llama.cpp's test-tokenizer-0 files: the .inp file holds the test strings, each followed by the
// line "__ggml_vocab_test__" (so a string's own last newline, if any, is the one before that
// line); the .out file has one line of ids per string, made without BOS/EOS and special parsing.
std::vector<std::pair<std::string, Ids>> read_cases(const std::string& name) {
  std::string inp = read_text(vocab_path(name) + ".inp");
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (std::size_t pos; (pos = inp.find(separator)) != std::string::npos; inp.erase(0, pos + separator.size()))
    texts.push_back(inp.substr(0, pos));
  REQUIRE(inp.empty());
  std::istringstream out(read_text(vocab_path(name) + ".out"));
  std::vector<Ids> expected;
  for (std::string line; std::getline(out, line);) expected.push_back(parse_ids(line));
  REQUIRE(texts.size() == expected.size());
  std::vector<std::pair<std::string, Ids>> cases;
  for (std::size_t i = 0; i < texts.size(); ++i) cases.emplace_back(texts[i], expected[i]);
  return cases;
}

// Random strings mixing ASCII (spaces and newlines included), code points from several planes, and
// raw bytes that are often ill-formed UTF-8.
std::string random_text(std::mt19937& rng) {
  std::string s;
  const int n = int(rng() % 48);
  for (int i = 0; i < n; ++i) {
    switch (rng() % 5) {
      case 0:
        s += " \n\t\r'"[rng() % 5];
        break;
      case 1:
        s += char(0x20 + rng() % 95);
        break;
      case 2:
        s += char(rng() % 256);
        break;
      default: {
        const std::uint32_t starts[] = {0xA0, 0x400, 0x3000, 0x4E00, 0x1F600};
        append_utf8(s, starts[rng() % 5] + rng() % 256);
      }
    }
  }
  return s;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

Ids concat(std::initializer_list<Ids> parts) {
  Ids all;
  for (const Ids& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

void check_llama_cpp_tokenizations(const std::string& name) {
  TINYLLM_REQUIRE_TESTDATA(vocab_path(name));
  TINYLLM_REQUIRE_TESTDATA(vocab_path(name) + ".inp");
  TINYLLM_REQUIRE_TESTDATA(vocab_path(name) + ".out");
  const Tokenizer tok = load(name);
  const auto cases = read_cases(name);
  REQUIRE(cases.size() > 40);
  for (const auto& c : cases) {
    const std::string& text = c.first;
    CAPTURE(text);
    CHECK(tok.encode(text, false) == c.second);
    CHECK(tok.encode(text, {.add_special = false, .parse_special = false}) == c.second);
  }
}

}  // namespace

TEST_CASE("GGUF tokenizer, llama-spm: llama.cpp's tokenizations") { check_llama_cpp_tokenizations("llama-spm"); }
TEST_CASE("GGUF tokenizer, phi-3: llama.cpp's tokenizations") { check_llama_cpp_tokenizations("phi-3"); }
TEST_CASE("GGUF tokenizer, gpt-2: llama.cpp's tokenizations") { check_llama_cpp_tokenizations("gpt-2"); }
TEST_CASE("GGUF tokenizer, falcon: llama.cpp's tokenizations") { check_llama_cpp_tokenizations("falcon"); }
TEST_CASE("GGUF tokenizer, deepseek-llm: llama.cpp's tokenizations") { check_llama_cpp_tokenizations("deepseek-llm"); }

TEST_CASE("GGUF tokenizers round-trip arbitrary bytes, ill-formed UTF-8 included") {
  for (const std::string& name : kVocabs) {
    CAPTURE(name);
    TINYLLM_REQUIRE_TESTDATA(vocab_path(name));
    const Tokenizer tok = load(name);
    const bool spm = tok.kind() == Tokenizer::Kind::sentencepiece;
    // What a byte comes back as, encoded alone: itself; or, in byte-level BPE, nothing where the
    // vocabulary has no token for it (Falcon lacks 28 of GPT-2's 256 byte tokens; llama.cpp drops
    // such bytes too); or a letter where DeepSeek made the code point GPT-2 gives a byte that never
    // occurs in UTF-8 (0xC0, 0xC1, 0xF5..0xFF) a user-defined token for that letter ('\xFA' is
    // "\u00FA", 'ú'), which decodes as its text.
    std::array<std::string, 256> alone;
    int changed = 0;
    for (int b = 0; b < 256; ++b) {
      const std::string byte(1, char(b));
      alone[b] = spm ? byte : tok.decode(tok.encode(byte, false));
      changed += alone[b] != byte;
    }
    CHECK(changed == (name == "falcon" ? 28 : name == "deepseek-llm" ? 13 : 0));
    std::mt19937 rng(7);
    for (int round = 0; round < 300; ++round) {
      const std::string s = random_text(rng);
      CAPTURE(s);
      if (spm) {
        // SentencePiece adds a space before the text; decoding after BOS drops it again.
        REQUIRE(tok.decode(tok.encode(s, true, true)) == s);
        REQUIRE(tok.decode(tok.encode(s, false)) == (s.empty() ? s : " " + s));
      } else {
        std::string expected;
        for (const char c : s) expected += alone[static_cast<unsigned char>(c)];
        REQUIRE(tok.decode(tok.encode(s, false)) == expected);
        REQUIRE(tok.decode(tok.encode(s, true, true)) == expected);  // BOS and EOS are control tokens
      }
      // Token by token, as a stream prints them.
      const Ids ids = tok.encode(s, true);
      std::string streamed;
      std::int32_t prev = -1;
      Utf8Stream stream;
      for (const std::int32_t id : ids) {
        streamed += stream.push(tok.decode(prev, id));
        prev = id;
      }
      REQUIRE(streamed + stream.flush() == tok.decode(ids));
    }
  }
}

TEST_CASE("GGUF tokenizer, stories260K: the same tokens as llama2.c's tok512, ill-formed UTF-8 included") {
  TINYLLM_REQUIRE_TESTDATA("arch/stories260K.gguf");
  TINYLLM_REQUIRE_TESTDATA("llama2c/tok512.bin");
  const Tokenizer gguf = tokenizer_from_gguf(GGUFFile::open(test::testdata("arch/stories260K.gguf").string()));
  Llama2cVocab vocab = read_llama2c_vocab(test::testdata("llama2c/tok512.bin").string(), 512);
  const Tokenizer llama2c(std::move(vocab.pieces), std::move(vocab.scores));
  CHECK(gguf.encode("Once upon a time", true) == Ids{1, 403, 407, 261, 378});
  CHECK(gguf.pad() == -1);  // padding_token_id 2^32 - 1 is no token
  std::mt19937 rng(11);
  for (int round = 0; round < 1000; ++round) {
    const std::string s = random_text(rng);
    CAPTURE(s);
    const Ids ids = gguf.encode(s, true, true);
    REQUIRE(ids == llama2c.encode(s, true, true));
    REQUIRE(gguf.decode(ids) == llama2c.decode(ids));
  }
}

TEST_CASE("GGUF tokenizer metadata: kinds, special ids and flags as llama.cpp reads them") {
  TINYLLM_REQUIRE_TESTDATA(vocab_path("llama-spm"));
  TINYLLM_REQUIRE_TESTDATA(vocab_path("gpt-2"));
  TINYLLM_REQUIRE_TESTDATA(vocab_path("deepseek-llm"));
  const Tokenizer spm = load("llama-spm");
  CHECK(spm.kind() == Tokenizer::Kind::sentencepiece);
  CHECK(spm.size() == 32000);
  CHECK(spm.bos() == 1);
  CHECK(spm.eos() == 2);
  CHECK(spm.unk() == 0);
  CHECK(spm.adds_bos());
  CHECK_FALSE(spm.adds_eos());
  CHECK(spm.token_type(0) == TokenType::unknown);
  CHECK(spm.token_type(1) == TokenType::control);
  CHECK(spm.token_type(3) == TokenType::byte);
  CHECK(spm.piece(3) == "<0x00>");
  CHECK(spm.encode("Hello", {.add_special = true}).front() == 1);
  CHECK(spm.encode("Hello", {.add_special = true}).back() != 2);

  const Tokenizer gpt2 = load("gpt-2");
  CHECK(gpt2.kind() == Tokenizer::Kind::byte_level_bpe);
  CHECK(gpt2.bos() == 50256);
  CHECK(gpt2.eos() == 50256);
  CHECK(gpt2.unk() == -1);
  CHECK_FALSE(gpt2.adds_bos());  // no tokenizer.ggml.add_bos_token: llama.cpp's default for gpt-2
  CHECK(gpt2.encode("Hello", {.add_special = true}) == gpt2.encode("Hello", false));

  const Tokenizer deepseek = load("deepseek-llm");
  CHECK(deepseek.bos() == 100000);
  CHECK(deepseek.eos() == 100001);
  CHECK(deepseek.pad() == 100001);
  CHECK(deepseek.adds_bos());
  CHECK(deepseek.encode("Hello", {.add_special = true}).front() == 100000);
}

TEST_CASE("GGUF tokenizer decodes token by token, as llama.cpp's token_to_piece") {
  TINYLLM_REQUIRE_TESTDATA(vocab_path("llama-spm"));
  TINYLLM_REQUIRE_TESTDATA(vocab_path("gpt-2"));
  const Tokenizer spm = load("llama-spm");
  const Ids hello = spm.encode("Hello", false);  // "▁Hello"
  REQUIRE(hello.size() == 1);
  CHECK(spm.piece(hello[0]) == "\xE2\x96\x81Hello");
  CHECK(spm.decode(hello[0]) == " Hello");
  CHECK(spm.decode(spm.bos(), hello[0]) == "Hello");  // the space SentencePiece added goes again
  CHECK(spm.decode(spm.bos()) == "");                 // control tokens print nothing
  CHECK(spm.decode(spm.eos()) == "");
  CHECK(spm.decode(13) == "\n");  // <0x0A>
  CHECK(spm.decode(Ids{1, hello[0], hello[0], 2}) == "Hello Hello");
  CHECK_THROWS_AS(spm.decode(32000), Error);
  CHECK_THROWS_AS(spm.piece(-1), Error);

  const Tokenizer gpt2 = load("gpt-2");
  const Ids world = gpt2.encode(" world", false);  // "Ġworld"
  REQUIRE(world.size() == 1);
  CHECK(gpt2.piece(world[0]) == "\xC4\xA0world");
  CHECK(gpt2.decode(world[0]) == " world");
  CHECK(gpt2.decode(50256) == "");
  // A character split over byte tokens comes back whole only once all its bytes are there.
  const Ids emoji = gpt2.encode("\xF0\x9F\xA6\x99", false);
  REQUIRE(emoji.size() > 1);
  Utf8Stream stream;
  std::string shown;
  for (const std::int32_t id : emoji) shown += stream.push(gpt2.decode(id));
  CHECK(shown == "\xF0\x9F\xA6\x99");
}

TEST_CASE("GGUF tokenizer finds control tokens in the text only when asked (parse_special)") {
  TINYLLM_REQUIRE_TESTDATA(vocab_path("gpt-2"));
  TINYLLM_REQUIRE_TESTDATA(vocab_path("llama-spm"));
  TINYLLM_REQUIRE_TESTDATA(vocab_path("falcon"));
  const Tokenizer::EncodeOptions special{.add_special = false, .parse_special = true};
  const Tokenizer::EncodeOptions plain{.add_special = false, .parse_special = false};

  const Tokenizer gpt2 = load("gpt-2");
  CHECK(gpt2.encode("<|endoftext|>", special) == Ids{50256});
  const Ids spelled = gpt2.encode("<|endoftext|>", plain);
  CHECK(spelled.size() > 1);
  CHECK(gpt2.decode(spelled) == "<|endoftext|>");
  CHECK(gpt2.encode("Hello<|endoftext|> world", special) ==
        concat({gpt2.encode("Hello", false), {50256}, gpt2.encode(" world", false)}));

  // SentencePiece: the text after a special token gets its own leading space.
  const Tokenizer spm = load("llama-spm");
  CHECK(spm.encode("<s>", special) == Ids{1});
  CHECK(spm.encode("<s>Hello</s>", special) == concat({{1}, spm.encode("Hello", false), {2}}));
  CHECK(spm.encode("Hi<s>there", special) == concat({spm.encode("Hi", false), {1}, spm.encode("there", false)}));
  CHECK(spm.encode("<s>", plain) != Ids{1});
  CHECK(spm.decode(spm.encode("<s>", plain)) == " <s>");
  CHECK(spm.encode("<s>Hi", {.add_special = true, .parse_special = true}) ==
        concat({{1, 1}, spm.encode("Hi", false)}));

  const Tokenizer falcon = load("falcon");
  CHECK(falcon.encode(">>TITLE<<Hello", special) == concat({{0}, falcon.encode("Hello", false)}));
  CHECK(falcon.encode(">>TITLE<<Hello", plain).front() != 0);
}

TEST_CASE("GGUF tokenizer always finds user-defined tokens in the text") {
  TINYLLM_REQUIRE_TESTDATA(vocab_path("deepseek-llm"));
  TINYLLM_REQUIRE_TESTDATA(vocab_path("phi-3"));
  const Tokenizer deepseek = load("deepseek-llm");
  REQUIRE(deepseek.token_type(100002) == TokenType::user_defined);
  REQUIRE(deepseek.piece(100002) == "\xC3\xB8");  // ø
  CHECK(deepseek.encode("\xC3\xB8", false) == Ids{100002});
  CHECK(deepseek.encode("a\xC3\xB8" "b", false) ==
        concat({deepseek.encode("a", false), {100002}, deepseek.encode("b", false)}));
  CHECK(deepseek.decode(100002) == "\xC3\xB8");

  // Phi-3's "</s>" is user-defined, and (by llama.cpp's rule for Phi-3) swallows the spaces after
  // it; its control tokens do too, once parse_special finds them.
  const Tokenizer phi3 = load("phi-3");
  REQUIRE(phi3.token_type(2) == TokenType::user_defined);
  CHECK(phi3.encode("</s>", false) == Ids{2});
  CHECK(phi3.encode("a</s>  \n b", false) == concat({phi3.encode("a", false), {2}, phi3.encode("b", false)}));
  CHECK(phi3.encode("<|user|>\nHi", {.add_special = false, .parse_special = true}) ==
        concat({{32010}, phi3.encode("Hi", false)}));
  CHECK(phi3.encode("<|user|>\nHi", false).front() != 32010);
  // <|endoftext|> keeps the spaces after it.
  CHECK(phi3.encode("<|endoftext|> Hi", {.add_special = false, .parse_special = true}) ==
        concat({{32000}, phi3.encode(" Hi", false)}));
}

namespace {

// A byte-level BPE vocabulary written by our own GGUF writer: GPT-2's 256 byte tokens, then
// `extra`, with `merges`.
std::vector<std::byte> synthetic_bpe(const std::string& pre, const std::vector<std::string>& extra,
                                     const std::vector<std::string>& merges,
                                     const std::function<void(GGUFWriter&)>& more = {}) {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) {
    std::string t;
    append_utf8(t, kGpt2ByteCodePoints[b]);
    tokens.push_back(t);
  }
  tokens.insert(tokens.end(), extra.begin(), extra.end());
  GGUFWriter w;
  w.set_string("general.architecture", "gpt2");
  w.set_string("tokenizer.ggml.model", "gpt2");
  if (!pre.empty()) w.set_string("tokenizer.ggml.pre", pre);
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set_i32_array("tokenizer.ggml.token_type", std::vector<std::int32_t>(tokens.size(), 1));
  w.set_string_array("tokenizer.ggml.merges", merges);
  if (more) more(w);
  return w.to_bytes();
}

Tokenizer parse(const std::vector<std::byte>& bytes) {
  return tokenizer_from_gguf(GGUFFile::parse(bytes, "synthetic.gguf"));
}

}  // namespace

TEST_CASE("Byte-level BPE merges the lowest rank first, the leftmost on ties") {
  const Tokenizer bc_first = parse(synthetic_bpe("gpt-2", {"ab", "bc"}, {"b c", "a b"}));
  CHECK(bc_first.encode("abc", false) == Ids{'a', 257});
  const Tokenizer ab_first = parse(synthetic_bpe("gpt-2", {"ab", "bc"}, {"a b", "b c"}));
  CHECK(ab_first.encode("abc", false) == Ids{256, 'c'});
  const Tokenizer aa = parse(synthetic_bpe("gpt-2", {"aa", "aaaa"}, {"a a", "aa aa"}));
  CHECK(aa.encode("aaa", false) == Ids{256, 'a'});
  CHECK(aa.encode("aaaaa", false) == Ids{257, 'a'});
  // Words merge only within themselves: " a" and "a" are separate words here.
  const Tokenizer space = parse(synthetic_bpe("gpt-2", {"\xC4\xA0" "a", "a\xC4\xA0"}, {"a \xC4\xA0", "\xC4\xA0 a"}));
  CHECK(space.encode("a a", false) == Ids{'a', 256});
  // A merge whose result is no token is never made.
  const Tokenizer broken = parse(synthetic_bpe("gpt-2", {"xy"}, {"a b", "x y"}));
  CHECK(broken.encode("abxy", false) == Ids{'a', 'b', 256});
}

TEST_CASE("Byte-level BPE: llama3's presets take a word that is a token whole and add BOS") {
  const auto bytes_for = [](const std::string& pre) { return synthetic_bpe(pre, {"ab", "abc"}, {"a b"}); };
  const Tokenizer llama3 = parse(bytes_for("llama-bpe"));
  CHECK(llama3.encode("abc", false) == Ids{257});
  CHECK(llama3.adds_bos());
  CHECK(llama3.encode("abc", {.add_special = true}) == Ids{11, 257});  // llama.cpp's default BOS for BPE is 11
  const Tokenizer smaug = parse(bytes_for("smaug-bpe"));  // llama3's split, merges kept
  CHECK(smaug.encode("abc", false) == Ids{256, 'c'});
  CHECK_FALSE(smaug.adds_bos());
  const Tokenizer gpt2 = parse(bytes_for("gpt-2"));
  CHECK(gpt2.encode("abc", false) == Ids{256, 'c'});
  const Tokenizer unnamed = parse(bytes_for(""));  // no tokenizer.ggml.pre: llama.cpp's "default"
  CHECK(unnamed.encode("abc", false) == Ids{256, 'c'});
}

TEST_CASE("GGUF tokenizer metadata errors name the key and the value") {
  const std::string unknown_pre = error_of([] { parse(synthetic_bpe("no-such-pre", {}, {})); });
  CHECK(unknown_pre.find("'no-such-pre'") != std::string::npos);
  CHECK(unknown_pre.find("tokenizer.ggml.pre") != std::string::npos);
  const std::string model = error_of([] {
    parse(synthetic_bpe("gpt-2", {}, {}, [](GGUFWriter& w) { w.set_string("tokenizer.ggml.model", "bert"); }));
  });
  CHECK(model.find("'bert'") != std::string::npos);
  CHECK(model.find("tokenizer.ggml.model") != std::string::npos);
  const std::string duplicate = error_of([] { parse(synthetic_bpe("gpt-2", {"a"}, {})); });
  CHECK(duplicate.find("token 256 repeats the text of token 97") != std::string::npos);
  const std::string no_bos = error_of([] {
    parse(synthetic_bpe("gpt-2", {}, {}, [](GGUFWriter& w) {
      w.set_bool("tokenizer.ggml.add_bos_token", true);
      w.set_string_array("tokenizer.ggml.tokens", std::vector<std::string>{"a", "b"});
      w.set_i32_array("tokenizer.ggml.token_type", std::vector<std::int32_t>{1, 1});
    }));
  });
  CHECK(no_bos.find("no BOS token") != std::string::npos);
  const std::string few_types = error_of([] {
    parse(synthetic_bpe("gpt-2", {}, {}, [](GGUFWriter& w) {
      w.set_i32_array("tokenizer.ggml.token_type", std::vector<std::int32_t>{1, 1});
    }));
  });
  CHECK(few_types.find("tokenizer.ggml.token_type") != std::string::npos);
  CHECK_THROWS_AS(parse(synthetic_bpe("gpt-2", {}, {}, [](GGUFWriter& w) {
                    w.set_string("tokenizer.ggml.merges", "not an array");
                  })),
                  Error);
}

TEST_CASE("SentencePiece from GGUF falls back to byte tokens, else to UNK") {
  const auto write = [](bool byte_tokens) {
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "\xE2\x96\x81" "a"};
    std::vector<std::int32_t> types = {2, 3, 3, 1, 1, 1};
    std::vector<float> scores = {0, 0, 0, -1, -1, -2};
    if (byte_tokens) {
      for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        tokens.push_back(name);
        types.push_back(6);
        scores.push_back(0);
      }
    }
    GGUFWriter w;
    w.set_string("tokenizer.ggml.model", "llama");
    w.set_string_array("tokenizer.ggml.tokens", tokens);
    w.set_i32_array("tokenizer.ggml.token_type", types);
    w.set_f32_array("tokenizer.ggml.scores", scores);
    return w.to_bytes();
  };
  const Tokenizer bytes = parse(write(true));
  CHECK(bytes.encode("a\xC3\xA9", false) == Ids{5, 6 + 0xC3, 6 + 0xA9});
  CHECK(bytes.decode(bytes.encode("a\xC3\xA9 a", true)) == "a\xC3\xA9 a");
  const Tokenizer unk = parse(write(false));
  CHECK(unk.encode("a\xC3\xA9", false) == Ids{5, 0, 0});
  CHECK(unk.encode("aa", {.add_special = true}) == Ids{1, 5, 4});
}

#include <tinyllm/core/error.hpp>
#include <tinyllm/io/llama2c.hpp>
#include <tinyllm/text/tokenizer.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;
using Ids = std::vector<std::int32_t>;

namespace {

Tokenizer load_llama2c_tokenizer(const std::string& rel, int vocab_size) {
  Llama2cVocab vocab = read_llama2c_vocab(test::testdata(rel).string(), vocab_size);
  return Tokenizer(std::move(vocab.pieces), std::move(vocab.scores));
}

// A small vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then `extra` with their scores.
Tokenizer small_tokenizer(const std::vector<std::pair<std::string, float>>& extra) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.push_back(name);
    scores.push_back(0);
  }
  for (const auto& [piece, score] : extra) {
    pieces.push_back(piece);
    scores.push_back(score);
  }
  return Tokenizer(std::move(pieces), std::move(scores));
}

std::vector<std::string> pieces_of(const Tokenizer& tok, const Ids& ids) {
  std::vector<std::string> out;
  for (const std::int32_t id : ids) out.push_back(tok.piece(id));
  return out;
}

Ids parse_ids(const std::string& line) {
  Ids ids;
  std::istringstream in(line);
  for (std::int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// Random strings mixing ASCII (spaces and newlines included), code points from several planes, and
// raw bytes that are often ill-formed UTF-8.
std::string random_text(std::mt19937& rng) {
  std::string s;
  const int n = int(rng() % 48);
  for (int i = 0; i < n; ++i) {
    switch (rng() % 5) {
      case 0:
        s += " \n\tab"[rng() % 5];
        break;
      case 1:
        s += char(0x20 + rng() % 95);
        break;
      case 2:
        s += char(rng() % 256);
        break;
      default: {
        const std::uint32_t starts[] = {0xA0, 0x400, 0x4E00, 0x1F600};
        const std::uint32_t cp = starts[rng() % 4] + rng() % 256;
        if (cp < 0x800) {
          s += char(0xC0 | (cp >> 6));
        } else if (cp < 0x10000) {
          s += char(0xE0 | (cp >> 12));
          s += char(0x80 | ((cp >> 6) & 0x3F));
        } else {
          s += char(0xF0 | (cp >> 18));
          s += char(0x80 | ((cp >> 12) & 0x3F));
          s += char(0x80 | ((cp >> 6) & 0x3F));
        }
        s += char(0x80 | (cp & 0x3F));
      }
    }
  }
  return s;
}

void check_round_trips(const Tokenizer& tok) {
  std::mt19937 rng(42);
  for (int round = 0; round < 500; ++round) {
    const std::string s = random_text(rng);
    CAPTURE(s);
    // After BOS the dummy space is dropped again, so the text comes back exactly.
    REQUIRE(tok.decode(tok.encode(s, true)) == s);
    REQUIRE(tok.decode(tok.encode(s, true, true)) == s);
    // Without BOS it stays.
    REQUIRE(tok.decode(tok.encode(s, false)) == (s.empty() ? s : " " + s));
  }
}

}  // namespace

TEST_CASE("Tokenizer validates its vocabulary") {
  CHECK_THROWS_AS(Tokenizer({"a", "b"}, {0.0f}), Error);
  CHECK_THROWS_AS(Tokenizer({}, {}), Error);
  CHECK_THROWS_AS(Tokenizer({"a", "b", "c"}, {0, 0, 0}, 3, 2), Error);
  CHECK_THROWS_AS(Tokenizer({"a", "b", "c"}, {0, 0, 0}, 1, -1), Error);
  CHECK_THROWS_AS(Tokenizer({"a", "b", "c"}, {0, std::nanf(""), 0}), Error);
  const Tokenizer tok({"<unk>", "<s>", "</s>", " ", "a"}, {0, 0, 0, 0, 0});
  CHECK(tok.size() == 5);
  CHECK(tok.bos() == 1);
  CHECK(tok.eos() == 2);
  CHECK_THROWS_AS(tok.decode(1, 5), Error);
  CHECK_THROWS_AS(tok.decode(1, -1), Error);
  CHECK_THROWS_AS(tok.piece(5), Error);
  CHECK_THROWS_AS(tok.decode(Ids{3, 4, 7}), Error);
  CHECK_THROWS_AS(tok.encode("b", false), Error);  // neither a piece nor a byte token for 'b'
}

TEST_CASE("Tokenizer merges the highest-scoring pair first, the leftmost on ties") {
  SUBCASE("ties go to the left") {
    const Tokenizer tok = small_tokenizer({{" ", -1}, {"a", -1}, {"aa", -2}});
    CHECK(pieces_of(tok, tok.encode("aaa", false)) == std::vector<std::string>{" ", "aa", "a"});
  }
  SUBCASE("a higher score wins over position") {
    const Tokenizer tok =
        small_tokenizer({{" ", -1}, {"a", -1}, {"b", -1}, {"c", -1}, {"ab", -5}, {"bc", -3}});
    CHECK(pieces_of(tok, tok.encode("abc", false)) == std::vector<std::string>{" ", "a", "bc"});
  }
  SUBCASE("merged pieces merge again") {
    const Tokenizer tok = small_tokenizer(
        {{" ", -1}, {"a", -1}, {"b", -1}, {"ab", -2}, {" ab", -3}, {"abab", -4}, {" abab", -9}});
    CHECK(pieces_of(tok, tok.encode("abab", false)) == std::vector<std::string>{" abab"});
  }
  SUBCASE("BOS and EOS frame the text; empty text has no dummy space") {
    const Tokenizer tok = small_tokenizer({{" ", -1}, {"a", -1}});
    CHECK(tok.encode("", true, true) == Ids{1, 2});
    CHECK(tok.encode("", false).empty());
    CHECK(pieces_of(tok, tok.encode("a", true, true)) ==
          std::vector<std::string>{"<s>", " ", "a", "</s>"});
  }
}

TEST_CASE("Tokenizer falls back to byte tokens") {
  const Tokenizer tok = small_tokenizer({{" ", -1}, {"a", -1}, {"é", -1}, {"a\xC3", -1}});
  // 'é' is a piece; 'è' is not, so it becomes its two bytes (0xC3 0xA8 at ids 3 + byte).
  CHECK(tok.encode("éè", false) == Ids{259, 261, 3 + 0xC3, 3 + 0xA8});
  // Ill-formed UTF-8: a stray continuation byte, a byte that is never UTF-8, a truncated sequence.
  CHECK(tok.encode(std::string("\x80") + "a\xFF" + "a\xE2\x82", false) ==
        Ids{259, 3 + 0x80, 260, 3 + 0xFF, 260, 3 + 0xE2, 3 + 0x82});
  // Byte tokens never merge, even where the bytes spell a piece ("a\xC3").
  CHECK(tok.encode("a\xC3", false) == Ids{259, 260, 3 + 0xC3});
  // Text that spells a byte token's name is ordinary text.
  CHECK(tok.decode(tok.encode("<0x41>", true)) == "<0x41>");
}

TEST_CASE("Tokenizer decodes as llama2.c prints") {
  const Tokenizer tok = small_tokenizer({{" ", -1}, {" a", -1}, {"  ", -1}});
  const std::int32_t space = 259, space_a = 260, two_spaces = 261;
  CHECK(tok.decode(1, space_a) == "a");  // after BOS one leading space goes
  CHECK(tok.decode(1, two_spaces) == " ");
  CHECK(tok.decode(space, space_a) == " a");
  CHECK(tok.decode(1, 3 + 0x0A) == "\n");  // a byte token is its raw byte
  CHECK(tok.decode(1, 3 + 0xE2) == "\xE2");
  CHECK(tok.decode(space, 1) == "");  // BOS and EOS print nothing
  CHECK(tok.decode(space, 2) == "");
  CHECK(tok.decode(Ids{1, space_a, space_a, 3 + 0x21, 2}) == "a a!");
  CHECK(tok.decode(Ids{space_a, space_a}) == " a a");
}

TEST_CASE("Tokenizer, stories260K's tok512: the prompt llama2.c encodes") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/tok512.bin");
  const Tokenizer tok = load_llama2c_tokenizer("llama2c/tok512.bin", 512);
  CHECK(tok.encode("Once upon a time", true) == Ids{1, 403, 407, 261, 378});
}

TEST_CASE("Tokenizer, tok512: decoding llama2.c's greedy run gives the text run.c printed") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/tok512.bin");
  TINYLLM_REQUIRE_TESTDATA("reference/once_upon_a_time_p200.header.txt");
  TINYLLM_REQUIRE_TESTDATA("reference/Once_upon_a_time_n200.txt");
  const Tokenizer tok = load_llama2c_tokenizer("llama2c/tok512.bin", 512);
  const std::vector<char> header_bytes =
      test::read_bytes(test::testdata("reference/once_upon_a_time_p200.header.txt"));
  std::istringstream header(std::string(header_bytes.begin(), header_bytes.end()));
  Ids inputs, argmaxes;
  for (std::string line; std::getline(header, line);) {
    if (line.starts_with("input_tokens:")) inputs = parse_ids(line.substr(13));
    if (line.starts_with("argmax_per_row:")) argmaxes = parse_ids(line.substr(15));
  }
  REQUIRE(inputs.size() == 200);
  REQUIRE(argmaxes.size() == 200);
  // run.c -n 200 prints each token after the first, then the last prediction, then a newline.
  Ids printed = inputs;
  printed.push_back(argmaxes.back());
  const std::vector<char> expected =
      test::read_bytes(test::testdata("reference/Once_upon_a_time_n200.txt"));
  CHECK(tok.decode(printed) + "\n" == std::string(expected.begin(), expected.end()));
}

TEST_CASE("Tokenizer, the Llama 2 vocabulary: llama.cpp's tokenizations") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/tokenizer.bin");
  TINYLLM_REQUIRE_TESTDATA("vocab/ggml-vocab-llama-spm.gguf.inp");
  TINYLLM_REQUIRE_TESTDATA("vocab/ggml-vocab-llama-spm.gguf.out");
  const Tokenizer tok = load_llama2c_tokenizer("llama2c/tokenizer.bin", 32000);

  // The .inp file separates test strings by this line; the .out file has one line of ids each,
  // produced without BOS/EOS. llama.cpp's SentencePiece tokenizer adds the same dummy space and
  // makes the same merges (score first, leftmost on ties) and byte fallback, so every line agrees.
  const std::vector<char> inp_bytes =
      test::read_bytes(test::testdata("vocab/ggml-vocab-llama-spm.gguf.inp"));
  std::string inp(inp_bytes.begin(), inp_bytes.end());
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (std::size_t pos; (pos = inp.find(separator)) != std::string::npos;
       inp.erase(0, pos + separator.size()))
    texts.push_back(inp.substr(0, pos));

  const std::vector<char> out_bytes =
      test::read_bytes(test::testdata("vocab/ggml-vocab-llama-spm.gguf.out"));
  std::istringstream out(std::string(out_bytes.begin(), out_bytes.end()));
  std::vector<Ids> expected;
  for (std::string line; std::getline(out, line);) expected.push_back(parse_ids(line));

  REQUIRE(texts.size() > 40);
  REQUIRE(texts.size() == expected.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    CAPTURE(i);
    CAPTURE(texts[i]);
    CHECK(tok.encode(texts[i], false) == expected[i]);
  }
}

TEST_CASE("Tokenizer round-trips arbitrary bytes, ill-formed UTF-8 included: a small vocabulary") {
  check_round_trips(
      small_tokenizer({{" ", -1}, {"a", -2}, {" a", -3}, {"ab", -4}, {"\xC3\xA9", -5}}));
}

TEST_CASE("Tokenizer round-trips arbitrary bytes, ill-formed UTF-8 included: tok512") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/tok512.bin");
  check_round_trips(load_llama2c_tokenizer("llama2c/tok512.bin", 512));
}

TEST_CASE(
    "Tokenizer round-trips arbitrary bytes, ill-formed UTF-8 included: the Llama 2 vocabulary") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/tokenizer.bin");
  check_round_trips(load_llama2c_tokenizer("llama2c/tokenizer.bin", 32000));
}

TEST_CASE("Tokenizer encodes long text in one pass") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/tokenizer.bin");
  const Tokenizer tok = load_llama2c_tokenizer("llama2c/tokenizer.bin", 32000);
  const std::string paragraph =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park. "
      "Über den Wolken muss die Freiheit wohl grenzenlos sein. 東京は日本の首都です。 "
      "🦙🦙 ";
  std::string text;
  while (text.size() < (1u << 20)) text += paragraph;
  const Ids ids = tok.encode(text, true);
  CHECK(tok.decode(ids) == text);
  // The first paragraph tokenizes as it does alone, but for its trailing space, which joins the
  // next paragraph's first word.
  const Ids one = tok.encode(paragraph, false);
  const auto first = ids.begin() + 1;
  CHECK(Ids(first, first + std::ptrdiff_t(one.size() - 1)) == Ids(one.begin(), one.end() - 1));
}

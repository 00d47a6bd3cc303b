#include <tinyllm/text/pretokenize.hpp>
#include <tinyllm/text/unicode.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;
using Words = std::vector<std::string>;

namespace {

Words words(PreTokenizer split, std::string_view text) {
  Words out;
  for (const std::string_view w : pre_tokenize(split, text)) out.emplace_back(w);
  return out;
}

std::string utf8(char32_t c) {
  std::string s;
  append_utf8(s, c);
  return s;
}

}  // namespace

TEST_CASE("Unicode groups and white space, as llama.cpp's tables class them") {
  CHECK(unicode_group('a') == UnicodeGroup::letter);
  CHECK(unicode_group('Z') == UnicodeGroup::letter);
  CHECK(unicode_group('7') == UnicodeGroup::number);
  CHECK(unicode_group('!') == UnicodeGroup::punctuation);
  CHECK(unicode_group('_') == UnicodeGroup::punctuation);
  CHECK(unicode_group('$') == UnicodeGroup::symbol);
  CHECK(unicode_group('`') == UnicodeGroup::symbol);
  CHECK(unicode_group(' ') == UnicodeGroup::separator);
  CHECK(unicode_group('\n') == UnicodeGroup::other);
  CHECK(unicode_group(0) == UnicodeGroup::other);
  CHECK(unicode_group(0xE9) == UnicodeGroup::letter);      // é
  CHECK(unicode_group(0x301) == UnicodeGroup::mark);       // combining acute
  CHECK(unicode_group(0x663) == UnicodeGroup::number);     // Arabic-Indic three
  CHECK(unicode_group(0xB2) == UnicodeGroup::number);      // superscript two
  CHECK(unicode_group(0x3002) == UnicodeGroup::punctuation);
  CHECK(unicode_group(0x4E00) == UnicodeGroup::letter);
  CHECK(unicode_group(0x1F999) == UnicodeGroup::symbol);   // llama
  CHECK(unicode_group(0x378) == UnicodeGroup::other);      // unassigned
  CHECK(unicode_group(0xE000) == UnicodeGroup::other);     // private use
  CHECK(unicode_group(0x10FFFF) == UnicodeGroup::other);
  CHECK(unicode_group(0x110000) == UnicodeGroup::other);
  for (const char32_t c : {0x09u, 0x0Du, 0x20u, 0x85u, 0xA0u, 0x1680u, 0x2000u, 0x200Au, 0x2028u, 0x3000u})
    CHECK(is_unicode_space(c));
  for (const char32_t c : {0x08u, 0x1Cu, 0x200Bu, 0x180Eu, 0xFEFFu, 0x61u}) CHECK_FALSE(is_unicode_space(c));
}

TEST_CASE("GPT-2's byte encoder maps every byte to a printable code point and back") {
  CHECK(kGpt2ByteCodePoints['a'] == U'a');
  CHECK(kGpt2ByteCodePoints[' '] == 0x120);   // Ġ
  CHECK(kGpt2ByteCodePoints['\n'] == 0x10A);  // Ċ
  CHECK(kGpt2ByteCodePoints[0] == 0x100);
  CHECK(kGpt2ByteCodePoints[0xAD] == 0x143);
  CHECK(kGpt2ByteCodePoints[0xFF] == 0xFF);
  for (int b = 0; b < 256; ++b) CHECK(gpt2_code_point_byte(kGpt2ByteCodePoints[b]) == b);
  CHECK(gpt2_code_point_byte(0x144) == -1);
  CHECK(gpt2_code_point_byte(' ') == -1);
  CHECK(gpt2_code_point_byte(0xAD) == -1);
}

TEST_CASE("Pre-tokenizer names select llama.cpp's splits") {
  CHECK(find_pre_tokenizer("default")->split == PreTokenizer::default_);
  CHECK(find_pre_tokenizer("")->split == PreTokenizer::default_);
  CHECK(find_pre_tokenizer("gpt-2")->split == PreTokenizer::gpt2);
  CHECK(find_pre_tokenizer("mpt")->split == PreTokenizer::gpt2);
  CHECK(find_pre_tokenizer("llama-bpe")->split == PreTokenizer::llama3);
  CHECK(find_pre_tokenizer("llama-bpe")->ignore_merges);
  CHECK(find_pre_tokenizer("llama3")->add_bos);
  CHECK_FALSE(find_pre_tokenizer("dbrx")->ignore_merges);
  CHECK(find_pre_tokenizer("qwen2")->split == PreTokenizer::qwen2);
  CHECK(find_pre_tokenizer("falcon")->split == PreTokenizer::falcon);
  CHECK(find_pre_tokenizer("starcoder")->split == PreTokenizer::starcoder);
  CHECK(find_pre_tokenizer("refact")->split == PreTokenizer::starcoder);
  CHECK(find_pre_tokenizer("deepseek-llm")->split == PreTokenizer::deepseek_llm);
  CHECK(find_pre_tokenizer("deepseek-coder")->split == PreTokenizer::deepseek_coder);
  CHECK_FALSE(find_pre_tokenizer("no-such-pre"));
  CHECK_FALSE(find_pre_tokenizer("GPT-2"));
}

// The expected words follow each expression list of llama-vocab.cpp by hand.
TEST_CASE("Pre-tokenizers split as llama.cpp's expressions do") {
  const std::string text = "I'm 12345 ok!!\n\n  x";
  CHECK(words(PreTokenizer::gpt2, text) == Words{"I", "'m", " 12345", " ok", "!!", "\n\n ", " x"});
  CHECK(words(PreTokenizer::llama3, text) == Words{"I", "'m", " ", "123", "45", " ok", "!!\n\n", " ", " x"});
  CHECK(words(PreTokenizer::qwen2, text) ==
        Words{"I", "'m", " ", "1", "2", "3", "4", "5", " ok", "!!\n\n", " ", " x"});
  CHECK(words(PreTokenizer::starcoder, text) ==
        Words{"I", "'m", " ", "1", "2", "3", "4", "5", " ok", "!!", "\n\n ", " x"});
  CHECK(words(PreTokenizer::default_, text) == Words{"I", "'", "m", " ", "123", "45", " ok", "!!", "\n\n ", " x"});
  CHECK(words(PreTokenizer::falcon, text) == Words{"I", "'", "m", " ", "123", "45", " ok", "!!", "\n\n ", " x"});
  CHECK(words(PreTokenizer::deepseek_coder, text) ==
        Words{"I", "'", "m", " ", "1", "2", "3", "4", "5", " ok", "!!", "\n", "\n", " ", " x"});
  CHECK(words(PreTokenizer::deepseek_llm, text) ==
        Words{"I", "'", "m", " ", "12345", " ok", "!!", "\n", "\n", " ", " x"});
}

TEST_CASE("Pre-tokenizers: contractions, case, spaces and newlines") {
  // GPT-2's contractions are lowercase only; Llama 3's take either case.
  CHECK(words(PreTokenizer::gpt2, "it'S we'LL") == Words{"it", "'", "S", " we", "'", "LL"});
  CHECK(words(PreTokenizer::llama3, "it'S we'LL") == Words{"it", "'S", " we", "'LL"});
  // Llama 3: one non-letter may lead a word; newlines end punctuation and space runs.
  CHECK(words(PreTokenizer::llama3, "(hello) \t\n\nworld") == Words{"(hello", ")", " \t\n\n", "world"});
  CHECK(words(PreTokenizer::llama3, "a  \n") == Words{"a", "  \n"});
  CHECK(words(PreTokenizer::llama3, "a   ") == Words{"a", "   "});
  CHECK(words(PreTokenizer::gpt2, "a   ") == Words{"a", "   "});
  CHECK(words(PreTokenizer::gpt2, "a   b") == Words{"a", "  ", " b"});
  CHECK(words(PreTokenizer::gpt2, "a\t b") == Words{"a", "\t", " b"});
  CHECK(words(PreTokenizer::gpt2, "a \tb") == Words{"a", " ", "\t", "b"});
}

TEST_CASE("Pre-tokenizers: letters, numbers and spaces beyond ASCII") {
  const std::string cafe = "caf" + utf8(0xE9);
  const std::string arabic_digits = utf8(0x661) + utf8(0x662) + utf8(0x663) + utf8(0x664);
  const std::string ideographic_space = utf8(0x3000);
  CHECK(words(PreTokenizer::gpt2, cafe + " " + arabic_digits) == Words{cafe, " " + arabic_digits});
  CHECK(words(PreTokenizer::llama3, cafe + " " + arabic_digits) ==
        Words{cafe, " ", utf8(0x661) + utf8(0x662) + utf8(0x663), utf8(0x664)});
  CHECK(words(PreTokenizer::gpt2, "a" + ideographic_space + "b") == Words{"a", ideographic_space, "b"});
  // DeepSeek: CJK runs apart from Latin letters; its letter class is cased letters only.
  const std::string tokyo = utf8(0x6771) + utf8(0x4EAC);
  CHECK(words(PreTokenizer::deepseek_llm, tokyo + "abc" + tokyo) == Words{tokyo, "abc", tokyo});
  CHECK(words(PreTokenizer::deepseek_coder, tokyo + " abc") == Words{tokyo, " abc"});
  // The ideographic space is white space, so never in DeepSeek's punctuation or CJK class.
  CHECK(words(PreTokenizer::deepseek_llm, "a" + ideographic_space + utf8(0x3001)) ==
        Words{"a", ideographic_space, utf8(0x3001)});
  CHECK(words(PreTokenizer::deepseek_llm, ideographic_space + "!") == Words{ideographic_space + "!"});
  CHECK(words(PreTokenizer::deepseek_llm, "ab  ") == Words{"ab", "  "});
}

TEST_CASE("Pre-tokenizers keep every byte, ill-formed UTF-8 included, classed as U+FFFD") {
  CHECK(words(PreTokenizer::gpt2, "a\xFF" "b") == Words{"a", "\xFF", "b"});
  CHECK(words(PreTokenizer::gpt2, "a \xE2\x82") == Words{"a", " \xE2\x82"});
  std::mt19937 rng(3);
  for (int round = 0; round < 300; ++round) {
    std::string s;
    const int n = int(rng() % 40);
    for (int i = 0; i < n; ++i) s += rng() % 3 == 0 ? char(rng() % 256) : " \n\r\ta1'!."[rng() % 10];
    CAPTURE(s);
    for (const PreTokenizer split : {PreTokenizer::default_, PreTokenizer::gpt2, PreTokenizer::llama3, PreTokenizer::qwen2,
                                     PreTokenizer::falcon, PreTokenizer::starcoder, PreTokenizer::deepseek_llm,
                                     PreTokenizer::deepseek_coder}) {
      std::string joined;
      for (const std::string_view w : pre_tokenize(split, s)) {
        REQUIRE_FALSE(w.empty());
        joined += w;
      }
      REQUIRE(joined == s);
    }
  }
}

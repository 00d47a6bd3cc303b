#include <tinyllm/text/utf8.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;
using Kind = Utf8Sequence::Kind;

namespace {

// The textbook encoder, written independently of the decoder under test.
std::string encode_code_point(std::uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18));
    s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

// Offsets in `s` that lie strictly inside a well-formed sequence: a stream must never cut there.
std::vector<bool> inside_a_character(const std::string& s) {
  std::vector<bool> inside(s.size() + 1, false);
  for (std::size_t pos = 0; pos < s.size();) {
    const Utf8Sequence seq = next_utf8_sequence(std::string_view(s).substr(pos));
    const std::size_t length = seq.kind == Kind::complete ? seq.length : 1;
    for (std::size_t i = 1; i < length; ++i) inside[pos + i] = true;
    pos += length;
  }
  return inside;
}

// Feeds `input` byte by byte; checks that no output cuts a character and that nothing is lost.
// Well-formed input must also come out as soon as each character is whole.
void check_stream_byte_by_byte(const std::string& input, bool well_formed) {
  const std::vector<bool> inside = inside_a_character(input);
  Utf8Stream stream;
  std::string joined;
  for (std::size_t pushed = 1; pushed <= input.size(); ++pushed) {
    const std::string out = stream.push(std::string_view(input).substr(pushed - 1, 1));
    joined += out;
    if (!out.empty()) REQUIRE_FALSE(inside[joined.size()]);
    if (well_formed && !inside[pushed]) REQUIRE(joined.size() == pushed);
  }
  joined += stream.flush();
  REQUIRE(joined == input);
}

}  // namespace

TEST_CASE("next_utf8_sequence: every scalar value is one complete sequence of the right length") {
  for (std::uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    const std::string s = encode_code_point(cp);
    const Utf8Sequence seq = next_utf8_sequence(s);
    REQUIRE(seq.kind == Kind::complete);
    REQUIRE(seq.length == s.size());
    for (std::size_t cut = 1; cut < s.size(); ++cut) {
      const Utf8Sequence part = next_utf8_sequence(std::string_view(s).substr(0, cut));
      REQUIRE(part.kind == Kind::incomplete);
      REQUIRE(part.length == cut);
    }
  }
}

TEST_CASE("next_utf8_sequence: ill-formed bytes are invalid one at a time") {
  const char* invalid[] = {
      "\x80",              // a continuation byte alone
      "\xBF",              //
      "\xC0\x80",          // overlong U+0000
      "\xC1\xBF",          // overlong U+007F
      "\xE0\x80\x80",      // overlong U+0000
      "\xE0\x9F\xBF",      // overlong U+07FF
      "\xED\xA0\x80",      // surrogate U+D800
      "\xED\xBF\xBF",      // surrogate U+DFFF
      "\xF0\x8F\xBF\xBF",  // overlong U+FFFF
      "\xF4\x90\x80\x80",  // U+110000
      "\xF5\x80\x80\x80",  // lead byte above F4
      "\xFF",              //
      "\xE2\x82\x41",      // a sequence broken off by ASCII
      "\xC3\xC3",          // a lead byte where a continuation belongs
  };
  for (const char* s : invalid) {
    CAPTURE(s);
    const Utf8Sequence seq = next_utf8_sequence(s);
    CHECK(seq.kind == Kind::invalid);
    CHECK(seq.length == 1);
  }
}

TEST_CASE("Utf8Stream holds back an unfinished character and passes ill-formed bytes through") {
  Utf8Stream stream;
  CHECK(stream.push("a\xE2\x82") == "a");
  CHECK(stream.push("\xAC!") == "\xE2\x82\xAC!");
  CHECK(stream.push("\xF0\x9F") == "");
  CHECK(stream.flush() == "\xF0\x9F");
  CHECK(stream.flush() == "");
  CHECK(stream.push("\xFF\x80x") == "\xFF\x80x");
  CHECK(stream.push("\xE2") == "");
  // The held byte can no longer become a character.
  CHECK(stream.push("A") == std::string("\xE2") + "A");
}

TEST_CASE("Utf8Stream fed byte by byte never emits part of a character") {
  std::mt19937 rng(1234);
  SUBCASE("well-formed text: every output is whole characters") {
    for (int round = 0; round < 300; ++round) {
      std::string s;
      const int n = int(rng() % 40);
      for (int i = 0; i < n; ++i) {
        const std::uint32_t ranges[] = {0x80, 0x800, 0x10000, 0x110000};
        std::uint32_t cp = rng() % ranges[rng() % 4];
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
        s += encode_code_point(cp);
      }
      check_stream_byte_by_byte(s, true);
    }
  }
  SUBCASE("random bytes, ill-formed UTF-8 included") {
    for (int round = 0; round < 300; ++round) {
      std::string s;
      const int n = int(rng() % 40);
      for (int i = 0; i < n; ++i) s += char(rng() % 256);
      check_stream_byte_by_byte(s, false);
    }
  }
}

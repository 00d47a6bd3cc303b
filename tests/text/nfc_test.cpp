#include <tinyllm/text/nfc.hpp>

#include <string>
#include <string_view>

#include "test_util.hpp"

using namespace tinyllm;

// Every expected output below was computed with Python 3.11's unicodedata.normalize("NFC", ...)
// (Unicode 14.0.0, the version of nfc_table.hpp), ill-formed bytes mapped through
// surrogateescape, which keeps each such byte as a lone starter that composes with nothing.

TEST_CASE("nfc: text that is NFC already comes back byte for byte") {
  for (const std::string_view text : {
      // empty
      "",
      // ASCII
      "Hello, world! 0123456789 ~{}|\n\t",
      // precomposed Latin, below U+0300
      "\xC3\x87" "a co\xC3\xBBte tr\xC3\xA8s cher, na\xC3\xAFve fa\xC3\xA7" "ade. \xC3\x86r\xC3\xB8"
      "sk\xC3\xB8" "bing, \xC5\x81\xC3\xB3" "d\xC5\xBA",
      // precomposed Vietnamese, Greek, Cyrillic
      "Ti\xE1\xBA\xBFng Vi\xE1\xBB\x87t, \xE1\xBA\x9E, \xCE\x91\xCE\xB8\xCE\xAE\xCE\xBD\xCE\xB1, "
      "\xD0\x9C\xD0\xBE\xD1\x81\xD0\xBA\xD0\xB2\xD0\xB0",
      // Japanese, with precomposed voiced kana
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86\xE3\x82\xAD\xE3\x82\xB9"
      "\xE3\x83\x88\xE3\x81\xA7\xE3\x81\x99\xE3\x80\x82\xE3\x81\x8C\xE3\x83\x91",
      // Korean syllables
      "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4 \xED\x85\x8D\xEC\x8A\xA4\xED\x8A\xB8",
      // Chinese
      "\xE4\xBB\x8A\xE5\xA4\xA9\xE5\xA4\xA9\xE6\xB0\x94\xE5\xBE\x88\xE5\xA5\xBD",
      // emoji: a ZWJ sequence, a variation selector, a skin tone, a flag, a keycap
      "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 \xE2\x9D\xA4"
      "\xEF\xB8\x8F \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xF0\x9F\x87\xAF\xF0\x9F\x87\xB5 0\xEF\xB8\x8F"
      "\xE2\x83\xA3",
  }) {
    CAPTURE(text);
    CHECK(nfc(text) == text);
  }
}

TEST_CASE("nfc: a base and combining marks compose") {
  // e + U+0301 -> U+00E9
  CHECK(nfc("e\xCC\x81") == "\xC3\xA9");
  // A + U+030A -> U+00C5
  CHECK(nfc("A\xCC\x8A") == "\xC3\x85");
  // u + U+0308 + U+0304 -> U+01D6, through U+00FC
  CHECK(nfc("u\xCC\x88\xCC\x84") == "\xC7\x96");
  // U+00FC + U+0304 -> U+01D6
  CHECK(nfc("\xC3\xBC\xCC\x84") == "\xC7\x96");
  // the text around a change is kept
  CHECK(nfc("The cafe\xCC\x81 is open.") == "The caf\xC3\xA9 is open.");
  // several changes, with text that stays between them
  CHECK(nfc("Cafe\xCC\x81, \xE4\xB8\xAD\xE6\x96\x87, \xE3\x81\x8B\xE3\x82\x99, \xE2\x84\xAB, "
            "\xF0\x9F\x98\x80, na\xCC\x88ive") ==
        "Caf\xC3\xA9, \xE4\xB8\xAD\xE6\x96\x87, \xE3\x81\x8C, \xC3\x85, \xF0\x9F\x98\x80, n\xC3\xA4"
        "ive");
}

TEST_CASE("nfc: combining marks are put in canonical order") {
  // a + U+0323 (class 220) + U+0302 (230) -> U+1EAD
  CHECK(nfc("a\xCC\xA3\xCC\x82") == "\xE1\xBA\xAD");
  // a + U+0302 + U+0323 -> U+1EAD as well
  CHECK(nfc("a\xCC\x82\xCC\xA3") == "\xE1\xBA\xAD");
  // no composite: reordered to q U+0323 U+0302
  CHECK(nfc("q\xCC\x82\xCC\xA3") == "q\xCC\xA3\xCC\x82");
  // s + U+0307 + U+0323 -> U+1E69
  CHECK(nfc("s\xCC\x87\xCC\xA3") == "\xE1\xB9\xA9");
  // U+1E0B + U+0323 -> U+1E0D U+0307: decomposed, reordered, composed
  CHECK(nfc("\xE1\xB8\x8B\xCC\xA3") == "\xE1\xB8\x8D\xCC\x87");
  // classes 230, 202, 220, 230 -> 202, 220, 230, 230
  CHECK(nfc("x\xCC\x81\xCC\xA7\xCC\x96\xCC\x88") == "x\xCC\xA7\xCC\x96\xCC\x81\xCC\x88");
}

TEST_CASE("nfc: a blocked mark does not compose") {
  // a mark of a lower class does not block: U+00E9 U+0316
  CHECK(nfc("e\xCC\x96\xCC\x81") == "\xC3\xA9\xCC\x96");
  for (const std::string_view text : {
      // e + U+0305 + U+0301: a mark of the acute's class blocks it
      "e\xCC\x85\xCC\x81",
      // so does a starter
      "ex\xCC\x81",
      // U+00E9 takes no second acute
      "\xC3\xA9\xCC\x81",
  }) {
    CAPTURE(text);
    CHECK(nfc(text) == text);
  }
}

TEST_CASE("nfc: Hangul jamo compose into syllables") {
  // L + V -> U+AC00
  CHECK(nfc("\xE1\x84\x80\xE1\x85\xA1") == "\xEA\xB0\x80");
  // L + V + T -> U+AC01
  CHECK(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8") == "\xEA\xB0\x81");
  // LV syllable + T -> U+AC01
  CHECK(nfc("\xEA\xB0\x80\xE1\x86\xA8") == "\xEA\xB0\x81");
  // jamo -> U+D55C U+AD6D U+C5B4
  CHECK(nfc("\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB\xE1\x84\x80\xE1\x85\xAE\xE1\x86\xA8\xE1\x84\x8B"
            "\xE1\x85\xA5") ==
        "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4");
  for (const std::string_view text : {
      // a mark between L and V blocks them
      "\xE1\x84\x80\xCC\x81\xE1\x85\xA1",
      // an LVT syllable takes no T
      "\xEA\xB0\x81\xE1\x86\xA8",
      // nor does a T between L and V
      "\xE1\x84\x80\xE1\x86\xA8\xE1\x85\xA1",
  }) {
    CAPTURE(text);
    CHECK(nfc(text) == text);
  }
}

TEST_CASE("nfc: singletons and composition exclusions") {
  // U+212B ANGSTROM SIGN -> U+00C5
  CHECK(nfc("\xE2\x84\xAB") == "\xC3\x85");
  // U+2126 OHM SIGN -> U+03A9
  CHECK(nfc("\xE2\x84\xA6") == "\xCE\xA9");
  // U+212A KELVIN SIGN -> K
  CHECK(nfc("\xE2\x84\xAA") == "K");
  // U+0958, a composition exclusion, stays decomposed: U+0915 U+093C
  CHECK(nfc("\xE0\xA5\x98") == "\xE0\xA4\x95\xE0\xA4\xBC");
  // U+0344, a non-starter decomposition -> U+0308 U+0301
  CHECK(nfc("\xCD\x84") == "\xCC\x88\xCC\x81");
  // U+0F73 -> U+0F71 U+0F72
  CHECK(nfc("\xE0\xBD\xB3") == "\xE0\xBD\xB1\xE0\xBD\xB2");
  // U+FB1D, excluded -> U+05D9 U+05B4
  CHECK(nfc("\xEF\xAC\x9D") == "\xD7\x99\xD6\xB4");
  // CJK compatibility ideographs -> U+8C48 U+4E3D
  CHECK(nfc("\xEF\xA4\x80\xF0\xAF\xA0\x80") == "\xE8\xB1\x88\xE4\xB8\xBD");
}

TEST_CASE("nfc: kana and voicing marks") {
  // U+304B + U+3099 -> U+304C
  CHECK(nfc("\xE3\x81\x8B\xE3\x82\x99") == "\xE3\x81\x8C");
  // U+30CF + U+309A -> U+30D1; U+30F3 takes no voicing mark
  CHECK(nfc("\xE3\x83\x8F\xE3\x82\x9A\xE3\x83\xB3\xE3\x82\x99") == "\xE3\x83\x91\xE3\x83\xB3\xE3\x82\x99");
  // U+3066 + U+3099 -> U+3067
  CHECK(nfc("\xE3\x81\xA6\xE3\x82\x99\xE3\x81\x99") == "\xE3\x81\xA7\xE3\x81\x99");
}

TEST_CASE("nfc: ill-formed UTF-8 is passed through and blocks composition") {
  // bytes that start no sequence stay, before U+00E9
  CHECK(nfc("\xFF\xFE" "e\xCC\x81") == "\xFF\xFE\xC3\xA9");
  // a sequence cut off at the end stays
  CHECK(nfc("e\xCC\x81\xE3\x81") == "\xC3\xA9\xE3\x81");
  // overlong and surrogate bytes stay, around U+00E5
  CHECK(nfc("\xC0\xAF" "a\xCC\x8A\xED\xA0\x80") == "\xC0\xAF\xC3\xA5\xED\xA0\x80");
  for (const std::string_view text : {
      // a byte between e and U+0301 keeps them apart
      "e\xFF\xCC\x81",
      // so does a stray continuation byte
      "e\x80\xCC\x81",
      // a mark after an incomplete sequence stays
      "\xE3\x81\xCC\x81",
      // L and V with a byte between stay jamo
      "\xE1\x84\x80\xC3\xE1\x85\xA1",
  }) {
    CAPTURE(text);
    CHECK(nfc(text) == text);
  }
}

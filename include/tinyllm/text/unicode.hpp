#pragma once
// Code points as the tokenizers see them: a text cut into code points with their Unicode group and
// white-space property, and GPT-2's mapping of bytes to printable code points (byte-level BPE).
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <tinyllm/text/unicode_table.hpp>
#include <tinyllm/text/utf8.hpp>

namespace tinyllm {

// Unicode's White_Space property (PropList.txt): the set llama.cpp's pre-tokenizers match as \s.
constexpr bool is_unicode_space(char32_t c) noexcept {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

inline constexpr char32_t kReplacementCharacter = 0xFFFD;

// One code point of a text, and where its bytes start.
struct TextUnit {
  char32_t code_point;  // U+FFFD for each byte of ill-formed UTF-8
  std::size_t offset;   // of its first byte in the text
  UnicodeGroup group;
  bool space;  // White_Space
};

// The code point of a complete, well-formed UTF-8 sequence.
inline char32_t decode_utf8(std::string_view sequence) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<char32_t>(static_cast<unsigned char>(sequence[i])); };
  switch (sequence.size()) {
    case 1: return byte(0);
    case 2: return (byte(0) & 0x1F) << 6 | (byte(1) & 0x3F);
    case 3: return (byte(0) & 0x0F) << 12 | (byte(1) & 0x3F) << 6 | (byte(2) & 0x3F);
    default: return (byte(0) & 0x07) << 18 | (byte(1) & 0x3F) << 12 | (byte(2) & 0x3F) << 6 | (byte(3) & 0x3F);
  }
}

inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// Cuts a text into code points. llama.cpp replaces each byte of ill-formed UTF-8 by U+FFFD; here
// such a byte is classed as U+FFFD but keeps its place, so the pieces still hold the original
// bytes and decoding gives them back.
inline std::vector<TextUnit> split_code_points(std::string_view text) {
  std::vector<TextUnit> units;
  units.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    const Utf8Sequence seq = next_utf8_sequence(text.substr(pos));
    const bool complete = seq.kind == Utf8Sequence::Kind::complete;
    const char32_t c = complete ? decode_utf8(text.substr(pos, seq.length)) : kReplacementCharacter;
    units.push_back({c, pos, unicode_group(c), is_unicode_space(c)});
    pos += complete ? seq.length : 1;
  }
  return units;
}

// GPT-2's byte encoder: the printable bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) stand for
// themselves, and the other 68 bytes, in order, for U+0100..U+0143, so that every byte string
// becomes printable text and a BPE vocabulary never holds a space or a control byte.
constexpr bool gpt2_byte_is_printable(std::uint32_t b) noexcept {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

inline constexpr int kGpt2ShiftedBytes = 68;

inline constexpr std::array<char32_t, 256> kGpt2ByteCodePoints = [] {
  std::array<char32_t, 256> table{};
  char32_t next = 0x100;
  for (std::uint32_t b = 0; b < 256; ++b) table[b] = gpt2_byte_is_printable(b) ? b : next++;
  return table;
}();

inline constexpr std::array<std::uint8_t, kGpt2ShiftedBytes> kGpt2ShiftedByteValues = [] {
  std::array<std::uint8_t, kGpt2ShiftedBytes> table{};
  std::size_t n = 0;
  for (std::uint32_t b = 0; b < 256; ++b)
    if (!gpt2_byte_is_printable(b)) table[n++] = static_cast<std::uint8_t>(b);
  return table;
}();

// The byte a code point of GPT-2's byte encoder stands for, or -1.
constexpr int gpt2_code_point_byte(char32_t c) noexcept {
  if (c < 0x100) return gpt2_byte_is_printable(c) ? int(c) : -1;
  if (c < 0x100 + kGpt2ShiftedBytes) return kGpt2ShiftedByteValues[c - 0x100];
  return -1;
}

}  // namespace tinyllm

#pragma once
// UTF-8 sequence boundaries, and Utf8Stream: byte-fallback tokens carry single bytes of a
// character, so streamed text must be held back until each character is whole.
#include <cassert>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

namespace tinyllm {

// What starts at the front of a byte string, judged by Unicode's table of well-formed UTF-8
// (Table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF).
struct Utf8Sequence {
  enum class Kind {
    complete,    // a well-formed sequence of `length` bytes (1..4)
    incomplete,  // the first `length` bytes of a well-formed sequence, cut off by the string's end
    invalid,     // the first byte belongs to no well-formed sequence; `length` is 1
  };
  Kind kind;
  std::size_t length;
};

inline Utf8Sequence next_utf8_sequence(std::string_view s) {
  assert(!s.empty());
  using Kind = Utf8Sequence::Kind;
  const auto lead = static_cast<unsigned char>(s[0]);
  if (lead < 0x80) return {Kind::complete, 1};
  std::size_t length = 0;
  // Only the second byte has bounds that depend on the lead byte.
  unsigned char second_min = 0x80, second_max = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) second_min = 0xA0;  // else overlong
    if (lead == 0xED) second_max = 0x9F;  // else a surrogate
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) second_min = 0x90;  // else overlong
    if (lead == 0xF4) second_max = 0x8F;  // else above U+10FFFF
  } else {
    return {Kind::invalid, 1};
  }
  for (std::size_t i = 1; i < length; ++i) {
    if (i == s.size()) return {Kind::incomplete, i};
    const auto b = static_cast<unsigned char>(s[i]);
    const unsigned char lo = i == 1 ? second_min : 0x80, hi = i == 1 ? second_max : 0xBF;
    if (b < lo || b > hi) return {Kind::invalid, 1};
  }
  return {Kind::complete, length};
}

// Joins streamed bytes into text that never ends inside a character. Bytes that can belong to no
// well-formed sequence are passed through as they are, not replaced by U+FFFD, so the outputs of
// push() and flush() concatenated equal the input byte for byte.
class Utf8Stream {
 public:
  // Appends `bytes`; returns everything up to a trailing sequence that later bytes may complete.
  std::string push(std::string_view bytes) {
    pending_.append(bytes);
    std::size_t end = 0;
    while (end < pending_.size()) {
      const Utf8Sequence seq = next_utf8_sequence(std::string_view(pending_).substr(end));
      if (seq.kind == Utf8Sequence::Kind::incomplete) break;
      end += seq.length;
    }
    std::string ready = pending_.substr(0, end);
    pending_.erase(0, end);
    return ready;
  }

  // Returns what is held back, at the end of the stream, when no more bytes will complete it.
  std::string flush() { return std::exchange(pending_, std::string()); }

 private:
  std::string pending_;  // at most 3 bytes between calls
};

}  // namespace tinyllm

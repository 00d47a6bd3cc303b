#pragma once
// Unicode Normalization Form C (UAX #15), the normalizer {"type": "NFC"} of Hugging Face
// tokenizers (Qwen's): canonical decomposition, canonical ordering, canonical composition.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <tinyllm/text/nfc_table.hpp>
#include <tinyllm/text/unicode.hpp>
#include <tinyllm/text/utf8.hpp>

namespace tinyllm {

namespace nfc_detail {

// Hangul syllables decompose and compose by arithmetic (The Unicode Standard, section 3.12): the
// tables would need 11,172 entries for them.
inline constexpr char32_t kHangulSBase = 0xAC00, kHangulLBase = 0x1100, kHangulVBase = 0x1161;
inline constexpr char32_t kHangulTBase = 0x11A7;  // one before the first T: a T index of 0 means none
inline constexpr char32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
inline constexpr char32_t kHangulNCount = kHangulVCount * kHangulTCount;
inline constexpr char32_t kHangulSCount = kHangulLCount * kHangulNCount;

struct CodePoint {
  char32_t c;
  std::uint8_t ccc;  // canonical combining class, looked up once
};

inline void append_decomposition(std::vector<CodePoint>& out, char32_t c) {
  if (const char32_t s = c - kHangulSBase; s < kHangulSCount) {
    out.push_back({kHangulLBase + s / kHangulNCount, 0});
    out.push_back({kHangulVBase + s % kHangulNCount / kHangulTCount, 0});
    if (s % kHangulTCount != 0) out.push_back({kHangulTBase + s % kHangulTCount, 0});
    return;
  }
  const auto [first, second] = canonical_decomposition(c);
  if (first == 0) {
    out.push_back({c, canonical_combining_class(c)});
    return;
  }
  append_decomposition(out, first);
  if (second != 0) append_decomposition(out, second);
}

// Each run of non-starters, stably sorted by class. Not the textbook insertion sort: a long run of
// marks of alternating classes, which anyone can send to a tokenizer, would take quadratic time.
inline void canonical_order(std::vector<CodePoint>& text) {
  const auto by_class = [](const CodePoint& a, const CodePoint& b) { return a.ccc < b.ccc; };
  for (auto run = text.begin(); run != text.end();) {
    run = std::find_if(run, text.end(), [](const CodePoint& c) { return c.ccc != 0; });
    const auto end = std::find_if(run, text.end(), [](const CodePoint& c) { return c.ccc == 0; });
    if (!std::is_sorted(run, end, by_class)) std::stable_sort(run, end, by_class);
    run = end;
  }
}

// The composite of a starter and a code point after it, or 0.
inline char32_t compose_pair(char32_t starter, char32_t c) {
  if (starter - kHangulLBase < kHangulLCount && c - kHangulVBase < kHangulVCount)
    return kHangulSBase + ((starter - kHangulLBase) * kHangulVCount + (c - kHangulVBase)) * kHangulTCount;
  if (const char32_t s = starter - kHangulSBase; s < kHangulSCount && s % kHangulTCount == 0)
    return c - (kHangulTBase + 1) < kHangulTCount - 1 ? starter + (c - kHangulTBase) : 0;
  return primary_composite(starter, c);
}

// Canonical composition in place, of canonically ordered text.
inline void compose(std::vector<CodePoint>& text) {
  constexpr std::size_t kNone = SIZE_MAX;
  std::size_t starter = kNone;  // in the composed text: the last starter, what later ones compose into
  std::size_t size = 0;         // of the composed text, a prefix of `text`
  for (const CodePoint c : text) {
    // What stays between the starter and c blocks c when its class is 0 or at least c's; in
    // canonical order the last of them has the highest class.
    if (starter != kNone && (size == starter + 1 || text[size - 1].ccc < c.ccc)) {
      if (const char32_t composite = compose_pair(text[starter].c, c.c)) {
        text[starter].c = composite;  // a starter again: no primary composite has a class
        continue;
      }
    }
    if (c.ccc == 0) starter = size;
    text[size++] = c;
  }
  text.resize(size);
}

// Appends the NFC form of well-formed UTF-8; `buffer` is kept between calls to save allocations.
inline void append_nfc(std::string& out, std::string_view utf8, std::vector<CodePoint>& buffer) {
  buffer.clear();
  for (std::size_t pos = 0; pos < utf8.size();) {
    const std::size_t length = next_utf8_sequence(utf8.substr(pos)).length;
    append_decomposition(buffer, decode_utf8(utf8.substr(pos, length)));
    pos += length;
  }
  canonical_order(buffer);
  compose(buffer);
  for (const CodePoint c : buffer) append_utf8(out, c.c);
}

}  // namespace nfc_detail

// The NFC form of a UTF-8 text. Ill-formed UTF-8 bytes are passed through unchanged (each such byte
// stays where it is and blocks composition across it).
inline std::string nfc(std::string_view utf8) {
  // Most text is NFC already, and below U+0300 (lead byte 0xCC) every code point is an NFC
  // boundary: such text is returned without a look at the tables.
  if (std::all_of(utf8.begin(), utf8.end(), [](char b) { return static_cast<unsigned char>(b) < 0xCC; }))
    return std::string(utf8);
  // The text is cut at NFC boundaries into segments that normalize independently; only segments
  // holding a code point that is not a boundary can change, and only those are decoded again.
  std::string out;
  std::vector<nfc_detail::CodePoint> buffer;
  std::size_t copied = 0;   // utf8[0, copied) is in `out`
  std::size_t segment = 0;  // where the current segment starts
  bool may_change = false;
  const auto end_segment = [&](std::size_t end) {
    if (!may_change) return;
    out.append(utf8.substr(copied, segment - copied));
    nfc_detail::append_nfc(out, utf8.substr(segment, end - segment), buffer);
    copied = end;
    may_change = false;
  };
  for (std::size_t pos = 0; pos < utf8.size();) {
    const Utf8Sequence seq = next_utf8_sequence(utf8.substr(pos));
    if (seq.kind != Utf8Sequence::Kind::complete) {  // an ill-formed byte: a boundary on both sides
      end_segment(pos);
      segment = ++pos;
      continue;
    }
    const char32_t c = decode_utf8(utf8.substr(pos, seq.length));
    if (c < 0x300 || is_nfc_boundary(c)) {
      end_segment(pos);
      segment = pos;
    } else {
      may_change = true;
    }
    pos += seq.length;
  }
  end_segment(utf8.size());
  out.append(utf8.substr(copied));
  return out;
}

}  // namespace tinyllm

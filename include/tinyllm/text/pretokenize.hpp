#pragma once
// Pre-tokenizers of byte-level BPE: the split of a text into words before merging, one per
// tokenizer.ggml.pre, as llama.cpp defines them (llama-vocab.cpp, llm_tokenizer_bpe). llama.cpp
// states each as a list of regular expressions; each expression in turn cuts every piece so far
// into its matches and the text between them. Here each expression is a hand-written matcher over
// code points that gives what the expression gives (ECMAScript semantics: leftmost match,
// alternatives in order, greedy quantifiers), so no regex engine is needed.
#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tinyllm/text/unicode.hpp>

namespace tinyllm {

enum class PreTokenizer {
  default_,        // llama.cpp's choice when tokenizer.ggml.pre is "default" or absent
  gpt2,            // gpt-2, mpt, olmo, ...
  llama3,          // llama3 / llama-bpe, dbrx, smaug-bpe
  qwen2,           // llama3's expression with single digits
  falcon,
  starcoder,       // starcoder, refact, command-r, ...: single digits, then GPT-2's expression
  deepseek_llm,
  deepseek_coder,
};

// What a tokenizer.ggml.pre name selects: the split, and the vocabulary flags llama.cpp ties to it.
struct PreTokenizerPreset {
  PreTokenizer split;
  bool ignore_merges = false;  // a word that is a token is taken whole, before any merging
  bool add_bos = false;        // llama.cpp's default for tokenizer.ggml.add_bos_token
};

// The names llama.cpp maps to these splits; nullopt for any other name.
inline std::optional<PreTokenizerPreset> find_pre_tokenizer(std::string_view name) {
  using P = PreTokenizer;
  const auto any_of = [&](std::initializer_list<std::string_view> names) {
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  if (name.empty() || name == "default") return PreTokenizerPreset{P::default_};
  if (any_of({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"}))
    return PreTokenizerPreset{P::llama3, true, true};
  if (any_of({"dbrx", "smaug-bpe"})) return PreTokenizerPreset{P::llama3};
  if (any_of({"gpt-2", "phi-2", "mpt", "olmo", "jais", "gigachat", "exaone4", "trillion", "granite-docling"}))
    return PreTokenizerPreset{P::gpt2};
  if (any_of({"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan", "solar-open", "kormo"}))
    return PreTokenizerPreset{P::qwen2};
  if (name == "falcon") return PreTokenizerPreset{P::falcon};
  if (any_of({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"}))
    return PreTokenizerPreset{P::starcoder};
  if (name == "deepseek-llm") return PreTokenizerPreset{P::deepseek_llm};
  if (name == "deepseek-coder") return PreTokenizerPreset{P::deepseek_coder};
  return std::nullopt;
}

namespace pretokenize_detail {

struct Range {
  std::size_t begin, end;  // unit indices, end exclusive
};

using Units = std::vector<TextUnit>;

inline bool is_letter(const TextUnit& u) { return u.group == UnicodeGroup::letter; }
inline bool is_number(const TextUnit& u) { return u.group == UnicodeGroup::number; }
inline bool is_punctuation(const TextUnit& u) { return u.group == UnicodeGroup::punctuation; }
inline bool is_newline(const TextUnit& u) { return u.code_point == '\r' || u.code_point == '\n'; }
inline bool is_ascii_digit(const TextUnit& u) { return u.code_point >= '0' && u.code_point <= '9'; }
// [^\s\p{L}\p{N}]
inline bool is_other(const TextUnit& u) { return !u.space && !is_letter(u) && !is_number(u); }

// Cuts every range into the matches of `match` and the text between them. match(units, pos, end)
// is the length of the match starting at pos within [pos, end), 0 for none.
template <class Match>
void cut(const Units& units, std::vector<Range>& ranges, Match match) {
  std::vector<Range> out;
  out.reserve(ranges.size() * 2);
  for (const Range r : ranges) {
    std::size_t gap = r.begin;
    for (std::size_t pos = r.begin; pos < r.end;) {
      const std::size_t n = match(units, pos, r.end);
      if (n == 0) {
        ++pos;
        continue;
      }
      if (gap < pos) out.push_back({gap, pos});
      out.push_back({pos, pos + n});
      pos += n;
      gap = pos;
    }
    if (gap < r.end) out.push_back({gap, r.end});
  }
  ranges = std::move(out);
}

// The length of the run of units from pos satisfying `in`.
template <class In>
std::size_t run(const Units& u, std::size_t pos, std::size_t end, In in) {
  std::size_t p = pos;
  while (p < end && in(u[p])) ++p;
  return p - pos;
}

// X+
template <class In>
auto runs_of(In in) {
  return [in](const Units& u, std::size_t pos, std::size_t end) { return run(u, pos, end, in); };
}

// X
template <class In>
auto each(In in) {
  return [in](const Units& u, std::size_t pos, std::size_t) -> std::size_t { return in(u[pos]) ? 1 : 0; };
}

// \s?X+
template <class In>
auto space_then_runs_of(In in) {
  return [in](const Units& u, std::size_t pos, std::size_t end) -> std::size_t {
    if (u[pos].space && pos + 1 < end && in(u[pos + 1])) return 1 + run(u, pos + 1, end, in);
    return run(u, pos, end, in);
  };
}

// [0-9][0-9][0-9]
inline std::size_t three_digits(const Units& u, std::size_t pos, std::size_t end) {
  return pos + 3 <= end && is_ascii_digit(u[pos]) && is_ascii_digit(u[pos + 1]) && is_ascii_digit(u[pos + 2]) ? 3 : 0;
}

// \s+$: the spaces at the end of each range, apart.
inline void cut_trailing_space(const Units& units, std::vector<Range>& ranges) {
  std::vector<Range> out;
  out.reserve(ranges.size() * 2);
  for (const Range r : ranges) {
    std::size_t start = r.end;
    while (start > r.begin && units[start - 1].space) --start;
    if (start > r.begin) out.push_back({r.begin, start});
    if (start < r.end) out.push_back({start, r.end});
  }
  ranges = std::move(out);
}

// Lengths of the contractions 's 't 're 've 'm 'll 'd at pos (ASCII letters only: no other code
// point lowercases to one of these letters); 0 for none.
inline std::size_t contraction(const Units& u, std::size_t pos, std::size_t end, bool any_case) {
  if (u[pos].code_point != '\'' || pos + 1 >= end) return 0;
  const auto letter = [&](std::size_t i) {
    const char32_t c = u[i].code_point;
    return any_case && c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
  };
  const char32_t a = letter(pos + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (pos + 2 >= end) return 0;
  const char32_t b = letter(pos + 2);
  return (a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l') ? 3 : 0;
}

// \s+(?!\S)|\s+ given the run of n spaces at pos: all of them at the end of the piece, else all but
// the last, which goes with the word after it.
inline std::size_t spaces(std::size_t pos, std::size_t n, std::size_t end) {
  return n > 1 && pos + n < end ? n - 1 : n;
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
inline std::size_t gpt2_word(const Units& u, std::size_t pos, std::size_t end) {
  if (const std::size_t n = contraction(u, pos, end, false)) return n;
  const std::size_t start = u[pos].code_point == ' ' ? pos + 1 : pos;  // the optional space
  if (start < end) {
    for (const auto in : {is_letter, is_number, is_other}) {
      if (in(u[start])) return start - pos + run(u, start, end, in);
    }
  }
  const std::size_t n = run(u, pos, end, [](const TextUnit& x) { return x.space; });
  return n > 0 ? spaces(pos, n, end) : 1;
}

// Llama 3 (max_digits 3) and Qwen2 (max_digits 1):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}
//   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
inline std::size_t llama3_word(const Units& u, std::size_t pos, std::size_t end, std::size_t max_digits) {
  if (const std::size_t n = contraction(u, pos, end, true)) return n;
  const TextUnit& c = u[pos];
  if (is_letter(c)) return run(u, pos, end, is_letter);
  if (!is_newline(c) && !is_number(c) && pos + 1 < end && is_letter(u[pos + 1]))
    return 1 + run(u, pos + 1, end, is_letter);
  if (is_number(c)) return std::min(max_digits, run(u, pos, end, is_number));
  const std::size_t start = c.code_point == ' ' ? pos + 1 : pos;
  if (start < end && is_other(u[start])) {
    const std::size_t p = start + run(u, start, end, is_other);
    return p - pos + run(u, p, end, is_newline);
  }
  std::size_t n = 0, through_newline = 0;
  for (; pos + n < end && u[pos + n].space; ++n)
    if (is_newline(u[pos + n])) through_newline = n + 1;
  if (through_newline > 0) return through_newline;
  return n > 0 ? spaces(pos, n, end) : 1;
}

// Inclusive code point ranges, sorted.
struct CodePointRange {
  char32_t first, last;
};

template <std::size_t N>
constexpr bool sorted_and_disjoint(const CodePointRange (&ranges)[N]) {
  for (std::size_t i = 0; i < N; ++i)
    if (ranges[i].first > ranges[i].last || (i > 0 && ranges[i - 1].last >= ranges[i].first)) return false;
  return true;
}

template <std::size_t N>
bool in_ranges(const CodePointRange (&ranges)[N], char32_t c) {
  const auto it = std::upper_bound(std::begin(ranges), std::end(ranges), c,
                                   [](char32_t x, const CodePointRange& r) { return x < r.first; });
  return it != std::begin(ranges) && c <= std::prev(it)->last;
}

// The classes DeepSeek's tokenizer.json spells out code point by code point (and llama.cpp copies
// into its expressions). llama.cpp's std::wregex sees every non-ASCII space as U+000B, so no space
// is ever in one of these classes.
inline constexpr CodePointRange kDeepseekLetters[] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA},
    {0x1BC, 0x1BF}, {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377},
    {0x37B, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C},
    {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556},
    {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF},
    {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D},
    {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE},
    {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC},
    {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113},
    {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128},
    {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149},
    {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE},
    {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787},
    {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};
inline constexpr CodePointRange kDeepseekPunctuation[] = {
    {0x21, 0x2F}, {0x3A, 0x7E}, {0x2018, 0x201F}, {0x3000, 0x3002}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E},
};
inline constexpr CodePointRange kDeepseekCjk[] = {{0x800, 0x9FA5}, {0xAC00, 0xD7FF}};  // [一-龥ࠀ-一가-퟿]
static_assert(sorted_and_disjoint(kDeepseekLetters) && sorted_and_disjoint(kDeepseekPunctuation) &&
              sorted_and_disjoint(kDeepseekCjk));

inline bool is_deepseek_letter(const TextUnit& u) { return !u.space && in_ranges(kDeepseekLetters, u.code_point); }
inline bool is_deepseek_punctuation(const TextUnit& u) {
  return !u.space && in_ranges(kDeepseekPunctuation, u.code_point);
}
inline bool is_deepseek_cjk(const TextUnit& u) { return !u.space && in_ranges(kDeepseekCjk, u.code_point); }

// [\p{P}$+<=>^~|`] (Falcon) and the same without '`' (llama.cpp's default).
inline bool is_falcon_punctuation(const TextUnit& u) {
  return is_punctuation(u) || std::u32string_view(U"$+<=>^~|`").find(u.code_point) != std::u32string_view::npos;
}
inline bool is_default_punctuation(const TextUnit& u) { return is_falcon_punctuation(u) && u.code_point != '`'; }

}  // namespace pretokenize_detail

// Splits `text` into the words `split` makes of it: consecutive, non-empty, together the whole
// text byte for byte (ill-formed UTF-8 included).
inline std::vector<std::string_view> pre_tokenize(PreTokenizer split, std::string_view text) {
  using namespace pretokenize_detail;
  const Units units = split_code_points(text);
  std::vector<Range> ranges;
  if (!units.empty()) ranges.push_back({0, units.size()});
  const auto gpt2 = gpt2_word;
  const auto llama3 = [](const Units& u, std::size_t pos, std::size_t end) { return llama3_word(u, pos, end, 3); };
  const auto qwen2 = [](const Units& u, std::size_t pos, std::size_t end) { return llama3_word(u, pos, end, 1); };
  switch (split) {
    case PreTokenizer::default_:
      cut(units, ranges, runs_of(is_default_punctuation));
      cut(units, ranges, gpt2);
      cut(units, ranges, runs_of(is_number));
      cut(units, ranges, three_digits);
      break;
    case PreTokenizer::gpt2:
      cut(units, ranges, gpt2);
      break;
    case PreTokenizer::llama3:
      cut(units, ranges, llama3);
      break;
    case PreTokenizer::qwen2:
      cut(units, ranges, qwen2);
      break;
    case PreTokenizer::falcon:
      cut(units, ranges, runs_of(is_falcon_punctuation));
      cut(units, ranges, gpt2);
      cut(units, ranges, three_digits);
      break;
    case PreTokenizer::starcoder:
      cut(units, ranges, each(is_number));
      cut(units, ranges, gpt2);
      break;
    case PreTokenizer::deepseek_llm:
      cut(units, ranges, each(is_newline));
      cut(units, ranges, space_then_runs_of(is_deepseek_letter));
      cut(units, ranges, space_then_runs_of(is_deepseek_punctuation));
      cut_trailing_space(units, ranges);
      cut(units, ranges, runs_of(is_deepseek_cjk));
      cut(units, ranges, runs_of(is_number));
      break;
    case PreTokenizer::deepseek_coder:
      cut(units, ranges, each(is_newline));
      cut(units, ranges, space_then_runs_of(is_letter));
      cut(units, ranges, space_then_runs_of(is_punctuation));
      cut(units, ranges, runs_of(is_deepseek_cjk));
      cut(units, ranges, each(is_number));
      break;
  }
  std::vector<std::string_view> words;
  words.reserve(ranges.size());
  for (const Range r : ranges) {
    const std::size_t begin = units[r.begin].offset;
    const std::size_t end = r.end < units.size() ? units[r.end].offset : text.size();
    words.push_back(text.substr(begin, end - begin));
  }
  return words;
}

}  // namespace tinyllm

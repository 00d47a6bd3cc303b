#pragma once
// JinjaTemplate: the Jinja chat templates of Hugging Face models (tokenizer_config.json's
// chat_template, GGUF's tokenizer.chat_template), rendered as @huggingface/jinja 0.5.13 renders
// them, byte for byte: the same lexing (lstrip_blocks and trim_blocks on, as transformers sets
// them), the same value types (integers apart from floats, none apart from undefined) and the same
// printing (true, not True; a float 2.0 as "2.0"; lists and dicts as JSON).
//
// What the renderer does not support is a tinyllm::Error naming the template's line and column,
// raised while parsing where that is possible (unknown tags, filters and tests, bad syntax,
// unclosed blocks) and while rendering otherwise; never a silently different output, and never a
// crash or a hang on a malformed template: nesting, recursion and the statements a render runs
// are bounded (the deepest recursion allowed takes about 1 MB of stack in a debug build).
//
// Where the library departs from Python's Jinja, this file follows Python: strip(chars) strips
// those characters only (the library strips white space whatever the argument), and a loop keeps
// what a pass wrote before {% break %} or {% continue %}. It accepts what the library refuses
// where the meaning is plain: tuples (as lists), a bare `| default`, any filter with "()",
// `count`, `is float`, `is eq(x)`, `<` between strings. It refuses what the library renders as
// JavaScript artefacts or ignores: lists or dicts joined to strings, division by zero (Infinity,
// NaN), integers beyond 64 bits, positional arguments of tojson (transformers reads the first as
// ensure_ascii). Case mappings cover the Latin, Greek and Cyrillic scripts only.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include <tinyllm/core/error.hpp>
#include <tinyllm/text/unicode.hpp>
#include <tinyllm/text/utf8.hpp>

namespace tinyllm {
namespace jinja_detail {

// A failure while rendering; the node being evaluated turns it into an Error that names its place
// in the template.
struct Failure {
  std::string message;
};

// ---- Text: code points, JavaScript's white space and case mapping, numbers as JavaScript prints them

struct CodePoint {
  char32_t value;
  std::size_t size;  // in bytes
};

// The code point starting at byte i (< s.size()); a byte of ill-formed UTF-8 reads as U+FFFD.
inline CodePoint code_point_at(std::string_view s, std::size_t i) {
  const Utf8Sequence seq = next_utf8_sequence(s.substr(i));
  if (seq.kind != Utf8Sequence::Kind::complete) return {kReplacementCharacter, 1};
  return {decode_utf8(s.substr(i, seq.length)), seq.length};
}

// The first byte of the code point that ends at byte `end` (> 0).
inline std::size_t code_point_start(std::string_view s, std::size_t end) {
  std::size_t start = end - 1;
  while (start > 0 && end - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return code_point_at(s, start).size == end - start ? start : end - 1;
}

inline std::vector<std::string_view> split_code_points(std::string_view s) {
  std::vector<std::string_view> out;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = code_point_at(s, i).size;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// JavaScript strings count UTF-16 units: a string's length is theirs.
inline std::int64_t utf16_length(std::string_view s) {
  std::int64_t n = 0;
  for (std::size_t i = 0; i < s.size();) {
    const CodePoint cp = code_point_at(s, i);
    n += cp.value >= 0x10000 ? 2 : 1;
    i += cp.size;
  }
  return n;
}

// s.at(i) in JavaScript: the UTF-16 unit at i, counted from the end when i is negative. Half of a
// surrogate pair reads as U+FFFD, which is what it becomes once written out as UTF-8.
inline std::optional<std::string> utf16_unit_at(std::string_view s, std::int64_t i) {
  if (i < 0) i += utf16_length(s);
  std::int64_t unit = 0;
  for (std::size_t b = 0; i >= 0 && b < s.size();) {
    const CodePoint cp = code_point_at(s, b);
    unit += cp.value >= 0x10000 ? 2 : 1;
    if (i < unit) return cp.value >= 0x10000 ? std::string("\xEF\xBF\xBD") : std::string(s.substr(b, cp.size));
    b += cp.size;
  }
  return std::nullopt;
}

// ECMAScript's WhiteSpace and LineTerminator: what trim() removes, what \s matches.
constexpr bool is_js_space(char32_t c) noexcept {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

// The length in bytes of the white space character at byte i, 0 if there is none.
inline std::size_t space_at(std::string_view s, std::size_t i) {
  if (i >= s.size()) return 0;
  const CodePoint cp = code_point_at(s, i);
  return is_js_space(cp.value) ? cp.size : 0;
}

template <class Stripped>
std::string_view strip_code_points(std::string_view s, bool front, bool back, Stripped&& stripped) {
  if (front) {
    std::size_t i = 0;
    while (i < s.size()) {
      const CodePoint cp = code_point_at(s, i);
      if (!stripped(cp.value)) break;
      i += cp.size;
    }
    s.remove_prefix(i);
  }
  if (back) {
    std::size_t end = s.size();
    while (end > 0) {
      const std::size_t start = code_point_start(s, end);
      if (!stripped(code_point_at(s, start).value)) break;
      end = start;
    }
    s = s.substr(0, end);
  }
  return s;
}

inline std::string_view trim_space(std::string_view s, bool front = true, bool back = true) {
  return strip_code_points(s, front, back, is_js_space);
}

// Simple case mappings of the Latin, Greek and Cyrillic letters (and the fullwidth Latin ones):
// the scripts chat templates meet. Letters of other scripts keep their case.
constexpr bool in_range(char32_t c, char32_t lo, char32_t hi) noexcept { return c >= lo && c <= hi; }

// Blocks where an uppercase letter and its lowercase one alternate, the uppercase one on an even
// (or, for the second kind, odd) code point.
constexpr bool in_even_pairs(char32_t c) noexcept {
  return in_range(c, 0x100, 0x12F) || in_range(c, 0x132, 0x137) || in_range(c, 0x14A, 0x177) ||
         in_range(c, 0x3D8, 0x3EF) || in_range(c, 0x460, 0x481) || in_range(c, 0x48A, 0x4BF) ||
         in_range(c, 0x4D0, 0x52F);
}
constexpr bool in_odd_pairs(char32_t c) noexcept {
  return in_range(c, 0x139, 0x148) || in_range(c, 0x179, 0x17E) || in_range(c, 0x4C1, 0x4CE);
}

constexpr char32_t lower_case(char32_t c) noexcept {
  if (in_range(c, 'A', 'Z') || (in_range(c, 0xC0, 0xDE) && c != 0xD7) || (in_range(c, 0x391, 0x3AB) && c != 0x3A2) ||
      in_range(c, 0x410, 0x42F) || in_range(c, 0xFF21, 0xFF3A))
    return c + 32;
  if (in_range(c, 0x400, 0x40F)) return c + 80;
  if (in_range(c, 0x388, 0x38A)) return c + 37;
  if (c == 0x38E || c == 0x38F) return c + 63;
  if ((in_even_pairs(c) && c % 2 == 0) || (in_odd_pairs(c) && c % 2 == 1)) return c + 1;
  switch (c) {
    case 0x178: return 0xFF;
    case 0x386: return 0x3AC;
    case 0x38C: return 0x3CC;
    case 0x4C0: return 0x4CF;
    default: return c;
  }
}

constexpr char32_t upper_case(char32_t c) noexcept {
  if (in_range(c, 'a', 'z') || (in_range(c, 0xE0, 0xFE) && c != 0xF7) || (in_range(c, 0x3B1, 0x3CB) && c != 0x3C2) ||
      in_range(c, 0x430, 0x44F) || in_range(c, 0xFF41, 0xFF5A))
    return c - 32;
  if (in_range(c, 0x450, 0x45F)) return c - 80;
  if (in_range(c, 0x3AD, 0x3AF)) return c - 37;
  if (c == 0x3CD || c == 0x3CE) return c - 63;
  if ((in_even_pairs(c) && c % 2 == 1) || (in_odd_pairs(c) && c % 2 == 0)) return c - 1;
  switch (c) {
    case 0xB5: return 0x39C;
    case 0xFF: return 0x178;
    case 0x131: return 'I';
    case 0x17F: return 'S';
    case 0x3C2: return 0x3A3;
    case 0x3AC: return 0x386;
    case 0x3CC: return 0x38C;
    case 0x4CF: return 0x4C0;
    default: return c;
  }
}

// JavaScript's toUpperCase()/toLowerCase() over the mappings above, with their one-to-many cases
// of those scripts: ß becomes SS, İ becomes i and a combining dot.
inline std::string upper(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const CodePoint cp = code_point_at(s, i);
    if (cp.value == 0xDF) {
      out += "SS";
    } else if (cp.value == kReplacementCharacter) {
      out.append(s.substr(i, cp.size));  // keeps ill-formed bytes as they are
    } else {
      append_utf8(out, upper_case(cp.value));
    }
    i += cp.size;
  }
  return out;
}

inline std::string lower(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const CodePoint cp = code_point_at(s, i);
    if (cp.value == 0x130) {
      out += "i\xCC\x87";
    } else if (cp.value == kReplacementCharacter) {
      out.append(s.substr(i, cp.size));
    } else {
      append_utf8(out, lower_case(cp.value));
    }
    i += cp.size;
  }
  return out;
}

constexpr bool is_ascii_word(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// The library's title() replaces /\b\w/g: ASCII letters that start a word are raised, nothing is
// lowered.
inline std::string title(std::string_view s) {
  std::string out(s);
  for (std::size_t i = 0; i < out.size(); ++i)
    if (is_ascii_word(out[i]) && (i == 0 || !is_ascii_word(out[i - 1])) && out[i] >= 'a' && out[i] <= 'z') out[i] -= 32;
  return out;
}

// charAt(0).toUpperCase() + the rest as it is.
inline std::string capitalize(std::string_view s) {
  if (s.empty()) return {};
  const std::size_t n = code_point_at(s, 0).size;
  return upper(s.substr(0, n)) + std::string(s.substr(n));
}

// Number.prototype.toString(): the shortest digits that read back as x, in fixed notation from
// 1e-6 up to 1e21 and in exponential notation beyond.
inline std::string js_number(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x < 0 ? "-Infinity" : "Infinity";
  if (x == 0) return "0";
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<std::size_t>(result.ptr - buf));
  std::string out;
  if (sci.front() == '-') {
    out += '-';
    sci.remove_prefix(1);
  }
  const std::size_t e = sci.find('e');
  std::string digits;
  for (const char c : sci.substr(0, e))
    if (c != '.') digits += c;
  int exponent = 0;
  std::from_chars(sci.data() + e + (sci[e + 1] == '+' ? 2 : 1), sci.data() + sci.size(), exponent);
  const int k = static_cast<int>(digits.size()), n = exponent + 1;
  if (k <= n && n <= 21) {
    out += digits + std::string(static_cast<std::size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, static_cast<std::size_t>(n)) + "." + digits.substr(static_cast<std::size_t>(n));
  } else if (-6 < n && n <= 0) {
    out += "0." + std::string(static_cast<std::size_t>(-n), '0') + digits;
  } else {
    out += digits.substr(0, 1);
    if (k > 1) out += "." + digits.substr(1);
    out += (n - 1 < 0 ? "e-" : "e+") + std::to_string(std::abs(n - 1));
  }
  return out;
}

// How the library prints a float: with ".0" when it is whole, as Python does.
inline std::string float_text(double x) {
  if (x == 0 && std::signbit(x)) return "-0.0";
  if (std::isfinite(x) && x == std::trunc(x) && std::fabs(x) < 1e21) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", x);
    return buf;
  }
  return js_number(x);
}

// JSON.stringify() of a string; with ensure_ascii, every UTF-16 unit from U+007F up as \uXXXX.
inline void append_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  static constexpr char hex[] = "0123456789abcdef";
  const auto escape_unit = [&](unsigned unit) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += hex[(unit >> shift) & 0xF];
  };
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80 && ensure_ascii) {
      const CodePoint cp = code_point_at(s, i);
      if (cp.value >= 0x10000) {
        escape_unit(0xD800 + ((cp.value - 0x10000) >> 10));
        escape_unit(0xDC00 + ((cp.value - 0x10000) & 0x3FF));
      } else {
        escape_unit(cp.value);
      }
      i += cp.size;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || (c == 0x7F && ensure_ascii)) {
          escape_unit(c);
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
}

// parseInt(s, 10): leading white space, a sign, then as many digits as there are.
inline std::optional<std::int64_t> parse_js_int(std::string_view s) {
  s = trim_space(s, true, false);
  const bool negative = !s.empty() && s.front() == '-';
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) s.remove_prefix(1);
  std::size_t n = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
  if (n == 0) return std::nullopt;
  std::int64_t value = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (__builtin_mul_overflow(value, 10, &value) || __builtin_add_overflow(value, s[i] - '0', &value))
      throw Failure{"'" + std::string(s.substr(0, n)) + "' does not fit in a 64-bit integer"};
  return negative ? -value : value;
}

// parseFloat(s): leading white space, then the longest prefix that is a decimal number.
inline std::optional<double> parse_js_float(std::string_view s) {
  s = trim_space(s, true, false);
  const bool negative = !s.empty() && s.front() == '-';
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) s.remove_prefix(1);
  double value = 0;
  if (s.substr(0, 8) == "Infinity") {
    value = std::numeric_limits<double>::infinity();
  } else if (s.empty() || !((s.front() >= '0' && s.front() <= '9') || s.front() == '.') ||
             std::from_chars(s.data(), s.data() + s.size(), value).ec != std::errc()) {
    return std::nullopt;
  }
  return negative ? -value : value;
}

// Number(s), as JavaScript's == applies it to a string compared with a number: the whole string,
// trimmed, must be a decimal number; an empty one is 0.
inline std::optional<double> js_string_to_number(std::string_view s) {
  s = trim_space(s);
  if (s.empty()) return 0.0;
  const bool negative = s.front() == '-';
  if (s.front() == '-' || s.front() == '+') s.remove_prefix(1);
  double value = 0;
  if (s == "Infinity") {
    value = std::numeric_limits<double>::infinity();
  } else {
    if (s.empty() || !((s.front() >= '0' && s.front() <= '9') || s.front() == '.')) return std::nullopt;
    const auto result = std::from_chars(s.data(), s.data() + s.size(), value);
    if (result.ec != std::errc() || result.ptr != s.data() + s.size()) return std::nullopt;
  }
  return negative ? -value : value;
}

// ---- Values

struct Value;
struct Function;
class Dict;
using List = std::vector<Value>;

// A runtime value. Lists, dicts and namespaces are shared, as JavaScript objects are: == on them
// compares identity, and `set ns.x` changes the namespace wherever it is held. Strings are shared
// too, being immutable: a message's content is not copied each time it is read.
struct Value {
  enum class Kind : std::uint8_t {
    undefined, none, boolean, integer, floating, string, list, dict, name_space, function,
  };
  Kind kind = Kind::undefined;
  std::variant<std::monostate, bool, std::int64_t, double, std::shared_ptr<const std::string>, std::shared_ptr<List>,
               std::shared_ptr<Dict>, std::shared_ptr<const Function>>
      data;

  static Value none() { return {Kind::none, std::monostate{}}; }
  static Value boolean(bool b) { return {Kind::boolean, b}; }
  static Value integer(std::int64_t i) { return {Kind::integer, i}; }
  static Value floating(double d) { return {Kind::floating, d}; }
  static Value string(std::string s) { return {Kind::string, std::make_shared<const std::string>(std::move(s))}; }
  static Value list(List items) { return {Kind::list, std::make_shared<List>(std::move(items))}; }
  static Value dict(std::shared_ptr<Dict> d) { return {Kind::dict, std::move(d)}; }
  static Value name_space(std::shared_ptr<Dict> d) { return {Kind::name_space, std::move(d)}; }
  static Value function(Function f);

  bool is(Kind k) const { return kind == k; }
  bool is_number() const { return kind == Kind::integer || kind == Kind::floating; }
  bool is_nullish() const { return kind == Kind::none || kind == Kind::undefined; }
  bool is_mapping() const { return kind == Kind::dict || kind == Kind::name_space; }

  bool as_bool() const { return std::get<bool>(data); }
  std::int64_t as_int() const { return std::get<std::int64_t>(data); }
  // Integers, floats and booleans as one number, as JavaScript holds them.
  double as_number() const {
    if (kind == Kind::integer) return static_cast<double>(as_int());
    if (kind == Kind::boolean) return as_bool() ? 1 : 0;
    return std::get<double>(data);
  }
  const std::string& as_string() const { return *std::get<std::shared_ptr<const std::string>>(data); }
  const List& as_list() const { return *std::get<std::shared_ptr<List>>(data); }
  Dict& as_dict() const { return *std::get<std::shared_ptr<Dict>>(data); }
  const Function& as_function() const { return *std::get<std::shared_ptr<const Function>>(data); }
  // Lists, dicts, namespaces and functions: what == compares them by.
  const void* identity() const {
    return std::visit(
        [](const auto& d) -> const void* {
          if constexpr (std::is_same_v<std::decay_t<decltype(d)>, std::shared_ptr<List>> ||
                        std::is_same_v<std::decay_t<decltype(d)>, std::shared_ptr<Dict>> ||
                        std::is_same_v<std::decay_t<decltype(d)>, std::shared_ptr<const Function>>)
            return d.get();
          return nullptr;
        },
        data);
  }
};

// An insertion-ordered mapping from string keys.
class Dict {
 public:
  using Entry = std::pair<std::string, Value>;

  const Value* find(std::string_view key) const {
    for (const Entry& e : entries_)
      if (e.first == key) return &e.second;
    return nullptr;
  }
  // A key already present keeps its place.
  void set(std::string key, Value value) {
    for (Entry& e : entries_)
      if (e.first == key) {
        e.second = std::move(value);
        return;
      }
    entries_.emplace_back(std::move(key), std::move(value));
  }
  const std::vector<Entry>& entries() const { return entries_; }
  std::size_t size() const { return entries_.size(); }
  void clear() { entries_.clear(); }

 private:
  std::vector<Entry> entries_;
};

struct MacroDef;
struct Scope;

// What can be called: a global function, a method read from a value (s.split), a macro, or the
// body of a {% call %} block (the macro's `caller`).
struct Function {
  enum class Kind : std::uint8_t { global, method, macro, caller };
  Kind kind;
  std::string name;                 // of the global or the method
  Value self;                       // the value the method was read from
  const MacroDef* macro = nullptr;  // the macro, or the call block's body
  std::weak_ptr<Scope> scope;       // where the macro was defined, or where the call block stands
};

inline Value Value::function(Function f) { return {Kind::function, std::make_shared<const Function>(std::move(f))}; }

inline std::string type_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined: return "undefined";
    case Value::Kind::none: return "none";
    case Value::Kind::boolean: return "boolean";
    case Value::Kind::integer: return "integer";
    case Value::Kind::floating: return "float";
    case Value::Kind::string: return "string";
    case Value::Kind::list: return "list";
    case Value::Kind::dict: return "dict";
    case Value::Kind::name_space: return "namespace";
    case Value::Kind::function: return "function";
  }
  return "?";
}

// "a string", "an integer": for messages.
inline std::string a_type(const Value& v) {
  const std::string name = type_name(v);
  return (name[0] == 'u' || name[0] == 'i' ? "an " : "a ") + name;
}

// Python's truthiness, which the library shares: empty strings, lists and dicts are false.
inline bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined:
    case Value::Kind::none: return false;
    case Value::Kind::boolean: return v.as_bool();
    case Value::Kind::integer: return v.as_int() != 0;
    case Value::Kind::floating: return v.as_number() != 0 && !std::isnan(v.as_number());
    case Value::Kind::string: return !v.as_string().empty();
    case Value::Kind::list: return !v.as_list().empty();
    case Value::Kind::dict: return v.as_dict().size() > 0;
    case Value::Kind::name_space:
    case Value::Kind::function: return true;
  }
  return false;
}

// JavaScript's ===, which `in` on a list, `unique` and the eq test apply: none and undefined are
// alike (the library holds both as undefined), numbers compare by value, booleans are not numbers.
inline bool strict_equal(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_nullish() || b.is_nullish()) return a.is_nullish() && b.is_nullish();
  if (a.is_number() && b.is_number())
    return a.is(K::integer) && b.is(K::integer) ? a.as_int() == b.as_int() : a.as_number() == b.as_number();
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case K::boolean: return a.as_bool() == b.as_bool();
    case K::string: return a.as_string() == b.as_string();
    default: return a.identity() == b.identity();
  }
}

// JavaScript's ==, which the library's == is: a string compared with a number or a boolean is read
// as a number; lists and dicts are equal only to themselves.
inline bool loose_equal(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_nullish() || b.is_nullish()) return a.is_nullish() && b.is_nullish();
  const auto numeric = [](const Value& v) { return v.is_number() || v.is(K::boolean); };
  if (numeric(a) && numeric(b))
    return a.is(K::integer) && b.is(K::integer) ? a.as_int() == b.as_int() : a.as_number() == b.as_number();
  if (a.is(K::string) && b.is(K::string)) return a.as_string() == b.as_string();
  if (a.is(K::string) && numeric(b)) return js_string_to_number(a.as_string()) == b.as_number();
  if (numeric(a) && b.is(K::string)) return a.as_number() == js_string_to_number(b.as_string());
  return a.identity() != nullptr && a.identity() == b.identity();
}

// JSON as the library writes it, for tojson and for printing lists and dicts.
struct JsonStyle {
  std::int64_t indent = 0;  // 0: all on one line, items apart by ", "
  bool ensure_ascii = false;
  bool sort_keys = false;  // by code point (the library sorts by localeCompare)
  std::optional<std::pair<std::string, std::string>> separators;
  bool undefined_as_null = true;  // printing writes `undefined`, as the library does
};

// Writes no more than max_size bytes: a list may hold one long string many times over.
inline void append_json(std::string& out, const Value& v, const JsonStyle& style, std::size_t max_size,
                        std::int64_t depth = 0) {
  using K = Value::Kind;
  constexpr std::int64_t kMaxDepth = 512;  // a namespace may hold itself
  if (depth > kMaxDepth) throw Failure{"the value nests deeper than 512 levels"};
  if (out.size() > max_size || static_cast<std::size_t>(style.indent * (depth + 1)) > max_size)
    throw Failure{"the JSON is longer than the " + std::to_string(max_size) + " bytes left to build"};
  switch (v.kind) {
    case K::undefined: out += style.undefined_as_null ? "null" : "undefined"; return;
    case K::none: out += "null"; return;
    case K::boolean: out += v.as_bool() ? "true" : "false"; return;
    case K::integer: out += std::to_string(v.as_int()); return;
    case K::floating: out += std::isfinite(v.as_number()) ? js_number(v.as_number()) : "null"; return;
    case K::string: append_json_string(out, v.as_string(), style.ensure_ascii); return;
    case K::function: throw Failure{"a function cannot be written as JSON"};
    case K::list:
    case K::dict:
    case K::name_space: break;
  }
  const std::string item_sep = style.separators ? style.separators->first : style.indent ? "," : ", ";
  const std::string key_sep = style.separators ? style.separators->second : ": ";
  const std::string base_pad = "\n" + std::string(static_cast<std::size_t>(style.indent * depth), ' ');
  const std::string child_pad = base_pad + std::string(static_cast<std::size_t>(style.indent), ' ');
  const bool is_list = v.is(K::list);
  const std::size_t count = is_list ? v.as_list().size() : v.as_dict().size();
  out += is_list ? '[' : '{';
  if (is_list) {
    for (std::size_t i = 0; i < count; ++i) {
      if (i > 0) out += item_sep;
      if (style.indent) out += child_pad;
      append_json(out, v.as_list()[i], style, max_size, depth + 1);
    }
  } else {
    std::vector<const Dict::Entry*> entries;
    for (const Dict::Entry& e : v.as_dict().entries()) entries.push_back(&e);
    if (style.sort_keys)
      std::stable_sort(entries.begin(), entries.end(),
                       [](const auto* a, const auto* b) { return a->first < b->first; });
    for (std::size_t i = 0; i < count; ++i) {
      if (i > 0) out += item_sep;
      if (style.indent) out += child_pad;
      append_json_string(out, entries[i]->first, style.ensure_ascii);
      out += key_sep;
      append_json(out, entries[i]->second, style, max_size, depth + 1);
    }
  }
  if (style.indent && count > 0) out += base_pad;
  out += is_list ? ']' : '}';
}

inline std::string to_json(const Value& v, const JsonStyle& style, std::size_t max_size) {
  std::string out;
  append_json(out, v, style, max_size);
  if (out.size() > max_size)
    throw Failure{"the JSON is longer than the " + std::to_string(max_size) + " bytes left to build"};
  return out;
}

// What {{ v }} writes: nothing for none and undefined, true/false, floats with ".0" when whole,
// lists and dicts as JSON (of at most max_size bytes).
inline std::string print_text(const Value& v, std::size_t max_size) {
  using K = Value::Kind;
  switch (v.kind) {
    case K::undefined:
    case K::none: return {};
    case K::boolean: return v.as_bool() ? "true" : "false";
    case K::integer: return std::to_string(v.as_int());
    case K::floating: return float_text(v.as_number());
    case K::string: return v.as_string();
    case K::list:
    case K::dict:
    case K::name_space: {
      JsonStyle style;
      style.undefined_as_null = false;
      return to_json(v, style, max_size);
    }
    case K::function: break;
  }
  throw Failure{"a function cannot be printed"};
}

// What ~, + and join make of a value: JavaScript's String() of it, so a float 2.0 becomes "2".
inline std::string concat_text(const Value& v) {
  using K = Value::Kind;
  switch (v.kind) {
    case K::boolean: return v.as_bool() ? "true" : "false";
    case K::integer: return std::to_string(v.as_int());
    case K::floating: return js_number(v.as_number());
    case K::string: return v.as_string();
    default: throw Failure{"cannot join " + a_type(v) + " to a string"};
  }
}

// The indices a[start:stop:step] takes, as the library computes them (a step of 0 takes none).
inline std::vector<std::size_t> slice_indices(std::int64_t length, std::optional<std::int64_t> start,
                                              std::optional<std::int64_t> stop, std::int64_t step) {
  std::int64_t first = 0, last = 0;
  if (step >= 0) {
    first = start.value_or(0);
    first = first < 0 ? std::max<std::int64_t>(length + first, 0) : std::min(first, length);
    last = stop.value_or(length);
    last = last < 0 ? std::max<std::int64_t>(length + last, 0) : std::min(last, length);
  } else {
    first = start.value_or(length - 1);
    first = first < 0 ? std::max<std::int64_t>(length + first, -1) : std::min(first, length - 1);
    last = stop.value_or(-1);
    last = last < -1 ? std::max<std::int64_t>(length + last, -1) : std::min(last, length - 1);
  }
  std::vector<std::size_t> out;
  if (step == 0) return out;
  for (std::int64_t i = first; step > 0 ? i < last : i > last;) {
    out.push_back(static_cast<std::size_t>(i));
    if (__builtin_add_overflow(i, step, &i)) break;
  }
  return out;
}

// The library's ordering for sort and dictsort: numbers (booleans among them) by value, strings
// by their code units (lowercased unless case_sensitive); none only equals none.
inline int compare_values(const Value& a, const Value& b, bool case_sensitive) {
  using K = Value::Kind;
  if (a.kind == b.kind && a.is_nullish()) return 0;
  const auto numeric = [](const Value& v) { return v.is_number() || v.is(K::boolean); };
  if (numeric(a) && numeric(b)) {
    const double x = a.as_number(), y = b.as_number();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is(K::string) && b.is(K::string)) {
    const std::string x = case_sensitive ? a.as_string() : lower(a.as_string());
    const std::string y = case_sensitive ? b.as_string() : lower(b.as_string());
    return x < y ? -1 : x > y ? 1 : 0;
  }
  throw Failure{"cannot order " + a_type(a) + " against " + a_type(b)};
}

// A dotted path ("function.name", "0") into dicts, namespaces and lists; undefined where it leads
// nowhere.
inline Value attribute_path(const Value& item, std::string_view path) {
  Value v = item;
  for (std::size_t start = 0;;) {
    const std::size_t dot = std::min(path.find('.', start), path.size());
    const std::string_view part = path.substr(start, dot - start);
    if (v.is_mapping()) {
      const Value* found = v.as_dict().find(part);
      v = found ? *found : Value{};
    } else if (v.is(Value::Kind::list)) {
      std::size_t index = 0;
      const auto r = std::from_chars(part.data(), part.data() + part.size(), index);
      if (r.ec != std::errc() || r.ptr != part.data() + part.size() || index >= v.as_list().size()) return {};
      v = Value(v.as_list()[index]);
    } else {
      return {};
    }
    if (dot == path.size()) return v;
    start = dot + 1;
  }
}

inline Value from_json(const nlohmann::ordered_json& j, int depth = 0) {
  constexpr int kMaxDepth = 256;
  if (depth > kMaxDepth) throw Failure{"the context nests deeper than " + std::to_string(kMaxDepth) + " levels"};
  using T = nlohmann::ordered_json::value_t;
  switch (j.type()) {
    case T::null: return Value::none();
    case T::boolean: return Value::boolean(j.get<bool>());
    case T::number_integer: return Value::integer(j.get<std::int64_t>());
    case T::number_unsigned: {
      const auto u = j.get<std::uint64_t>();
      if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return Value::integer(static_cast<std::int64_t>(u));
      return Value::floating(static_cast<double>(u));
    }
    case T::number_float: {
      // JavaScript has numbers, not integers and floats: a whole number read from JSON is an
      // integer there, and prints as one.
      const double d = j.get<double>();
      if (d == std::trunc(d) && std::fabs(d) < 9.2e18) return Value::integer(static_cast<std::int64_t>(d));
      return Value::floating(d);
    }
    case T::string: return Value::string(j.get<std::string>());
    case T::array: {
      List items;
      for (const auto& item : j) items.push_back(from_json(item, depth + 1));
      return Value::list(std::move(items));
    }
    case T::object: {
      auto d = std::make_shared<Dict>();
      for (const auto& [key, item] : j.items()) d->set(key, from_json(item, depth + 1));
      return Value::dict(std::move(d));
    }
    default: throw Failure{"the context holds a binary value"};
  }
}

// ---- Source: the template as the library lexes it, each byte knowing where it was

// Tells "name, line L, column C" for a byte offset of the template as written.
class Locator {
 public:
  Locator(std::string_view source, std::string name) : source_(source), name_(std::move(name)) {
    line_starts_.push_back(0);
    for (std::size_t i = 0; i < source_.size(); ++i)
      if (source_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::string where(std::size_t offset) const {
    offset = std::min(offset, source_.size());
    const auto line = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset) - line_starts_.begin();
    std::size_t column = 1;
    for (std::size_t i = line_starts_[static_cast<std::size_t>(line - 1)]; i < offset; ++i)
      column += (static_cast<unsigned char>(source_[i]) & 0xC0) != 0x80;
    return name_ + ", line " + std::to_string(line) + ", column " + std::to_string(column);
  }

  const std::string& name() const { return name_; }

 private:
  std::string source_;
  std::string name_;
  std::vector<std::size_t> line_starts_;
};

struct Source {
  std::string text;
  std::vector<std::size_t> origin;  // where each byte of text was in the template as written
  std::size_t end = 0;              // the length of the template as written

  std::size_t original(std::size_t i) const { return i < origin.size() ? origin[i] : end; }

  void erase(const std::vector<char>& drop) {
    std::size_t kept = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (drop[i]) continue;
      text[kept] = text[i];
      origin[kept] = origin[i];
      ++kept;
    }
    text.resize(kept);
    origin.resize(kept);
  }
};

// A {% generation %} or {% endgeneration %} tag at byte p (which holds "{%"): these mark the
// assistant's text for training and render nothing.
struct GenerationTag {
  bool lstrip, rstrip;
  std::size_t end;          // of the tag
  std::size_t space_end;    // of the white space after it
};

inline std::optional<GenerationTag> generation_tag_at(std::string_view s, std::size_t p) {
  GenerationTag tag{};
  std::size_t q = p + 2;
  tag.lstrip = q < s.size() && s[q] == '-';
  q += tag.lstrip;
  while (const std::size_t n = space_at(s, q)) q += n;
  if (s.substr(q, 13) == "endgeneration") {
    q += 13;
  } else if (s.substr(q, 10) == "generation") {
    q += 10;
  } else {
    return std::nullopt;
  }
  while (const std::size_t n = space_at(s, q)) q += n;
  if (s.substr(q, 3) == "-%}") {
    tag.rstrip = true;
    q += 3;
  } else if (s.substr(q, 2) == "%}") {
    q += 2;
  } else {
    return std::nullopt;
  }
  tag.end = q;
  while (const std::size_t n = space_at(s, q)) q += n;
  tag.space_end = q;
  return tag;
}

// The library's preprocess(): drops one final newline, then applies lstrip_blocks (spaces and
// tabs before "{%", "{#" or "{-" at the start of a line), then trim_blocks (the newline after
// "%}", "#}" or "-}"), both to the raw text as regular expressions do, then takes out the
// generation tags.
inline Source preprocess(std::string_view source) {
  Source src{std::string(source), std::vector<std::size_t>(source.size()), source.size()};
  for (std::size_t i = 0; i < source.size(); ++i) src.origin[i] = i;
  if (!src.text.empty() && src.text.back() == '\n') {
    src.text.pop_back();
    src.origin.pop_back();
  }

  std::vector<char> drop(src.text.size(), 0);
  const std::string& s = src.text;
  for (std::size_t line = 0; line < s.size();) {
    std::size_t j = line;
    while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
    if (j + 1 < s.size() && s[j] == '{' && (s[j + 1] == '#' || s[j + 1] == '%' || s[j + 1] == '-'))
      std::fill(drop.begin() + static_cast<std::ptrdiff_t>(line), drop.begin() + static_cast<std::ptrdiff_t>(j), 1);
    // The next line starts after \n, \r, U+2028 or U+2029: where JavaScript's ^ matches.
    std::size_t k = j;
    while (k < s.size() && s[k] != '\n' && s[k] != '\r' && s.compare(k, 3, "\xE2\x80\xA8") != 0 &&
           s.compare(k, 3, "\xE2\x80\xA9") != 0)
      ++k;
    line = k + (k < s.size() && static_cast<unsigned char>(s[k]) == 0xE2 ? 3 : 1);
  }
  src.erase(drop);

  drop.assign(src.text.size(), 0);
  for (std::size_t i = 0; i + 2 < s.size();) {
    if ((s[i] == '#' || s[i] == '%' || s[i] == '-') && s[i + 1] == '}' && s[i + 2] == '\n') {
      drop[i + 2] = 1;
      i += 3;
    } else {
      ++i;
    }
  }
  src.erase(drop);

  drop.assign(src.text.size(), 0);
  std::size_t last = 0;
  for (std::size_t p = s.find("{%"); p != std::string::npos;) {
    const std::optional<GenerationTag> tag = generation_tag_at(s, p);
    if (!tag) {
      p = s.find("{%", p + 1);
      continue;
    }
    std::size_t start = p;
    while (tag->lstrip && start > last && space_at(s, code_point_start(s, start))) start = code_point_start(s, start);
    std::fill(drop.begin() + static_cast<std::ptrdiff_t>(start),
              drop.begin() + static_cast<std::ptrdiff_t>(tag->rstrip ? tag->space_end : tag->end), 1);
    last = tag->space_end;
    p = s.find("{%", last);
  }
  src.erase(drop);
  return src;
}

// ---- Lexer

enum class Tok : std::uint8_t {
  text, comment, open_statement, close_statement, open_expression, close_expression,
  number, string, name, lparen, rparen, lbracket, rbracket, lbrace, rbrace, comma, dot, colon, pipe, equals,
  additive,        // + - ~
  multiplicative,  // * / // %
  power,           // **
  comparison,      // == != < > <= >=
  unary,           // a + or - that starts an operand
};

struct Token {
  Tok type;
  std::string value;
  std::size_t pos;  // in the template as written
};

// The library's tokenize(), rule for rule: text runs to the next "{%", "{{" or "{#"; inside a
// tag, "-" or "+" after an operator starts a number or is unary; "}}" closes an expression only
// outside dict braces.
class Lexer {
 public:
  Lexer(const Source& source, const Locator& locator) : src_(source), s_(source.text), locator_(locator) {}

  std::vector<Token> tokenize() {
    while (i_ < s_.size()) {
      // Before the first token, as after text, a sign cannot start an operand.
      const Tok last = tokens_.empty() ? Tok::text : tokens_.back().type;
      if (tokens_.empty() || last == Tok::close_statement || last == Tok::close_expression || last == Tok::comment) {
        std::size_t end = i_;
        for (;;) {
          end = s_.find('{', end);
          if (end == std::string::npos) {
            end = s_.size();
            break;
          }
          if (end + 1 < s_.size() && (s_[end + 1] == '%' || s_[end + 1] == '{' || s_[end + 1] == '#')) break;
          ++end;
        }
        if (end > i_) {
          push(Tok::text, s_.substr(i_, end - i_), i_);
          i_ = end;
          continue;
        }
      }
      if (s_[i_] == '{') {
        const char next = char_at(i_ + 1);
        if (next == '#') {
          comment();
          continue;
        }
        if (char_at(i_ + 2) == '-' && (next == '%' || next == '{')) {
          strip_trailing_space();
          open(next == '%' ? Tok::open_statement : Tok::open_expression, s_.substr(i_, 2));
          i_ += 3;
          continue;
        }
      }
      while (const std::size_t n = space_at(s_, i_)) {
        i_ += n;
        if (i_ >= s_.size()) fail_unclosed();
      }
      const char c = s_[i_];
      if (c == '-' && char_at(i_ + 2) == '}' && (char_at(i_ + 1) == '%' || char_at(i_ + 1) == '}')) {
        push(char_at(i_ + 1) == '%' ? Tok::close_statement : Tok::close_expression, s_.substr(i_ + 1, 2), i_);
        i_ += 3;
        while (const std::size_t n = space_at(s_, i_)) i_ += n;
        continue;
      }
      if ((c == '-' || c == '+') && !ends_operand(last)) {
        signed_number(c);
        continue;
      }
      if (symbol()) continue;
      if (c == '\'' || c == '"') {
        string_literal(c);
        continue;
      }
      if (c >= '0' && c <= '9') {
        number(last);
        continue;
      }
      if (is_ascii_word(c)) {
        const std::size_t start = i_;
        push(Tok::name, consume_while(is_ascii_word), start);
        continue;
      }
      fail("unexpected character '" + std::string(s_.substr(i_, code_point_at(s_, i_).size)) + "'", i_);
    }
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(const std::string& what, std::size_t i) const {
    throw Error(what, locator_.where(src_.original(i)));
  }

  // The library stops with "Unexpected end of input"; what is missing is the tag's end.
  [[noreturn]] void fail_unclosed() const {
    const std::string opener = open_tag_ == Tok::open_statement ? "{%" : "{{";
    throw Error("'" + opener + "' is never closed", locator_.where(open_pos_),
                "'" + std::string(open_tag_ == Tok::open_statement ? "%}" : "}}") + "'");
  }

  char char_at(std::size_t i) const { return i < s_.size() ? s_[i] : '\0'; }

  void push(Tok type, std::string_view value, std::size_t i) {
    tokens_.push_back({type, std::string(value), src_.original(i)});
  }

  void open(Tok type, std::string_view value) {
    push(type, value, i_);
    open_tag_ = type;
    open_pos_ = src_.original(i_);
    if (type == Tok::open_expression) brace_depth_ = 0;
  }

  static bool ends_operand(Tok t) {
    return t == Tok::name || t == Tok::number || t == Tok::string || t == Tok::rparen || t == Tok::rbracket;
  }

  template <class Pred>
  std::string_view consume_while(Pred pred) {
    const std::size_t start = i_;
    while (i_ < s_.size() && pred(s_[i_]))
      if (++i_ >= s_.size()) fail_unclosed();
    return std::string_view(s_).substr(start, i_ - start);
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  void strip_trailing_space() {
    if (tokens_.empty() || tokens_.back().type != Tok::text) return;
    std::string& text = tokens_.back().value;
    text.resize(trim_space(text, false, true).size());
    if (text.empty()) tokens_.pop_back();
  }

  void comment() {
    const std::size_t start = i_;
    i_ += 2;
    const bool strip_before = char_at(i_) == '-';
    i_ += strip_before;
    const std::size_t end = s_.find("#}", i_);
    if (end == std::string::npos) fail("'{#' comment is never closed", start);
    const bool strip_after = end > i_ && s_[end - 1] == '-';
    if (strip_before) strip_trailing_space();
    push(Tok::comment, {}, start);
    i_ = end + 2;
    if (strip_after)
      while (const std::size_t n = space_at(s_, i_)) i_ += n;
  }

  void signed_number(char sign) {
    const std::size_t start = i_++;
    std::string num(consume_while(is_digit));
    if (!num.empty() && char_at(i_) == '.' && is_digit(char_at(i_ + 1))) {
      ++i_;
      num += "." + std::string(consume_while(is_digit));
    }
    push(num.empty() ? Tok::unary : Tok::number, sign + num, start);
  }

  void number(Tok last) {
    const std::size_t start = i_;
    std::string num(consume_while(is_digit));
    if (last != Tok::dot && char_at(i_) == '.' && is_digit(char_at(i_ + 1))) {
      ++i_;
      num += "." + std::string(consume_while(is_digit));
    }
    push(Tok::number, num, start);
  }

  bool symbol() {
    static constexpr std::pair<std::string_view, Tok> kSymbols[] = {
        {"{%", Tok::open_statement}, {"%}", Tok::close_statement}, {"{{", Tok::open_expression},
        {"}}", Tok::close_expression}, {"(", Tok::lparen}, {")", Tok::rparen}, {"{", Tok::lbrace},
        {"}", Tok::rbrace}, {"[", Tok::lbracket}, {"]", Tok::rbracket}, {",", Tok::comma}, {".", Tok::dot},
        {":", Tok::colon}, {"|", Tok::pipe}, {"<=", Tok::comparison}, {">=", Tok::comparison},
        {"==", Tok::comparison}, {"!=", Tok::comparison}, {"<", Tok::comparison}, {">", Tok::comparison},
        {"+", Tok::additive}, {"-", Tok::additive}, {"~", Tok::additive}, {"**", Tok::power},
        {"*", Tok::multiplicative}, {"//", Tok::multiplicative}, {"/", Tok::multiplicative},
        {"%", Tok::multiplicative}, {"=", Tok::equals}};
    for (const auto& [text, type] : kSymbols) {
      if (text == "}}" && brace_depth_ > 0) continue;
      if (std::string_view(s_).substr(i_, text.size()) != text) continue;
      if (type == Tok::open_statement || type == Tok::open_expression) {
        open(type, text);
      } else {
        push(type, text, i_);
      }
      brace_depth_ += type == Tok::lbrace ? 1 : type == Tok::rbrace ? -1 : 0;
      i_ += text.size();
      return true;
    }
    return false;
  }

  // Escapes as the library reads them: \n \t \r \b \f \v \' \" \\, \xHH and \uHHHH.
  void string_literal(char quote) {
    const std::size_t start = i_++;
    std::string value;
    char32_t high_surrogate = 0;
    const auto append_unit = [&](char32_t unit) {
      if (high_surrogate && unit >= 0xDC00 && unit <= 0xDFFF) {
        append_utf8(value, 0x10000 + ((high_surrogate - 0xD800) << 10) + (unit - 0xDC00));
        high_surrogate = 0;
        return;
      }
      if (high_surrogate) append_utf8(value, kReplacementCharacter);
      high_surrogate = 0;
      if (unit >= 0xD800 && unit <= 0xDBFF) {
        high_surrogate = unit;
      } else {
        append_utf8(value, unit >= 0xDC00 && unit <= 0xDFFF ? kReplacementCharacter : unit);
      }
    };
    const auto flush_surrogate = [&] {
      if (high_surrogate) append_utf8(value, kReplacementCharacter);
      high_surrogate = 0;
    };
    for (;;) {
      if (i_ >= s_.size()) fail("string literal is never closed", start);
      const char c = s_[i_++];
      if (c == quote) break;
      if (c != '\\') {
        flush_surrogate();
        value += c;
        continue;
      }
      if (i_ >= s_.size()) fail("string literal is never closed", start);
      const char e = s_[i_++];
      if (e == 'x' || e == 'u') {
        const std::size_t digits = e == 'x' ? 2 : 4;
        unsigned unit = 0;
        const std::string_view hex = std::string_view(s_).substr(i_, digits);
        const auto r = std::from_chars(hex.data(), hex.data() + hex.size(), unit, 16);
        if (hex.size() != digits || r.ptr != hex.data() + hex.size())
          fail("invalid escape '\\" + std::string(1, e) + std::string(hex) + "' in a string literal", i_ - 2);
        append_unit(unit);
        i_ += digits;
        continue;
      }
      static constexpr std::string_view kFrom = "ntrbfv'\"\\", kTo = "\n\t\r\b\f\v'\"\\";
      const std::size_t k = kFrom.find(e);
      if (k == std::string_view::npos) fail("invalid escape '\\" + std::string(1, e) + "' in a string literal", i_ - 2);
      flush_surrogate();
      value += kTo[k];
    }
    flush_surrogate();
    push(Tok::string, value, start);
  }

  const Source& src_;
  const std::string& s_;
  const Locator& locator_;
  std::vector<Token> tokens_;
  std::size_t i_ = 0;
  int brace_depth_ = 0;
  Tok open_tag_ = Tok::open_expression;
  std::size_t open_pos_ = 0;
};

// ---- Syntax tree

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Args {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
};

enum class Op : std::uint8_t {
  add, subtract, multiply, divide, floor_divide, modulo, power, concat,
  equal, not_equal, less, greater, less_equal, greater_equal, in, not_in, logical_and, logical_or,
};

struct Literal { Value value; };
struct Name { std::string name; };
struct ListLiteral { std::vector<ExprPtr> items; bool tuple; };
struct DictLiteral { std::vector<std::pair<ExprPtr, ExprPtr>> items; };
struct Member { ExprPtr object, index; };              // a.b (index a string literal), a.0, a[i]
struct Slice { ExprPtr object, start, stop, step; };   // start, stop and step may be null
struct Call { ExprPtr callee; Args args; };
struct FilterExpr { ExprPtr operand; std::string name; Args args; };  // no operand in {% filter %}
struct TestExpr { ExprPtr operand; std::string name; bool negated; Args args; };
struct Unary { char op; ExprPtr operand; };            // '-', '+' or '!' (not)
struct Binary { Op op; ExprPtr left, right; };
struct Conditional { ExprPtr condition, then, otherwise; };  // otherwise null: `a if c`

struct Expr {
  std::size_t pos;
  int depth;  // of the tree under it, itself included
  std::variant<Literal, Name, ListLiteral, DictLiteral, Member, Slice, Call, FilterExpr, TestExpr, Unary, Binary,
               Conditional>
      node;
};

struct Stmt;
using Block = std::vector<Stmt>;

struct Param {
  std::string name;
  ExprPtr default_value;  // null: none
};

// A macro, or the body of a {% call %} block (what the called macro reaches as `caller`). A macro
// takes extra arguments only when its body reads `varargs` or `kwargs`, as in Jinja.
struct MacroDef {
  std::string name;
  std::vector<Param> params;
  Block body;
  bool uses_caller = false, uses_varargs = false, uses_kwargs = false;
};

struct TextStmt { std::string text; };
struct OutputStmt { ExprPtr value; };
struct IfStmt { ExprPtr condition; Block body, otherwise; };  // elif: an IfStmt alone in otherwise
struct ForStmt {
  std::vector<std::string> targets;  // `for k, v in` unpacks each item
  ExprPtr iterable, condition;       // condition: `for x in xs if c`, else null
  Block body, otherwise;
};
struct SetStmt {
  std::vector<std::string> targets;  // `set a, b = ...` unpacks
  ExprPtr name_space;                // `set ns.attribute = ...`, else null
  std::string attribute;
  ExprPtr value;                     // null: the block form, {% set x %}body{% endset %}
  Block body;
};
struct MacroStmt { MacroDef macro; };
struct CallStmt { ExprPtr callee; Args args; MacroDef caller; };
struct FilterStmt { ExprPtr filter; Block body; };  // filter: a FilterExpr without operand
struct BreakStmt {};
struct ContinueStmt {};

struct Stmt {
  std::size_t pos;
  std::variant<TextStmt, OutputStmt, IfStmt, ForStmt, SetStmt, MacroStmt, CallStmt, FilterStmt, BreakStmt, ContinueStmt>
      node;
};

inline constexpr std::string_view kFilters[] = {
    "abs", "capitalize", "count", "default", "dictsort", "first", "float", "indent", "int", "items", "join",
    "keys", "last", "length", "list", "lower", "map", "rejectattr", "replace", "reverse", "safe", "selectattr",
    "sort", "string", "title", "tojson", "trim", "unique", "upper", "values"};
inline constexpr std::string_view kTests[] = {
    "boolean", "callable", "defined", "eq", "equalto", "even", "false", "float", "integer", "iterable", "lower",
    "mapping", "none", "number", "odd", "sequence", "string", "true", "undefined", "upper"};
inline constexpr std::string_view kGlobals[] = {"namespace", "raise_exception", "range", "strftime_now"};

template <std::size_t N>
bool contains(const std::string_view (&names)[N], std::string_view name) {
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

// ---- Parser: the library's grammar. From loosest to tightest: a if c else b; or; and; not;
// comparisons and (not) in; + - ~; * / // %; **; is; |; unary - +; calls, .attribute, [index]

class Parser {
 public:
  Parser(std::vector<Token> tokens, const Locator& locator) : tokens_(std::move(tokens)), locator_(locator) {}

  Block parse_template() {
    Block program;
    while (next_ < tokens_.size()) parse_any(program);
    return program;
  }

 private:
  // How deep blocks and brackets may nest, and how deep an expression's tree may grow (a + b + c
  // is two levels deep), so that neither parsing, nor rendering, nor freeing the tree can exhaust
  // the stack.
  static constexpr int kMaxNesting = 128;

  class Nesting {
   public:
    Nesting(Parser& p, std::size_t pos) : p_(p) {
      if (++p_.depth_ > kMaxNesting)
        p_.fail("the template nests deeper than " + std::to_string(kMaxNesting) + " levels", pos);
    }
    ~Nesting() { --p_.depth_; }
    Nesting(const Nesting&) = delete;
    Nesting& operator=(const Nesting&) = delete;

   private:
    Parser& p_;
  };

  [[noreturn]] void fail(const std::string& what, std::size_t pos, const std::string& expected = {}) const {
    throw Error(what, locator_.where(pos), expected);
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::text: return "text";
      case Tok::comment: return "a comment";
      case Tok::string: return "a string";
      default: return "'" + t.value + "'";
    }
  }

  // The next token; running out inside a tag means the tag is never closed.
  const Token& peek() const {
    if (next_ < tokens_.size()) return tokens_[next_];
    if (tag_ != nullptr) {
      const bool statement = tag_->type == Tok::open_statement;
      fail("'" + std::string(statement ? "{%" : "{{") + "' is never closed", tag_->pos, statement ? "'%}'" : "'}}'");
    }
    fail("unexpected end of template", locator_end());
  }
  std::size_t locator_end() const { return tokens_.empty() ? 0 : tokens_.back().pos; }

  const Token& take() {
    const Token& t = peek();
    ++next_;
    return t;
  }
  bool at(Tok type) const { return next_ < tokens_.size() && tokens_[next_].type == type; }
  bool at_name(std::string_view name) const { return at(Tok::name) && tokens_[next_].value == name; }
  // At a tag "{% name" with one of these names.
  bool at_tag(std::initializer_list<std::string_view> names) const {
    return at(Tok::open_statement) && next_ + 1 < tokens_.size() && tokens_[next_ + 1].type == Tok::name &&
           std::find(names.begin(), names.end(), tokens_[next_ + 1].value) != names.end();
  }
  const Token& expect(Tok type, const std::string& expected) {
    const Token& t = peek();
    if (t.type != type) fail("unexpected " + describe(t), t.pos, expected);
    ++next_;
    return t;
  }
  const Token& expect_name(const std::string& what) {
    const Token& t = peek();
    if (t.type != Tok::name) fail("expected " + what + ", not " + describe(t), t.pos);
    ++next_;
    return t;
  }

  void end_tag() {
    expect(Tok::close_statement, "'%}'");
    tag_ = nullptr;
  }

  // Statements up to a tag with one of `ends`; `opener` is the block's own tag, named when the
  // template ends first.
  Block parse_body(const Token& opener, const std::string& tag, std::initializer_list<std::string_view> ends) {
    Block body;
    while (!at_tag(ends)) {
      if (next_ >= tokens_.size()) fail("'{% " + tag + " %}' is never closed", opener.pos, "'{% end" + tag + " %}'");
      parse_any(body);
    }
    return body;
  }

  // The block's end tag, which parse_body() stopped at.
  void close_block() {
    tag_ = &take();
    ++next_;
    end_tag();
  }

  void parse_any(Block& out) {
    const Token& t = tokens_[next_];
    switch (t.type) {
      case Tok::comment: ++next_; return;
      case Tok::text: out.push_back({t.pos, TextStmt{t.value}}); ++next_; return;
      case Tok::open_statement: parse_statement(out); return;
      case Tok::open_expression: parse_output(out); return;
      default: fail("unexpected " + describe(t), t.pos);
    }
  }

  void parse_output(Block& out) {
    const Token& open = take();
    tag_ = &open;
    ExprPtr value = parse_expression();
    expect(Tok::close_expression, "'}}'");
    tag_ = nullptr;
    out.push_back({open.pos, OutputStmt{std::move(value)}});
  }

  void parse_statement(Block& out) {
    const Token& open = take();
    tag_ = &open;
    const Nesting nesting(*this, open.pos);
    const Token& name = expect_name("a tag name after '{%'");
    const std::string& tag = name.value;
    if (tag == "if") {
      out.push_back(parse_if(open, open));
      close_block();
    } else if (tag == "for") {
      out.push_back(parse_for(open));
      close_block();
    } else if (tag == "set") {
      out.push_back(parse_set(open));
    } else if (tag == "macro") {
      out.push_back(parse_macro(open));
      close_block();
    } else if (tag == "call") {
      out.push_back(parse_call_block(open));
      close_block();
    } else if (tag == "filter") {
      out.push_back(parse_filter_block(open));
      close_block();
    } else if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) fail("'{% " + tag + " %}' outside of a for loop", open.pos);
      end_tag();
      out.push_back(tag == "break" ? Stmt{open.pos, BreakStmt{}} : Stmt{open.pos, ContinueStmt{}});
    } else if (tag == "elif" || tag == "else" || tag.rfind("end", 0) == 0) {
      fail("unexpected '{% " + tag + " %}'", name.pos, "it to close or continue a block opened before it");
    } else {
      fail("unknown tag '" + tag + "'", name.pos, "set, if, for, macro, call, filter, break or continue");
    }
  }

  Stmt parse_if(const Token& open, const Token& opener) {
    IfStmt s;
    s.condition = parse_expression();
    end_tag();
    s.body = parse_body(opener, "if", {"elif", "else", "endif"});
    if (at_tag({"elif"})) {
      const Token& elif = take();
      tag_ = &elif;
      ++next_;
      s.otherwise.push_back(parse_if(elif, opener));
    } else if (at_tag({"else"})) {
      tag_ = &take();
      ++next_;
      end_tag();
      s.otherwise = parse_body(opener, "if", {"endif"});
    }
    return {open.pos, std::move(s)};
  }

  Stmt parse_for(const Token& open) {
    ForStmt s;
    s.targets.push_back(expect_name("a loop variable").value);
    while (at(Tok::comma)) {
      ++next_;
      s.targets.push_back(expect_name("a loop variable").value);
    }
    if (!at_name("in")) fail("expected 'in' after the loop variables", peek().pos);
    ++next_;
    s.iterable = parse_expression();
    if (auto* select = std::get_if<Conditional>(&s.iterable->node); select && !select->otherwise) {
      s.condition = std::move(select->condition);
      s.iterable = std::move(select->then);
    }
    end_tag();
    ++loop_depth_;
    s.body = parse_body(open, "for", {"endfor", "else"});
    --loop_depth_;
    if (at_tag({"else"})) {
      tag_ = &take();
      ++next_;
      end_tag();
      s.otherwise = parse_body(open, "for", {"endfor"});
    }
    return {open.pos, std::move(s)};
  }

  Stmt parse_set(const Token& open) {
    SetStmt s;
    ExprPtr target = parse_expression_sequence(false);
    const auto name_of = [](const Expr& e) { return std::get_if<Name>(&e.node); };
    if (const Name* n = name_of(*target)) {
      s.targets.push_back(n->name);
    } else if (auto* tuple = std::get_if<ListLiteral>(&target->node); tuple && tuple->tuple) {
      for (const ExprPtr& item : tuple->items) {
        if (!name_of(*item)) fail("cannot assign to this; expected names apart by commas", item->pos);
        s.targets.push_back(name_of(*item)->name);
      }
    } else if (auto* member = std::get_if<Member>(&target->node)) {
      const auto* attribute = std::get_if<Literal>(&member->index->node);
      if (!attribute || !attribute->value.is(Value::Kind::string))
        fail("cannot assign to an item; only to ns.attribute", target->pos);
      s.name_space = std::move(member->object);
      s.attribute = attribute->value.as_string();
    } else {
      fail("cannot assign to this", target->pos, "a name, names apart by commas, or namespace.attribute");
    }
    if (at(Tok::equals)) {
      ++next_;
      s.value = parse_expression_sequence(false);
      end_tag();
    } else {
      end_tag();
      s.body = parse_body(open, "set", {"endset"});
      close_block();
    }
    return {open.pos, std::move(s)};
  }

  // The body of a macro or a call block, watching for the names that make a macro take extra
  // arguments or a caller.
  Block parse_macro_body(MacroDef& def, const Token& open, const std::string& tag) {
    macros_.push_back(&def);
    const int loop_depth = std::exchange(loop_depth_, 0);
    Block body = parse_body(open, tag, {tag == "macro" ? "endmacro" : "endcall"});
    loop_depth_ = loop_depth;
    macros_.pop_back();
    for (const Param& p : def.params) {
      def.uses_caller &= p.name != "caller";
      def.uses_varargs &= p.name != "varargs";
      def.uses_kwargs &= p.name != "kwargs";
    }
    return body;
  }

  Stmt parse_macro(const Token& open) {
    MacroStmt s;
    s.macro.name = expect_name("a macro name").value;
    s.macro.params = parse_params();
    end_tag();
    s.macro.body = parse_macro_body(s.macro, open, "macro");
    return {open.pos, std::move(s)};
  }

  Stmt parse_call_block(const Token& open) {
    CallStmt s;
    s.caller.name = "caller";
    if (at(Tok::lparen)) s.caller.params = parse_params();
    const Token& callee = expect_name("the name of the macro to call");
    s.callee = make(callee.pos, Name{callee.value});
    if (!at(Tok::lparen)) fail("expected '(' and the arguments of the call", peek().pos);
    s.args = parse_args();
    end_tag();
    s.caller.body = parse_macro_body(s.caller, open, "call");
    return {open.pos, std::move(s)};
  }

  Stmt parse_filter_block(const Token& open) {
    FilterStmt s;
    s.filter = parse_filter_name(nullptr);
    end_tag();
    s.body = parse_body(open, "filter", {"endfilter"});
    return {open.pos, std::move(s)};
  }

  std::vector<Param> parse_params() {
    expect(Tok::lparen, "'('");
    std::vector<Param> params;
    while (!at(Tok::rparen)) {
      const Token& name = expect_name("a parameter name");
      Param p{name.value, nullptr};
      if (at(Tok::equals)) {
        ++next_;
        p.default_value = parse_expression();
      } else if (!params.empty() && params.back().default_value) {
        fail("parameter '" + p.name + "' without a default follows one with a default", name.pos);
      }
      for (const Param& q : params)
        if (q.name == p.name) fail("parameter '" + p.name + "' is declared twice", name.pos);
      params.push_back(std::move(p));
      if (at(Tok::comma)) ++next_;
    }
    ++next_;
    return params;
  }

  Args parse_args() {
    expect(Tok::lparen, "'('");
    Args args;
    while (!at(Tok::rparen)) {
      if (at(Tok::power) || (at(Tok::multiplicative) && peek().value == "*"))
        fail("argument unpacking (*args, **kwargs) is not supported", peek().pos);
      ExprPtr e = parse_expression();
      if (at(Tok::equals)) {
        const Name* name = std::get_if<Name>(&e->node);
        if (!name) fail("expected a name before '=' in the arguments", e->pos);
        ++next_;
        args.keyword.emplace_back(name->name, parse_expression());
      } else {
        if (!args.keyword.empty()) fail("a positional argument follows a keyword argument", e->pos);
        args.positional.push_back(std::move(e));
      }
      if (at(Tok::comma)) ++next_;
    }
    ++next_;
    return args;
  }

  ExprPtr make(std::size_t pos, auto node) const {
    int depth = 0;
    const auto child = [&](const ExprPtr& e) { depth = std::max(depth, e ? e->depth : 0); };
    const auto args = [&](const Args& a) {
      for (const ExprPtr& e : a.positional) child(e);
      for (const auto& [name, e] : a.keyword) child(e);
    };
    using Node = decltype(node);
    if constexpr (std::is_same_v<Node, ListLiteral>) {
      for (const ExprPtr& e : node.items) child(e);
    } else if constexpr (std::is_same_v<Node, DictLiteral>) {
      for (const auto& [key, value] : node.items) child(key), child(value);
    } else if constexpr (std::is_same_v<Node, Member>) {
      child(node.object), child(node.index);
    } else if constexpr (std::is_same_v<Node, Slice>) {
      child(node.object), child(node.start), child(node.stop), child(node.step);
    } else if constexpr (std::is_same_v<Node, Call>) {
      child(node.callee), args(node.args);
    } else if constexpr (std::is_same_v<Node, FilterExpr> || std::is_same_v<Node, TestExpr>) {
      child(node.operand), args(node.args);
    } else if constexpr (std::is_same_v<Node, Unary>) {
      child(node.operand);
    } else if constexpr (std::is_same_v<Node, Binary>) {
      child(node.left), child(node.right);
    } else if constexpr (std::is_same_v<Node, Conditional>) {
      child(node.condition), child(node.then), child(node.otherwise);
    }
    if (depth + 1 > kMaxNesting)
      fail("the expression nests deeper than " + std::to_string(kMaxNesting) + " levels", pos);
    return std::make_unique<Expr>(Expr{pos, depth + 1, std::move(node)});
  }

  ExprPtr parse_expression() {
    const Nesting nesting(*this, peek().pos);
    ExprPtr then = parse_or();
    if (!at_name("if")) return then;
    const std::size_t pos = take().pos;
    ExprPtr condition = parse_or();
    ExprPtr otherwise;
    if (at_name("else")) {
      ++next_;
      otherwise = parse_expression();
    }
    return make(pos, Conditional{std::move(condition), std::move(then), std::move(otherwise)});
  }

  // a, b, c as a tuple; a alone as itself.
  ExprPtr parse_expression_sequence(bool primary) {
    const std::size_t pos = peek().pos;
    ExprPtr first = primary ? parse_primary() : parse_expression();
    if (!at(Tok::comma)) return first;
    ListLiteral tuple{{}, true};
    tuple.items.push_back(std::move(first));
    while (at(Tok::comma)) {
      ++next_;
      tuple.items.push_back(primary ? parse_primary() : parse_expression());
    }
    return make(pos, std::move(tuple));
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (at_name("or")) {
      const std::size_t pos = take().pos;
      left = make(pos, Binary{Op::logical_or, std::move(left), parse_and()});
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (at_name("and")) {
      const std::size_t pos = take().pos;
      left = make(pos, Binary{Op::logical_and, std::move(left), parse_not()});
    }
    return left;
  }

  ExprPtr parse_not() {
    if (!at_name("not")) return parse_comparison();
    const std::size_t pos = take().pos;
    const Nesting nesting(*this, pos);
    return make(pos, Unary{'!', parse_not()});
  }

  ExprPtr parse_comparison() {
    ExprPtr left = parse_additive();
    for (;;) {
      Op op;
      const std::size_t pos = next_ < tokens_.size() ? tokens_[next_].pos : 0;
      if (at_name("not") && next_ + 1 < tokens_.size() && tokens_[next_ + 1].type == Tok::name &&
          tokens_[next_ + 1].value == "in") {
        op = Op::not_in;
        next_ += 2;
      } else if (at_name("in")) {
        op = Op::in;
        ++next_;
      } else if (at(Tok::comparison)) {
        const std::string& v = take().value;
        op = v == "==" ? Op::equal : v == "!=" ? Op::not_equal : v == "<" ? Op::less : v == ">" ? Op::greater
           : v == "<=" ? Op::less_equal : Op::greater_equal;
      } else {
        return left;
      }
      left = make(pos, Binary{op, std::move(left), parse_additive()});
    }
  }

  ExprPtr parse_additive() {
    ExprPtr left = parse_multiplicative();
    while (at(Tok::additive)) {
      const Token& t = take();
      const Op op = t.value == "+" ? Op::add : t.value == "-" ? Op::subtract : Op::concat;
      left = make(t.pos, Binary{op, std::move(left), parse_multiplicative()});
    }
    return left;
  }

  ExprPtr parse_multiplicative() {
    ExprPtr left = parse_power();
    while (at(Tok::multiplicative)) {
      const Token& t = take();
      const Op op = t.value == "*"    ? Op::multiply
                    : t.value == "/"  ? Op::divide
                    : t.value == "//" ? Op::floor_divide
                                      : Op::modulo;
      left = make(t.pos, Binary{op, std::move(left), parse_power()});
    }
    return left;
  }

  ExprPtr parse_power() {
    ExprPtr left = parse_test();
    while (at(Tok::power)) {
      const std::size_t pos = take().pos;
      left = make(pos, Binary{Op::power, std::move(left), parse_test()});
    }
    return left;
  }

  ExprPtr parse_test() {
    ExprPtr operand = parse_filter();
    while (at_name("is")) {
      ++next_;
      const bool negated = at_name("not");
      next_ += negated;
      const Token& name = expect_name("a test name after 'is'");
      if (!contains(kTests, name.value)) fail("unknown test '" + name.value + "'", name.pos);
      TestExpr test{std::move(operand), name.value, negated, {}};
      if (at(Tok::lparen)) test.args = parse_args();
      operand = make(name.pos, std::move(test));
    }
    return operand;
  }

  // `name` or `name(args)` after a "|", or in {% filter %}.
  ExprPtr parse_filter_name(ExprPtr operand) {
    const Token& name = expect_name("a filter name");
    if (!contains(kFilters, name.value)) fail("unknown filter '" + name.value + "'", name.pos);
    FilterExpr filter{std::move(operand), name.value, {}};
    if (at(Tok::lparen)) filter.args = parse_args();
    return make(name.pos, std::move(filter));
  }

  ExprPtr parse_filter() {
    ExprPtr operand = parse_unary();
    while (at(Tok::pipe)) {
      ++next_;
      operand = parse_filter_name(std::move(operand));
    }
    return operand;
  }

  ExprPtr parse_unary() {
    const Token& t = peek();
    if ((t.type == Tok::unary || t.type == Tok::additive) && (t.value == "-" || t.value == "+")) {
      ++next_;
      const Nesting nesting(*this, t.pos);
      return make(t.pos, Unary{t.value[0], parse_unary()});
    }
    ExprPtr e = parse_member(parse_primary());
    while (at(Tok::lparen)) {
      const std::size_t pos = e->pos;
      Args args = parse_args();
      e = parse_member(make(pos, Call{std::move(e), std::move(args)}));
    }
    return e;
  }

  ExprPtr parse_member(ExprPtr object) {
    while (at(Tok::dot) || at(Tok::lbracket)) {
      const Token& open = take();
      if (open.type == Tok::dot) {
        const Token& t = take();
        Value key;
        if (t.type == Tok::name) {
          key = Value::string(t.value);
        } else if (t.type == Tok::number && t.value.find('.') == std::string::npos) {
          key = parse_number(t);
        } else {
          fail("expected a name or an integer after '.', not " + describe(t), t.pos);
        }
        object = make(open.pos, Member{std::move(object), make(t.pos, Literal{std::move(key)})});
        continue;
      }
      // Up to three parts apart by colons make a slice; one part alone is an index.
      std::vector<ExprPtr> parts(1);
      bool slice = false;
      while (!at(Tok::rbracket)) {
        if (at(Tok::colon)) {
          ++next_;
          parts.emplace_back();
          slice = true;
        } else {
          if (parts.back()) fail("expected ':' or ']'", peek().pos);
          parts.back() = parse_expression();
        }
      }
      ++next_;
      if (!slice) {
        if (!parts[0]) fail("expected an index between '[' and ']'", open.pos);
        object = make(open.pos, Member{std::move(object), std::move(parts[0])});
      } else {
        if (parts.size() > 3) fail("a slice has at most three parts", open.pos);
        parts.resize(3);
        object =
            make(open.pos, Slice{std::move(object), std::move(parts[0]), std::move(parts[1]), std::move(parts[2])});
      }
    }
    return object;
  }

  Value parse_number(const Token& t) const {
    std::string_view text = t.value;
    if (text.front() == '+') text.remove_prefix(1);
    if (text.find('.') != std::string_view::npos) {
      double d = 0;
      std::from_chars(text.data(), text.data() + text.size(), d);
      return Value::floating(d);
    }
    std::int64_t i = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), i);
    if (r.ec != std::errc()) fail("integer " + t.value + " does not fit in 64 bits", t.pos);
    return Value::integer(i);
  }

  ExprPtr parse_primary() {
    const Token& t = take();
    switch (t.type) {
      case Tok::number: return make(t.pos, Literal{parse_number(t)});
      case Tok::string: {
        std::string value = t.value;
        while (at(Tok::string)) value += take().value;  // 'a' 'b' is 'ab'
        return make(t.pos, Literal{Value::string(std::move(value))});
      }
      case Tok::name: {
        const std::string& n = t.value;
        if (n == "true" || n == "True") return make(t.pos, Literal{Value::boolean(true)});
        if (n == "false" || n == "False") return make(t.pos, Literal{Value::boolean(false)});
        if (n == "none" || n == "None") return make(t.pos, Literal{Value::none()});
        for (MacroDef* m : macros_) {
          m->uses_caller |= n == "caller";
          m->uses_varargs |= n == "varargs";
          m->uses_kwargs |= n == "kwargs";
        }
        return make(t.pos, Name{n});
      }
      case Tok::lparen: {
        ExprPtr e = parse_expression_sequence(false);
        expect(Tok::rparen, "')'");
        return e;
      }
      case Tok::lbracket: {
        ListLiteral list{{}, false};
        while (!at(Tok::rbracket)) {
          list.items.push_back(parse_expression());
          if (at(Tok::comma)) ++next_;
        }
        ++next_;
        return make(t.pos, std::move(list));
      }
      case Tok::lbrace: {
        DictLiteral dict;
        while (!at(Tok::rbrace)) {
          ExprPtr key = parse_expression();
          expect(Tok::colon, "':' between a key and its value");
          dict.items.emplace_back(std::move(key), parse_expression());
          if (at(Tok::comma)) ++next_;
        }
        ++next_;
        return make(t.pos, std::move(dict));
      }
      default: fail("unexpected " + describe(t), t.pos, "an expression");
    }
  }

  std::vector<Token> tokens_;
  const Locator& locator_;
  std::size_t next_ = 0;
  const Token* tag_ = nullptr;  // the "{%" or "{{" of the tag being read
  int depth_ = 0;
  int loop_depth_ = 0;              // for loops around here, inside the innermost macro
  std::vector<MacroDef*> macros_;   // macros and call blocks around here, innermost last
};

// ---- Renderer

// Variables, and the scope around. A scope lives while a statement or a macro call runs in it;
// macros refer to the scope they were defined in without keeping it.
struct Scope {
  std::shared_ptr<Scope> parent;
  std::map<std::string, Value, std::less<>> variables;

  const Value* find(std::string_view name) const {
    for (const Scope* s = this; s != nullptr; s = s->parent.get())
      if (const auto it = s->variables.find(name); it != s->variables.end()) return &it->second;
    return nullptr;
  }
  void set(std::string_view name, Value v) { variables.insert_or_assign(std::string(name), std::move(v)); }
};

struct CallArgs {
  List positional;
  std::vector<std::pair<std::string, Value>> keyword;
  Value caller;  // the body of the {% call %} block that calls a macro
};

// Reads a call's arguments by position, then by keyword; finish() refuses any left over.
class ArgReader {
 public:
  ArgReader(CallArgs& args, std::string what) : args_(args), what_(std::move(what)) {}

  std::optional<Value> next(std::string_view name) {
    if (next_ < args_.positional.size()) return std::move(args_.positional[next_++]);
    return keyword(name);
  }
  std::optional<Value> keyword(std::string_view name) {
    for (auto it = args_.keyword.begin(); it != args_.keyword.end(); ++it)
      if (it->first == name) {
        Value v = std::move(it->second);
        args_.keyword.erase(it);
        return v;
      }
    return std::nullopt;
  }
  // The next argument, which must be of kind k.
  std::optional<Value> next(std::string_view name, Value::Kind k) { return checked(next(name), name, k); }
  std::optional<Value> keyword(std::string_view name, Value::Kind k) { return checked(keyword(name), name, k); }

  std::vector<std::pair<std::string, Value>> rest_keywords() { return std::exchange(args_.keyword, {}); }

  void finish() const {
    if (next_ < args_.positional.size())
      throw Failure{what_ + " takes at most " + std::to_string(next_) + " positional argument(s)"};
    if (!args_.keyword.empty()) throw Failure{what_ + " has no argument '" + args_.keyword.front().first + "'"};
  }

 private:
  std::optional<Value> checked(std::optional<Value> v, std::string_view name, Value::Kind k) const {
    if (v && !v->is(k))
      throw Failure{what_ + ": '" + std::string(name) + "' must be " + a_type(Value{k, {}}) + ", not " + a_type(*v)};
    return v;
  }

  CallArgs& args_;
  std::string what_;
  std::size_t next_ = 0;
};

enum class Flow : std::uint8_t { next, break_loop, continue_loop };

class Renderer {
 public:
  explicit Renderer(const Locator& locator) : locator_(locator) {}
  // Namespaces are the one mutable value, so the one that can hold itself: emptied, none leaks.
  ~Renderer() {
    for (const std::weak_ptr<Dict>& ns : namespaces_)
      if (const std::shared_ptr<Dict> d = ns.lock()) d->clear();
  }
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;

  std::string render(const Block& program, const nlohmann::ordered_json& context) {
    const std::string where = locator_.name() + "'s context";
    if (!context.is_object() && !context.is_null())
      throw Error("the context must be a JSON object, not " + std::string(context.type_name()), where);
    const std::shared_ptr<Scope> globals = new_scope(nullptr);
    for (const auto& [key, value] : context.items()) {
      try {
        globals->set(key, from_json(value));
      } catch (const Failure& f) {
        throw Error(f.message, where + ", variable '" + key + "'");
      }
    }
    std::string out;
    render_block(program, globals, out);
    return out;
  }

 private:
  using K = Value::Kind;
  // Evaluation depth, macro calls included: above what the parser lets a template nest, shallow
  // enough for a thread's stack when a macro calls itself without end.
  static constexpr int kMaxDepth = 512;
  // Statements run in one render: far above what a conversation of thousands of turns needs,
  // and a bound on the time a template whose macros recurse many ways can take.
  static constexpr std::int64_t kMaxSteps = std::int64_t{1} << 24;
  // Bytes of text and lists a render may build: far above any prompt, and a bound on the memory a
  // short template can take (a loop of `set ns.s = ns.s ~ ns.s` doubles a string each pass).
  static constexpr std::size_t kMaxBuilt = std::size_t{1} << 28;

  std::size_t room() const { return built_ >= kMaxBuilt ? 0 : kMaxBuilt - built_; }
  void fits(std::size_t bytes) const {
    if (bytes > room()) throw Failure{"the template builds more than 256 MiB of text and lists"};
  }
  void build(std::size_t bytes) {
    fits(bytes);
    built_ += bytes;
  }
  Value built(Value v) {
    if (v.is(K::string)) build(v.as_string().size());
    if (v.is(K::list)) build(v.as_list().size() * sizeof(Value));
    if (v.is_mapping()) build(v.as_dict().size() * sizeof(Dict::Entry));
    return v;
  }
  void write(std::string& out, const Value& v) {
    const std::string text = print_text(v, room());
    build(text.size());
    out += text;
  }

  class Depth {
   public:
    Depth(Renderer& r, std::size_t pos) : r_(r) {
      if (++r_.depth_ > kMaxDepth)
        throw Error("the template nests deeper than " + std::to_string(kMaxDepth) +
                        " levels as it renders (a macro calling itself?)",
                    r_.locator_.where(pos));
    }
    ~Depth() { --r_.depth_; }
    Depth(const Depth&) = delete;
    Depth& operator=(const Depth&) = delete;

   private:
    Renderer& r_;
  };

  static std::shared_ptr<Scope> new_scope(std::shared_ptr<Scope> parent) {
    auto scope = std::make_shared<Scope>();
    scope->parent = std::move(parent);
    return scope;
  }

  // ---- Statements

  Flow render_block(const Block& block, const std::shared_ptr<Scope>& scope, std::string& out) {
    for (const Stmt& s : block)
      if (const Flow f = exec(s, scope, out); f != Flow::next) return f;
    return Flow::next;
  }

  Flow exec(const Stmt& s, const std::shared_ptr<Scope>& scope, std::string& out) {
    const Depth depth(*this, s.pos);
    if (++steps_ > kMaxSteps) throw Error("the template runs more than 2^24 statements", locator_.where(s.pos));
    try {
      return std::visit([&](const auto& node) { return exec_node(node, scope, out); }, s.node);
    } catch (const Failure& f) {
      throw Error(f.message, locator_.where(s.pos));
    }
  }

  Flow exec_node(const TextStmt& s, const std::shared_ptr<Scope>&, std::string& out) {
    build(s.text.size());
    out += s.text;
    return Flow::next;
  }

  Flow exec_node(const OutputStmt& s, const std::shared_ptr<Scope>& scope, std::string& out) {
    write(out, eval(*s.value, *scope));
    return Flow::next;
  }

  Flow exec_node(const IfStmt& s, const std::shared_ptr<Scope>& scope, std::string& out) {
    return render_block(truthy(eval(*s.condition, *scope)) ? s.body : s.otherwise, scope, out);
  }

  void bind_targets(Scope& scope, const std::vector<std::string>& targets, const Value& item) {
    if (targets.size() == 1) {
      scope.set(targets[0], item);
      return;
    }
    if (!item.is(K::list))
      throw Failure{"cannot unpack " + a_type(item) + " into " + std::to_string(targets.size()) + " names"};
    const List& values = item.as_list();
    if (values.size() != targets.size())
      throw Failure{"cannot unpack " + std::to_string(values.size()) + " items into " + std::to_string(targets.size()) +
                    " names"};
    for (std::size_t i = 0; i < targets.size(); ++i) scope.set(targets[i], values[i]);
  }

  // The loop scope holds the loop variables and whatever the body sets: nothing leaks out.
  Flow exec_node(const ForStmt& s, const std::shared_ptr<Scope>& scope, std::string& out) {
    const std::shared_ptr<Scope> loop_scope = new_scope(scope);
    const Value iterable = eval(*s.iterable, *loop_scope);
    List candidates;
    if (iterable.is(K::list)) {
      candidates = iterable.as_list();
    } else if (iterable.is(K::dict)) {
      for (const auto& entry : iterable.as_dict().entries()) candidates.push_back(Value::string(entry.first));
    } else {
      throw Failure{"cannot loop over " + a_type(iterable)};
    }
    List items;
    const std::shared_ptr<Scope> filter_scope = s.condition ? new_scope(loop_scope) : nullptr;
    for (Value& item : candidates) {
      if (filter_scope) {
        filter_scope->variables.clear();
        bind_targets(*filter_scope, s.targets, item);
        if (!truthy(eval(*s.condition, *filter_scope))) continue;
      }
      items.push_back(std::move(item));
    }
    bool none_done = true;
    for (std::size_t i = 0; i < items.size(); ++i) {
      loop_scope->set("loop", loop_value(items, i));
      bind_targets(*loop_scope, s.targets, items[i]);
      const Flow f = render_block(s.body, loop_scope, out);
      if (f == Flow::continue_loop) continue;
      if (f == Flow::break_loop) break;
      none_done = false;  // the library's for-else also runs when every pass ended in break or continue
    }
    if (none_done) render_block(s.otherwise, loop_scope, out);
    return Flow::next;
  }

  static Value loop_value(const List& items, std::size_t i) {
    const auto n = static_cast<std::int64_t>(items.size()), k = static_cast<std::int64_t>(i);
    auto loop = std::make_shared<Dict>();
    loop->set("index", Value::integer(k + 1));
    loop->set("index0", Value::integer(k));
    loop->set("revindex", Value::integer(n - k));
    loop->set("revindex0", Value::integer(n - k - 1));
    loop->set("first", Value::boolean(k == 0));
    loop->set("last", Value::boolean(k == n - 1));
    loop->set("length", Value::integer(n));
    loop->set("previtem", k > 0 ? items[i - 1] : Value{});
    loop->set("nextitem", k < n - 1 ? items[i + 1] : Value{});
    return Value::dict(std::move(loop));
  }

  Flow exec_node(const SetStmt& s, const std::shared_ptr<Scope>& scope, std::string&) {
    Value value;
    if (s.value) {
      value = eval(*s.value, *scope);
    } else {
      std::string body;
      render_block(s.body, scope, body);
      value = Value::string(std::move(body));
    }
    if (s.name_space) {
      const Value target = eval(*s.name_space, *scope);
      if (!target.is(K::name_space))
        throw Failure{"cannot set an attribute of " + a_type(target) + "; only of a namespace()"};
      target.as_dict().set(s.attribute, std::move(value));
    } else {
      bind_targets(*scope, s.targets, value);
    }
    return Flow::next;
  }

  Flow exec_node(const MacroStmt& s, const std::shared_ptr<Scope>& scope, std::string&) {
    scope->set(s.macro.name, Value::function({Function::Kind::macro, s.macro.name, {}, &s.macro, scope}));
    return Flow::next;
  }

  Flow exec_node(const CallStmt& s, const std::shared_ptr<Scope>& scope, std::string& out) {
    CallArgs args = eval_args(s.args, *scope);
    args.caller = Value::function({Function::Kind::caller, "caller", {}, &s.caller, scope});
    write(out, call(s.callee, eval(*s.callee, *scope), std::move(args), *scope));
    return Flow::next;
  }

  Flow exec_node(const FilterStmt& s, const std::shared_ptr<Scope>& scope, std::string& out) {
    std::string body;
    render_block(s.body, scope, body);
    write(out, apply_filter(std::get<FilterExpr>(s.filter->node), Value::string(std::move(body)), *scope));
    return Flow::next;
  }

  Flow exec_node(const BreakStmt&, const std::shared_ptr<Scope>&, std::string&) { return Flow::break_loop; }
  Flow exec_node(const ContinueStmt&, const std::shared_ptr<Scope>&, std::string&) { return Flow::continue_loop; }

  // ---- Expressions

  Value eval(const Expr& e, Scope& scope) {
    const Depth depth(*this, e.pos);
    try {
      return std::visit([&](const auto& node) { return eval_node(node, scope); }, e.node);
    } catch (const Failure& f) {
      throw Error(f.message, locator_.where(e.pos));
    }
  }

  Value eval_node(const Literal& e, Scope&) { return e.value; }

  Value eval_node(const Name& e, Scope& scope) {
    if (const Value* v = scope.find(e.name)) return *v;
    if (contains(kGlobals, e.name)) return Value::function({Function::Kind::global, e.name, {}, nullptr, {}});
    return {};
  }

  Value eval_node(const ListLiteral& e, Scope& scope) {
    List items;
    for (const ExprPtr& item : e.items) items.push_back(eval(*item, scope));
    return built(Value::list(std::move(items)));
  }

  Value eval_node(const DictLiteral& e, Scope& scope) {
    auto d = std::make_shared<Dict>();
    for (const auto& [key_expr, value_expr] : e.items) {
      Value key = eval(*key_expr, scope);
      if (!key.is(K::string)) throw Failure{"dict keys must be strings, not " + a_type(key)};
      d->set(key.as_string(), eval(*value_expr, scope));
    }
    return built(Value::dict(std::move(d)));
  }

  Value eval_node(const Member& e, Scope& scope) {
    const Value object = eval(*e.object, scope);
    return member(object, eval(*e.index, scope));
  }

  // a.b and a[b]: a dict's key, else its method; a list's or a string's item (from the end when
  // negative), its length, a string's method; undefined where there is none.
  static Value member(const Value& object, const Value& key) {
    if (object.is_mapping()) {
      if (!key.is(K::string)) throw Failure{a_type(object) + "'s keys are strings, not " + a_type(key)};
      if (const Value* v = object.as_dict().find(key.as_string())) return *v;
      if (object.is(K::dict) && is_method(object, key.as_string()))
        return Value::function({Function::Kind::method, key.as_string(), object, nullptr, {}});
      return {};
    }
    if (object.is(K::list) || object.is(K::string)) {
      if (key.is(K::integer) && object.is(K::string)) {
        std::optional<std::string> unit = utf16_unit_at(object.as_string(), key.as_int());
        return unit ? Value::string(std::move(*unit)) : Value{};
      }
      if (key.is(K::integer)) {
        const auto n = static_cast<std::int64_t>(object.as_list().size());
        const std::int64_t i = key.as_int() < 0 ? key.as_int() + n : key.as_int();
        if (i < 0 || i >= n) return {};
        return object.as_list()[static_cast<std::size_t>(i)];
      }
      if (!key.is(K::string)) throw Failure{a_type(object) + " is indexed by integers, not by " + a_type(key)};
      if (key.as_string() == "length")
        return Value::integer(object.is(K::string) ? utf16_length(object.as_string())
                                                   : static_cast<std::int64_t>(object.as_list().size()));
      if (object.is(K::string) && is_method(object, key.as_string()))
        return Value::function({Function::Kind::method, key.as_string(), object, nullptr, {}});
      return {};
    }
    if (!key.is(K::string)) throw Failure{"cannot index " + a_type(object)};
    return {};
  }

  static bool is_method(const Value& object, std::string_view name) {
    static constexpr std::string_view kStringMethods[] = {"capitalize", "endswith", "lower", "lstrip",
                                                          "replace", "rstrip", "split", "startswith",
                                                          "strip", "title", "upper"};
    static constexpr std::string_view kDictMethods[] = {"dictsort", "get", "items", "keys", "values"};
    return object.is(K::string) ? contains(kStringMethods, name) : contains(kDictMethods, name);
  }

  Value eval_node(const Slice& e, Scope& scope) {
    const Value object = eval(*e.object, scope);
    if (!object.is(K::list) && !object.is(K::string)) throw Failure{"cannot slice " + a_type(object)};
    const auto bound = [&](const ExprPtr& part, std::string_view what) -> std::optional<std::int64_t> {
      if (!part) return std::nullopt;
      const Value v = eval(*part, scope);
      if (v.is(K::undefined)) return std::nullopt;
      if (!v.is(K::integer)) throw Failure{"a slice's " + std::string(what) + " must be an integer, not " + a_type(v)};
      return v.as_int();
    };
    const auto start = bound(e.start, "start"), stop = bound(e.stop, "stop"), step = bound(e.step, "step");
    if (object.is(K::list)) {
      List items;
      for (const std::size_t i :
           slice_indices(static_cast<std::int64_t>(object.as_list().size()), start, stop, step.value_or(1)))
        items.push_back(object.as_list()[i]);
      return Value::list(std::move(items));
    }
    const std::vector<std::string_view> chars = split_code_points(object.as_string());
    std::string text;
    for (const std::size_t i : slice_indices(static_cast<std::int64_t>(chars.size()), start, stop, step.value_or(1)))
      text += chars[i];
    return Value::string(std::move(text));
  }

  CallArgs eval_args(const Args& args, Scope& scope) {
    CallArgs out;
    for (const ExprPtr& a : args.positional) out.positional.push_back(eval(*a, scope));
    for (const auto& [name, a] : args.keyword) {
      for (const auto& [seen, ignored] : out.keyword)
        if (seen == name) throw Failure{"argument '" + name + "' is given twice"};
      out.keyword.emplace_back(name, eval(*a, scope));
    }
    return out;
  }

  Value eval_node(const Call& e, Scope& scope) {
    CallArgs args = eval_args(e.args, scope);
    return call(e.callee, eval(*e.callee, scope), std::move(args), scope);
  }

  Value call(const ExprPtr& callee_expr, const Value& callee, CallArgs args, Scope& scope) {
    if (callee.is(K::function)) {
      const Function& f = callee.as_function();
      switch (f.kind) {
        case Function::Kind::global: return built(call_global(f.name, args));
        case Function::Kind::method: return built(invoke_method(f.self, f.name, args));
        case Function::Kind::macro:
        case Function::Kind::caller: return call_macro(f, std::move(args));
      }
    }
    // Says what was called: a name, or a method of some value.
    if (const auto* name = std::get_if<Name>(&callee_expr->node))
      throw Failure{"'" + name->name + "' is " + (callee.is(K::undefined) ? "undefined" : a_type(callee)) +
                    ", not a function"};
    if (const auto* m = std::get_if<Member>(&callee_expr->node); m && callee.is(K::undefined)) {
      if (const auto* key = std::get_if<Literal>(&m->index->node); key && key->value.is(K::string))
        throw Failure{a_type(eval(*m->object, scope)) + " has no method '" + key->value.as_string() + "'"};
    }
    throw Failure{"cannot call " + a_type(callee)};
  }

  // Binds a macro's parameters as the library does: by position, then by keyword, then from the
  // defaults, which see the parameters before them.
  Value call_macro(const Function& f, CallArgs args) {
    const MacroDef& def = *f.macro;
    std::shared_ptr<Scope> parent = f.scope.lock();
    if (!parent) throw Failure{"macro '" + def.name + "' is called after the block that defined it has ended"};
    if (f.kind == Function::Kind::macro && def.uses_caller) {
      parent = new_scope(std::move(parent));
      parent->set("caller", args.caller);
    }
    const std::shared_ptr<Scope> scope = new_scope(std::move(parent));
    std::vector<const Param*> pending;
    for (std::size_t i = 0; i < def.params.size(); ++i) {
      const Param& p = def.params[i];
      std::optional<Value> v;
      if (i < args.positional.size()) {
        v = args.positional[i];
      } else {
        for (auto it = args.keyword.begin(); it != args.keyword.end(); ++it)
          if (it->first == p.name) {
            v = std::move(it->second);
            args.keyword.erase(it);
            break;
          }
      }
      if (!v && p.default_value) pending.push_back(&p);
      scope->set(p.name, v.value_or(Value{}));
    }
    const std::string what = f.kind == Function::Kind::macro ? "macro '" + def.name + "'" : "the call block";
    if (def.uses_kwargs) {
      auto kwargs = std::make_shared<Dict>();
      for (auto& [name, v] : args.keyword) kwargs->set(name, std::move(v));
      scope->set("kwargs", Value::dict(std::move(kwargs)));
    } else if (!args.keyword.empty()) {
      throw Failure{what + " has no parameter '" + args.keyword.front().first + "'"};
    }
    if (def.uses_varargs) {
      List rest;
      for (std::size_t i = def.params.size(); i < args.positional.size(); ++i) rest.push_back(args.positional[i]);
      scope->set("varargs", Value::list(std::move(rest)));
    } else if (args.positional.size() > def.params.size()) {
      throw Failure{what + " takes at most " + std::to_string(def.params.size()) + " argument(s)"};
    }
    for (const Param* p : pending) scope->set(p->name, eval(*p->default_value, *scope));
    std::string out;
    render_block(def.body, scope, out);
    return Value::string(std::move(out));
  }

  Value eval_node(const FilterExpr& e, Scope& scope) { return apply_filter(e, eval(*e.operand, scope), scope); }

  Value eval_node(const TestExpr& e, Scope& scope) {
    const Value operand = eval(*e.operand, scope);
    CallArgs args = eval_args(e.args, scope);
    ArgReader in(args, "test '" + e.name + "'");
    const std::optional<Value> arg = e.name == "eq" || e.name == "equalto" ? in.next("value") : std::nullopt;
    in.finish();
    return Value::boolean(test(e.name, operand, arg) != e.negated);
  }

  Value eval_node(const Unary& e, Scope& scope) {
    const Value v = eval(*e.operand, scope);
    if (e.op == '!') return Value::boolean(!truthy(v));
    const bool minus = e.op == '-';
    if (v.is(K::floating)) return Value::floating(minus ? -v.as_number() : v.as_number());
    if (v.is(K::integer) || v.is(K::boolean)) {
      const std::int64_t i = v.is(K::boolean) ? v.as_bool() : v.as_int();
      if (minus && i == std::numeric_limits<std::int64_t>::min()) throw Failure{"integer overflow"};
      return Value::integer(minus ? -i : i);
    }
    throw Failure{"unary " + std::string(1, e.op) + " cannot apply to " + a_type(v)};
  }

  Value eval_node(const Conditional& e, Scope& scope) {
    if (truthy(eval(*e.condition, scope))) return eval(*e.then, scope);
    return e.otherwise ? eval(*e.otherwise, scope) : Value{};
  }

  Value eval_node(const Binary& e, Scope& scope) {
    Value left = eval(*e.left, scope);
    if (e.op == Op::logical_and) return truthy(left) ? eval(*e.right, scope) : left;
    if (e.op == Op::logical_or) return truthy(left) ? left : eval(*e.right, scope);
    return built(binary(e.op, left, eval(*e.right, scope)));
  }

  static const char* op_text(Op op) {
    static constexpr const char* kText[] = {
        "+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", ">", "<=", ">=", "in", "not in", "and", "or"};
    return kText[static_cast<int>(op)];
  }

  static bool compare(Op op, int c) {
    switch (op) {
      case Op::less: return c < 0;
      case Op::greater: return c > 0;
      case Op::less_equal: return c <= 0;
      default: return c >= 0;
    }
  }

  // The library's order of cases: numbers; undefined; none; ~; **; lists; then strings and dicts.
  static Value binary(Op op, const Value& a, const Value& b) {
    if (op == Op::equal || op == Op::not_equal) return Value::boolean(loose_equal(a, b) == (op == Op::equal));
    const auto unsupported = [&]() -> Failure {
      return {"'" + std::string(op_text(op)) + "' cannot apply to " + a_type(a) + " and " + a_type(b)};
    };
    if (a.is_number() && b.is_number() && op != Op::concat && op != Op::power) return arithmetic(op, a, b);
    if (a.is(K::undefined) || b.is(K::undefined)) {
      if (b.is(K::undefined) && (op == Op::in || op == Op::not_in)) return Value::boolean(op == Op::not_in);
      if (op == Op::concat && !a.is(K::none) && !b.is(K::none))
        return Value::string((a.is(K::undefined) ? "" : concat_text(a)) + (b.is(K::undefined) ? "" : concat_text(b)));
      throw unsupported();
    }
    if (a.is(K::none) || b.is(K::none)) throw unsupported();
    if (op == Op::concat) return Value::string(concat_text(a) + concat_text(b));
    const auto numeric = [](const Value& v) { return v.is_number() || v.is(K::boolean); };
    if (op == Op::power && numeric(a) && numeric(b)) return power(a, b);
    if (a.is(K::list) && b.is(K::list) && op == Op::add) {
      List items = a.as_list();
      items.insert(items.end(), b.as_list().begin(), b.as_list().end());
      return Value::list(std::move(items));
    }
    if (b.is(K::list) && (op == Op::in || op == Op::not_in)) {
      const bool found =
          std::any_of(b.as_list().begin(), b.as_list().end(), [&](const Value& x) { return strict_equal(x, a); });
      return Value::boolean(found == (op == Op::in));
    }
    if ((a.is(K::string) || b.is(K::string)) && op == Op::add) return Value::string(concat_text(a) + concat_text(b));
    if (a.is(K::string) && b.is(K::string)) {
      if (op == Op::in || op == Op::not_in)
        return Value::boolean((b.as_string().find(a.as_string()) != std::string::npos) == (op == Op::in));
      if (op == Op::less || op == Op::greater || op == Op::less_equal || op == Op::greater_equal)
        return Value::boolean(compare(op, a.as_string().compare(b.as_string())));
    }
    if (a.is(K::string) && b.is(K::dict) && (op == Op::in || op == Op::not_in))
      return Value::boolean((b.as_dict().find(a.as_string()) != nullptr) == (op == Op::in));
    throw unsupported();
  }

  // Integers stay integers (+ - * // %), / gives a float; % takes the dividend's sign, as in
  // JavaScript. Division by zero and overflow are errors.
  static Value arithmetic(Op op, const Value& a, const Value& b) {
    if (op == Op::in || op == Op::not_in) throw Failure{"'" + std::string(op_text(op)) + "' cannot apply to numbers"};
    const bool integers = a.is(K::integer) && b.is(K::integer);
    const double x = a.as_number(), y = b.as_number();
    if ((op == Op::divide || op == Op::floor_divide || op == Op::modulo) && y == 0) throw Failure{"division by zero"};
    if (integers && op != Op::divide) {
      const std::int64_t i = a.as_int(), j = b.as_int();
      std::int64_t r = 0;
      bool overflow = false;
      switch (op) {
        case Op::add: overflow = __builtin_add_overflow(i, j, &r); break;
        case Op::subtract: overflow = __builtin_sub_overflow(i, j, &r); break;
        case Op::multiply: overflow = __builtin_mul_overflow(i, j, &r); break;
        case Op::floor_divide:
          overflow = i == std::numeric_limits<std::int64_t>::min() && j == -1;
          r = overflow ? 0 : i / j - ((i % j != 0) && ((i < 0) != (j < 0)));
          break;
        case Op::modulo: r = j == -1 ? 0 : i % j; break;
        default: return Value::boolean(compare(op, i < j ? -1 : i > j ? 1 : 0));
      }
      if (overflow) throw Failure{"integer overflow"};
      return Value::integer(r);
    }
    switch (op) {
      case Op::add: return Value::floating(x + y);
      case Op::subtract: return Value::floating(x - y);
      case Op::multiply: return Value::floating(x * y);
      case Op::divide: return Value::floating(x / y);
      case Op::floor_divide: return Value::floating(std::floor(x / y));
      case Op::modulo: return Value::floating(std::fmod(x, y));
      default: return Value::boolean(compare(op, x < y ? -1 : x > y ? 1 : 0));
    }
  }

  static Value power(const Value& a, const Value& b) {
    const double x = a.as_number(), y = b.as_number();
    if (x == 0 && y < 0) throw Failure{"0 cannot be raised to a negative power"};
    if (!a.is(K::floating) && !b.is(K::floating) && y >= 0) {
      // By squaring: once base * base overflows, the result would too.
      std::int64_t base = a.is(K::boolean) ? a.as_bool() : a.as_int(),
                   exponent = b.is(K::boolean) ? b.as_bool() : b.as_int();
      std::int64_t r = 1;
      while (exponent > 0) {
        if ((exponent & 1) && __builtin_mul_overflow(r, base, &r)) throw Failure{"integer overflow"};
        exponent >>= 1;
        if (exponent > 0 && __builtin_mul_overflow(base, base, &base)) throw Failure{"integer overflow"};
      }
      return Value::integer(r);
    }
    const double r = std::pow(x, y);
    if (!std::isfinite(r)) throw Failure{"the power is not a finite number"};
    return Value::floating(r);
  }

  // ---- Tests, filters, methods and globals

  static bool test(std::string_view name, const Value& v, const std::optional<Value>& arg) {
    if (name == "boolean") return v.is(K::boolean);
    if (name == "callable") return v.is(K::function);
    if (name == "odd" || name == "even") {
      if (!v.is(K::integer)) throw Failure{"test '" + std::string(name) + "' needs an integer, not " + a_type(v)};
      return (v.as_int() % 2 != 0) == (name == "odd");
    }
    if (name == "false" || name == "true") return v.is(K::boolean) && v.as_bool() == (name == "true");
    if (name == "none") return v.is(K::none);
    if (name == "string") return v.is(K::string);
    if (name == "number") return v.is_number();
    if (name == "integer") return v.is(K::integer);
    if (name == "float") return v.is(K::floating);
    if (name == "iterable") return v.is(K::list) || v.is(K::string);
    if (name == "mapping") return v.is(K::dict);
    if (name == "sequence") return v.is(K::list) || v.is(K::dict) || v.is(K::string);
    if (name == "lower") return v.is(K::string) && lower(v.as_string()) == v.as_string();
    if (name == "upper") return v.is(K::string) && upper(v.as_string()) == v.as_string();
    if (name == "defined") return !v.is(K::undefined);
    if (name == "undefined") return v.is(K::undefined);
    return strict_equal(v, arg.value_or(Value{}));  // eq, equalto
  }

  Value apply_filter(const FilterExpr& e, const Value& v, Scope& scope) {
    CallArgs args = eval_args(e.args, scope);
    ArgReader in(args, "filter '" + e.name + "'");
    Value result = built(filter(e.name, v, in));
    in.finish();
    return result;
  }

  Value filter(const std::string& name, const Value& v, ArgReader& in) {
    if (name == "safe") return v;
    if (name == "tojson") return tojson(v, in);
    if (name == "default") {
      Value fallback = in.next("default_value").value_or(Value::string(""));
      const bool boolean = in.next("boolean", K::boolean).value_or(Value::boolean(false)).as_bool();
      return v.is(K::undefined) || (boolean && !truthy(v)) ? fallback : v;
    }
    if (name == "int" || name == "float") return number_filter(name == "int", v, in);
    if (name == "join") {
      const std::string sep = in.next("separator", K::string).value_or(Value::string("")).as_string();
      std::string out;
      if (v.is(K::string)) {
        const std::vector<std::string_view> chars = split_code_points(v.as_string());
        for (std::size_t i = 0; i < chars.size(); ++i) {
          out += (i ? sep : "") + std::string(chars[i]);
          fits(out.size());
        }
        return Value::string(std::move(out));
      }
      if (v.is(K::list)) {
        const List& items = v.as_list();
        for (std::size_t i = 0; i < items.size(); ++i) {
          out += (i ? sep : "") + (items[i].is_nullish() ? "" : concat_text(items[i]));
          fits(out.size());
        }
        return Value::string(std::move(out));
      }
    }
    if (name == "length" || name == "count") {
      if (v.is(K::string)) return Value::integer(utf16_length(v.as_string()));
      if (v.is(K::list)) return Value::integer(static_cast<std::int64_t>(v.as_list().size()));
      if (v.is(K::dict)) return Value::integer(static_cast<std::int64_t>(v.as_dict().size()));
    }
    if (name == "string") {
      if (v.is(K::boolean) || v.is_number() || v.is(K::string) || v.is(K::list) || v.is(K::dict))
        return Value::string(print_text(v, room()));
    }
    if (v.is(K::list)) return list_filter(name, v, in);
    if (v.is(K::string)) return string_filter(name, v, in);
    if (v.is(K::dict) && (name == "items" || name == "keys" || name == "values" || name == "dictsort"))
      return call_method(v, name, in);
    if (v.is_number() && name == "abs") {
      if (v.is(K::floating)) return Value::floating(std::fabs(v.as_number()));
      if (v.as_int() == std::numeric_limits<std::int64_t>::min()) throw Failure{"integer overflow"};
      return Value::integer(std::abs(v.as_int()));
    }
    throw Failure{"filter '" + name + "' cannot apply to " + a_type(v)};
  }

  Value tojson(const Value& v, ArgReader& in) {
    JsonStyle style;
    if (const auto indent = in.keyword("indent"); indent && !indent->is(K::none)) {
      if (!indent->is(K::integer) || indent->as_int() < 0)
        throw Failure{"tojson: indent must be a non-negative integer or none"};
      style.indent = indent->as_int();
    }
    style.ensure_ascii = in.keyword("ensure_ascii", K::boolean).value_or(Value::boolean(false)).as_bool();
    style.sort_keys = in.keyword("sort_keys", K::boolean).value_or(Value::boolean(false)).as_bool();
    if (const auto separators = in.keyword("separators"); separators && !separators->is(K::none)) {
      const bool pair = separators->is(K::list) && separators->as_list().size() == 2 &&
                        separators->as_list()[0].is(K::string) && separators->as_list()[1].is(K::string);
      if (!pair) throw Failure{"tojson: separators must be two strings"};
      style.separators.emplace(separators->as_list()[0].as_string(), separators->as_list()[1].as_string());
    }
    // The library reads keywords only; tojson(2) would mean ensure_ascii in transformers.
    in.finish();
    return Value::string(to_json(v, style, room()));
  }

  static Value number_filter(bool to_int, const Value& v, ArgReader& in) {
    const Value fallback = in.next("default").value_or(to_int ? Value::integer(0) : Value::floating(0));
    if (v.is(K::string)) {
      if (to_int) {
        const auto i = parse_js_int(v.as_string());
        return i ? Value::integer(*i) : fallback;
      }
      const auto d = parse_js_float(v.as_string());
      return d ? Value::floating(*d) : fallback;
    }
    if (v.is_number() || v.is(K::boolean)) {
      if (!to_int) return Value::floating(v.as_number());
      if (!v.is(K::floating)) return Value::integer(v.is(K::boolean) ? v.as_bool() : v.as_int());
      const double t = std::trunc(v.as_number());
      if (!(std::fabs(t) < 9.2e18)) throw Failure{js_number(v.as_number()) + " does not fit in a 64-bit integer"};
      return Value::integer(static_cast<std::int64_t>(t));
    }
    throw Failure{"filter '" + std::string(to_int ? "int" : "float") + "' cannot apply to " + a_type(v)};
  }

  Value list_filter(const std::string& name, const Value& v, ArgReader& in) {
    const List& items = v.as_list();
    if (name == "list") return v;
    if (name == "first") return items.empty() ? Value{} : items.front();
    if (name == "last") return items.empty() ? Value{} : items.back();
    if (name == "reverse") return Value::list(List(items.rbegin(), items.rend()));
    if (name == "unique") {
      List out;
      for (const Value& item : items)
        if (std::none_of(out.begin(), out.end(), [&](const Value& seen) { return strict_equal(seen, item); }))
          out.push_back(item);
      return Value::list(std::move(out));
    }
    if (name == "sort") {
      const bool reverse = in.next("reverse", K::boolean).value_or(Value::boolean(false)).as_bool();
      const bool case_sensitive = in.next("case_sensitive", K::boolean).value_or(Value::boolean(false)).as_bool();
      const Value attribute = in.next("attribute").value_or(Value::none());
      if (!attribute.is(K::string) && !attribute.is(K::integer) && !attribute.is(K::none))
        throw Failure{"filter 'sort': attribute must be a string, an integer or none"};
      const auto key = [&](const Value& item) {
        if (attribute.is(K::none)) return item;
        return attribute_path(item,
                              attribute.is(K::string) ? attribute.as_string() : std::to_string(attribute.as_int()));
      };
      List out = items;
      std::stable_sort(out.begin(), out.end(), [&](const Value& a, const Value& b) {
        const int c = compare_values(key(a), key(b), case_sensitive);
        return reverse ? c > 0 : c < 0;
      });
      return Value::list(std::move(out));
    }
    if (name == "selectattr" || name == "rejectattr") {
      const std::optional<Value> attribute_arg = in.next("attribute", K::string);
      if (!attribute_arg) throw Failure{"filter '" + name + "' needs an attribute name"};
      const std::string& attribute = attribute_arg->as_string();
      const std::optional<Value> test_name = in.next("test", K::string);
      const std::optional<Value> test_arg = in.next("value");
      if (test_name && !contains(kTests, test_name->as_string()))
        throw Failure{"unknown test '" + test_name->as_string() + "'"};
      List out;
      for (const Value& item : items) {
        if (!item.is_mapping())
          throw Failure{"filter '" + name + "' needs a list of dicts, not one holding " + a_type(item)};
        const Value* a = item.as_dict().find(attribute);
        const bool passed = a != nullptr && (test_name ? test(test_name->as_string(), *a, test_arg) : truthy(*a));
        if (passed == (name == "selectattr")) out.push_back(item);
      }
      return Value::list(std::move(out));
    }
    if (name == "map") {
      const std::optional<Value> attribute = in.keyword("attribute", K::string);
      const std::optional<Value> fallback = in.keyword("default");
      if (!attribute) throw Failure{"filter 'map' is supported with attribute= only"};
      List out;
      for (const Value& item : items) {
        if (!item.is_mapping()) throw Failure{"filter 'map' needs a list of dicts, not one holding " + a_type(item)};
        Value found = attribute_path(item, attribute->as_string());
        out.push_back(found.is(K::undefined) && fallback ? *fallback : std::move(found));
      }
      return Value::list(std::move(out));
    }
    throw Failure{"filter '" + name + "' cannot apply to a list"};
  }

  Value string_filter(const std::string& name, const Value& v, ArgReader& in) {
    const std::string& s = v.as_string();
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize" || name == "replace")
      return call_method(v, name, in);
    if (name == "trim") return call_method(v, "strip", in);
    if (name == "indent") {
      const Value width = in.next("width").value_or(Value::integer(4));
      if (!width.is(K::integer) && !width.is(K::string))
        throw Failure{"filter 'indent': width must be an integer or a string"};
      const bool first = truthy(in.next("first").value_or(Value::boolean(false)));
      const bool blank = truthy(in.next("blank").value_or(Value::boolean(false)));
      if (width.is(K::integer)) fits(static_cast<std::size_t>(std::max<std::int64_t>(0, width.as_int())));
      const std::string pad =
          width.is(K::string) ? width.as_string()
                              : std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, width.as_int())), ' ');
      std::string out;
      for (std::size_t start = 0, line = 0;; ++line) {
        const std::size_t end = std::min(s.find('\n', start), s.size());
        if ((first || line > 0) && (blank || end > start)) out += pad;
        out.append(s, start, end - start);
        fits(out.size());
        if (end == s.size()) break;
        out += '\n';
        start = end + 1;
      }
      return Value::string(std::move(out));
    }
    throw Failure{"filter '" + name + "' cannot apply to a string"};
  }

  Value invoke_method(const Value& self, const std::string& name, CallArgs& args) {
    ArgReader in(args, "method '" + name + "'");
    Value result = call_method(self, name, in);
    in.finish();
    return result;
  }

  // Strings: upper lower title capitalize strip lstrip rstrip startswith endswith split replace.
  // Dicts: get items keys values dictsort.
  Value call_method(const Value& self, const std::string& name, ArgReader& in) {
    if (self.is(K::dict)) return dict_method(self.as_dict(), name, in);
    const std::string& s = self.as_string();
    if (name == "upper") return Value::string(upper(s));
    if (name == "lower") return Value::string(lower(s));
    if (name == "title") return Value::string(title(s));
    if (name == "capitalize") return Value::string(capitalize(s));
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const Value chars = in.next("chars").value_or(Value::none());
      const bool front = name != "rstrip", back = name != "lstrip";
      if (chars.is(K::none)) return Value::string(std::string(trim_space(s, front, back)));
      if (!chars.is(K::string)) throw Failure{"method '" + name + "': chars must be a string or none"};
      const std::vector<std::string_view> set = split_code_points(chars.as_string());
      return Value::string(std::string(strip_code_points(s, front, back, [&](char32_t c) {
        std::string encoded;
        append_utf8(encoded, c);
        return std::find(set.begin(), set.end(), encoded) != set.end();
      })));
    }
    if (name == "startswith" || name == "endswith") {
      const Value pattern = in.next("prefix").value_or(Value{});
      const auto matches = [&](const Value& p) {
        if (!p.is(K::string)) throw Failure{"method '" + name + "' takes a string or a list of strings"};
        const std::string& t = p.as_string();
        return t.size() <= s.size() &&
               (name == "startswith" ? s.compare(0, t.size(), t) : s.compare(s.size() - t.size(), t.size(), t)) == 0;
      };
      if (pattern.is(K::list))
        return Value::boolean(std::any_of(pattern.as_list().begin(), pattern.as_list().end(), matches));
      return Value::boolean(matches(pattern));
    }
    if (name == "split") return split(s, in);
    return replace(s, in);
  }

  // Python's str.split(sep=None, maxsplit=-1).
  Value split(const std::string& s, ArgReader& in) {
    const Value sep = in.next("sep").value_or(Value::none());
    const std::int64_t maxsplit = in.next("maxsplit", K::integer).value_or(Value::integer(-1)).as_int();
    List parts;
    if (sep.is(K::none)) {
      const std::string_view text = trim_space(s, true, false);
      for (std::size_t i = 0; i < text.size();) {
        if (maxsplit >= 0 && static_cast<std::int64_t>(parts.size()) >= maxsplit) {
          parts.push_back(Value::string(std::string(text.substr(i))));
          break;
        }
        std::size_t end = i;
        while (end < text.size() && !space_at(text, end)) end += code_point_at(text, end).size;
        parts.push_back(Value::string(std::string(text.substr(i, end - i))));
        fits(parts.size() * sizeof(Value));
        i = end;
        while (const std::size_t n = space_at(text, i)) i += n;
      }
      return Value::list(std::move(parts));
    }
    if (!sep.is(K::string)) throw Failure{"method 'split': sep must be a string or none"};
    const std::string& d = sep.as_string();
    if (d.empty()) throw Failure{"method 'split': empty separator"};
    std::size_t start = 0;
    for (std::size_t hit; (maxsplit < 0 || static_cast<std::int64_t>(parts.size()) < maxsplit) &&
                          (hit = s.find(d, start)) != std::string::npos;
         start = hit + d.size()) {
      parts.push_back(Value::string(s.substr(start, hit - start)));
      fits(parts.size() * sizeof(Value));
    }
    parts.push_back(Value::string(s.substr(start)));
    return Value::list(std::move(parts));
  }

  // Python's str.replace(old, new, count): an empty `old` matches before every character and at
  // the end.
  Value replace(const std::string& s, ArgReader& in) {
    const std::optional<Value> from = in.next("old", K::string), to = in.next("new", K::string);
    if (!from || !to) throw Failure{"method 'replace' needs the old and the new string"};
    const Value count = in.next("count").value_or(Value::none());
    if (!count.is(K::integer) && !count.is(K::none))
      throw Failure{"method 'replace': count must be an integer or none"};
    std::int64_t left =
        count.is(K::integer) && count.as_int() >= 0 ? count.as_int() : std::numeric_limits<std::int64_t>::max();
    const std::string& old = from->as_string();
    std::string out;
    if (old.empty()) {
      for (const std::string_view c : split_code_points(s)) {
        if (left > 0) {
          out += to->as_string();
          --left;
        }
        out += c;
        fits(out.size());
      }
      if (left > 0) out += to->as_string();
      return Value::string(std::move(out));
    }
    std::size_t start = 0;
    for (std::size_t hit; left > 0 && (hit = s.find(old, start)) != std::string::npos;
         start = hit + old.size(), --left) {
      out += s.substr(start, hit - start) + to->as_string();
      fits(out.size());
    }
    out += s.substr(start);
    return Value::string(std::move(out));
  }

  static Value dict_method(const Dict& d, const std::string& name, ArgReader& in) {
    if (name == "get") {
      const std::optional<Value> key = in.next("key");
      if (!key || !key->is(K::string)) throw Failure{"method 'get' takes a string key"};
      const Value* found = d.find(key->as_string());
      return found ? *found : in.next("default").value_or(Value::none());
    }
    List out;
    if (name == "items" || name == "dictsort") {
      for (const auto& [key, value] : d.entries()) out.push_back(Value::list({Value::string(key), value}));
    } else {
      for (const auto& [key, value] : d.entries()) out.push_back(name == "keys" ? Value::string(key) : value);
    }
    if (name == "dictsort") {
      const bool case_sensitive = in.next("case_sensitive", K::boolean).value_or(Value::boolean(false)).as_bool();
      const std::string by = in.next("by", K::string).value_or(Value::string("key")).as_string();
      const bool reverse = in.next("reverse", K::boolean).value_or(Value::boolean(false)).as_bool();
      if (by != "key" && by != "value") throw Failure{"dictsort: by must be 'key' or 'value'"};
      const std::size_t index = by == "key" ? 0 : 1;
      std::stable_sort(out.begin(), out.end(), [&](const Value& a, const Value& b) {
        const int c = compare_values(a.as_list()[index], b.as_list()[index], case_sensitive);
        return reverse ? c > 0 : c < 0;
      });
    }
    return Value::list(std::move(out));
  }

  Value call_global(const std::string& name, CallArgs& args) {
    ArgReader in(args, name + "()");
    Value result = name == "raise_exception" ? raise_exception(in)
                   : name == "range"         ? range(in)
                   : name == "strftime_now"  ? strftime_now(in)
                                             : name_space(in);
    in.finish();
    return result;
  }

  [[noreturn]] Value raise_exception(ArgReader& in) {
    const Value message = in.next("message").value_or(Value{});
    throw Failure{message.is(K::string) ? message.as_string() : print_text(message, room())};
  }

  static Value range(ArgReader& in) {
    constexpr std::int64_t kMaxItems = 1 << 20;
    const std::optional<Value> a = in.next("start", K::integer), b = in.next("stop", K::integer);
    const std::int64_t step = in.next("step", K::integer).value_or(Value::integer(1)).as_int();
    if (!a) throw Failure{"range() needs at least one argument"};
    const std::int64_t start = b ? a->as_int() : 0, stop = b ? b->as_int() : a->as_int();
    if (step == 0) throw Failure{"range() step must not be zero"};
    List out;
    for (std::int64_t i = start; step > 0 ? i < stop : i > stop;) {
      if (static_cast<std::int64_t>(out.size()) == kMaxItems) throw Failure{"range() of more than 2^20 numbers"};
      out.push_back(Value::integer(i));
      if (__builtin_add_overflow(i, step, &i)) break;
    }
    return Value::list(std::move(out));
  }

  // The library formats %Y %m %d %b %B %H %M and %%, with English month names, and leaves other
  // directives as written; these others are strftime's, as in Python.
  static Value strftime_now(ArgReader& in) {
    const std::optional<Value> format = in.next("format", K::string);
    if (!format) throw Failure{"strftime_now() needs a format"};
    const std::time_t now = std::time(nullptr);
    std::tm local{};
#if defined(_WIN32)
    localtime_s(&local, &now);
#else
    localtime_r(&now, &local);
#endif
    static constexpr const char* kMonths[] = {"January", "February", "March", "April", "May", "June", "July",
                                              "August", "September", "October", "November", "December"};
    static constexpr std::string_view kStrftime = "aAcdHIjmMpSUwWxXyYZ";
    const std::string& f = format->as_string();
    std::string out;
    for (std::size_t i = 0; i < f.size(); ++i) {
      const char d = i + 1 < f.size() && f[i] == '%' ? f[i + 1] : '\0';
      if (d == 'b' || d == 'B') {
        out += d == 'B' ? std::string(kMonths[local.tm_mon]) : std::string(kMonths[local.tm_mon]).substr(0, 3);
      } else if (d == '%') {
        out += '%';
      } else if (d != '\0' && kStrftime.find(d) != std::string_view::npos) {
        const char spec[] = {'%', d, '\0'};
        char buf[128];
        out.append(buf, std::strftime(buf, sizeof buf, spec, &local));
      } else {
        out += f[i];
        continue;
      }
      ++i;
    }
    return Value::string(std::move(out));
  }

  // namespace(mapping or [key, value] pairs, key=value...): the one mutable value.
  Value name_space(ArgReader& in) {
    auto ns = std::make_shared<Dict>();
    if (const std::optional<Value> init = in.next("")) {
      if (init->is(K::dict)) {
        for (const auto& [key, value] : init->as_dict().entries()) ns->set(key, value);
      } else if (init->is(K::list)) {
        for (const Value& pair : init->as_list()) {
          if (!pair.is(K::list) || pair.as_list().size() != 2 || !pair.as_list()[0].is(K::string))
            throw Failure{"namespace() takes a dict or a list of [key, value] pairs with string keys"};
          ns->set(pair.as_list()[0].as_string(), pair.as_list()[1]);
        }
      } else {
        throw Failure{"namespace() takes a dict or a list of [key, value] pairs, not " + a_type(*init)};
      }
    }
    for (auto& [key, value] : in.rest_keywords()) ns->set(key, std::move(value));
    namespaces_.push_back(ns);
    return Value::name_space(std::move(ns));
  }

  const Locator& locator_;
  int depth_ = 0;
  std::int64_t steps_ = 0;
  std::size_t built_ = 0;
  std::vector<std::weak_ptr<Dict>> namespaces_;
};

}  // namespace jinja_detail

// A parsed template; render() may run any number of times, from any number of threads.
class JinjaTemplate {
 public:
  explicit JinjaTemplate(std::string_view source, std::string name = "chat template")
      : locator_(std::make_shared<const jinja_detail::Locator>(source, std::move(name))) {
    const jinja_detail::Source src = jinja_detail::preprocess(source);
    jinja_detail::Parser parser(jinja_detail::Lexer(src, *locator_).tokenize(), *locator_);
    program_ = std::make_shared<const jinja_detail::Block>(parser.parse_template());
  }

  // context: a JSON object of the template's variables (messages, add_generation_prompt, bos_token,
  // tools, ...); null stands for none.
  std::string render(const nlohmann::ordered_json& context) const {
    return jinja_detail::Renderer(*locator_).render(*program_, context);
  }

 private:
  // Shared, so that a template copies cheaply: the syntax tree does not change once parsed.
  std::shared_ptr<const jinja_detail::Locator> locator_;
  std::shared_ptr<const jinja_detail::Block> program_;
};

}  // namespace tinyllm

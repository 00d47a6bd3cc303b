#pragma once
// A bounds-checked little-endian cursor over the bytes of a file. The readers of io/ trust nothing
// they read: every read names its field, so a short or corrupt file fails with an Error that says
// which field, at which byte offset, of which file, and never reads past the end.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include <tinyllm/core/error.hpp>

namespace tinyllm {

// Scalars are copied as they lie and weights are used in place, which is right only when the
// host's byte order is the files' (little-endian).
static_assert(std::endian::native == std::endian::little,
              "tinyllm reads little-endian files on little-endian hosts only");

class ByteReader {
 public:
  ByteReader(std::span<const std::byte> bytes, std::string_view name) : bytes_(bytes), name_(name) {}

  std::size_t offset() const noexcept { return pos_; }
  std::size_t size() const noexcept { return bytes_.size(); }
  std::size_t remaining() const noexcept { return bytes_.size() - pos_; }
  bool at_end() const noexcept { return pos_ == bytes_.size(); }

  // The `where` of an Error about the field at byte `at`: "model.gguf, byte 1234".
  std::string where(std::size_t at) const { return name_ + ", byte " + std::to_string(at); }

  [[noreturn]] void fail_at(std::size_t at, const std::string& what,
                            const std::string& expected = {}) const {
    throw Error(what, where(at), expected);
  }

  // The next n bytes, in place.
  std::span<const std::byte> take(std::uint64_t n, std::string_view field) {
    if (n > remaining())
      fail_at(pos_, "file ends inside " + std::string(field) + ": it needs " + std::to_string(n) +
                        " bytes, " + std::to_string(remaining()) + " are left");
    const auto s = bytes_.subspan(pos_, static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return s;
  }

  // bool is excluded: a file byte other than 0 or 1 copied into a bool is undefined behaviour,
  // so booleans are read as uint8_t and checked.
  template <class T>
    requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
  T read(std::string_view field) {
    T v;
    std::memcpy(&v, take(sizeof(T), field).data(), sizeof(T));
    return v;
  }

 private:
  std::span<const std::byte> bytes_;
  std::string name_;
  std::size_t pos_ = 0;
};

// Size arithmetic on values read from a file: nullopt where the true result does not fit.
inline std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
  std::uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

inline std::optional<std::uint64_t> checked_add(std::uint64_t a, std::uint64_t b) {
  std::uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

}  // namespace tinyllm

#pragma once
// tinyllm::Error: the one exception type of the library. Every message says what went wrong,
// where (file, tensor, key, byte offset) and, where there is one, what was expected.
#include <stdexcept>
#include <string>

namespace tinyllm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, const std::string& where = {},
                 const std::string& expected = {})
      : std::runtime_error(compose(what, where, expected)),
        what_(what), where_(where), expected_(expected) {}

  const std::string& problem() const noexcept { return what_; }
  const std::string& where() const noexcept { return where_; }
  const std::string& expected() const noexcept { return expected_; }

 private:
  static std::string compose(const std::string& what, const std::string& where,
                             const std::string& expected) {
    std::string s = "tinyllm: " + what;
    if (!where.empty()) s += " (at " + where + ")";
    if (!expected.empty()) s += "; expected " + expected;
    return s;
  }
  std::string what_, where_, expected_;
};

}  // namespace tinyllm

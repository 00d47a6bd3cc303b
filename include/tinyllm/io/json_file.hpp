#pragma once
// A JSON file (config.json, tokenizer.json, ...) read whole and parsed with nlohmann::json; a file
// that cannot be read or is not JSON is an Error naming it.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include <tinyllm/core/error.hpp>

namespace tinyllm {

inline nlohmann::json read_json_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error("cannot read the file", file.string());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error("cannot read the file", file.string());
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("not JSON: ") + e.what(), file.string());
  }
}

}  // namespace tinyllm

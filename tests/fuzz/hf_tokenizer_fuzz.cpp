// Fuzz target: Hugging Face's tokenizer.json. The input is up to three parts separated by NUL
// bytes (which JSON text cannot hold): tokenizer.json, then tokenizer_config.json (absent or
// empty: null), then a text to encode. Text that is not JSON is skipped (nlohmann's parse error is
// not the library's). tokenizer_from_hf_json builds the Tokenizer; one that builds encodes a fixed
// text and the input's text (add_special and parse_special on and off), decodes what it got and
// ids from the input, and must throw on out-of-range ids; it is also written as GGUF metadata
// (write_gguf_tokenizer, as tinyllm-convert does) and read back. hf_chat_template reads the config.
// Fine: a tinyllm::Error. Findings: any other exception (nlohmann::json's type_error from a field
// of an unexpected JSON type included), a crash, a sanitizer report, a leak, a hang, an allocation
// past the libFuzzer limits, an encoded id outside the vocabulary, or an out-of-range id that decodes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <tinyllm/text/hf_tokenizer.hpp>

#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul1 = input.find('\0');
  const std::string_view tokenizer_text = input.substr(0, nul1);
  const std::string_view rest = nul1 == std::string_view::npos ? std::string_view() : input.substr(nul1 + 1);
  const std::size_t nul2 = rest.find('\0');
  const std::string_view config_text = rest.substr(0, nul2);
  const std::string_view text = nul2 == std::string_view::npos ? std::string_view() : rest.substr(nul2 + 1);

  const nlohmann::json tokenizer = nlohmann::json::parse(tokenizer_text, nullptr, /*allow_exceptions=*/false);
  if (tokenizer.is_discarded()) return 0;
  nlohmann::json config;  // null
  if (!config_text.empty()) {
    config = nlohmann::json::parse(config_text, nullptr, false);
    if (config.is_discarded()) return 0;
  }

  try {
    fuzz::sink = tinyllm::hf_chat_template(config).size();
  } catch (const tinyllm::Error& e) {
    fuzz::note(e);
  }
  try {
    const tinyllm::Tokenizer tok = tinyllm::tokenizer_from_hf_json(tokenizer, config, "fuzz/tokenizer.json");
    const auto n = static_cast<std::int32_t>(tok.size());
    std::uint64_t sum = 0;
    constexpr std::string_view kText =
        "<s>Hello <|endoftext|> world<|im_start|>user\n <unk></s>\t\t  x\xC3\xA9\xE2\x96\x81 \xF0\x9F\x99\x82"
        "<bos><|begin_of_text|>[INST]1234567 can't\r\n\xFF\xC0 A\xCC\x8A";
    for (const std::string_view t : {kText, text.substr(0, 512)}) {
      for (const bool add_special : {false, true}) {
        for (const bool parse_special : {false, true}) {
          try {
            const std::vector<std::int32_t> ids =
                tok.encode(t, tinyllm::Tokenizer::EncodeOptions{.add_special = add_special, .parse_special = parse_special});
            fuzz::check_ids(ids, n);
            sum += tok.decode(ids).size();
          } catch (const tinyllm::Error& e) {
            fuzz::note(e);
          }
        }
      }
    }
    std::int32_t prev = -1;
    for (std::size_t i = 0; i + 4 <= text.size() && i < 256; i += 4) {
      std::uint32_t raw;
      std::memcpy(&raw, text.data() + i, 4);
      const auto id = static_cast<std::int32_t>(raw % static_cast<std::uint32_t>(n));
      sum += tok.decode(prev, id).size() + tok.piece(id).size();
      prev = id;
    }
    fuzz::sink = sum;
    // The converter's path: the tokenizer as GGUF metadata, read back.
    try {
      tinyllm::GGUFWriter out;
      tinyllm::write_gguf_tokenizer(tok, tokenizer, out, tok.size() + (text.size() & 3));
      const std::vector<std::byte> gguf = out.to_bytes();
      const tinyllm::GGUFFile f = tinyllm::GGUFFile::parse(gguf, "fuzz/tokenizer.gguf");
      fuzz::sink = tinyllm::Tokenizer::from_gguf(f).size();
    } catch (const tinyllm::Error& e) {
      fuzz::note(e);
    }
    for (const std::int32_t bad : {-1, n, n + 1, std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max()}) {
      fuzz::expect_error(tok, bad, "decode", [&] { fuzz::sink = tok.decode(bad).size(); });
      fuzz::expect_error(tok, bad, "piece", [&] { fuzz::sink = tok.piece(bad).size(); });
      const std::int32_t seq[] = {0, bad};
      fuzz::expect_error(tok, bad, "decode of a sequence", [&] { fuzz::sink = tok.decode(std::span<const std::int32_t>(seq)).size(); });
    }
  } catch (const tinyllm::Error& e) {
    fuzz::note(e);
  }
  return 0;
}

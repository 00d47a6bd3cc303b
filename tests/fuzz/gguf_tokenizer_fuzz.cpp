// Fuzz target: the tokenizer of a GGUF file. The input is the whole file; GGUFFile::parse reads it
// and Tokenizer::from_gguf builds the vocabulary its tokenizer.ggml.* keys describe. A tokenizer
// that builds encodes a fixed text full of special-token spellings and the input's last 256 bytes
// (add_special on and off, parse_special on and off), decodes what it got, decodes ids read from
// the input, and must throw on out-of-range ids.
// Fine: a tinyllm::Error. Findings: any other exception, a crash, a sanitizer report, a leak, a
// hang, an allocation past the libFuzzer limits, an encoded id outside the vocabulary, or an
// out-of-range id that decodes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include <tinyllm/io/gguf.hpp>
#include <tinyllm/text/tokenizer.hpp>

#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  try {
    const tinyllm::GGUFFile f = tinyllm::GGUFFile::parse(bytes, "fuzz.gguf");
    const tinyllm::Tokenizer tok = tinyllm::Tokenizer::from_gguf(f);
    const auto n = static_cast<std::int32_t>(tok.size());
    std::uint64_t sum = 0;
    constexpr std::string_view kText =
        "<s>Hello <|endoftext|> world<|im_start|>user\n <unk></s>\t\t  x\xC3\xA9\xE2\x96\x81 \xF0\x9F\x99\x82"
        "<start_of_turn><|eot_id|>[INST]1234567 can't\r\n\xFF\xC0";
    for (const std::string_view text : {kText, input.substr(size > 256 ? size - 256 : 0)}) {
      for (const bool add_special : {false, true}) {
        for (const bool parse_special : {false, true}) {
          try {
            const std::vector<std::int32_t> ids =
                tok.encode(text, tinyllm::Tokenizer::EncodeOptions{.add_special = add_special, .parse_special = parse_special});
            fuzz::check_ids(ids, n);
            sum += tok.decode(ids).size();
          } catch (const tinyllm::Error& e) {
            fuzz::note(e);
          }
        }
      }
    }
    // Ids from the input's first bytes, wrapped into the vocabulary, decoded one after another.
    std::int32_t prev = -1;
    for (std::size_t i = 0; i + 4 <= size && i < 256; i += 4) {
      std::uint32_t raw;
      std::memcpy(&raw, data + i, 4);
      const auto id = static_cast<std::int32_t>(raw % static_cast<std::uint32_t>(n));
      sum += tok.decode(prev, id).size() + tok.piece(id).size() + static_cast<std::uint64_t>(tok.token_type(id));
      prev = id;
    }
    fuzz::sink = sum;
    for (const std::int32_t bad : {-1, n, n + 1, std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max()}) {
      fuzz::expect_error(tok, bad, "decode", [&] { fuzz::sink = tok.decode(bad).size(); });
      fuzz::expect_error(tok, bad, "decode after a token", [&] { fuzz::sink = tok.decode(0, bad).size(); });
      fuzz::expect_error(tok, bad, "piece", [&] { fuzz::sink = tok.piece(bad).size(); });
      fuzz::expect_error(tok, bad, "token_type", [&] { fuzz::sink = static_cast<std::uint64_t>(tok.token_type(bad)); });
      const std::int32_t seq[] = {0, bad};
      fuzz::expect_error(tok, bad, "decode of a sequence", [&] { fuzz::sink = tok.decode(std::span<const std::int32_t>(seq)).size(); });
    }
  } catch (const tinyllm::Error& e) {
    fuzz::note(e);
  }
  return 0;
}

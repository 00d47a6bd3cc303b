// Fuzz target: the body of an OpenAI API request to tinyllm-server. The input is JSON text (text
// that is not JSON is skipped: the server answers nlohmann's parse error itself); parse_request
// (examples/server/openai_api.hpp) reads it for the completions and for the chat endpoint, and
// response_format_grammar turns its response_format into a grammar (a JSON Schema: recursion,
// unrolled lengths), which then follows the body's own text as far as the grammar allows.
// Fine: server::ApiError (a 400 naming the field). Findings: any other exception (a tinyllm::Error or
// nlohmann::json's type_error from a field of an unexpected JSON type included), a crash, a
// sanitizer report, a leak, a hang or an allocation past the libFuzzer limits.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "openai_api.hpp"

#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const nlohmann::json body = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  for (const server::Endpoint endpoint : {server::Endpoint::completions, server::Endpoint::chat}) {
    try {
      const server::ParsedRequest r = server::parse_request(body, endpoint);
      std::size_t sum = r.prompt.size() + r.prompt_tokens.size() + r.stop.size() + r.max_tokens.value_or(0);
      for (const auto& m : r.messages) sum += m.role.size() + m.content.size();
      fuzz::sink = sum;
    } catch (const server::ApiError& e) {
      fuzz::sink = server::dump(e.to_json()).size();   // the 400 reply the server would send
    }
  }
  try {
    if (const auto g = server::response_format_grammar(nlohmann::ordered_json::parse(text))) {
      tinyllm::GrammarMatcher m(g);
      std::size_t n = 0;
      while (n < text.size() && m.accepts(text.substr(n, 1))) m.advance(text.substr(n++, 1));
      fuzz::sink = n + m.complete();
    }
  } catch (const server::ApiError& e) {
    fuzz::sink = server::dump(e.to_json()).size();
  }
  return 0;
}

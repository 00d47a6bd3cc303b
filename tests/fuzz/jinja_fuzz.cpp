// Fuzz target: a Jinja chat template. The input is the template source; JinjaTemplate parses it
// and renders it with a fixed chat context: messages (system, user, assistant with a tool call,
// user), add_generation_prompt, bos_token, eos_token, tools and a date function's worth of keys.
// Fine: a tinyllm::Error (the renderer's limits on nesting, recursion, statements and range()
// lengths raise one). Findings: any other exception, a crash, a sanitizer report (a stack overflow
// from deep nesting included), a leak, a hang (-timeout=10) or an allocation past the libFuzzer
// limits (a short template must not build gigabytes of output).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include <tinyllm/text/jinja.hpp>

#include "fuzz_util.hpp"

namespace {

const nlohmann::ordered_json& context() {
  static const nlohmann::ordered_json c = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "Hello! What's 2 + 2?"},
      {"role": "assistant", "content": "4.", "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]},
      {"role": "tool", "content": "{\"sum\": 4}"},
      {"role": "user", "content": [{"type": "text", "text": "Thanks \u00e9\u2581\ud83d\ude42"}]}
    ],
    "add_generation_prompt": true,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "tools": [{"type": "function", "function": {"name": "add", "description": "Adds", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}],
    "date_string": "26 Jul 2024",
    "enable_thinking": false
  })");
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  try {
    const tinyllm::JinjaTemplate t(source);
    fuzz::sink = t.render(context()).size();
  } catch (const tinyllm::Error& e) {
    fuzz::note(e);
  }
  return 0;
}

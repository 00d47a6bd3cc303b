#pragma once
// The OpenAI API's request fields and response shapes, mapped onto tinyllm's Request and
// TokenEvent. Validation is strict about types and ranges (a bad field is a 400 naming it) and
// lenient about fields it does not know (they are ignored, as OpenAI-compatible servers do).
#include <tinyllm/tinyllm.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace server {

using nlohmann::json;

// An error reply: {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;   // empty: null
  std::string code;    // empty: null

  json to_json() const {
    return {{"error", {{"message", message},
                       {"type", type},
                       {"param", param.empty() ? json(nullptr) : json(param)},
                       {"code", code.empty() ? json(nullptr) : json(code)}}}};
  }
};

inline ApiError bad_field(const std::string& param, const std::string& message) {
  return {.status = 400, .message = message, .param = param};
}

enum class Endpoint { completions, chat };

// A parsed request, before the prompt is turned into tokens.
struct ParsedRequest {
  Endpoint endpoint = Endpoint::completions;
  std::string model;                          // empty: the only model, when one is served
  std::string prompt;                         // completions: the text
  std::vector<std::int32_t> prompt_tokens;    // completions: a prompt given as token ids
  std::vector<tinyllm::ChatMessage> messages; // chat
  std::optional<std::size_t> max_tokens;
  const char* max_tokens_field = "max_tokens";  // or "max_completion_tokens", as the request named it
  tinyllm::SamplingParams sampling;
  bool seeded = false;
  std::vector<std::string> stop;
  bool stream = false, include_usage = false;
  int logprobs = -1;   // -1: none; else each token's log-probability and this many top tokens'
  std::size_t n = 1;   // choices: samples of the prompt (its KV blocks shared)
  std::shared_ptr<const tinyllm::Grammar> grammar;   // response_format: the JSON the reply must be
  std::optional<std::size_t> draft_tokens;   // speculative decoding (0..32; 0 = off); unset: the server's --draft
};

// A generated token's log-probabilities as the replies give them: texts instead of ids.
struct LoggedToken {
  std::string text;
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;   // the most likely tokens, most likely first
};

namespace detail {

inline const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

inline std::optional<double> number(const json& body, const char* name, double lo, double hi) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw bad_field(name, std::string("'") + name + "' must be a number");
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi))
    throw bad_field(name, std::string("'") + name + "' must be between " + json(lo).dump() + " and " + json(hi).dump());
  return x;
}

inline std::optional<std::int64_t> integer(const json& body, const char* name, std::int64_t lo, std::int64_t hi) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) throw bad_field(name, std::string("'") + name + "' must be an integer");
  if (v->is_number_unsigned() && v->get<std::uint64_t>() > std::uint64_t(hi))
    throw bad_field(name, std::string("'") + name + "' must be at most " + std::to_string(hi));
  const std::int64_t x = v->get<std::int64_t>();
  if (x < lo || x > hi)
    throw bad_field(name, std::string("'") + name + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return x;
}

inline std::optional<bool> boolean(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw bad_field(name, std::string("'") + name + "' must be a boolean");
  return v->get<bool>();
}

// Message content: a string, or an array of parts of which only {"type": "text"} ones are read.
inline std::string content_text(const json& c, std::size_t i) {
  const std::string param = "messages[" + std::to_string(i) + "].content";
  if (c.is_null()) return "";
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) throw bad_field(param, "'" + param + "' must be a string or an array of text parts");
  std::string text;
  for (const json& part : c) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") || !part["text"].is_string())
      throw bad_field(param, "'" + param + "' may hold only {\"type\": \"text\", \"text\": string} parts");
    text += part["text"].get<std::string>();
  }
  return text;
}

}  // namespace detail

// Reads and checks every field this server uses. Throws ApiError.
inline ParsedRequest parse_request(const json& body, Endpoint endpoint) {
  using namespace detail;
  if (!body.is_object()) throw ApiError{.message = "the request body must be a JSON object"};
  ParsedRequest r;
  r.endpoint = endpoint;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) throw bad_field("model", "'model' must be a string");
    r.model = m->get<std::string>();
  }
  if (endpoint == Endpoint::completions) {
    const json* p = field(body, "prompt");
    if (!p) throw bad_field("prompt", "'prompt' is required");
    if (p->is_string()) {
      r.prompt = p->get<std::string>();
    } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
      r.prompt = (*p)[0].get<std::string>();
    } else if (p->is_array() && !p->empty() && std::all_of(p->begin(), p->end(), [](const json& t) { return t.is_number_integer(); })) {
      for (const json& t : *p) {
        const std::int64_t id = t.get<std::int64_t>();
        if (id < 0 || id > INT32_MAX) throw bad_field("prompt", "token id " + std::to_string(id) + " out of range");
        r.prompt_tokens.push_back(std::int32_t(id));
      }
    } else {
      throw bad_field("prompt", "'prompt' must be a string, an array of one string, or an array of token ids");
    }
  } else {
    const json* ms = field(body, "messages");
    if (!ms) throw bad_field("messages", "'messages' is required");
    if (!ms->is_array() || ms->empty()) throw bad_field("messages", "'messages' must be a non-empty array");
    for (std::size_t i = 0; i < ms->size(); ++i) {
      const json& m = (*ms)[i];
      const std::string param = "messages[" + std::to_string(i) + "]";
      if (!m.is_object()) throw bad_field(param, "'" + param + "' must be an object");
      if (!m.contains("role") || !m["role"].is_string()) throw bad_field(param + ".role", "'" + param + ".role' must be a string");
      std::string role = m["role"].get<std::string>();
      if (role == "developer") role = "system";   // OpenAI's newer name for the system role
      r.messages.push_back({role, content_text(m.contains("content") ? m["content"] : json(nullptr), i)});
    }
  }

  if (const auto n = integer(body, "n", 1, 128)) r.n = std::size_t(*n);
  if (const auto d = integer(body, "draft_tokens", 0, 32)) r.draft_tokens = std::size_t(*d);
  if (const auto b = integer(body, "best_of", 1, 128); b && *b != 1) throw bad_field("best_of", "only best_of = 1 is supported");
  if (boolean(body, "echo").value_or(false)) throw bad_field("echo", "echo is not supported");
  // Completions: "logprobs": N (0..20), the sampled token's and the N most likely tokens'. Chat:
  // "logprobs": true, and "top_logprobs": N (0..20).
  if (endpoint == Endpoint::completions) {
    if (const auto n = integer(body, "logprobs", 0, 20)) r.logprobs = int(*n);
  } else {
    const bool wanted = boolean(body, "logprobs").value_or(false);
    const auto top = integer(body, "top_logprobs", 0, 20);
    if (top && !wanted) throw bad_field("top_logprobs", "'top_logprobs' needs \"logprobs\": true");
    if (wanted) r.logprobs = int(top.value_or(0));
  }

  const char* max_name = field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (const auto m = integer(body, max_name, 1, INT32_MAX)) r.max_tokens = std::size_t(*m);
  r.max_tokens_field = max_name;

  tinyllm::SamplingParams& s = r.sampling;   // unset fields keep the library's (llama.cpp's) defaults
  if (const auto v = number(body, "temperature", 0, 2)) s.temperature = float(*v);
  if (const auto v = number(body, "top_p", 0, 1)) s.top_p = float(*v);
  if (const auto v = integer(body, "top_k", -1, INT32_MAX)) s.top_k = std::int32_t(*v);
  if (const auto v = number(body, "min_p", 0, 1)) s.min_p = float(*v);
  if (const auto v = number(body, "repetition_penalty", 1e-3, 100)) s.repetition_penalty = float(*v);
  if (const auto v = integer(body, "repeat_last_n", -1, INT32_MAX)) s.repeat_last_n = std::int32_t(*v);
  if (const auto v = number(body, "presence_penalty", -2, 2)) s.presence_penalty = float(*v);
  if (const auto v = number(body, "frequency_penalty", -2, 2)) s.frequency_penalty = float(*v);
  if (const json* v = field(body, "seed")) {
    if (!v->is_number_integer()) throw bad_field("seed", "'seed' must be an integer");
    s.seed = v->is_number_unsigned() ? v->get<std::uint64_t>() : std::uint64_t(v->get<std::int64_t>());
    r.seeded = true;
  }

  if (const json* st = field(body, "stop")) {
    if (st->is_string()) {
      r.stop.push_back(st->get<std::string>());
    } else if (st->is_array()) {
      for (const json& x : *st) {
        if (!x.is_string()) throw bad_field("stop", "'stop' must be a string or an array of strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      throw bad_field("stop", "'stop' must be a string or an array of strings");
    }
    if (r.stop.size() > 16) throw bad_field("stop", "at most 16 stop strings");
  }

  r.stream = boolean(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) throw bad_field("stream_options", "'stream_options' must be an object");
    r.include_usage = boolean(*so, "include_usage").value_or(false);
  }
  return r;
}

// OpenAI's response_format of a request body (parsed keeping the order of its keys, which a
// schema's properties are written in): null for {"type": "text"} or none; else the grammar of
// {"type": "json_object"} (any JSON object) or {"type": "json_schema", "json_schema": {"schema":
// ...}} (sample/json_schema.hpp; an unsupported schema is a 400 naming the keyword).
inline std::shared_ptr<const tinyllm::Grammar> response_format_grammar(const nlohmann::ordered_json& body) {
  const auto it = body.find("response_format");
  if (it == body.end() || it->is_null()) return nullptr;
  const auto bad = [](const std::string& message) {
    return ApiError{.status = 400, .message = message, .param = "response_format"};
  };
  if (!it->is_object() || !it->contains("type") || !(*it)["type"].is_string())
    throw bad("'response_format' must be an object with a 'type': text, json_object or json_schema");
  const std::string type = (*it)["type"];
  if (type == "text") return nullptr;
  if (type == "json_object") return tinyllm::JsonSchemaGrammar::any_object();
  if (type != "json_schema") throw bad("response_format type '" + type + "' is not text, json_object or json_schema");
  const auto js = it->find("json_schema");
  if (js == it->end() || !js->is_object() || !js->contains("schema"))
    throw bad("'response_format.json_schema' must be an object with a 'schema'");
  try {
    return tinyllm::JsonSchemaGrammar::from_schema((*js)["schema"]);
  } catch (const tinyllm::Error& e) {
    throw bad(std::string("response_format.json_schema.schema: ") + e.what());
  }
}

inline const char* finish_reason(tinyllm::FinishReason r) {
  return r == tinyllm::FinishReason::length ? "length" : "stop";   // eos, a stop string, an end of turn
}

inline json usage_json(const tinyllm::RequestMetrics& m) {
  return {{"prompt_tokens", m.prompt_tokens},
          {"completion_tokens", m.generated_tokens},
          {"total_tokens", m.prompt_tokens + m.generated_tokens}};
}

inline json utf8_bytes(const std::string& s) { return std::vector<std::uint8_t>(s.begin(), s.end()); }

// A choice's "logprobs" for `tokens`. Chat: {"content": [{token, logprob, bytes, top_logprobs}]}.
// Completions, OpenAI's legacy shape: {"tokens", "token_logprobs", "top_logprobs" (a dict of the
// top tokens and the sampled one), "text_offset" (counted from `offset`, in bytes)}.
inline json logprobs_json(Endpoint ep, const std::vector<LoggedToken>& tokens, std::size_t offset = 0) {
  if (ep == Endpoint::chat) {
    json content = json::array();
    for (const LoggedToken& t : tokens) {
      json top = json::array();
      for (const auto& [text, lp] : t.top) top.push_back({{"token", text}, {"logprob", lp}, {"bytes", utf8_bytes(text)}});
      content.push_back({{"token", t.text}, {"logprob", t.logprob}, {"bytes", utf8_bytes(t.text)}, {"top_logprobs", top}});
    }
    return {{"content", content}, {"refusal", nullptr}};
  }
  json texts = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const LoggedToken& t : tokens) {
    texts.push_back(t.text);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& [text, lp] : t.top)
      if (!top.contains(text)) top[text] = lp;
    if (!top.contains(t.text)) top[t.text] = t.logprob;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += t.text.size();
  }
  return {{"tokens", texts}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

// One choice of a non-streamed reply.
inline json choice_json(Endpoint ep, std::size_t index, const std::string& text, tinyllm::FinishReason reason,
                        json logprobs = nullptr) {
  json choice = {{"index", index}, {"logprobs", std::move(logprobs)}, {"finish_reason", finish_reason(reason)}};
  if (ep == Endpoint::chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
  else choice["text"] = text;
  return choice;
}

// The whole reply of a non-streamed request.
inline json completion_json(Endpoint ep, const std::string& id, std::int64_t created, const std::string& model,
                            json choices, const tinyllm::RequestMetrics& usage) {
  return {{"id", id},
          {"object", ep == Endpoint::chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", std::move(choices)},
          {"usage", usage_json(usage)}};
}

// One server-sent chunk, for choice `index`. `delta` is the text (chat: the delta object);
// `finish` is null until that choice's last chunk.
inline json chunk_json(Endpoint ep, const std::string& id, std::int64_t created, const std::string& model,
                       std::size_t index, const json& delta, const json& finish, json logprobs = nullptr) {
  json choice = {{"index", index}, {"logprobs", std::move(logprobs)}, {"finish_reason", finish}};
  if (ep == Endpoint::chat) choice["delta"] = delta;
  else choice["text"] = delta;
  return {{"id", id},
          {"object", ep == Endpoint::chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

inline std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

inline std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

}  // namespace server

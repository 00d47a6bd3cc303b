// Grammars from JSON Schemas: documents the schema accepts are accepted (and complete), others
// are rejected at the first byte that breaks them; every prefix of an accepted document is a
// valid prefix; unsupported keywords are Errors naming them; the token mask allows exactly the
// tokens whose text may follow (checked token by token with accepts()).
#include <tinyllm/sample/json_schema.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;
using ojson = nlohmann::ordered_json;

namespace {

bool accepts_whole(const std::shared_ptr<const Grammar>& g, const std::string& text) {
  GrammarMatcher m(g);
  if (!m.accepts(text)) return false;
  m.advance(text);
  return m.complete();
}

bool valid_prefix(const std::shared_ptr<const Grammar>& g, const std::string& text) {
  GrammarMatcher m(g);
  return m.accepts(text);
}

const char* kSchema = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 8},
    "age": {"type": "integer"},
    "score": {"type": ["number", "null"]},
    "color": {"enum": ["red", "green", 3, true]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "minItems": 1, "maxItems": 3},
    "pos": {"type": "object", "properties": {"x": {"type": "number"}, "ok": {"type": "boolean"}}, "required": ["x"]},
    "any": {}
  },
  "required": ["name", "age", "tags"],
  "additionalProperties": false
})";

}  // namespace

TEST_CASE("JSON schema grammar: accepted and rejected documents") {
  const auto g = JsonSchemaGrammar::from_schema(ojson::parse(kSchema));
  for (const char* good : {R"({"name": "bob", "age": 12, "tags": ["a"]})",
                           R"({"name":"b","age":-3,"score":1.5e3,"color":"red","tags":["ab","c",""],"pos":{"x":0.25,"ok":true},"any":[1,{"k":null}]})",
                           R"( {"name": "\u00e9\n", "age": 0, "score": null, "color": 3, "tags": ["x"], "pos": {"x": -1}})",
                           "{\n\"name\": \"\xc3\xa9t\xc3\xa9\", \"age\": 7,  \"tags\": [ \"a\" ]}"}) {
    CAPTURE(good);
    CHECK(accepts_whole(g, good));
    for (std::size_t i = 0; i <= std::string(good).size(); ++i) CHECK(valid_prefix(g, std::string(good).substr(0, i)));
  }
  for (const char* bad : {R"({"age": 12, "name": "bob", "tags": ["a"]})",          // properties in another order
                          R"({"name": "bob", "tags": ["a"]})",                        // age missing
                          R"({"name": "", "age": 1, "tags": ["a"]})",                 // minLength
                          R"({"name": "toolongname", "age": 1, "tags": ["a"]})",      // maxLength
                          R"({"name": "b", "age": 1.5, "tags": ["a"]})",              // not an integer
                          R"({"name": "b", "age": 01, "tags": ["a"]})",               // leading zero
                          R"({"name": "b", "age": 1, "tags": []})",                   // minItems
                          R"({"name": "b", "age": 1, "tags": ["a","b","c","d"]})",    // maxItems
                          R"({"name": "b", "age": 1, "color": "blue", "tags": ["a"]})",
                          R"({"name": "b", "age": 1, "tags": ["a"], "extra": 1})",
                          R"({"name": "b", "age": 1, "tags": ["a"], "pos": {"ok": true}})",
                          "{\"name\": \"a\x01\", \"age\": 1, \"tags\": [\"a\"]}",      // control character
                          "{\"name\": \"\xf4\xb4\x8b\x82\", \"age\": 1, \"tags\": [\"a\"]}",   // above U+10FFFF
                          "{\"name\": \"\xed\xa0\x80\", \"age\": 1, \"tags\": [\"a\"]}",       // a surrogate
                          "{\"name\": \"\xc0\xaf\", \"age\": 1, \"tags\": [\"a\"]}",           // overlong
                          R"({"name": "b", "age": 1, "tags": ["a"]} x)"}) {
    CAPTURE(bad);
    CHECK_FALSE(accepts_whole(g, bad));
  }
  // A prefix is valid exactly until the byte that breaks it.
  CHECK(valid_prefix(g, R"({"name": "b", "age": 1)"));
  CHECK_FALSE(valid_prefix(g, R"({"name": "b", "age": 1x)"));
  CHECK_FALSE(valid_prefix(g, R"({"nam": )"));
}

TEST_CASE("JSON schema grammar: json_object mode, $ref recursion, anyOf") {
  const auto any = JsonSchemaGrammar::any_object();
  CHECK(accepts_whole(any, R"({"a": [1, 2.5e-3, "x", {"b": [true, false, null]}], "c": {}})"));
  CHECK_FALSE(accepts_whole(any, R"([1, 2])"));
  CHECK_FALSE(accepts_whole(any, R"("text")"));
  const auto tree = JsonSchemaGrammar::from_schema(ojson::parse(R"({
    "$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                        "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                       "required": ["v"]}},
    "$ref": "#/$defs/node"})"));
  CHECK(accepts_whole(tree, R"({"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": [{"v": 4, "kids": []}]}]})"));
  CHECK_FALSE(accepts_whole(tree, R"({"v": 1, "kids": [{"w": 2}]})"));
  const auto either = JsonSchemaGrammar::from_schema(ojson::parse(R"({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]})"));
  CHECK(accepts_whole(either, "42"));
  CHECK(accepts_whole(either, R"("ab")"));
  CHECK_FALSE(accepts_whole(either, R"("abc")"));
}

TEST_CASE("JSON schema grammar: unsupported keywords are Errors naming them") {
  for (const char* s : {R"({"type": "string", "pattern": "^a"})", R"({"type": "integer", "minimum": 3})",
                        R"({"type": "object", "properties": {"a": {"type": "string", "format": "date"}}})",
                        R"({"type": "object", "properties": {}, "additionalProperties": true})",
                        R"({"type": "array", "maxItems": 1000})", R"({"$ref": "http://example.com/s.json"})",
                        R"({"type": "thing"})", R"({"enum": []})", R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})"}) {
    CAPTURE(s);
    CHECK_THROWS_AS(JsonSchemaGrammar::from_schema(ojson::parse(s)), Error);
  }
  try {
    JsonSchemaGrammar::from_schema(ojson::parse(R"({"type": "object", "properties": {"a": {"type": "string", "format": "date"}}})"));
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("'format'") != std::string::npos);
    CHECK(std::string(e.what()).find("#/properties/a") != std::string::npos);
  }
}

TEST_CASE("grammar token mask: exactly the tokens whose text may follow") {
  // A small vocabulary with multi-byte tokens, a token of no text and an end token.
  std::vector<std::string> texts = {"", "{", "}", "\"", "\"a", "a", "ab", "\": ", ": ", "1", "12", "x", " ", "{\"", "true", "-", ""};
  const std::int32_t eos = 16;
  const TokenTrie trie(texts);
  const auto g = JsonSchemaGrammar::from_schema(ojson::parse(
      R"({"type": "object", "properties": {"a": {"type": "integer"}, "ab": {"type": "boolean"}}, "required": ["a"]})"));
  GrammarMatcher m(g);
  for (const std::string step : {"", "{", "\"a", "\": ", "12", "}"}) {
    m.advance(step);
    std::vector<float> logits(texts.size(), 0.0f);
    const std::int32_t ends[] = {eos};
    m.mask(trie, logits, ends);
    for (std::size_t t = 0; t < texts.size(); ++t) {
      CAPTURE(step);
      CAPTURE(t);
      const bool want = std::int32_t(t) == eos ? m.complete() : !texts[t].empty() && m.accepts(texts[t]);
      CHECK((logits[t] == 0.0f) == want);
    }
    CHECK(m.closed() == (step == "}"));   // nothing may follow the closing brace, and only it
  }
  CHECK(m.complete());
  GrammarMatcher number(JsonSchemaGrammar::from_schema(ojson::parse(R"({"type": "integer"})")));
  number.advance("12");
  CHECK(number.complete());
  CHECK(!number.closed());   // more digits may follow
}

#pragma once
// JSON Schema to grammar (sample/grammar.hpp), for OpenAI's response_format: a token is allowed
// only while the text stays a valid prefix of a JSON document that the schema accepts.
//
// The subset (anything else is an Error naming the keyword and where it is):
//   type: object, array, string, number, integer, boolean, null, or an array of them
//   object: properties (written in the order the schema lists them), required; other
//     properties are not generated (additionalProperties may be absent or false); an object
//     schema without properties accepts any JSON object
//   array: items, minItems, maxItems (at most 64 when given)
//   string: minLength, maxLength (at most 1024)
//   enum, const (any JSON values); anyOf and oneOf (either branch); $ref to "#", "#/$defs/NAME"
//     or "#/definitions/NAME" (recursion allowed)
//   annotations, ignored: title, description, examples, default, $schema, $id, $comment,
//     $defs, definitions, strict, additionalProperties: false
// Numbers are JSON numbers of at most 16 integer digits, 16 fraction digits and a 2-digit
// exponent (so that every one fits a double); whitespace between tokens is at most 2 characters of space, tab or newline. A
// schema of {} (or json_object mode) accepts any JSON value (json_object: any JSON object).
#include <tinyllm/core/error.hpp>
#include <tinyllm/sample/grammar.hpp>

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

namespace tinyllm {

class JsonSchemaGrammar {
 public:
  // A grammar for documents that `schema` accepts.
  static std::shared_ptr<const Grammar> from_schema(const nlohmann::ordered_json& schema) {
    JsonSchemaGrammar b(schema);
    const std::uint32_t value = b.value(schema, "#");
    b.g_->set_root(b.g_->rule({{b.ws(), Grammar::ref(value)}}));
    b.g_->validate();
    return b.g_;
  }
  static std::shared_ptr<const Grammar> any_object() {
    const nlohmann::ordered_json none = nlohmann::ordered_json::object();
    JsonSchemaGrammar b(none);
    const std::uint32_t obj = b.any_object_rule();
    b.g_->set_root(b.g_->rule({{b.ws(), Grammar::ref(obj)}}));
    b.g_->validate();
    return b.g_;
  }

 private:
  using json = nlohmann::ordered_json;   // properties are written in the order the schema lists them
  using Seq = Grammar::Sequence;
  explicit JsonSchemaGrammar(const json& root) : root_(root), g_(std::make_shared<Grammar>()) {}

  [[noreturn]] static void unsupported(const std::string& what, const std::string& where) {
    throw Error(what, "JSON schema at " + where,
                "the supported subset: type, properties, required, items, minItems, maxItems, minLength, "
                "maxLength, enum, const, anyOf, oneOf, $ref (sample/json_schema.hpp)");
  }

  GrammarElement ws() {
    if (!ws_) {
      const GrammarElement space = Grammar::bytes({{' ', ' '}, {'\t', '\t'}, {'\n', '\n'}});
      ws_ = g_->rule({{}, {space}, {space, space}});
    }
    return Grammar::ref(*ws_);
  }

  static Seq join(std::initializer_list<Seq> parts) {
    Seq out;
    for (const Seq& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  }
  static Seq lit(std::string_view s) { return Grammar::literal(s); }

  // One JSON string character (UTF-8, or an escape).
  std::uint32_t string_char() {
    if (!char_) {
      const GrammarElement cont = Grammar::bytes({{0x80, 0xBF}});
      const GrammarElement hex = Grammar::bytes({{'0', '9'}, {'a', 'f'}, {'A', 'F'}});
      // Well-formed UTF-8 only (Unicode's Table 3-7: no overlong forms, surrogates or code points
      // above U+10FFFF), so that every document is valid JSON text.
      const auto r = [](unsigned char lo, unsigned char hi) { return Grammar::bytes({{lo, hi}}); };
      char_ = g_->rule({{Grammar::bytes({{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x7F}})},
                        {r(0xC2, 0xDF), cont},
                        {r(0xE0, 0xE0), r(0xA0, 0xBF), cont},
                        {r(0xE1, 0xEC), cont, cont},
                        {r(0xED, 0xED), r(0x80, 0x9F), cont},
                        {r(0xEE, 0xEF), cont, cont},
                        {r(0xF0, 0xF0), r(0x90, 0xBF), cont, cont},
                        {r(0xF1, 0xF3), cont, cont, cont},
                        {r(0xF4, 0xF4), r(0x80, 0x8F), cont, cont},
                        {Grammar::byte('\\'), Grammar::bytes({{'"', '"'}, {'\\', '\\'}, {'/', '/'}, {'b', 'b'}, {'f', 'f'},
                                                              {'n', 'n'}, {'r', 'r'}, {'t', 't'}})},
                        {Grammar::byte('\\'), Grammar::byte('u'), hex, hex, hex, hex}});
    }
    return *char_;
  }
  // '"' chars{min,max} '"' (max < 0: unbounded).
  std::uint32_t string_rule(std::size_t min, long max) {
    const auto key = std::make_pair(min, max);
    if (const auto it = strings_.find(key); it != strings_.end()) return it->second;
    const GrammarElement c = Grammar::ref(string_char());
    // tail(k): up to k more characters, then the quote; unbounded: any number.
    std::uint32_t tail;
    if (max < 0) {
      tail = g_->new_rule();
      g_->add(tail, lit("\""));
      g_->add(tail, {c, Grammar::ref(tail)});
    } else {
      tail = g_->rule({lit("\"")});
      for (long k = 0; k < max - long(min); ++k) tail = g_->rule({lit("\""), {c, Grammar::ref(tail)}});
    }
    Seq s = lit("\"");
    for (std::size_t k = 0; k < min; ++k) s.push_back(c);
    s.push_back(Grammar::ref(tail));
    return strings_[key] = g_->rule({s});
  }

  // d{lo,hi} for a digit element.
  std::uint32_t digits(GrammarElement first, std::size_t more) {
    const GrammarElement d = Grammar::bytes({{'0', '9'}});
    std::uint32_t tail = g_->rule({{}});
    for (std::size_t k = 0; k < more; ++k) tail = g_->rule({{}, {d, Grammar::ref(tail)}});
    return g_->rule({{first, Grammar::ref(tail)}});
  }
  std::uint32_t integer_rule() {
    if (!integer_) {
      const std::uint32_t natural = g_->rule({lit("0"), {Grammar::ref(digits(Grammar::bytes({{'1', '9'}}), 15))}});
      integer_ = g_->rule({{Grammar::ref(natural)}, {Grammar::byte('-'), Grammar::ref(natural)}});
    }
    return *integer_;
  }
  std::uint32_t number_rule() {
    if (!number_) {
      const GrammarElement d = Grammar::bytes({{'0', '9'}});
      const std::uint32_t frac = g_->rule({{}, {Grammar::byte('.'), Grammar::ref(digits(d, 15))}});
      const std::uint32_t exp = g_->rule({{}, {Grammar::bytes({{'e', 'e'}, {'E', 'E'}}), Grammar::bytes({{'+', '+'}, {'-', '-'}}),
                                              Grammar::ref(digits(d, 1))},
                                          {Grammar::bytes({{'e', 'e'}, {'E', 'E'}}), Grammar::ref(digits(d, 1))}});
      number_ = g_->rule({{Grammar::ref(integer_rule()), Grammar::ref(frac), Grammar::ref(exp)}});
    }
    return *number_;
  }

  // Any JSON value, and any JSON object (defined together: each contains the other).
  std::uint32_t any_value_rule() {
    define_any();
    return *any_;
  }
  std::uint32_t any_object_rule() {
    define_any();
    return *any_object_;
  }
  void define_any() {
    if (any_) return;
    any_ = g_->new_rule();
    any_object_ = g_->new_rule();
    const std::uint32_t arr = g_->new_rule(), more_items = g_->new_rule(), more_members = g_->new_rule();
    const std::uint32_t member = g_->rule({{Grammar::ref(string_rule(0, -1)), ws(), Grammar::byte(':'), ws(), Grammar::ref(*any_)}});
    // "[" ws "]" | "[" ws any (ws "," ws any)* ws "]"
    g_->add(more_items, join({{ws()}, lit("]")}));
    g_->add(more_items, join({{ws()}, lit(","), {ws(), Grammar::ref(*any_), Grammar::ref(more_items)}}));
    g_->add(arr, join({lit("["), {ws()}, lit("]")}));
    g_->add(arr, join({lit("["), {ws(), Grammar::ref(*any_), Grammar::ref(more_items)}}));
    // "{" ws "}" | "{" ws member (ws "," ws member)* ws "}"
    g_->add(more_members, join({{ws()}, lit("}")}));
    g_->add(more_members, join({{ws()}, lit(","), {ws(), Grammar::ref(member), Grammar::ref(more_members)}}));
    g_->add(*any_object_, join({lit("{"), {ws()}, lit("}")}));
    g_->add(*any_object_, join({lit("{"), {ws(), Grammar::ref(member), Grammar::ref(more_members)}}));
    for (const std::uint32_t r : {*any_object_, arr, string_rule(0, -1), number_rule()}) g_->add(*any_, {Grammar::ref(r)});
    for (const char* word : {"true", "false", "null"}) g_->add(*any_, lit(word));
  }

  const json& resolve(const std::string& ref, const std::string& where) const {
    if (ref == "#") return root_;
    for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
      const std::string p = prefix;
      if (ref.rfind(p, 0) == 0) {
        const std::string section = p.substr(2, p.size() - 3), name = ref.substr(p.size());
        if (root_.is_object() && root_.contains(section) && root_[section].is_object() && root_[section].contains(name))
          return root_[section][name];
        unsupported("$ref '" + ref + "' names no definition", where);
      }
    }
    unsupported("$ref '" + ref + "' (only \"#\", \"#/$defs/NAME\" and \"#/definitions/NAME\")", where);
  }

  static std::size_t bound(const json& s, const char* key, std::size_t dflt, std::size_t most, const std::string& where) {
    if (!s.contains(key)) return dflt;
    if (!s[key].is_number_unsigned() || s[key].get<std::size_t>() > most)
      unsupported(std::string("'") + key + "' must be an integer from 0 to " + std::to_string(most), where);
    return s[key].get<std::size_t>();
  }

  std::uint32_t value(const json& s, const std::string& where) {
    if (s.is_boolean()) {
      if (s.get<bool>()) return any_value_rule();
      unsupported("the schema false (nothing matches it)", where);
    }
    if (!s.is_object()) unsupported("a schema that is not an object", where);
    static const std::set<std::string> known = {
        "type", "properties", "required", "items", "minItems", "maxItems", "minLength", "maxLength", "enum", "const",
        "anyOf", "oneOf", "$ref", "additionalProperties", "title", "description", "examples", "default", "$schema",
        "$id", "$comment", "$defs", "definitions", "strict"};
    for (const auto& [k, v] : s.items())
      if (!known.contains(k)) unsupported("the keyword '" + k + "' is not supported", where);
    if (s.contains("additionalProperties") && !(s["additionalProperties"].is_boolean() && !s["additionalProperties"].get<bool>()))
      unsupported("additionalProperties other than false", where);

    if (s.contains("$ref")) {
      if (!s["$ref"].is_string()) unsupported("a $ref that is not a string", where);
      const std::string ref = s["$ref"];
      if (const auto it = refs_.find(ref); it != refs_.end()) return it->second;
      const std::uint32_t r = g_->new_rule();   // known before it is built: recursion refers to it
      refs_[ref] = r;
      g_->add(r, {Grammar::ref(value(resolve(ref, where), ref))});
      return r;
    }
    if (s.contains("const")) return g_->rule({lit(s["const"].dump())});
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) unsupported("'enum' must be a non-empty array", where);
      std::vector<Seq> alts;
      for (const json& v : s["enum"]) alts.push_back(lit(v.dump()));
      return g_->rule(alts);
    }
    for (const char* key : {"anyOf", "oneOf"})
      if (s.contains(key)) {
        if (!s[key].is_array() || s[key].empty()) unsupported(std::string("'") + key + "' must be a non-empty array", where);
        std::vector<Seq> alts;
        for (std::size_t i = 0; i < s[key].size(); ++i)
          alts.push_back({Grammar::ref(value(s[key][i], where + "/" + key + "/" + std::to_string(i)))});
        return g_->rule(alts);
      }
    if (!s.contains("type")) {
      if (s.contains("properties")) return object(s, where);
      if (s.contains("items")) return array(s, where);
      return any_value_rule();
    }
    const json& t = s["type"];
    if (t.is_array()) {
      std::vector<Seq> alts;
      for (const json& one : t) {
        json copy = s;
        copy["type"] = one;
        alts.push_back({Grammar::ref(value(copy, where))});
      }
      if (alts.empty()) unsupported("an empty 'type' array", where);
      return g_->rule(alts);
    }
    if (!t.is_string()) unsupported("'type' must be a string or an array of strings", where);
    const std::string type = t;
    if (type == "object") return object(s, where);
    if (type == "array") return array(s, where);
    if (type == "string") {
      const std::size_t lo = bound(s, "minLength", 0, 1024, where);
      const long hi = s.contains("maxLength") ? long(bound(s, "maxLength", 0, 1024, where)) : -1;
      if (hi >= 0 && std::size_t(hi) < lo) unsupported("maxLength below minLength", where);
      return string_rule(lo, hi);
    }
    if (type == "number") return number_rule();
    if (type == "integer") return integer_rule();
    if (type == "boolean") return g_->rule({lit("true"), lit("false")});
    if (type == "null") return g_->rule({lit("null")});
    unsupported("the type '" + type + "'", where);
  }

  std::uint32_t object(const json& s, const std::string& where) {
    if (!s.contains("properties")) return any_object_rule();
    const json& props = s["properties"];
    if (!props.is_object()) unsupported("'properties' must be an object", where);
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) unsupported("'required' must be an array of names", where);
      for (const json& r : s["required"]) {
        if (!r.is_string() || !props.contains(r.get<std::string>()))
          unsupported("'required' names " + r.dump() + ", which is not in 'properties'", where);
        required.insert(r.get<std::string>());
      }
    }
    // members(i, first): the properties from i on; `first`: nothing written yet (no comma).
    struct Member {
      std::uint32_t kv;
      bool required;
    };
    std::vector<Member> members;
    for (const auto& [name, sub] : props.items()) {
      const std::uint32_t v = value(sub, where + "/properties/" + name);
      members.push_back({g_->rule({join({lit(json(name).dump()), {ws()}, lit(":"), {ws(), Grammar::ref(v)}})}), required.contains(name)});
    }
    std::uint32_t rest_after = g_->rule({{}}), rest_first = rest_after;   // nothing left
    for (std::size_t i = members.size(); i-- > 0;) {
      const Member& m = members[i];
      const Seq with_comma = join({{ws()}, lit(","), {ws(), Grammar::ref(m.kv), Grammar::ref(rest_after)}});
      const Seq first = {Grammar::ref(m.kv), Grammar::ref(rest_after)};
      const std::uint32_t after = m.required ? g_->rule({with_comma}) : g_->rule({with_comma, {Grammar::ref(rest_after)}});
      const std::uint32_t at_first = m.required ? g_->rule({first}) : g_->rule({first, {Grammar::ref(rest_first)}});
      rest_after = after;
      rest_first = at_first;
    }
    return g_->rule({join({lit("{"), {ws(), Grammar::ref(rest_first), ws()}, lit("}")})});
  }

  std::uint32_t array(const json& s, const std::string& where) {
    const std::uint32_t item = s.contains("items") ? value(s["items"], where + "/items") : any_value_rule();
    const std::size_t lo = bound(s, "minItems", 0, 64, where);
    const long hi = s.contains("maxItems") ? long(bound(s, "maxItems", 0, 64, where)) : -1;
    if (hi >= 0 && std::size_t(hi) < lo) unsupported("maxItems below minItems", where);
    const Seq close = join({{ws()}, lit("]")});
    const Seq next_item = join({{ws()}, lit(","), {ws(), Grammar::ref(item)}});
    // more(k): having written k items (k >= 1), the rest and the "]".
    auto more_from = [&](std::size_t k) {
      std::uint32_t tail;
      if (hi < 0) {   // unbounded above: once at lo items, any number more
        tail = g_->new_rule();
        g_->add(tail, close);
        Seq again = next_item;
        again.push_back(Grammar::ref(tail));
        g_->add(tail, again);
        for (std::size_t j = std::max<std::size_t>(lo, 1); j-- > k;) {
          Seq need = next_item;
          need.push_back(Grammar::ref(tail));
          tail = g_->rule({need});
        }
        return tail;
      }
      tail = g_->rule({close});
      for (long j = hi - 1; j >= long(k); --j) {
        Seq again = next_item;
        again.push_back(Grammar::ref(tail));
        tail = std::size_t(j) >= lo ? g_->rule({close, again}) : g_->rule({again});
      }
      return tail;
    };
    std::vector<Seq> alts;
    if (lo == 0) alts.push_back(join({lit("["), {ws()}, lit("]")}));
    if (hi != 0) alts.push_back(join({lit("["), {ws(), Grammar::ref(item), Grammar::ref(more_from(1))}}));
    return g_->rule(alts);
  }

  const json& root_;
  std::shared_ptr<Grammar> g_;
  std::optional<std::uint32_t> ws_, char_, integer_, number_, any_, any_object_;
  std::map<std::pair<std::size_t, long>, std::uint32_t> strings_;
  std::map<std::string, std::uint32_t> refs_;
};

}  // namespace tinyllm

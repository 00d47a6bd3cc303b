#pragma once
// Constrained decoding: a context-free grammar over bytes, a matcher that follows the text
// generated so far, and the token mask that keeps it a valid prefix of the grammar's language.
//
// A grammar is rules of alternatives of elements; an element is a set of bytes or a reference
// to a rule (right recursion only: a rule may not begin with a reference to itself). The matcher
// holds every way the text so far can be read (stacks of where to continue, kept in an arena as
// linked nodes that share their tails, llama.cpp's grammar design). Masking walks a trie of the
// vocabulary's token texts, so tokens that share a prefix are checked once for it.
// sample/json_schema.hpp builds grammars from JSON Schemas.
#include <tinyllm/core/error.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tinyllm {

struct GrammarElement {
  enum class Kind : std::uint8_t { end, bytes, rule };
  Kind kind = Kind::end;
  std::uint32_t rule = 0;                    // Kind::rule
  std::array<std::uint64_t, 4> set{};        // Kind::bytes: a 256-bit set
  bool has(unsigned char b) const { return (set[b >> 6] >> (b & 63)) & 1u; }
};

class Grammar {
 public:
  using Sequence = std::vector<GrammarElement>;

  // A byte set element from inclusive ranges.
  static GrammarElement bytes(std::initializer_list<std::pair<unsigned char, unsigned char>> ranges, bool negate = false) {
    GrammarElement e{.kind = GrammarElement::Kind::bytes};
    for (const auto& [lo, hi] : ranges)
      for (unsigned c = lo; c <= hi; ++c) e.set[c >> 6] |= std::uint64_t(1) << (c & 63);
    if (negate)
      for (auto& w : e.set) w = ~w;
    return e;
  }
  static GrammarElement byte(unsigned char c) { return bytes({{c, c}}); }
  static GrammarElement ref(std::uint32_t rule) { return {.kind = GrammarElement::Kind::rule, .rule = rule}; }
  // The bytes of `text`, one element each.
  static Sequence literal(std::string_view text) {
    Sequence s;
    for (const char c : text) s.push_back(byte(static_cast<unsigned char>(c)));
    return s;
  }

  std::uint32_t new_rule() {
    rules_.emplace_back();
    return std::uint32_t(rules_.size() - 1);
  }
  void add(std::uint32_t rule, Sequence alternative) {
    for (const GrammarElement& e : alternative)
      if (e.kind == GrammarElement::Kind::end) throw Error("an end element inside an alternative", "Grammar::add");
    alternative.push_back({});   // Kind::end
    rules_.at(rule).push_back(std::move(alternative));
  }
  // A rule with these alternatives.
  std::uint32_t rule(std::vector<Sequence> alternatives) {
    const std::uint32_t r = new_rule();
    for (auto& a : alternatives) add(r, std::move(a));
    return r;
  }

  void set_root(std::uint32_t r) { root_ = r; }
  std::uint32_t root() const { return root_; }
  const std::vector<Sequence>& alternatives(std::uint32_t r) const { return rules_.at(r); }
  std::size_t size() const { return rules_.size(); }

  // Every rule referenced exists and has an alternative; no rule reaches itself without first
  // matching a byte (which would loop the matcher).
  void validate() const {
    if (root_ >= rules_.size()) throw Error("grammar root " + std::to_string(root_), "Grammar", "a rule");
    for (std::size_t r = 0; r < rules_.size(); ++r) {
      if (rules_[r].empty()) throw Error("grammar rule " + std::to_string(r) + " has no alternative", "Grammar");
      for (const Sequence& a : rules_[r])
        for (const GrammarElement& e : a)
          if (e.kind == GrammarElement::Kind::rule && e.rule >= rules_.size())
            throw Error("grammar rule " + std::to_string(r) + " refers to rule " + std::to_string(e.rule), "Grammar");
    }
    std::vector<int> state(rules_.size(), 0);   // 0 unseen, 1 on the path, 2 done
    for (std::size_t r = 0; r < rules_.size(); ++r) check_left_recursion(std::uint32_t(r), state);
  }

 private:
  // Whether rule r can match nothing; visits the rules it begins with (left recursion: Error).
  bool check_left_recursion(std::uint32_t r, std::vector<int>& state) const {
    if (state[r] == 1) throw Error("grammar rule " + std::to_string(r) + " is left-recursive", "Grammar");
    const bool was_done = state[r] == 2;
    state[r] = 1;
    bool nullable = false;
    for (const Sequence& a : rules_[r]) {
      bool all = true;
      for (const GrammarElement& e : a) {
        if (e.kind == GrammarElement::Kind::end) break;
        if (e.kind == GrammarElement::Kind::bytes) { all = false; break; }
        if (!(was_done ? nullable_[e.rule] : check_left_recursion(e.rule, state))) { all = false; break; }
      }
      nullable = nullable || all;
    }
    state[r] = 2;
    if (nullable_.size() < rules_.size()) nullable_.resize(rules_.size(), false);
    nullable_[r] = nullable;
    return nullable;
  }

  std::vector<std::vector<Sequence>> rules_;
  std::uint32_t root_ = 0;
  mutable std::vector<bool> nullable_;
};

// The vocabulary's token texts as a trie (built once per model): each node's children by byte,
// and the tokens whose text ends there.
class TokenTrie {
 public:
  // texts[t]: the bytes token t adds to the text; empty: a token the grammar never allows.
  explicit TokenTrie(const std::vector<std::string>& texts) : texts_(texts) {
    nodes_.emplace_back();
    for (std::size_t t = 0; t < texts.size(); ++t) {
      if (texts[t].empty()) continue;
      std::uint32_t n = 0;
      for (const char c : texts[t]) {
        const auto b = static_cast<unsigned char>(c);
        auto& kids = nodes_[n].children;
        auto it = std::lower_bound(kids.begin(), kids.end(), b, [](const auto& k, unsigned char x) { return k.first < x; });
        if (it != kids.end() && it->first == b) {
          n = it->second;
        } else {
          const auto child = std::uint32_t(nodes_.size());
          kids.insert(it, {b, child});
          nodes_.emplace_back();   // invalidates `kids` and `it`
          n = child;
        }
      }
      nodes_[n].tokens.push_back(std::int32_t(t));
      max_length_ = std::max(max_length_, texts[t].size());
    }
  }
  struct Node {
    std::vector<std::pair<unsigned char, std::uint32_t>> children;   // sorted by byte
    std::vector<std::int32_t> tokens;
  };
  const Node& node(std::uint32_t i) const { return nodes_[i]; }
  std::size_t size() const { return nodes_.size(); }
  const std::string& text(std::int32_t token) const { return texts_.at(std::size_t(token)); }
  std::size_t vocab_size() const { return texts_.size(); }
  std::size_t max_length() const { return max_length_; }   // the depth of the trie

 private:
  std::vector<Node> nodes_;
  std::vector<std::string> texts_;
  std::size_t max_length_ = 0;
};

// Where the text generated so far stands in a grammar.
class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const Grammar> g) : g_(std::move(g)) {
    g_->validate();
    arena_.reserve(1024);
    expand(g_->alternatives(g_->root()), -1, heads_, complete_);
    dedupe(heads_);
  }

  // Whether the text has matched the whole grammar (it may still go on where the grammar allows).
  bool complete() const { return complete_; }
  // Whether the text is complete and nothing may follow it (a JSON value's closing brace).
  bool closed() const { return complete_ && heads_.empty(); }
  // Whether `text` may follow.
  bool accepts(std::string_view text) {
    const std::size_t mark = arena_.size();
    std::vector<std::int32_t> cur = heads_, next;
    bool ok = true, done = complete_;
    for (std::size_t i = 0; i < text.size() && ok; ++i) {
      step(cur, static_cast<unsigned char>(text[i]), next, done);
      cur.swap(next);
      ok = !cur.empty() || (done && i + 1 == text.size());
    }
    arena_.resize(mark);
    return ok;
  }
  // Follows `text`; Error when it may not follow.
  void advance(std::string_view text) {
    for (const char c : text) {
      std::vector<std::int32_t> next;
      bool done = false;
      step(heads_, static_cast<unsigned char>(c), next, done);
      if (next.empty() && !done) throw Error("the text does not follow the grammar at byte " + std::to_string(int(static_cast<unsigned char>(c))), "GrammarMatcher::advance");
      heads_.swap(next);
      complete_ = done;
    }
    compact();
  }

  // Sets logits[t] to -inf for every token whose text may not follow; the `ends` tokens (EOS, an
  // end of turn) may end the text only when it is complete.
  void mask(const TokenTrie& trie, std::span<float> logits, std::span<const std::int32_t> ends) {
    std::vector<char> allowed(logits.size(), 0);
    const std::size_t mark = arena_.size();
    if (depth_heads_.size() < trie.max_length() + 1) depth_heads_.resize(trie.max_length() + 1);
    walk(trie, 0, heads_, allowed, 0);
    arena_.resize(mark);
    for (const std::int32_t e : ends)
      if (e >= 0 && std::size_t(e) < allowed.size()) allowed[std::size_t(e)] = complete_;
    for (std::size_t t = 0; t < logits.size(); ++t)
      if (!allowed[t]) logits[t] = -std::numeric_limits<float>::infinity();
  }

 private:
  struct Node {
    const GrammarElement* next;   // a byte-set element still to match
    std::int32_t parent;          // where to continue once this alternative ends (-1: the root's end)
  };

  // Pushes the heads reached from `elem` (continuing at `parent` after the alternative ends).
  void reach(const GrammarElement* elem, std::int32_t parent, std::vector<std::int32_t>& out, bool& done) {
    for (;;) {
      if (elem->kind == GrammarElement::Kind::bytes) {
        arena_.push_back({elem, parent});
        out.push_back(std::int32_t(arena_.size() - 1));
        return;
      }
      if (elem->kind == GrammarElement::Kind::rule) {
        arena_.push_back({elem + 1, parent});   // what follows the rule
        expand(g_->alternatives(elem->rule), std::int32_t(arena_.size() - 1), out, done);
        return;
      }
      // the end of an alternative: continue in the parent
      if (parent < 0) {
        done = true;
        return;
      }
      elem = arena_[std::size_t(parent)].next;
      parent = arena_[std::size_t(parent)].parent;
    }
  }
  void expand(const std::vector<Grammar::Sequence>& alts, std::int32_t parent, std::vector<std::int32_t>& out, bool& done) {
    for (const Grammar::Sequence& a : alts) reach(a.data(), parent, out, done);
  }

  void step(const std::vector<std::int32_t>& heads, unsigned char b, std::vector<std::int32_t>& out, bool& done) {
    out.clear();
    done = false;
    for (const std::int32_t h : heads) {
      const Node n = arena_[std::size_t(h)];
      if (n.next->has(b)) reach(n.next + 1, n.parent, out, done);
    }
    dedupe(out);
  }

  // Heads with the same element and parent are the same way of reading the text.
  void dedupe(std::vector<std::int32_t>& heads) const {
    std::sort(heads.begin(), heads.end(), [&](std::int32_t a, std::int32_t b) {
      const Node &x = arena_[std::size_t(a)], &y = arena_[std::size_t(b)];
      return x.next != y.next ? x.next < y.next : x.parent < y.parent;
    });
    heads.erase(std::unique(heads.begin(), heads.end(), [&](std::int32_t a, std::int32_t b) {
      const Node &x = arena_[std::size_t(a)], &y = arena_[std::size_t(b)];
      return x.next == y.next && x.parent == y.parent;
    }), heads.end());
  }

  // Depth first over the trie: a subtree is left as soon as no head survives its bytes. The heads
  // after `depth` bytes live in depth_heads_[depth], reused from one mask to the next.
  void walk(const TokenTrie& trie, std::uint32_t node, const std::vector<std::int32_t>& heads, std::vector<char>& allowed,
            std::size_t depth) {
    std::vector<std::int32_t>& next = depth_heads_[depth];
    for (const auto& [b, child] : trie.node(node).children) {
      bool done = false;
      const std::size_t mark = arena_.size();
      step(heads, b, next, done);
      if (!next.empty() || done) {
        for (const std::int32_t t : trie.node(child).tokens) allowed[std::size_t(t)] = 1;
        if (!next.empty()) walk(trie, child, next, allowed, depth + 1);
      }
      arena_.resize(mark);
    }
  }

  // Keeps only the nodes the heads reach, renumbered, so the arena does not grow with the text.
  void compact() {
    if (arena_.size() < 4096) return;
    std::vector<std::int32_t> map(arena_.size(), -1);
    std::vector<Node> kept;
    auto keep = [&](auto&& self, std::int32_t i) -> std::int32_t {
      if (i < 0) return -1;
      if (map[std::size_t(i)] >= 0) return map[std::size_t(i)];
      const Node n = arena_[std::size_t(i)];
      const std::int32_t parent = self(self, n.parent);
      kept.push_back({n.next, parent});
      return map[std::size_t(i)] = std::int32_t(kept.size() - 1);
    };
    for (std::int32_t& h : heads_) h = keep(keep, h);
    arena_.swap(kept);
  }

  std::shared_ptr<const Grammar> g_;
  std::vector<Node> arena_;
  std::vector<std::int32_t> heads_;
  bool complete_ = false;
  std::vector<std::vector<std::int32_t>> depth_heads_;   // walk()'s scratch, one per trie depth
};

}  // namespace tinyllm

#pragma once
// The serving engine: continuous batching over a paged KV cache (vLLM's design, small).
//
// Each step() schedules within a token budget: every running sequence that has caught up
// decodes one token; sequences still prefilling get the next chunk of their prompt; waiting
// requests are admitted while the budget, the sequence cap and free blocks allow. All scheduled
// tokens of all sequences run as ONE batched forward, so every weight is read once per step.
// When a sequence needs a block and none is free, the most recently admitted running sequence is
// preempted: its blocks are released and it waits to be recomputed (its tokens so far are kept).
// Full blocks are registered in the prefix cache, so requests sharing a prompt prefix reuse them.
// K and V are stored as F32, F16 or Q8_0 (EngineOptions::kv_type; F16 fits twice the blocks in
// kv_bytes, Q8_0 3.76 times).
// When every layer of the model has a sliding window (Mistral), a sequence releases the blocks
// that fell out of the window as it goes, so a long generation holds about window / block_size + 2
// blocks.
// Per request: n samples (Request::n) fork from the sequence once its prompt is computed, sharing
// its blocks (a shared block is copied before it is written); log-probabilities of each token
// (Request::logprobs); constrained decoding (Request::grammar): a sampled token that would break
// the grammar is drawn again from the tokens that keep it (sample/grammar.hpp); speculative
// decoding by prompt lookup (Request::draft_tokens): a decode step also computes up to that many
// drafted tokens (serve/draft.hpp) with the logits of each, samples each position in turn as plain
// decoding would, and keeps the drafts while they equal what was sampled. With a draft model
// (EngineOptions::draft_model: a smaller model with the same vocabulary) the drafts are that
// model's greedy continuation instead, computed for all drafting sequences in batched forwards of
// its own over a second paged pool.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/model/load.hpp>
#include <tinyllm/sample/sampler.hpp>
#include <tinyllm/serve/block_pool.hpp>
#include <tinyllm/serve/draft.hpp>
#include <tinyllm/serve/paged_kv_cache.hpp>
#include <tinyllm/serve/request.hpp>
#include <tinyllm/text/utf8.hpp>

namespace tinyllm {

struct EngineOptions {
  std::size_t max_batch_tokens = 256;     // tokens per step (at most the model's max_batch)
  std::size_t max_sequences = 64;         // running sequences at most
  std::size_t block_size = 16;            // positions per KV block
  std::size_t kv_blocks = 0;              // blocks in the pool; 0 = as many as kv_bytes holds
  std::size_t kv_bytes = 256u << 20;
  KVType kv_type = KVType::f32;           // how K and V are stored: f16 halves their memory, q8_0 more
  bool prefix_caching = true;
  std::size_t max_waiting = 0;            // 0 = unbounded queue; else submit() refuses beyond it
  // Speculative decoding's drafter for requests with draft_tokens > 0: null = prompt lookup; else
  // this model (same vocabulary, kept alive by the caller) drafts its greedy continuation. Its K/V
  // live in a pool of its own with as many blocks as the engine's. Drafting a sequence stops early
  // at a token the draft model gives less than draft_p_min probability.
  LoadedModel* draft_model = nullptr;
  float draft_p_min = 0;
};

// Throws tinyllm::Error unless `draft` can draft for `target`: the same tokenizer (every piece),
// or, where a file has none, the same number of logits. Vocabulary sizes may differ by padding
// rows past the tokenizer's tokens (drafts never use them).
inline void check_draft_vocabulary(const LoadedModel& target, const LoadedModel& draft) {
  const std::string where = "draft model " + draft.path();
  if (!target.has_tokenizer() || !draft.has_tokenizer()) {
    if (target.config().vocab_size != draft.config().vocab_size)
      throw Error("the draft model has " + std::to_string(draft.config().vocab_size) + " logits", where,
                  std::to_string(target.config().vocab_size) + ", as the model it drafts for");
    return;
  }
  const Tokenizer &a = target.tokenizer(), &b = draft.tokenizer();
  if (a.size() != b.size())
    throw Error("the draft model's vocabulary has " + std::to_string(b.size()) + " tokens", where,
                std::to_string(a.size()) + ", as the model it drafts for");
  for (std::size_t t = 0; t < a.size(); ++t)
    if (a.piece(std::int32_t(t)) != b.piece(std::int32_t(t)))
      throw Error("the draft model's token " + std::to_string(t) + " is '" + b.piece(std::int32_t(t)) + "'", where,
                  "'" + a.piece(std::int32_t(t)) + "', as in the model it drafts for");
}

struct EngineMetrics {
  std::size_t blocks_total = 0, blocks_used = 0, blocks_free = 0;
  std::size_t blocks_shared = 0, block_references = 0;   // held more than once; references to all
  std::size_t running = 0, waiting = 0, preemptions = 0, steps = 0;
  std::size_t prefix_lookups = 0, prefix_hits = 0;   // full prompt blocks looked up / found
  std::size_t slots_allocated = 0, slots_used = 0;   // token slots of running sequences' held blocks
  std::size_t window_releases = 0;                   // blocks released early, out of every layer's window
  std::size_t draft_tokens = 0, accepted_draft_tokens = 0;   // speculative decoding: drafted, kept
  std::size_t draft_model_tokens = 0;   // tokens the draft model computed (catching up and drafting)
  double draft_acceptance() const { return draft_tokens ? double(accepted_draft_tokens) / draft_tokens : 0; }
  double prefix_hit_rate() const { return prefix_lookups ? double(prefix_hits) / prefix_lookups : 0; }
  double kv_waste() const { return slots_allocated ? double(slots_allocated - slots_used) / slots_allocated : 0; }
};

class Engine {
 public:
  using Callback = std::function<void(const TokenEvent&)>;

  Engine(LoadedModel& model, ThreadPool& pool, const EngineOptions& opt = {})
      : lm_(model), model_(model.model()), pool_(pool), opt_(opt),
        blocks_(model.config(), opt.block_size,
                opt.kv_blocks ? opt.kv_blocks
                              : KVBlockPool::blocks_for_bytes(model.config(), opt.block_size, opt.kv_bytes, opt.kv_type),
                opt.kv_type, model.model().memory()),
        window_(model.model().kv_window()) {
    opt_.max_batch_tokens = std::min(opt_.max_batch_tokens, model_.max_batch());
    if (opt_.max_batch_tokens == 0 || opt_.max_sequences == 0)
      throw Error("engine needs a token budget and a sequence cap", "EngineOptions", "both >= 1");
    logits_.resize(opt_.max_sequences * model.config().vocab_size);
    if (LoadedModel* d = opt_.draft_model) {
      check_draft_vocabulary(model, *d);
      // Q8_0 rows need whole blocks of 32 values; a draft model whose K/V rows are not keeps F16.
      const KVType type = opt.kv_type == KVType::q8_0 && d->config().kv_dim() % 32 != 0 ? KVType::f16 : opt.kv_type;
      draft_blocks_.emplace(d->config(), opt.block_size, blocks_.n_blocks(), type, d->model().memory());
    }
  }

  // Thread-safe. Throws tinyllm::Error for a request that can never run (empty, bad tokens,
  // longer than the context or the whole KV cache) or when the queue is full.
  RequestId submit(Request req, Callback on_event) {
    std::vector<std::int32_t> tokens = req.tokens.empty() ? lm_.tokenizer().encode(req.prompt, true) : req.tokens;
    if (tokens.empty()) throw Error("request has an empty prompt", "submit", "at least one token");
    const std::size_t vocab = model_.config().vocab_size;
    for (std::int32_t t : tokens)
      if (t < 0 || std::size_t(t) >= vocab)
        throw Error("prompt token " + std::to_string(t) + " out of range", "submit", "0 <= id < " + std::to_string(vocab));
    const std::size_t need = tokens.size() + req.max_tokens;
    const std::size_t limit = std::min(model_.config().context, longest_fitting());
    if (tokens.size() + 1 > limit || (req.max_tokens == 0))
      throw Error("prompt of " + std::to_string(tokens.size()) + " tokens does not fit", "submit",
                  "at most " + std::to_string(limit - 1) + " prompt tokens and max_tokens >= 1");
    if (req.logprobs < -1)
      throw Error("logprobs " + std::to_string(req.logprobs), "submit", "-1 (none) or the number of top tokens, >= 0");
    if (req.draft_tokens >= opt_.max_batch_tokens || (req.draft_tokens > 0 && req.draft_ngram == 0))
      throw Error("draft_tokens " + std::to_string(req.draft_tokens) + ", draft_ngram " + std::to_string(req.draft_ngram),
                  "submit", "draft_tokens below the step's token budget (" + std::to_string(opt_.max_batch_tokens) +
                  ") and draft_ngram >= 1");
    if (req.n < 1 || req.n > opt_.max_sequences)
      throw Error("n = " + std::to_string(req.n) + " samples", "submit",
                  "1 to " + std::to_string(opt_.max_sequences) + " (the engine's max_sequences)");
    for (const AdapterRef& a : req.adapters)
      if (!a.adapter || !a.adapter->fits(model_.config()))
        throw Error("the request's LoRA adapter does not fit this model", "submit",
                    "an adapter loaded for this model");
    auto seq = std::make_unique<Sequence>(blocks_, model_.config(), req, std::move(on_event), vocab, draft_pool(), draft_config());
    seq->tokens = std::move(tokens);
    seq->n_prompt = seq->tokens.size();
    seq->max_total = std::min(need, limit);
    seq->forks = req.n - 1;
    if (seq->request.grammar) seq->matcher.emplace(seq->request.grammar);   // Error for a bad grammar
    seq->samples_left = std::make_shared<std::size_t>(req.n);
    seq->submitted = Clock::now();
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    if (opt_.max_waiting && inbox_.size() + n_waiting_ >= opt_.max_waiting)
      throw Error("the request queue is full", "submit", "at most " + std::to_string(opt_.max_waiting) + " waiting");
    seq->id = next_id_++;
    inbox_.push_back(std::move(seq));
    return next_id_ - 1;
  }

  // Thread-safe; takes effect at the next step. Unknown or finished ids are ignored.
  void cancel(RequestId id) {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    cancelled_.insert(id);
  }

  // One scheduler iteration. Returns false when there was nothing to do.
  bool step() {
    take_inbox();
    if (running_.empty() && waiting_.empty()) return false;
    schedule();
    if (!batch_tokens_.empty()) run_batch();
    ++metrics_.steps;
    return true;
  }

  void run_until_idle() {
    while (step()) {}
  }

  bool idle() {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    return inbox_.empty() && running_.empty() && waiting_.empty();
  }

  EngineMetrics metrics() const {
    EngineMetrics m = metrics_;
    m.blocks_total = blocks_.n_blocks();
    m.blocks_free = blocks_.n_free();
    m.blocks_used = blocks_.n_used();
    m.blocks_shared = blocks_.n_shared();
    m.block_references = blocks_.n_references();
    m.running = running_.size();
    m.waiting = waiting_.size();
    m.slots_allocated = m.slots_used = 0;
    for (const auto& s : running_) {
      m.slots_allocated += s->cache.n_held() * blocks_.block_size();
      m.slots_used += s->n_computed - s->cache.n_released() * blocks_.block_size();
    }
    return m;
  }
  const KVBlockPool& block_pool() const { return blocks_; }
  // The draft model's pool (EngineOptions::draft_model), else null.
  const KVBlockPool* draft_block_pool() const { return draft_blocks_ ? &*draft_blocks_ : nullptr; }

  // Block accounting: every block's reference count equals the number of running sequences'
  // tables that hold it, and waiting sequences hold none. Throws tinyllm::Error naming the first
  // block that disagrees (a leak or a double free).
  void audit() const {
    std::vector<std::uint32_t> held(blocks_.n_blocks(), 0);
    for (const auto& s : running_)
      for (BlockId b : s->cache.blocks())
        if (b != PagedKVCache::kReleased) ++held[b];
    std::size_t draft_held = 0;
    for (const auto& s : waiting_)
      if (!s->cache.blocks().empty() || (s->draft_cache && !s->draft_cache->blocks().empty()))
        throw Error("waiting request " + std::to_string(s->id) + " holds KV blocks", "Engine::audit");
    for (const auto& s : running_) draft_held += s->draft_cache ? s->draft_cache->n_held() : 0;
    if (draft_blocks_ && draft_blocks_->n_used() != draft_held)
      throw Error(std::to_string(draft_blocks_->n_used()) + " draft model blocks counted as used", "Engine::audit",
                  std::to_string(draft_held) + " held by sequences");
    std::size_t used = 0, shared = 0, refs = 0;
    for (BlockId b = 0; b < held.size(); ++b) {
      if (blocks_.ref_count(b) != held[b])
        throw Error("KV block " + std::to_string(b) + " has " + std::to_string(blocks_.ref_count(b)) + " references",
                    "Engine::audit", std::to_string(held[b]) + " held by sequences");
      used += held[b] > 0;
      shared += held[b] > 1;
      refs += held[b];
    }
    if (used != blocks_.n_used())
      throw Error(std::to_string(blocks_.n_used()) + " blocks counted as used", "Engine::audit", std::to_string(used));
    if (shared != blocks_.n_shared() || refs != blocks_.n_references())
      throw Error(std::to_string(blocks_.n_shared()) + " shared blocks and " + std::to_string(blocks_.n_references()) +
                  " references counted", "Engine::audit", std::to_string(shared) + " and " + std::to_string(refs));
  }

 private:
  using Clock = std::chrono::steady_clock;

  struct Sequence {
    Sequence(KVBlockPool& pool, const ModelConfig& c, const Request& r, Callback cb, std::size_t vocab,
             KVBlockPool* draft_pool, const ModelConfig* draft_config)
        : cache(pool, c.n_layers, c.kv_dim()), request(r), on_event(std::move(cb)), sampler(r.sampling, vocab),
          hash_seed(adapters_hash(r.adapters)), last_hash(hash_seed) {
      if (draft_pool) draft_cache.emplace(*draft_pool, draft_config->n_layers, draft_config->kv_dim());
    }
    RequestId id = 0;
    std::size_t index = 0;                // which sample of its request
    std::size_t forks = 0;                // further samples to fork from it at its first sample
    std::shared_ptr<std::size_t> samples_left;   // the request's unfinished samples (shared by them)
    std::optional<GrammarMatcher> matcher;       // where the text stands in Request::grammar
    PagedKVCache cache;
    Request request;
    Callback on_event;
    Sampler sampler;
    std::vector<std::int32_t> tokens;     // prompt, then generated
    std::size_t n_prompt = 0, max_total = 0;
    std::size_t n_computed = 0;           // tokens whose K/V are in the cache
    std::size_t n_registered = 0;         // full blocks entered in the prefix cache
    // The prefix cache's chain of block hashes starts from the adapters' identity, so that blocks
    // computed with one adapter (or none) are never found by a request with another.
    std::uint64_t hash_seed;
    std::uint64_t last_hash;              // chain hash of the registered blocks
    std::size_t chunk = 0;                // tokens scheduled this step (drafts included)
    std::vector<std::int32_t> draft;      // drafted tokens scheduled after the last known one
    // The draft model's K/V (EngineOptions::draft_model) of its first draft_computed positions:
    // tokens, then while drafting its own drafts.
    std::optional<PagedKVCache> draft_cache;
    std::size_t draft_computed = 0;
    void clear_draft_cache() {
      if (draft_cache) draft_cache->clear();
      draft_computed = 0;
    }
    Utf8Stream utf8;
    std::string held;                     // text held back while it may begin a stop string
    std::optional<TokenLogprobs> logprobs;  // of the token being emitted (Request::logprobs)
    RequestMetrics metrics;
    Clock::time_point submitted;
    bool started = false;
  };
  using SeqPtr = std::unique_ptr<Sequence>;

  void take_inbox() {
    std::unordered_set<RequestId> cancelled;
    {
      std::lock_guard<std::mutex> lock(inbox_mutex_);
      for (auto& s : inbox_) waiting_.push_back(std::move(s));
      inbox_.clear();
      cancelled.swap(cancelled_);
      n_waiting_ = waiting_.size();
    }
    if (cancelled.empty()) return;
    auto drop = [&](std::deque<SeqPtr>& q) {
      for (auto it = q.begin(); it != q.end();) {
        if (cancelled.contains((*it)->id)) {
          finish(**it, FinishReason::cancelled);
          it = q.erase(it);
        } else {
          ++it;
        }
      }
    };
    drop(running_);
    drop(waiting_);
  }

  // The longest sequence the pool can always hold: all of it, or with a window that releases
  // blocks, any within the context once the pool fits a window plus a step's tokens.
  std::size_t longest_fitting() const {
    const std::size_t bs = blocks_.block_size(), all = blocks_.n_blocks() * bs;
    if (window_ > 0 && blocks_.n_blocks() >= (window_ + opt_.max_batch_tokens + bs - 2) / bs + 1)
      return std::max(all, model_.config().context);
    return all;
  }

  // Releases the blocks of `s` that no query of it will read again: those before the window of
  // its next position, n_computed. Prefix-cache hits among them stay cached (their contents are
  // the K/V of that exact token prefix), so another request may still take them.
  void release_out_of_window(Sequence& s) {
    if (window_ > 0 && s.n_computed + 1 > window_)
      metrics_.window_releases += s.cache.release_before(s.n_computed + 1 - window_);
  }

  // Makes the blocks that positions [n_computed, end) of `s` go to its own (copy on write: after
  // a fork the block holding the prompt's last positions is shared), preempting as reserve() does.
  bool writable(Sequence& s, std::size_t end) {
    const std::size_t bs = blocks_.block_size();
    for (std::size_t pos = s.n_computed; pos < std::min(end, s.cache.capacity()); pos = (pos / bs + 1) * bs)
      while (!s.cache.make_writable(pos)) {
        if (running_.empty() || running_.back().get() == &s) return false;
        preempt_newest();
      }
    return true;
  }

  // Gives `s` blocks up to `n` positions, preempting the newest running sequences other than `s`
  // when the pool is empty. False when even that cannot free enough.
  bool reserve(Sequence& s, std::size_t n) {
    while (!s.cache.reserve(n)) {
      if (running_.empty() || running_.back().get() == &s) return false;
      preempt_newest();
    }
    return true;
  }

  void preempt_newest() {
    SeqPtr victim = std::move(running_.back());
    running_.pop_back();
    victim->cache.clear();
    victim->draft.clear();
    victim->clear_draft_cache();
    victim->n_computed = victim->n_registered = 0;
    victim->last_hash = victim->hash_seed;
    ++victim->metrics.preemptions;
    ++metrics_.preemptions;
    waiting_.push_front(std::move(victim));
  }

  // Prefix cache: take the cached blocks of the known tokens' full blocks (but leave at least the
  // last token to compute, whose logits are needed).
  void reuse_prefix(Sequence& s) {
    if (!opt_.prefix_caching) return;
    const std::size_t bs = blocks_.block_size();
    std::uint64_t h = s.hash_seed;
    for (std::size_t b = 0; (b + 1) * bs < s.tokens.size(); ++b) {
      h = KVBlockPool::chain_hash(h, std::span(s.tokens).subspan(b * bs, bs));
      ++metrics_.prefix_lookups;
      const auto hit = blocks_.lookup(h);
      if (!hit) break;
      ++metrics_.prefix_hits;
      s.cache.append(*hit);
      s.n_computed = s.n_registered = b + 1;
      s.n_computed *= bs;
      s.last_hash = h;
    }
    s.metrics.cached_prompt_tokens = std::max(s.metrics.cached_prompt_tokens, s.n_computed);
    release_out_of_window(s);
  }

  void schedule() {
    batch_tokens_.clear();
    batch_positions_.clear();
    slices_.clear();
    std::size_t budget = opt_.max_batch_tokens;
    if (opt_.draft_model) draft_with_model();
    // Running sequences first, oldest first: decodes (1 token) and prefill chunks.
    for (std::size_t i = 0; i < running_.size() && budget > 0; ++i) {
      Sequence& s = *running_[i];
      if (!opt_.draft_model) {
        s.draft = prompt_lookup_draft(s.tokens, s.request.draft_ngram, draft_room(s, budget),
                                      std::min(s.request.draft_ngram_min, s.request.draft_ngram));
      } else if (!s.draft.empty() && s.draft.size() >= budget) {
        s.draft.resize(budget - 1);   // a guard: draft_with_model() assumed these same budgets
      }
      const std::size_t want = std::min(budget, s.tokens.size() - s.n_computed + s.draft.size());
      if (!reserve(s, s.n_computed + want) || !writable(s, s.n_computed + want)) {   // nothing left to preempt: this one waits too
        preempt_newest();
        --i;
        continue;
      }
      s.chunk = want;
      budget -= want;
    }
    // Then admit waiting requests while the budget, the cap and the blocks allow.
    // A request with n samples counts n: its forks join the running sequences once its prompt is in.
    std::size_t committed = running_.size();
    for (const auto& sp : running_) committed += sp->forks;
    while (budget > 0 && !waiting_.empty() && committed + 1 + waiting_.front()->forks <= opt_.max_sequences) {
      Sequence& s = *waiting_.front();
      reuse_prefix(s);
      const std::size_t want = std::min(budget, s.tokens.size() - s.n_computed);
      if (!s.cache.reserve(s.n_computed + want)) {
        s.cache.clear();   // its prefix blocks go back too; it is first in line next step
        s.n_computed = s.n_registered = 0;
        s.last_hash = s.hash_seed;
        break;
      }
      if (!s.started) {
        s.started = true;
        s.metrics.queue_seconds = seconds_since(s.submitted);
      }
      s.chunk = want;
      budget -= want;
      committed += 1 + s.forks;
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    for (auto& sp : running_) {
      Sequence& s = *sp;
      if (s.chunk == 0) continue;
      for (std::size_t t = 0; t < s.chunk; ++t) {
        const std::size_t pos = s.n_computed + t;
        batch_tokens_.push_back(pos < s.tokens.size() ? s.tokens[pos] : s.draft[pos - s.tokens.size()]);
        batch_positions_.push_back(std::int32_t(pos));
      }
      const bool reaches_end = s.n_computed + s.chunk == s.tokens.size() + s.draft.size();
      slices_.push_back({&s.cache, batch_tokens_.size() - s.chunk, s.chunk, reaches_end, s.request.adapters,
                         !s.draft.empty()});
    }
  }

  // Speculative decoding: how many tokens `s` may draft: 0 unless it decodes (its known tokens
  // computed but the last), at most enough to end the request and to fit the step's budget with
  // its last token.
  std::size_t draft_room(const Sequence& s, std::size_t budget) const {
    if (s.request.draft_tokens == 0 || s.tokens.size() <= s.n_prompt || s.n_computed + 1 != s.tokens.size() ||
        s.tokens.size() + 1 >= s.max_total || budget < 2)
      return 0;
    return std::min({s.request.draft_tokens, budget - 1, s.max_total - s.tokens.size() - 1});
  }

  // Drafts by the draft model for every sequence that may draft this step (with the budgets the
  // scheduling loop will give them). The first forward lets each catch up on the tokens its draft
  // cache lacks (its prompt at first, then the last step's kept drafts and sampled token) and
  // gives its first draft; each further forward feeds every sequence's newest draft and gives the
  // next. A sequence whose catching up does not fit the draft model's batch goes on next step
  // (no drafts this one); one whose draft cache cannot grow drafts nothing.
  void draft_with_model() {
    Model& dm = opt_.draft_model->model();
    const ModelConfig& dc = dm.config();
    const std::size_t vocab = std::min(dc.vocab_size, model_.config().vocab_size);
    std::vector<std::pair<Sequence*, std::size_t>> active;   // sequence, tokens it may draft
    std::size_t budget = opt_.max_batch_tokens;
    for (auto& sp : running_) {
      Sequence& s = *sp;
      s.draft.clear();
      // Of the positions the last step fed, those past the known tokens' but last held drafts that
      // were kept (verify_drafts: now tokens) or not; the last known token is always fed again.
      s.draft_computed = std::min(s.draft_computed, s.tokens.size() - 1);
      if (budget == 0) continue;
      std::size_t room = draft_room(s, budget);
      room = std::min(room, dc.context > s.tokens.size() ? dc.context - s.tokens.size() : 0);
      budget -= room > 0 ? 1 + room : std::min(budget, s.tokens.size() - s.n_computed);
      if (room > 0 && s.draft_cache->reserve(s.tokens.size() + room - 1)) active.emplace_back(&s, room);
    }
    for (bool first = true; !active.empty(); first = false) {
      std::size_t batch_left = dm.max_batch();
      draft_tokens_.clear();
      draft_positions_.clear();
      draft_slices_.clear();
      std::vector<std::pair<Sequence*, std::size_t>> fed;
      for (auto [s, room] : active) {
        // First forward: the tokens not in the draft cache; then the newest draft.
        const std::size_t from = s->draft_computed, end = first ? s->tokens.size() : from + 1;
        const std::size_t n = std::min(end - from, batch_left);
        if (n == 0) continue;
        for (std::size_t p = from; p < from + n; ++p) {
          draft_tokens_.push_back(p < s->tokens.size() ? s->tokens[p] : s->draft[p - s->tokens.size()]);
          draft_positions_.push_back(std::int32_t(p));
        }
        batch_left -= n;
        s->draft_computed += n;
        const bool complete = from + n == end;
        draft_slices_.push_back({&*s->draft_cache, draft_tokens_.size() - n, n, complete});
        if (complete) fed.emplace_back(s, room);
      }
      if (draft_tokens_.empty()) break;
      metrics_.draft_model_tokens += draft_tokens_.size();
      if (draft_logits_.size() < fed.size() * dc.vocab_size) draft_logits_.resize(fed.size() * dc.vocab_size);
      dm.forward_batch(pool_, draft_tokens_, draft_positions_, draft_slices_,
                       MatrixView<float>(draft_logits_.data(), fed.size(), dc.vocab_size));
      active.clear();
      for (std::size_t i = 0; i < fed.size(); ++i) {
        auto [s, room] = fed[i];
        const float* row = draft_logits_.data() + i * dc.vocab_size;
        const std::size_t best = std::size_t(std::max_element(row, row + vocab) - row);
        if (opt_.draft_p_min > 0) {   // the draft model's probability of its best token
          double sum = 0;
          for (std::size_t t = 0; t < vocab; ++t) sum += std::exp(double(row[t]) - row[best]);
          if (1 / sum < opt_.draft_p_min) continue;
        }
        s->draft.push_back(std::int32_t(best));
        if (s->draft.size() < room) active.emplace_back(s, room);
      }
    }
  }

  void run_batch() {
    std::size_t n_logits = 0;
    for (const auto& sl : slices_) n_logits += sl.all_logits ? sl.count : sl.wants_logits;
    const std::size_t vocab = model_.config().vocab_size;
    if (logits_.size() < n_logits * vocab) logits_.resize(n_logits * vocab);   // drafts need a row each
    model_.forward_batch(pool_, batch_tokens_, batch_positions_, slices_,
                         MatrixView<float>(logits_.data(), n_logits, vocab));
    std::size_t row = 0;
    std::vector<Sequence*> done;
    std::vector<SeqPtr> forked;
    for (auto& sp : running_) {
      Sequence& s = *sp;
      if (s.chunk == 0) continue;
      if (!s.draft.empty()) {
        if (verify_drafts(s, row) != FinishReason::none) done.push_back(&s);
        row += 1 + s.draft.size();
        s.draft.clear();
        continue;
      }
      s.n_computed += s.chunk;
      const bool sampled = s.n_computed == s.tokens.size();
      s.chunk = 0;
      register_full_blocks(s);
      release_out_of_window(s);
      if (!sampled) continue;
      const std::span<float> logits(logits_.data() + row++ * vocab, vocab);
      // sample() changes the logits: log-probabilities and further samples need them as computed.
      if (s.request.logprobs >= 0 || s.forks > 0 || s.matcher) raw_logits_.assign(logits.begin(), logits.end());
      // Parallel samples start here, from the computed prompt: each shares its blocks.
      std::vector<SeqPtr> children;
      for (std::size_t i = 1; i <= s.forks; ++i) children.push_back(fork(s, i));
      s.forks = 0;
      if (sample_and_emit(s, logits) != FinishReason::none) done.push_back(&s);
      for (SeqPtr& c : children) {
        fork_logits_.assign(raw_logits_.begin(), raw_logits_.end());
        if (sample_and_emit(*c, fork_logits_) == FinishReason::none) forked.push_back(std::move(c));
      }
    }
    for (Sequence* s : done) {
      const auto it = std::find_if(running_.begin(), running_.end(), [&](const SeqPtr& p) { return p.get() == s; });
      running_.erase(it);
    }
    for (SeqPtr& c : forked) running_.push_back(std::move(c));
  }

  // The step computed the last known token of `s` and its drafts, with logits rows row.. for each.
  // Each position is sampled as plain decoding samples it (same sampler, same random draws); a
  // draft whose position sampled that very token is kept (its K/V are in the cache) and the next
  // position is sampled; the first one that differs ends the step, its sampled token replacing the
  // draft (and computed next step). When every draft is kept, the last row gives one more token.
  FinishReason verify_drafts(Sequence& s, std::size_t row) {
    const std::size_t vocab = model_.config().vocab_size, n_draft = s.draft.size();
    s.chunk = 0;
    ++s.n_computed;   // the last known token
    s.metrics.draft_tokens += n_draft;
    metrics_.draft_tokens += n_draft;
    FinishReason why = FinishReason::none;
    for (std::size_t i = 0; i <= n_draft && why == FinishReason::none; ++i) {
      const std::span<float> logits(logits_.data() + (row + i) * vocab, vocab);
      if (s.request.logprobs >= 0 || s.matcher) raw_logits_.assign(logits.begin(), logits.end());
      why = sample_and_emit(s, logits);
      if (why != FinishReason::none || i == n_draft || s.tokens.back() != s.draft[i]) break;
      ++s.n_computed;   // the draft was right: its K/V stand
      ++s.metrics.accepted_draft_tokens;
      ++metrics_.accepted_draft_tokens;
    }
    if (why != FinishReason::none) return why;   // finish() released the blocks
    register_full_blocks(s);
    release_out_of_window(s);
    return why;
  }

  FinishReason sample_and_emit(Sequence& s, std::span<float> logits) {
    std::int32_t next = s.sampler.sample(logits, s.tokens);
    if (s.matcher && !allowed(s, next)) {
      // The token would break the grammar: draw again among the tokens that keep it (sampling
      // first and masking only when needed, as llama.cpp does: most tokens of a good model fit).
      grammar_logits_.assign(raw_logits_.begin(), raw_logits_.end());
      s.matcher->mask(token_trie(), grammar_logits_, end_tokens(s));
      if (std::none_of(grammar_logits_.begin(), grammar_logits_.end(), [](float x) { return x > -1e30f; }))
        return finish(s, FinishReason::stop);   // complete, and no end token to say so: stop here
      next = s.sampler.sample(grammar_logits_, s.tokens);
    }
    if (s.matcher && !is_end(s, next)) s.matcher->advance(token_trie().text(next));
    if (s.request.logprobs >= 0) s.logprobs = token_logprobs(raw_logits_, next, std::size_t(s.request.logprobs));
    return emit(s, next);
  }

  // The tokens that end a sample: EOS (unless the request goes past it) and its stop tokens. In
  // constrained decoding they are allowed once the text is complete; any other token if its text
  // may follow.
  bool is_end(const Sequence& s, std::int32_t t) const {
    return (s.request.stop_at_eos && t == lm_.tokenizer().eos()) ||
           std::find(s.request.stop_tokens.begin(), s.request.stop_tokens.end(), t) != s.request.stop_tokens.end();
  }
  std::vector<std::int32_t> end_tokens(const Sequence& s) const {
    std::vector<std::int32_t> ends = s.request.stop_tokens;
    if (s.request.stop_at_eos && lm_.tokenizer().eos() >= 0) ends.push_back(lm_.tokenizer().eos());
    return ends;
  }
  bool allowed(Sequence& s, std::int32_t t) {
    if (is_end(s, t)) return s.matcher->complete();
    const std::string& text = token_trie().text(t);
    return !text.empty() && s.matcher->accepts(text);
  }
  // The vocabulary's token texts as they add to the text (control tokens: none), built once.
  const TokenTrie& token_trie() {
    if (!trie_) {
      const Tokenizer& tok = lm_.tokenizer();
      std::vector<std::string> texts(model_.config().vocab_size);
      for (std::size_t t = 0; t < texts.size() && t < tok.size(); ++t) texts[t] = tok.decode(std::int32_t(t));
      trie_ = std::make_unique<TokenTrie>(texts);
    }
    return *trie_;
  }

  // Sample `index` of the request of `s`, whose prompt `s` has just computed: the same tokens and
  // blocks (shared), its own sampler seeded with the request's seed + index.
  SeqPtr fork(const Sequence& s, std::size_t index) {
    Request r = s.request;
    r.sampling.seed += index;
    auto c = std::make_unique<Sequence>(blocks_, model_.config(), r, s.on_event, model_.config().vocab_size, draft_pool(),
                                           draft_config());
    c->id = s.id;
    c->index = index;
    c->tokens = s.tokens;
    c->n_prompt = s.n_prompt;
    c->max_total = s.max_total;
    c->n_computed = s.n_computed;
    c->n_registered = s.n_registered;
    c->last_hash = s.last_hash;
    c->metrics = s.metrics;
    c->submitted = s.submitted;
    c->started = true;
    c->samples_left = s.samples_left;
    c->matcher = s.matcher;
    c->cache.share(s.cache);
    return c;
  }

  void register_full_blocks(Sequence& s) {
    if (!opt_.prefix_caching) return;
    const std::size_t bs = blocks_.block_size();
    while ((s.n_registered + 1) * bs <= s.n_computed) {
      s.last_hash = KVBlockPool::chain_hash(s.last_hash, std::span(s.tokens).subspan(s.n_registered * bs, bs));
      blocks_.register_full(s.cache.blocks()[s.n_registered], s.last_hash);
      ++s.n_registered;
    }
  }

  // Appends a sampled token, streams its text, and finishes the sequence when a stop condition
  // holds. Returns the finish reason (none while it goes on).
  FinishReason emit(Sequence& s, std::int32_t token) {
    const Tokenizer& tok = lm_.tokenizer();
    if (s.metrics.generated_tokens == 0) s.metrics.first_token_seconds = seconds_since(s.submitted);
    ++s.metrics.generated_tokens;
    const std::int32_t prev = s.tokens.back();
    s.tokens.push_back(token);
    if (is_end(s, token)) return finish(s, FinishReason::eos, token);
    s.held += s.utf8.push(tok.decode(prev, token));
    std::size_t cut = std::string::npos;
    for (const auto& stop : s.request.stop)
      if (!stop.empty()) cut = std::min(cut, s.held.find(stop));
    if (cut != std::string::npos) {
      s.held.resize(cut);
      return finish(s, FinishReason::stop, token);
    }
    if (s.matcher && s.matcher->closed()) {   // no token may follow: done now, not after one more forward pass
      s.held += s.utf8.flush();
      return finish(s, FinishReason::stop, token);
    }
    if (s.tokens.size() >= s.max_total) return finish(s, FinishReason::length, token);
    // Hold back the longest tail that could still grow into a stop string.
    std::size_t keep = 0;
    for (const auto& stop : s.request.stop)
      for (std::size_t k = std::min(stop.size() - (stop.empty() ? 0 : 1), s.held.size()); k > keep; --k)
        if (s.held.compare(s.held.size() - k, k, stop, 0, k) == 0) { keep = k; break; }
    TokenEvent ev{.id = s.id, .index = s.index, .token = token, .text = s.held.substr(0, s.held.size() - keep),
                  .logprobs = std::move(s.logprobs)};
    s.held.erase(0, s.held.size() - keep);
    s.on_event(ev);
    return FinishReason::none;
  }

  FinishReason finish(Sequence& s, FinishReason why, std::int32_t token = -1) {
    if (why != FinishReason::stop && why != FinishReason::cancelled) s.held += s.utf8.flush();
    s.metrics.prompt_tokens = s.n_prompt;
    s.metrics.total_seconds = seconds_since(s.submitted);
    TokenEvent ev{.id = s.id, .index = s.index, .token = token, .text = why == FinishReason::cancelled ? "" : s.held,
                  .finished = true, .reason = why, .metrics = s.metrics};
    if (token >= 0) ev.logprobs = std::move(s.logprobs);
    // Samples not forked yet (a request cancelled before its prompt was computed) end with it.
    std::size_t& left = *s.samples_left;
    left -= std::min(left, 1 + s.forks);
    s.forks = 0;
    ev.request_finished = left == 0;
    s.cache.clear();
    s.clear_draft_cache();
    s.on_event(ev);
    return why;
  }

  // 0 for the base model; else a hash of each adapter's id and scale.
  static std::uint64_t adapters_hash(const std::vector<AdapterRef>& adapters) {
    std::uint64_t h = 0;
    for (const AdapterRef& a : adapters) {
      std::uint32_t scale_bits;
      std::memcpy(&scale_bits, &a.scale, sizeof scale_bits);
      for (const std::uint64_t v : {a.adapter->id(), std::uint64_t(scale_bits)})
        h = (h ^ v) * 0x100000001b3ull + 0x9e3779b97f4a7c15ull;
    }
    return h;
  }

  KVBlockPool* draft_pool() { return draft_blocks_ ? &*draft_blocks_ : nullptr; }
  const ModelConfig* draft_config() const { return opt_.draft_model ? &opt_.draft_model->config() : nullptr; }

  static double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

  LoadedModel& lm_;
  Model& model_;
  ThreadPool& pool_;
  EngineOptions opt_;
  KVBlockPool blocks_;
  std::size_t window_;                     // Model::kv_window(): > 0 lets sequences release old blocks
  std::deque<SeqPtr> running_, waiting_;   // running_ in admission order
  std::mutex inbox_mutex_;
  std::vector<SeqPtr> inbox_;
  std::unordered_set<RequestId> cancelled_;
  std::size_t n_waiting_ = 0;
  RequestId next_id_ = 1;
  std::vector<std::int32_t> batch_tokens_, batch_positions_;
  std::vector<SequenceSlice> slices_;
  std::optional<KVBlockPool> draft_blocks_;   // the draft model's K/V (EngineOptions::draft_model)
  std::vector<std::int32_t> draft_tokens_, draft_positions_;
  std::vector<SequenceSlice> draft_slices_;
  AlignedBuffer<float> draft_logits_;
  AlignedBuffer<float> logits_;            // [max_sequences, vocab]
  std::vector<float> raw_logits_;          // a row before sampling (Request::logprobs, n > 1)
  std::vector<float> fork_logits_;         // a copy of it for each further sample
  std::vector<float> grammar_logits_;      // a copy of it, masked by a grammar
  std::unique_ptr<TokenTrie> trie_;        // the vocabulary for constrained decoding
  EngineMetrics metrics_;
};

}  // namespace tinyllm

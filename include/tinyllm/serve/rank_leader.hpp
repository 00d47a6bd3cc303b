#pragma once
// Serving a model split over ranks (model/tensor_parallel.hpp): rank 0 leads, the others follow.
// Rank 0 runs everything a single process runs (the Engine, generate(), the server, samplers) on
// a model wrapped by lead(): before each forward pass it broadcasts the step (tokens, positions,
// and each sequence's KV cache as the followers must see it), then runs its own share; the
// followers (follow_leader()) receive each step and run theirs with the same calls, so the
// collectives inside the forward pass meet. Every rank holds its heads' K/V in caches of its own:
// a paged cache as the same block ids in a pool with the same number of blocks (blocks that the
// leader's pool copies on write are copied on the followers too); a contiguous cache (generate())
// as one of the same capacity. When the wrapped model is destroyed, the followers return.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <tinyllm/comm/communicator.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/model/bind.hpp>
#include <tinyllm/model/kv_cache.hpp>
#include <tinyllm/model/transformer.hpp>
#include <tinyllm/serve/block_pool.hpp>
#include <tinyllm/serve/paged_kv_cache.hpp>

namespace tinyllm {

namespace detail {

// One step as the leader broadcasts it: a flat list of 64-bit words.
//   kind (0 stop, 1 forward, 2 forward_batch), n_tok, tokens[n_tok], positions[n_tok],
//   logit rows, n_slices, then per slice: first, count, wants_logits, all_logits, cache kind
//   (0 contiguous: key, capacity, kv type; 1 paged: n_blocks, block_size, kv type, table size,
//   ids), then n_copies and (from, to) pairs of block copies to make first.
enum : std::uint64_t { kStepStop = 0, kStepForward = 1, kStepBatch = 2 };
enum : std::uint64_t { kCacheContiguous = 0, kCachePaged = 1 };

inline void broadcast_words(Communicator& comm, std::vector<std::uint64_t>& words) {
  std::uint64_t n = words.size();
  comm.broadcast(std::as_writable_bytes(std::span(&n, 1)), 0);
  words.resize(n);
  comm.broadcast(std::as_writable_bytes(std::span(words)), 0);
}

// A follower's view of one leader sequence's block table, over the follower's own pool.
class BlockTableCache final : public KVCache {
 public:
  BlockTableCache(KVBlockPool& pool, std::size_t kv_dim, std::vector<BlockId> table)
      : pool_(&pool), kv_dim_(kv_dim), table_(std::move(table)) {}
  KVLayerView layer(std::size_t l) override {
    KVLayerView v{.block_size = pool_->block_size(), .kv_dim = kv_dim_};
    const auto fill = [&]<class T>(std::vector<T*>& k, std::vector<T*>& vv) {
      k.resize(table_.size());
      vv.resize(table_.size());
      for (std::size_t i = 0; i < table_.size(); ++i) {
        const bool live = table_[i] != PagedKVCache::kReleased;
        k[i] = live ? pool_->keys_as<T>(table_[i], l) : nullptr;
        vv[i] = live ? pool_->values_as<T>(table_[i], l) : nullptr;
      }
    };
    switch (pool_->type()) {
      case KVType::f32: fill(k_, v_), v.k_blocks = k_.data(), v.v_blocks = v_.data(); break;
      case KVType::f16: fill(k16_, v16_), v.k_blocks_f16 = k16_.data(), v.v_blocks_f16 = v16_.data(); break;
      case KVType::q8_0: fill(k8_, v8_), v.k_blocks_q8 = k8_.data(), v.v_blocks_q8 = v8_.data(); break;
    }
    return v;
  }
  std::size_t capacity() const override { return table_.size() * pool_->block_size(); }

 private:
  KVBlockPool* pool_;
  std::size_t kv_dim_;
  std::vector<BlockId> table_;
  std::vector<float*> k_, v_;   // this layer's block pointers, of the pool's storage type
  std::vector<F16*> k16_, v16_;
  std::vector<BlockQ8_0*> k8_, v8_;
};

// The model on rank 0: each forward pass is broadcast to the followers first.
class LeaderModel final : public Model {
 public:
  LeaderModel(std::unique_ptr<Model> inner, Communicator& comm) : inner_(std::move(inner)), comm_(&comm) {
    if (inner_->memory()) throw Error("tensor parallelism runs on host memory", "lead");
  }
  ~LeaderModel() override {
    std::vector<std::uint64_t> stop = {kStepStop};
    broadcast_words(*comm_, stop);
  }

  const ModelConfig& config() const override { return inner_->config(); }
  ArchInfo arch() const override { return inner_->arch(); }
  const TransformerWeights& weights() const override { return inner_->weights(); }
  std::size_t max_batch() const override { return inner_->max_batch(); }
  std::size_t kv_window() const override { return inner_->kv_window(); }
  void set_adapters(std::vector<AdapterRef> adapters) override { inner_->set_adapters(std::move(adapters)); }
  const std::vector<AdapterRef>& adapters() const override { return inner_->adapters(); }
  const MemoryResource* memory() const override { return inner_->memory(); }

  void forward(ThreadPool& pool, std::span<const std::int32_t> tokens, std::span<const std::int32_t> positions,
               KVCache& cache, MatrixView<float> logits) override {
    begin(kStepForward, tokens, positions, logits.rows);
    words_.push_back(1);
    add_cache(cache, false, false);
    send();
    inner_->forward(pool, tokens, positions, cache, logits);
  }
  void forward_batch(ThreadPool& pool, std::span<const std::int32_t> tokens, std::span<const std::int32_t> positions,
                     std::span<const SequenceSlice> seqs, MatrixView<float> logits) override {
    begin(kStepBatch, tokens, positions, logits.rows);
    words_.push_back(seqs.size());
    for (const SequenceSlice& s : seqs) {
      if (!s.adapters.empty()) throw Error("LoRA adapters are not supported with tensor parallelism yet", "forward_batch");
      words_.insert(words_.end(), {s.first, s.count});
      add_cache(*s.cache, s.wants_logits, s.all_logits);
    }
    send();
    inner_->forward_batch(pool, tokens, positions, seqs, logits);
  }

 private:
  void begin(std::uint64_t kind, std::span<const std::int32_t> tokens, std::span<const std::int32_t> positions,
             std::size_t logit_rows) {
    if (tokens.size() != positions.size()) throw Error("forward: tokens and positions differ in number");
    words_.assign({kind, tokens.size()});
    for (std::int32_t t : tokens) words_.push_back(std::uint64_t(std::uint32_t(t)));
    for (std::int32_t p : positions) words_.push_back(std::uint64_t(std::uint32_t(p)));
    words_.push_back(logit_rows);
    copies_.clear();
  }
  void add_cache(KVCache& cache, bool wants_logits, bool all_logits) {
    words_.insert(words_.end(), {std::uint64_t(wants_logits), std::uint64_t(all_logits)});
    if (auto* c = dynamic_cast<ContiguousKVCache*>(&cache)) {
      words_.insert(words_.end(), {kCacheContiguous, std::uint64_t(reinterpret_cast<std::uintptr_t>(c)), c->capacity(),
                                   std::uint64_t(c->type())});
    } else if (auto* p = dynamic_cast<PagedKVCache*>(&cache)) {
      KVBlockPool& bp = p->pool();
      bp.record_copies(true);
      for (const auto& c : bp.take_copies()) copies_.push_back(c);
      words_.insert(words_.end(), {kCachePaged, bp.n_blocks(), bp.block_size(), std::uint64_t(bp.type()), p->blocks().size()});
      for (BlockId b : p->blocks()) words_.push_back(b);
    } else {
      throw Error("a KV cache of a kind tensor parallelism cannot mirror", "forward", "ContiguousKVCache or PagedKVCache");
    }
  }
  void send() {
    words_.push_back(copies_.size());
    for (const auto& [from, to] : copies_) words_.insert(words_.end(), {from, to});
    broadcast_words(*comm_, words_);
  }

  std::unique_ptr<Model> inner_;
  Communicator* comm_;
  std::vector<std::uint64_t> words_;
  std::vector<std::pair<BlockId, BlockId>> copies_;
};

}  // namespace detail

// Rank 0 of `comm`, whose model `lm` was loaded with LoadOptions::comm = &comm: from now on each
// forward pass of lm.model() is run by every rank (the others in follow_leader()). Until lm (or
// its model) is destroyed, which releases the followers, rank 0 makes every forward call.
inline void lead(LoadedModel& lm, Communicator& comm) {
  if (comm.rank() != 0) throw Error("rank " + std::to_string(comm.rank()) + " cannot lead", "lead", "rank 0");
  lm.wrap_model([&](std::unique_ptr<Model> m) { return std::make_unique<detail::LeaderModel>(std::move(m), comm); });
}

// A rank other than 0: runs each step that rank 0's model broadcasts on this rank's share of the
// model, until rank 0's model is destroyed. A step that fails here fails on rank 0 too (the same
// checks on the same inputs) and is skipped.
inline void follow_leader(LoadedModel& lm, ThreadPool& pool, Communicator& comm) {
  Model& model = lm.model();
  const ModelConfig& c = model.config();
  std::optional<KVBlockPool> blocks;
  std::unordered_map<std::uint64_t, std::unique_ptr<ContiguousKVCache>> contiguous;
  std::vector<std::uint64_t> words;
  std::vector<std::int32_t> tokens, positions;
  std::vector<float> logits;
  std::vector<std::unique_ptr<KVCache>> caches;
  std::vector<SequenceSlice> slices;
  for (;;) {
    detail::broadcast_words(comm, words);
    std::size_t at = 0;
    const auto next = [&] {
      if (at >= words.size()) throw Error("a truncated step from rank 0", "follow_leader");
      return words[at++];
    };
    const std::uint64_t kind = next();
    if (kind == detail::kStepStop) return;
    const std::size_t n = next();
    tokens.resize(n);
    positions.resize(n);
    for (auto& t : tokens) t = std::int32_t(std::uint32_t(next()));
    for (auto& p : positions) p = std::int32_t(std::uint32_t(next()));
    const std::size_t rows = next(), n_slices = next();
    caches.clear();
    slices.clear();
    for (std::size_t i = 0; i < n_slices; ++i) {
      SequenceSlice s;
      if (kind == detail::kStepBatch) {
        s.first = next();
        s.count = next();
      }
      s.wants_logits = next() != 0;
      s.all_logits = next() != 0;
      if (next() == detail::kCacheContiguous) {
        const std::uint64_t key = next();
        const std::size_t capacity = next();
        const auto type = KVType(next());
        auto& mine = contiguous[key];
        if (!mine || mine->capacity() != capacity || mine->type() != type)
          mine = std::make_unique<ContiguousKVCache>(c, capacity, type);
        s.cache = mine.get();
      } else {
        const std::size_t n_blocks = next(), block_size = next();
        const auto type = KVType(next());
        if (!blocks || blocks->n_blocks() != n_blocks || blocks->block_size() != block_size || blocks->type() != type)
          blocks.emplace(c, block_size, n_blocks, type);
        std::vector<BlockId> table(next());
        for (auto& b : table) b = BlockId(next());
        caches.push_back(std::make_unique<detail::BlockTableCache>(*blocks, c.kv_dim(), std::move(table)));
        s.cache = caches.back().get();
      }
      slices.push_back(s);
    }
    for (std::size_t i = next(); i > 0; --i) {
      const auto from = BlockId(next()), to = BlockId(next());
      if (blocks) blocks->copy_block(from, to);
    }
    logits.resize(rows * c.vocab_size);
    const MatrixView<float> out(logits.data(), rows, c.vocab_size);
    try {
      if (kind == detail::kStepForward) model.forward(pool, tokens, positions, *slices.at(0).cache, out);
      else model.forward_batch(pool, tokens, positions, slices, out);
    } catch (const Error&) {
      // rank 0 met the same Error before any collective and reports it
    }
  }
}

}  // namespace tinyllm

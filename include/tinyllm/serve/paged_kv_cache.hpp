#pragma once
// One sequence's view of the paged KV cache: a block table into a shared KVBlockPool. Position p
// lives in block table[p / block_size] at row p % block_size; the model reaches it through
// KVCache::layer like any other cache. When every layer of the model has a sliding window, the
// blocks that fell out of it are released early (release_before): their table entries become
// kReleased tombstones with null pointers, which attention never reaches.
#include <algorithm>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/model/kv_cache.hpp>
#include <tinyllm/serve/block_pool.hpp>

namespace tinyllm {

class PagedKVCache final : public KVCache {
 public:
  // A table entry whose block went back to the pool: no position in it is read again.
  static constexpr BlockId kReleased = std::numeric_limits<BlockId>::max();

  PagedKVCache(KVBlockPool& pool, std::size_t n_layers, std::size_t kv_dim)
      : pool_(&pool), kv_dim_(kv_dim), ptrs_(n_layers), ptrs_f16_(n_layers), ptrs_q8_(n_layers) {}
  PagedKVCache(const PagedKVCache&) = delete;
  PagedKVCache& operator=(const PagedKVCache&) = delete;
  ~PagedKVCache() override { clear(); }

  KVLayerView layer(std::size_t l) override {
    KVLayerView v{.block_size = pool_->block_size(), .kv_dim = kv_dim_};
    switch (pool_->type()) {
      case KVType::f32: v.k_blocks = ptrs_[l].k.data(), v.v_blocks = ptrs_[l].v.data(); break;
      case KVType::f16: v.k_blocks_f16 = ptrs_f16_[l].k.data(), v.v_blocks_f16 = ptrs_f16_[l].v.data(); break;
      case KVType::q8_0: v.k_blocks_q8 = ptrs_q8_[l].k.data(), v.v_blocks_q8 = ptrs_q8_[l].v.data(); break;
    }
    return v;
  }
  // Positions [0, capacity) are addressable; those of released blocks are no longer stored.
  std::size_t capacity() const override { return table_.size() * pool_->block_size(); }
  KVBlockPool& pool() const { return *pool_; }
  // The block table, kReleased where a block was released early.
  std::span<const BlockId> blocks() const { return table_; }
  std::size_t n_released() const { return n_released_; }             // leading kReleased entries
  std::size_t n_held() const { return table_.size() - n_released_; }  // blocks this sequence holds

  // Appends a block the caller already holds a reference to; the table now owns that reference.
  void append(BlockId b) {
    table_.push_back(b);
    for_tables([&](auto& tables, auto* type) {
      using T = std::remove_pointer_t<decltype(type)>;
      for (std::size_t l = 0; l < tables.size(); ++l) {
        tables[l].k.push_back(pool_->keys_as<T>(b, l));
        tables[l].v.push_back(pool_->values_as<T>(b, l));
      }
    });
  }

  // Takes `other`'s blocks as this (empty) cache's, sharing them: each gets one more reference,
  // and a shared block is copied before this cache writes it (make_writable). Parallel samples of
  // one prompt hold its K/V once this way.
  void share(const PagedKVCache& other) {
    if (!table_.empty()) throw Error("a KV cache that holds blocks", "PagedKVCache::share", "an empty one");
    for (const BlockId b : other.table_) {
      if (b != kReleased) pool_->retain(b);
      append(b == kReleased ? 0 : b);   // the pointers of a released entry are nulled below
      if (b == kReleased) set(table_.size() - 1, kReleased);
    }
    n_released_ = other.n_released_;
  }

  // Grows the table until positions [0, n) fit; false (keeping what it got) when the pool runs out.
  bool reserve(std::size_t n) {
    while (capacity() < n) {
      const auto b = pool_->allocate();
      if (!b) return false;
      append(*b);
    }
    return true;
  }

  // Copy on write: gives the block holding `pos` to this sequence alone before it is written.
  bool make_writable(std::size_t pos) {
    const std::size_t i = pos / pool_->block_size();
    const BlockId shared = table_.at(i);
    if (shared == kReleased) throw Error("position " + std::to_string(pos) + " is in a released KV block", "make_writable");
    if (pool_->ref_count(shared) == 1) return true;
    const auto fresh = pool_->allocate();
    if (!fresh) return false;
    pool_->copy_block(shared, *fresh);
    set(i, *fresh);
    pool_->release(shared);
    return true;
  }

  // Releases the blocks all of whose positions lie before `pos` (no query reads them again). They
  // keep their contents and prefix-cache hash until the pool reuses them, so a later request with
  // the same prefix may still find them. Returns how many were released.
  std::size_t release_before(std::size_t pos) {
    const std::size_t end = std::min(pos / pool_->block_size(), table_.size());
    std::size_t n = 0;
    for (; n_released_ < end; ++n_released_, ++n) {
      pool_->release(table_[n_released_]);
      set(n_released_, kReleased);
    }
    return n;
  }

  // Releases every block (they stay in the prefix cache until reused).
  void clear() {
    for (BlockId b : table_)
      if (b != kReleased) pool_->release(b);
    table_.clear();
    n_released_ = 0;
    for_tables([](auto& tables, auto*) {
      for (auto& t : tables) t.k.clear(), t.v.clear();
    });
  }

 private:
  template <class T>
  struct LayerTable {
    std::vector<T*> k, v;   // [blocks]: the layer's K/V base in each block
  };

  // f(tables, (T*)nullptr) with the per-layer tables of the pool's storage type T.
  template <class F>
  void for_tables(F&& f) {
    switch (pool_->type()) {
      case KVType::f32: return f(ptrs_, static_cast<float*>(nullptr));
      case KVType::f16: return f(ptrs_f16_, static_cast<F16*>(nullptr));
      case KVType::q8_0: return f(ptrs_q8_, static_cast<BlockQ8_0*>(nullptr));
    }
  }

  // Points entry i of every layer at block b (null for kReleased).
  void set(std::size_t i, BlockId b) {
    table_[i] = b;
    const bool live = b != kReleased;
    for_tables([&](auto& tables, auto* type) {
      using T = std::remove_pointer_t<decltype(type)>;
      for (std::size_t l = 0; l < tables.size(); ++l) {
        tables[l].k[i] = live ? pool_->keys_as<T>(b, l) : nullptr;
        tables[l].v[i] = live ? pool_->values_as<T>(b, l) : nullptr;
      }
    });
  }

  KVBlockPool* pool_;
  std::size_t kv_dim_;
  std::vector<BlockId> table_;
  std::size_t n_released_ = 0;
  // [n_layers] block tables; only those of the pool's storage type are used.
  std::vector<LayerTable<float>> ptrs_;
  std::vector<LayerTable<F16>> ptrs_f16_;
  std::vector<LayerTable<BlockQ8_0>> ptrs_q8_;
};

}  // namespace tinyllm

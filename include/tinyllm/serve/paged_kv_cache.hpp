#pragma once
// One sequence's view of the paged KV cache: a block table into a shared KVBlockPool. Position p
// lives in block table[p / block_size] at row p % block_size; the model reaches it through
// KVCache::layer like any other cache.
#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/model/kv_cache.hpp>
#include <tinyllm/serve/block_pool.hpp>

namespace tinyllm {

class PagedKVCache final : public KVCache {
 public:
  PagedKVCache(KVBlockPool& pool, std::size_t n_layers, std::size_t kv_dim)
      : pool_(&pool), kv_dim_(kv_dim), k_ptrs_(n_layers), v_ptrs_(n_layers) {}
  PagedKVCache(const PagedKVCache&) = delete;
  PagedKVCache& operator=(const PagedKVCache&) = delete;
  ~PagedKVCache() override { clear(); }

  KVLayerView layer(std::size_t l) override {
    return {k_ptrs_[l].data(), v_ptrs_[l].data(), pool_->block_size(), kv_dim_};
  }
  std::size_t capacity() const override { return table_.size() * pool_->block_size(); }
  std::span<const BlockId> blocks() const { return table_; }

  // Appends a block the caller already holds a reference to; the table now owns that reference.
  void append(BlockId b) {
    table_.push_back(b);
    for (std::size_t l = 0; l < k_ptrs_.size(); ++l) {
      k_ptrs_[l].push_back(pool_->keys(b, l));
      v_ptrs_[l].push_back(pool_->values(b, l));
    }
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
    if (pool_->ref_count(shared) == 1) return true;
    const auto fresh = pool_->allocate();
    if (!fresh) return false;
    for (std::size_t l = 0; l < k_ptrs_.size(); ++l) {
      std::copy_n(pool_->keys(shared, l), 2 * pool_->block_size() * kv_dim_, pool_->keys(*fresh, l));  // K and V
      k_ptrs_[l][i] = pool_->keys(*fresh, l);
      v_ptrs_[l][i] = pool_->values(*fresh, l);
    }
    table_[i] = *fresh;
    pool_->release(shared);
    return true;
  }

  // Releases every block (they stay in the prefix cache until reused).
  void clear() {
    for (BlockId b : table_) pool_->release(b);
    table_.clear();
    for (auto& p : k_ptrs_) p.clear();
    for (auto& p : v_ptrs_) p.clear();
  }

 private:
  KVBlockPool* pool_;
  std::size_t kv_dim_;
  std::vector<BlockId> table_;
  std::vector<std::vector<float*>> k_ptrs_, v_ptrs_;   // [n_layers][blocks]: the layer's K/V base of each block
};

}  // namespace tinyllm

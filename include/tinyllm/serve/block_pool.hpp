#pragma once
// The paged KV cache's memory (vLLM's PagedAttention): one pool of fixed-size blocks allocated up
// front. A block holds block_size positions of K and V for every layer, as F32, F16 (half the
// bytes, so twice the blocks for a memory budget) or Q8_0 (1.88x F16's). Blocks are ref-counted so
// sequences can share them; a full block can be registered under the hash of its tokens (chained
// with the hashes of the blocks before it), so a later request with the same prefix finds it.
// Released blocks keep their contents and hash until reused, least recently released first.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/memory.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/model/config.hpp>

namespace tinyllm {

using BlockId = std::uint32_t;

class KVBlockPool {
 public:
  // The blocks live in host memory, or in `mem`'s (the model's: Model::memory()).
  KVBlockPool(const ModelConfig& cfg, std::size_t block_size, std::size_t n_blocks, KVType type = KVType::f32,
              const MemoryResource* mem = nullptr)
      : block_size_(block_size), n_layers_(cfg.n_layers), row_bytes_(kv_row_bytes(type, cfg.kv_dim())), type_(type),
        storage_(mem), blocks_(n_blocks) {
    if (block_size == 0 || n_blocks == 0)
      throw Error("a KV block pool needs blocks of at least one position", "KVBlockPool",
                  "block_size >= 1 and n_blocks >= 1");
    // [n_blocks][n_layers][K, V][block_size][row_bytes]
    storage_.resize(n_blocks * block_bytes());
    for (BlockId b = 0; b < n_blocks; ++b) free_queue_.push_back({b, 0});
    n_free_ = n_blocks;
  }

  // Bytes of one block: K and V of block_size positions for every layer.
  static std::size_t block_bytes(const ModelConfig& cfg, std::size_t block_size, KVType type = KVType::f32) {
    return block_size * cfg.n_layers * 2 * kv_row_bytes(type, cfg.kv_dim());
  }
  // The most blocks whose storage fits in `bytes`.
  static std::size_t blocks_for_bytes(const ModelConfig& cfg, std::size_t block_size, std::size_t bytes,
                                      KVType type = KVType::f32) {
    return bytes / block_bytes(cfg, block_size, type);
  }

  std::size_t block_size() const { return block_size_; }
  KVType type() const { return type_; }
  std::size_t n_blocks() const { return blocks_.size(); }
  std::size_t n_free() const { return n_free_; }
  std::size_t n_used() const { return blocks_.size() - n_free_; }
  // Blocks held more than once (shared prefixes, parallel samples), and the references to all
  // blocks: references - used is how many blocks sharing saves.
  std::size_t n_shared() const { return n_shared_; }
  std::size_t n_references() const { return n_refs_; }
  std::uint32_t ref_count(BlockId b) const { return blocks_.at(b).refs; }

  // A layer's block_size rows of keys and of values in block b, as the storage type T: float (F32
  // storage), F16 or BlockQ8_0.
  template <class T>
  T* keys_as(BlockId b, std::size_t layer) {
    return reinterpret_cast<T*>(storage_.data() + offset(b, layer));
  }
  template <class T>
  T* values_as(BlockId b, std::size_t layer) {
    return reinterpret_cast<T*>(storage_.data() + offset(b, layer) + plane());
  }
  float* keys(BlockId b, std::size_t layer) { return keys_as<float>(b, layer); }
  float* values(BlockId b, std::size_t layer) { return values_as<float>(b, layer); }
  F16* keys_f16(BlockId b, std::size_t layer) { return keys_as<F16>(b, layer); }
  F16* values_f16(BlockId b, std::size_t layer) { return values_as<F16>(b, layer); }

  // Copies every layer's K and V of block `from` into block `to`.
  void copy_block(BlockId from, BlockId to) {
    const std::byte* src = storage_.data() + offset(from, 0);
    std::byte* dst = storage_.data() + offset(to, 0);
    if (const MemoryResource* mem = storage_.memory()) mem->copy(dst, src, block_bytes());
    else std::copy_n(src, block_bytes(), dst);
    if (recording_copies_) copies_.emplace_back(from, to);
  }
  // Tensor parallelism (serve/rank_leader.hpp): the copies made since the last take_copies(), so
  // that the other ranks' pools make them too.
  void record_copies(bool on) { recording_copies_ = on; }
  std::vector<std::pair<BlockId, BlockId>> take_copies() { return std::exchange(copies_, {}); }

  // A block no one holds (evicting the oldest released one and its hash), with one reference;
  // nullopt when every block is in use.
  std::optional<BlockId> allocate() {
    while (!free_queue_.empty()) {
      const auto [b, stamp] = free_queue_.front();
      free_queue_.pop_front();
      Block& blk = blocks_[b];
      if (blk.refs != 0 || blk.stamp != stamp) continue;   // revived or re-queued since: a stale entry
      forget_hash(b);
      blk.refs = 1;
      --n_free_;
      ++n_refs_;
      return b;
    }
    return std::nullopt;
  }

  void retain(BlockId b) {
    Block& blk = blocks_.at(b);
    if (blk.refs == 0) --n_free_;   // revived from the released-but-cached state
    if (blk.refs == 1) ++n_shared_;
    ++blk.refs;
    ++n_refs_;
  }

  void release(BlockId b) {
    Block& blk = blocks_.at(b);
    if (blk.refs == 0) throw Error("KV block " + std::to_string(b) + " released more often than held", "KVBlockPool");
    if (blk.refs == 2) --n_shared_;
    --n_refs_;
    if (--blk.refs == 0) {
      ++n_free_;
      free_queue_.push_back({b, ++blk.stamp});
    }
  }

  // Prefix cache: a full block's contents are known by the hash chain of the tokens up to its end.
  void register_full(BlockId b, std::uint64_t hash) {
    if (by_hash_.contains(hash)) return;   // an equal block is cached already
    forget_hash(b);
    blocks_.at(b).hash = hash;
    by_hash_[hash] = b;
  }
  // The cached block with this hash, retained for the caller, or nullopt.
  std::optional<BlockId> lookup(std::uint64_t hash) {
    const auto it = by_hash_.find(hash);
    if (it == by_hash_.end()) return std::nullopt;
    retain(it->second);
    return it->second;
  }

  // The hash of a block given the hash of the blocks before it (0 for the first) and its tokens.
  static std::uint64_t chain_hash(std::uint64_t previous, std::span<const std::int32_t> tokens) {
    std::uint64_t h = previous ^ 0x9e3779b97f4a7c15ull;   // FNV-1a over the 32-bit tokens, seeded by the chain
    for (std::int32_t t : tokens) {
      for (int byte = 0; byte < 4; ++byte) {
        h ^= (std::uint32_t(t) >> (8 * byte)) & 0xffu;
        h *= 0x100000001b3ull;
      }
    }
    return h;
  }

 private:
  struct Block {
    std::uint32_t refs = 0;
    std::uint32_t stamp = 0;                 // bumped at each release; tells live queue entries from stale
    std::optional<std::uint64_t> hash;       // set while registered in the prefix cache
  };
  struct QueueEntry {
    BlockId block;
    std::uint32_t stamp;
  };

  std::size_t plane() const { return block_size_ * row_bytes_; }   // bytes of one layer's keys (or values)
  std::size_t block_bytes() const { return n_layers_ * 2 * plane(); }
  std::size_t offset(BlockId b, std::size_t layer) const { return b * block_bytes() + layer * 2 * plane(); }
  void forget_hash(BlockId b) {
    Block& blk = blocks_[b];
    if (blk.hash) {
      const auto it = by_hash_.find(*blk.hash);
      if (it != by_hash_.end() && it->second == b) by_hash_.erase(it);
      blk.hash.reset();
    }
  }

  std::size_t block_size_, n_layers_, row_bytes_;
  KVType type_;
  MemoryBuffer<std::byte> storage_;
  std::vector<Block> blocks_;
  std::deque<QueueEntry> free_queue_;
  std::size_t n_free_ = 0;
  bool recording_copies_ = false;
  std::vector<std::pair<BlockId, BlockId>> copies_;   // (from, to) since take_copies()
  std::size_t n_shared_ = 0, n_refs_ = 0;
  std::unordered_map<std::uint64_t, BlockId> by_hash_;
};

}  // namespace tinyllm

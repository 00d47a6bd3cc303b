#pragma once
// Where attention finds the keys and values of one sequence. The model only asks for a layer's
// KVLayerView (a block table), so a contiguous cache and the paged cache of serve/ both fit.
#include <cstddef>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/core/memory.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/model/config.hpp>

namespace tinyllm {

class KVCache {
 public:
  virtual ~KVCache() = default;
  virtual KVLayerView layer(std::size_t layer) = 0;
  virtual std::size_t capacity() const = 0;   // positions 0..capacity-1 can be stored
};

// One block per layer holding every position: the simplest cache, for one sequence. K and V are
// stored as F32 (the default) or F16, in host memory or in `mem`'s (a device backend's).
class ContiguousKVCache final : public KVCache {
 public:
  ContiguousKVCache(const ModelConfig& cfg, std::size_t capacity, KVType type = KVType::f32,
                    const MemoryResource* mem = nullptr)
      : capacity_(capacity), kv_dim_(cfg.kv_dim()), type_(type), k_(mem), v_(mem), k16_(mem), v16_(mem) {
    if (capacity == 0) throw Error("a KV cache needs room for at least one position", "ContiguousKVCache");
    if (type == KVType::f16) table(cfg.n_layers, k16_, v16_, k16_blocks_, v16_blocks_);
    else table(cfg.n_layers, k_, v_, k_blocks_, v_blocks_);
  }
  KVLayerView layer(std::size_t l) override {
    if (type_ == KVType::f16) return {.block_size = capacity_, .kv_dim = kv_dim_, .k_blocks_f16 = &k16_blocks_[l],
                                      .v_blocks_f16 = &v16_blocks_[l]};
    return {&k_blocks_[l], &v_blocks_[l], capacity_, kv_dim_};
  }
  std::size_t capacity() const override { return capacity_; }
  KVType type() const { return type_; }

 private:
  template <class T>
  void table(std::size_t n_layers, MemoryBuffer<T>& k, MemoryBuffer<T>& v, std::vector<T*>& k_blocks,
             std::vector<T*>& v_blocks) {
    k.resize(n_layers * capacity_ * kv_dim_);
    v.resize(n_layers * capacity_ * kv_dim_);
    for (std::size_t l = 0; l < n_layers; ++l) {
      k_blocks.push_back(k.data() + l * capacity_ * kv_dim_);   // [capacity, kv_dim]
      v_blocks.push_back(v.data() + l * capacity_ * kv_dim_);
    }
  }

  std::size_t capacity_, kv_dim_;
  KVType type_;
  MemoryBuffer<float> k_, v_;   // [n_layers, capacity, kv_dim] for F32 storage
  MemoryBuffer<F16> k16_, v16_; // ... or for F16
  std::vector<float*> k_blocks_, v_blocks_;
  std::vector<F16*> k16_blocks_, v16_blocks_;
};

}  // namespace tinyllm

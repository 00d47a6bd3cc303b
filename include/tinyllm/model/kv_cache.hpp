#pragma once
// Where attention finds the keys and values of one sequence. The model only asks for a layer's
// KVLayerView (a block table), so a contiguous cache and the paged cache of serve/ both fit.
#include <cstddef>
#include <vector>

#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/kernels/kv_view.hpp>
#include <tinyllm/model/config.hpp>

namespace tinyllm {

class KVCache {
 public:
  virtual ~KVCache() = default;
  virtual KVLayerView layer(std::size_t layer) = 0;
  virtual std::size_t capacity() const = 0;   // positions 0..capacity-1 can be stored
};

// One block per layer holding every position: the simplest cache, for one sequence.
class ContiguousKVCache final : public KVCache {
 public:
  ContiguousKVCache(const ModelConfig& cfg, std::size_t capacity)
      : capacity_(capacity), kv_dim_(cfg.kv_dim()),
        k_(cfg.n_layers * capacity * cfg.kv_dim()), v_(cfg.n_layers * capacity * cfg.kv_dim()),
        k_blocks_(cfg.n_layers), v_blocks_(cfg.n_layers) {
    if (capacity == 0) throw Error("a KV cache needs room for at least one position", "ContiguousKVCache");
    for (std::size_t l = 0; l < cfg.n_layers; ++l) {
      k_blocks_[l] = k_.data() + l * capacity * kv_dim_;   // [capacity, kv_dim]
      v_blocks_[l] = v_.data() + l * capacity * kv_dim_;
    }
  }
  KVLayerView layer(std::size_t l) override {
    return {&k_blocks_[l], &v_blocks_[l], capacity_, kv_dim_};
  }
  std::size_t capacity() const override { return capacity_; }

 private:
  std::size_t capacity_, kv_dim_;
  AlignedBuffer<float> k_, v_;   // [n_layers, capacity, kv_dim]
  std::vector<float*> k_blocks_, v_blocks_;
};

}  // namespace tinyllm

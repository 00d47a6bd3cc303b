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
// stored as F32 (the default), F16 or Q8_0, in host memory or in `mem`'s (a device backend's).
class ContiguousKVCache final : public KVCache {
 public:
  ContiguousKVCache(const ModelConfig& cfg, std::size_t capacity, KVType type = KVType::f32,
                    const MemoryResource* mem = nullptr)
      : capacity_(capacity), row_bytes_(kv_row_bytes(type, cfg.kv_dim())), kv_dim_(cfg.kv_dim()), type_(type),
        storage_(mem) {
    if (capacity == 0) throw Error("a KV cache needs room for at least one position", "ContiguousKVCache");
    storage_.resize(cfg.n_layers * 2 * capacity * row_bytes_);   // [n_layers][K, V][capacity][row_bytes]
    const auto fill = [&]<class T>(std::vector<T*>& k, std::vector<T*>& v) {
      for (std::size_t l = 0; l < cfg.n_layers; ++l) {
        std::byte* keys = storage_.data() + 2 * l * capacity * row_bytes_;
        k.push_back(reinterpret_cast<T*>(keys));
        v.push_back(reinterpret_cast<T*>(keys + capacity * row_bytes_));
      }
    };
    switch (type) {
      case KVType::f32: fill(k_, v_); break;
      case KVType::f16: fill(k16_, v16_); break;
      case KVType::q8_0: fill(k8_, v8_); break;
    }
  }
  // One block of `capacity` positions per layer.
  KVLayerView layer(std::size_t l) override {
    KVLayerView v{.block_size = capacity_, .kv_dim = kv_dim_};
    switch (type_) {
      case KVType::f32: v.k_blocks = &k_[l], v.v_blocks = &v_[l]; break;
      case KVType::f16: v.k_blocks_f16 = &k16_[l], v.v_blocks_f16 = &v16_[l]; break;
      case KVType::q8_0: v.k_blocks_q8 = &k8_[l], v.v_blocks_q8 = &v8_[l]; break;
    }
    return v;
  }
  std::size_t capacity() const override { return capacity_; }
  KVType type() const { return type_; }

 private:
  std::size_t capacity_, row_bytes_, kv_dim_;
  KVType type_;
  MemoryBuffer<std::byte> storage_;
  // [n_layers]: each layer's keys and values; only those of the storage type are filled.
  std::vector<float*> k_, v_;
  std::vector<F16*> k16_, v16_;
  std::vector<BlockQ8_0*> k8_, v8_;
};

}  // namespace tinyllm

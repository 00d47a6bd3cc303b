#pragma once
// The keys and values of one layer of one sequence, reached through a block table. A contiguous
// cache is one block of `capacity` tokens; a paged cache hands out many blocks in any order.
// Storage is F32 or F16 (half the memory; attention widens to f32 as it reads). A block-table
// entry may be null: a block released because no query can reach it any more (outside every
// layer's sliding window), which attention never reads.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <tinyllm/core/half.hpp>

namespace tinyllm {

enum class KVType : std::uint8_t { f32, f16 };

inline constexpr std::size_t kv_type_size(KVType t) { return t == KVType::f16 ? sizeof(F16) : sizeof(float); }
inline constexpr const char* kv_type_name(KVType t) { return t == KVType::f16 ? "f16" : "f32"; }

struct KVLayerView {
  float* const* k_blocks = nullptr;    // F32 storage: k_blocks[b]: [block_size, kv_dim]
  float* const* v_blocks = nullptr;    // v_blocks[b]: [block_size, kv_dim]
  std::size_t block_size = 0;          // tokens per block
  std::size_t kv_dim = 0;              // n_kv_heads * head_dim
  F16* const* k_blocks_f16 = nullptr;  // F16 storage instead (k_blocks and v_blocks stay null)
  F16* const* v_blocks_f16 = nullptr;

  KVType type() const { return k_blocks_f16 ? KVType::f16 : KVType::f32; }

  // Rows of F32 storage.
  float* key(std::size_t pos) const { return k_blocks[pos / block_size] + (pos % block_size) * kv_dim; }
  float* value(std::size_t pos) const { return v_blocks[pos / block_size] + (pos % block_size) * kv_dim; }
  // Rows of F16 storage.
  F16* key_f16(std::size_t pos) const { return k_blocks_f16[pos / block_size] + (pos % block_size) * kv_dim; }
  F16* value_f16(std::size_t pos) const { return v_blocks_f16[pos / block_size] + (pos % block_size) * kv_dim; }
  // The row as the storage type T (float or F16), for kernels templated on it.
  template <class T>
  const T* key_as(std::size_t pos) const {
    if constexpr (std::is_same_v<T, F16>) return key_f16(pos); else return key(pos);
  }
  template <class T>
  const T* value_as(std::size_t pos) const {
    if constexpr (std::is_same_v<T, F16>) return value_f16(pos); else return value(pos);
  }

  // Element i of a row as f32, whatever the storage (for the scalar reference).
  float key_at(std::size_t pos, std::size_t i) const {
    return type() == KVType::f16 ? to_f32(key_f16(pos)[i]) : key(pos)[i];
  }
  float value_at(std::size_t pos, std::size_t i) const {
    return type() == KVType::f16 ? to_f32(value_f16(pos)[i]) : value(pos)[i];
  }

  // Writes position pos: k and v are [kv_dim] f32, rounded to nearest even for F16 storage.
  void store(std::size_t pos, const float* k, const float* v) const {
    if (type() == KVType::f32) {
      std::copy_n(k, kv_dim, key(pos));
      std::copy_n(v, kv_dim, value(pos));
      return;
    }
    F16* kd = key_f16(pos);
    F16* vd = value_f16(pos);
    for (std::size_t i = 0; i < kv_dim; ++i) {
      kd[i].bits = f32_to_f16(k[i]);
      vd[i].bits = f32_to_f16(v[i]);
    }
  }
};

}  // namespace tinyllm

#pragma once
// The keys and values of one layer of one sequence, reached through a block table. A contiguous
// cache is one block of `capacity` tokens; a paged cache hands out many blocks in any order.
// Storage is F32, F16 (half the memory; attention widens to f32 as it reads) or Q8_0 (GGUF's
// 8-bit blocks of 32 values with an f16 scale: 34 bytes per 32 values, 1.88x the positions of F16
// in the same bytes; a row of kv_dim values is kv_dim / 32 blocks, so kv_dim must be a multiple of
// 32, while a head's slice of a row may start inside a block). A block-table
// entry may be null: a block released because no query can reach it any more (outside every
// layer's sliding window), which attention never reads.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <cmath>
#include <limits>
#include <string>
#include <string_view>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/quant/quantize.hpp>

namespace tinyllm {

enum class KVType : std::uint8_t { f32, f16, q8_0 };

inline constexpr const char* kv_type_name(KVType t) {
  return t == KVType::f16 ? "f16" : t == KVType::q8_0 ? "q8_0" : "f32";
}
// "f32", "f16" or "q8_0" (as llama.cpp's --cache-type-k names them); an Error names the choices.
inline KVType kv_type_from_name(std::string_view name) {
  for (const KVType t : {KVType::f32, KVType::f16, KVType::q8_0})
    if (name == kv_type_name(t)) return t;
  throw Error("K/V storage type '" + std::string(name) + "'", "kv_type_from_name", "f32, f16 or q8_0");
}
// Bytes of one row of kv_dim keys (or values); an Error where Q8_0 blocks cannot tile the row.
inline std::size_t kv_row_bytes(KVType t, std::size_t kv_dim) {
  if (t == KVType::q8_0 && kv_dim % kQK != 0)
    throw Error("Q8_0 K/V for rows of " + std::to_string(kv_dim) + " values (n_kv_heads * head_dim)", "KV cache",
                "rows of a multiple of 32 values, or f16/f32 K/V");
  return t == KVType::q8_0 ? kv_dim / kQK * sizeof(BlockQ8_0) : kv_dim * (t == KVType::f16 ? sizeof(F16) : sizeof(float));
}

struct KVLayerView {
  float* const* k_blocks = nullptr;    // F32 storage: k_blocks[b]: [block_size, kv_dim]
  float* const* v_blocks = nullptr;    // v_blocks[b]: [block_size, kv_dim]
  std::size_t block_size = 0;          // tokens per block
  std::size_t kv_dim = 0;              // n_kv_heads * head_dim
  F16* const* k_blocks_f16 = nullptr;  // F16 storage instead (k_blocks and v_blocks stay null)
  F16* const* v_blocks_f16 = nullptr;
  BlockQ8_0* const* k_blocks_q8 = nullptr;   // Q8_0 storage instead: [block_size, kv_dim / 32] blocks
  BlockQ8_0* const* v_blocks_q8 = nullptr;

  KVType type() const { return k_blocks_q8 ? KVType::q8_0 : k_blocks_f16 ? KVType::f16 : KVType::f32; }

  // Rows of F32 storage.
  float* key(std::size_t pos) const { return k_blocks[pos / block_size] + (pos % block_size) * kv_dim; }
  float* value(std::size_t pos) const { return v_blocks[pos / block_size] + (pos % block_size) * kv_dim; }
  // Rows of F16 storage.
  F16* key_f16(std::size_t pos) const { return k_blocks_f16[pos / block_size] + (pos % block_size) * kv_dim; }
  F16* value_f16(std::size_t pos) const { return v_blocks_f16[pos / block_size] + (pos % block_size) * kv_dim; }
  // Rows of Q8_0 storage.
  BlockQ8_0* key_q8(std::size_t pos) const { return k_blocks_q8[pos / block_size] + (pos % block_size) * (kv_dim / kQK); }
  BlockQ8_0* value_q8(std::size_t pos) const { return v_blocks_q8[pos / block_size] + (pos % block_size) * (kv_dim / kQK); }
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
    switch (type()) {
      case KVType::f16: return to_f32(key_f16(pos)[i]);
      case KVType::q8_0: return q8_value(key_q8(pos), i);
      default: return key(pos)[i];
    }
  }
  float value_at(std::size_t pos, std::size_t i) const {
    switch (type()) {
      case KVType::f16: return to_f32(value_f16(pos)[i]);
      case KVType::q8_0: return q8_value(value_q8(pos), i);
      default: return value(pos)[i];
    }
  }

  // Writes position pos: k and v are [kv_dim] f32, rounded to nearest even for F16 storage and
  // quantized by GGUF's Q8_0 rule for Q8_0 storage.
  void store(std::size_t pos, const float* k, const float* v) const {
    switch (type()) {
      case KVType::f32:
        std::copy_n(k, kv_dim, key(pos));
        std::copy_n(v, kv_dim, value(pos));
        return;
      case KVType::f16: {
        F16* kd = key_f16(pos);
        F16* vd = value_f16(pos);
        for (std::size_t i = 0; i < kv_dim; ++i) {
          kd[i].bits = f32_to_f16(k[i]);
          vd[i].bits = f32_to_f16(v[i]);
        }
        return;
      }
      case KVType::q8_0:
        store_q8(k, key_q8(pos));
        store_q8(v, value_q8(pos));
        return;
    }
  }

 private:
  static float q8_value(const BlockQ8_0* row, std::size_t i) {
    return f16_to_f32(row[i / kQK].d) * float(row[i / kQK].qs[i % kQK]);
  }
  // A block with a NaN or an infinity gets a NaN scale (every value it holds reads as NaN, as an F32
  // cache would propagate it) instead of undefined int8 conversions.
  void store_q8(const float* x, BlockQ8_0* row) const {
    for (std::size_t b = 0; b < kv_dim / kQK; ++b, x += kQK) {
      bool finite = true;
      for (int i = 0; i < kQK; ++i) finite = finite && std::isfinite(x[i]);
      if (finite) {
        quantize_row(x, row + b, kQK);
      } else {
        row[b].d = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
        std::fill_n(row[b].qs, kQK, std::int8_t(0));
      }
    }
  }
};

}  // namespace tinyllm

#pragma once
// The keys and values of one layer of one sequence, reached through a block table. A contiguous
// cache is one block of `capacity` tokens; a paged cache hands out many blocks in any order.
#include <cstddef>

namespace tinyllm {

struct KVLayerView {
  float* const* k_blocks = nullptr;  // k_blocks[b]: [block_size, kv_dim]
  float* const* v_blocks = nullptr;  // v_blocks[b]: [block_size, kv_dim]
  std::size_t block_size = 0;        // tokens per block
  std::size_t kv_dim = 0;            // n_kv_heads * head_dim

  float* key(std::size_t pos) const { return k_blocks[pos / block_size] + (pos % block_size) * kv_dim; }
  float* value(std::size_t pos) const { return v_blocks[pos / block_size] + (pos % block_size) * kv_dim; }
};

}  // namespace tinyllm

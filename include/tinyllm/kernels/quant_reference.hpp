#pragma once
// The specification of matmul with quantized weights: each weight row dequantized by GGUF's rules
// (quant/), then plain dot products with the float activations, accumulated in double. The fused
// kernel cpu::qmatmul is tested against it; it differs by its 8-bit rounding of the activations.
#include <cassert>
#include <cstddef>
#include <vector>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/quant/dequantize.hpp>

namespace tinyllm::ref {

// y[t, o] = sum_i dequantized w[o, i] * x[t, i].  w: [n_out, n_in] in blocks, x: [n_tok, n_in],
// y: [n_tok, n_out].
template <class Block>
void qmatmul(ThreadPool& /*pool*/, MatrixView<const Block> w, MatrixView<const float> x, MatrixView<float> y) {
  assert(w.cols == x.cols && y.rows == x.rows && y.cols == w.rows);
  std::vector<float> row(w.cols);
  for (std::size_t o = 0; o < w.rows; ++o) {
    dequantize_row(w.row(o), row.data(), w.cols);
    for (std::size_t t = 0; t < x.rows; ++t) {
      double sum = 0;
      for (std::size_t i = 0; i < w.cols; ++i) sum += double(row[i]) * x.row(t)[i];
      y.row(t)[o] = static_cast<float>(sum);
    }
  }
}

// The same with the weight type known at run time: n_out contiguous rows of n_in values.
inline void qmatmul(ThreadPool& pool, DType type, const void* w, std::size_t n_out, std::size_t n_in,
                    MatrixView<const float> x, MatrixView<float> y) {
  assert(x.cols == n_in && y.rows == x.rows && y.cols == n_out);
  (void)pool;
  const std::size_t row_bytes = tinyllm::row_bytes(type, n_in);
  std::vector<float> row(n_in);
  for (std::size_t o = 0; o < n_out; ++o) {
    dequantize_row(type, static_cast<const std::byte*>(w) + o * row_bytes, row.data(), n_in);
    for (std::size_t t = 0; t < x.rows; ++t) {
      double sum = 0;
      for (std::size_t i = 0; i < n_in; ++i) sum += double(row[i]) * x.row(t)[i];
      y.row(t)[o] = static_cast<float>(sum);
    }
  }
}

}  // namespace tinyllm::ref

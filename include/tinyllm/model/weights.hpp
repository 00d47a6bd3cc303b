#pragma once
// Weights as the model sees them: a matrix of a type known at run time, plus the one switch that
// picks the kernel instantiation for that type.
#include <cstddef>
#include <cstring>
#include <string>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/cpu/matmul.hpp>
#include <tinyllm/quant/dequantize.hpp>

namespace tinyllm {

// [rows, cols] row-major; rows = output features, cols = input features.
struct WeightMatrix {
  std::string name;
  DType type = DType::F32;
  const void* data = nullptr;
  std::size_t rows = 0, cols = 0;
};

// Types the kernels can multiply by today; loading checks every weight against this.
inline bool matmul_supports(DType t) { return t == DType::F32 || t == DType::F16; }

// y[n_tok, w.rows] = x[n_tok, w.cols] · wᵀ
inline void matmul(ThreadPool& pool, const WeightMatrix& w, MatrixView<const float> x, MatrixView<float> y) {
  switch (w.type) {
    case DType::F32:
      cpu::matmul(pool, MatrixView<const float>(static_cast<const float*>(w.data), w.rows, w.cols), x, y);
      return;
    case DType::F16:
      cpu::matmul(pool, MatrixView<const F16>(static_cast<const F16*>(w.data), w.rows, w.cols), x, y);
      return;
    default:
      throw Error("no matmul kernel for tensor type " + std::string(name(w.type)), w.name);
  }
}

// out[cols] = row `r` of w, as f32 (token embedding lookup).
inline void dequantize_row(const WeightMatrix& w, std::size_t r, float* out) {
  if (!can_dequantize(w.type))
    throw Error("cannot read rows of tensor type " + std::string(name(w.type)), w.name);
  dequantize_row(w.type, static_cast<const std::byte*>(w.data) + r * row_bytes(w.type, w.cols), out, w.cols);
}

}  // namespace tinyllm

#pragma once
// Weights as the model sees them: a matrix of a type known at run time, plus the one switch that
// picks the kernel instantiation for that type.
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>

#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/tensor.hpp>
#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/thread_pool.hpp>
#include <tinyllm/kernels/cpu/qmatmul.hpp>
#include <tinyllm/kernels/cpu/qpacked.hpp>
#include <tinyllm/quant/dequantize.hpp>

namespace tinyllm {

// [rows, cols] row-major; rows = output features, cols = input features.
struct WeightMatrix {
  std::string name;
  DType type = DType::F32;
  const void* data = nullptr;
  std::size_t rows = 0, cols = 0;
  // The same weights regrouped for the CPU kernels (cpu::pack_rows), when pack() made them;
  // matmul then reads these and `data` only serves row lookups (dequantize_row).
  std::shared_ptr<const AlignedBuffer<std::byte>> packed;
};

// Regroups w for the packed CPU kernels when this build has one for its type, on the pool's
// threads; returns whether it did. The model then holds both forms' bytes until the caller lets
// the original go.
inline bool pack(WeightMatrix& w, ThreadPool& pool) {
  if (w.packed || !cpu::can_pack(w.type) || w.rows == 0 || w.cols == 0 || w.cols % info(w.type).block_size != 0)
    return false;  // (a row that is not whole blocks gets cpu::qmatmul's Error instead)
  auto buf = std::make_shared<AlignedBuffer<std::byte>>(cpu::packed_bytes(w.type, w.rows, w.cols));
  pool.parallel_for((w.rows + cpu::kPackRows - 1) / cpu::kPackRows, [&](std::size_t g0, std::size_t g1) {
    cpu::pack_rows(w.type, w.data, w.rows, w.cols, buf->data(), g0, g1);
  });
  w.packed = std::move(buf);
  return true;
}

// Types the kernels can multiply by; loading checks every weight against this.
inline bool matmul_supports(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return true;
    default: return false;
  }
}

// y[n_tok, w.rows] = x[n_tok, w.cols] · wᵀ. Quantized weights multiply 8-bit-quantized
// activations (held in `scratch`, sized at load time) without dequantizing the matrix.
inline void matmul(ThreadPool& pool, const WeightMatrix& w, MatrixView<const float> x, MatrixView<float> y,
                   cpu::QuantScratch& scratch) {
  if (w.packed) return cpu::qmatmul_packed(pool, w.type, w.packed->data(), w.rows, w.cols, x, y, scratch);
  cpu::qmatmul(pool, w.type, w.data, w.rows, w.cols, x, y, scratch);
}

// out[cols] = row `r` of w, as f32 (token embedding lookup).
inline void dequantize_row(const WeightMatrix& w, std::size_t r, float* out) {
  if (!can_dequantize(w.type))
    throw Error("cannot read rows of tensor type " + std::string(name(w.type)), w.name);
  dequantize_row(w.type, static_cast<const std::byte*>(w.data) + r * row_bytes(w.type, w.cols), out, w.cols);
}

}  // namespace tinyllm

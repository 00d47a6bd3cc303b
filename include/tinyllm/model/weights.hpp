#pragma once
// Weights as the model sees them: a matrix of a type known at run time (and, optionally, the same
// matrix in a kernel backend's own layout), and the matmul that hands it to a backend, whose one
// switch on that type picks the kernel instantiation. kernels/cpu/backend.hpp lists a backend's members.
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
#include <tinyllm/quant/dequantize.hpp>

namespace tinyllm {

// [rows, cols] row-major; rows = output features, cols = input features.
struct WeightMatrix {
  std::string name;
  DType type = DType::F32;
  const void* data = nullptr;
  std::size_t rows = 0, cols = 0;
  // The same weights in the backend's own layout, when pack<Backend>() made them (the CPU's:
  // groups of rows interleaved, kernels/cpu/qpack.hpp); matmul then reads these and `data`
  // only serves row lookups (dequantize_row).
  std::shared_ptr<const AlignedBuffer<std::byte>> packed;
  // The memory `data` points into when the loader made the matrix (LoadOptions::quantize) rather
  // than found it in the file.
  std::shared_ptr<const AlignedBuffer<std::byte>> owned;
};

// Whether Backend keeps matrices of `type` in a layout of its own (pack_weights at load).
template <class Backend>
bool can_pack(DType type) {
  if constexpr (Backend::packs_weights) return Backend::can_pack(type);
  else return false;
}

// Regroups w into Backend's own layout when it has one for w's type, on the pool's threads;
// returns whether it did. The model then holds both forms' bytes until the caller lets the
// original go.
template <class Backend>
bool pack(WeightMatrix& w, ThreadPool& pool) {
  if constexpr (!Backend::packs_weights) {
    return false;
  } else {
    if (w.packed || !Backend::can_pack(w.type) || w.rows == 0 || w.cols == 0 || w.cols % info(w.type).block_size != 0)
      return false;  // (a row that is not whole blocks gets the matmul's Error instead)
    auto buf = std::make_shared<AlignedBuffer<std::byte>>(Backend::packed_bytes(w.type, w.rows, w.cols));
    pool.parallel_for((w.rows + Backend::kPackRows - 1) / Backend::kPackRows, [&](std::size_t g0, std::size_t g1) {
      Backend::pack_rows(w.type, w.data, w.rows, w.cols, buf->data(), g0, g1);
    });
    w.packed = std::move(buf);
    return true;
  }
}

// Types the kernels can multiply by; loading checks every weight against this.
inline bool matmul_supports(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return true;
    default: return false;
  }
}

// y[n_tok, w.rows] = x[n_tok, w.cols] · wᵀ on Backend, from its packed form when it made one.
// ws is the backend's per-model state (the CPU's: the activations quantized to 8 bits, sized at
// load time).
template <class Backend>
void matmul(ThreadPool& pool, const WeightMatrix& w, MatrixView<const float> x, MatrixView<float> y,
            typename Backend::Workspace& ws) {
  if constexpr (Backend::packs_weights) {
    if (w.packed) return Backend::matmul_packed(pool, w.type, w.packed->data(), w.rows, w.cols, x, y, ws);
  }
  Backend::matmul(pool, w.type, w.data, w.rows, w.cols, x, y, ws);
}

// out[cols] = row `r` of w, as f32 (token embedding lookup).
inline void dequantize_row(const WeightMatrix& w, std::size_t r, float* out) {
  if (!can_dequantize(w.type))
    throw Error("cannot read rows of tensor type " + std::string(name(w.type)), w.name);
  dequantize_row(w.type, static_cast<const std::byte*>(w.data) + r * row_bytes(w.type, w.cols), out, w.cols);
}

}  // namespace tinyllm

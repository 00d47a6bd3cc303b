#pragma once
// Non-owning views. MatrixView<T> is a typed row-major matrix; TensorView is an untyped view of a
// tensor whose element type is only known at run time (a weight read from a file).
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include <tinyllm/core/dtype.hpp>

namespace tinyllm {

// Row-major [rows, cols]. `cols` counts logical values; for a block type T (Q8_0 blocks, ...)
// a row holds cols / block_size blocks. `stride` is the distance between rows in units of T.
template <class T>
struct MatrixView {
  T* data = nullptr;
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::size_t stride = 0;

  MatrixView() = default;
  MatrixView(T* d, std::size_t r, std::size_t c) : data(d), rows(r), cols(c), stride(c) {}
  MatrixView(T* d, std::size_t r, std::size_t c, std::size_t s) : data(d), rows(r), cols(c), stride(s) {}
  template <class U>  // MatrixView<T> -> MatrixView<const T>
  MatrixView(const MatrixView<U>& o) : data(o.data), rows(o.rows), cols(o.cols), stride(o.stride) {}

  T* row(std::size_t i) const noexcept { return data + i * stride; }
  MatrixView rows_slice(std::size_t first, std::size_t count) const noexcept {
    return {row(first), count, cols, stride};
  }
};

// A tensor as a file describes it: dims[0] is the fastest-varying (GGUF's ne[0]).
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::array<std::uint64_t, 4> dims{1, 1, 1, 1};
  std::uint32_t n_dims = 0;
  const void* data = nullptr;
  std::size_t n_bytes = 0;

  std::uint64_t n_elements() const noexcept { return dims[0] * dims[1] * dims[2] * dims[3]; }
  // A 2-D weight [dims[1], dims[0]] viewed as rows of dims[0] values.
  std::size_t rows() const noexcept { return static_cast<std::size_t>(dims[1] * dims[2] * dims[3]); }
  std::size_t cols() const noexcept { return static_cast<std::size_t>(dims[0]); }
};

}  // namespace tinyllm

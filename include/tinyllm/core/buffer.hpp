#pragma once
// Cache-line aligned, uninitialised-by-default heap arrays for weights, activations and scratch.
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <type_traits>

#include <stdlib.h>
#include <sys/mman.h>

#include <tinyllm/core/error.hpp>

namespace tinyllm {

inline constexpr std::size_t kAlignment = 64;
inline constexpr std::size_t kHugePage = std::size_t(2) << 20;

template <class T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "AlignedBuffer holds plain data only");

 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t n) { resize(n); }

  // Discards the contents; new memory is zero-filled.
  void resize(std::size_t n) {
    if (n == size_) return;
    data_.reset();
    size_ = 0;
    if (n == 0) return;
    if (n > (SIZE_MAX - kAlignment) / sizeof(T)) throw Error("buffer size overflows", "AlignedBuffer");
    // Large buffers (weights, KV caches) start on a 2 MiB boundary and ask for transparent huge
    // pages: a stream through them then takes one TLB entry per 2 MiB instead of per 4 KiB.
    const std::size_t align = n * sizeof(T) >= kHugePage ? kHugePage : kAlignment;
    const std::size_t bytes = (n * sizeof(T) + kAlignment - 1) / kAlignment * kAlignment;
    void* p = nullptr;
    if (::posix_memalign(&p, align, bytes) != 0) p = nullptr;
    if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes", "AlignedBuffer");
#ifdef MADV_HUGEPAGE
    if (align == kHugePage) ::madvise(p, bytes, MADV_HUGEPAGE);
#endif
    std::memset(p, 0, bytes);
    data_.reset(static_cast<T*>(p));
    size_ = n;
  }

  T* data() noexcept { return data_.get(); }
  const T* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  T& operator[](std::size_t i) noexcept { return data_.get()[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_.get()[i]; }
  T* begin() noexcept { return data(); }
  T* end() noexcept { return data() + size_; }
  const T* begin() const noexcept { return data(); }
  const T* end() const noexcept { return data() + size_; }
  std::span<T> span() noexcept { return {data(), size_}; }
  std::span<const T> span() const noexcept { return {data(), size_}; }

 private:
  struct Free { void operator()(T* p) const noexcept { std::free(p); } };
  std::unique_ptr<T, Free> data_;
  std::size_t size_ = 0;
};

}  // namespace tinyllm

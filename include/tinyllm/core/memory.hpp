#pragma once
// Where a model's activations and KV cache live. Host memory is the default (a null resource);
// a backend with memory of its own (CUDA's device memory, kernels/cuda/backend.hpp) supplies a
// MemoryResource, and the buffers and caches made for that model allocate through it. Nothing
// here reads or writes another memory's bytes: only the resource's own functions touch them.
#include <cstddef>
#include <memory>
#include <string_view>
#include <utility>

#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/error.hpp>

namespace tinyllm {

struct MemoryResource {
  std::string_view name;                                      // "cuda"
  void* (*allocate)(std::size_t bytes);                       // zero-filled; throws Error when out of memory
  void (*release)(void* p) noexcept;
  void (*copy)(void* to, const void* from, std::size_t bytes);  // both in this memory
  void (*upload)(void* to, const void* host, std::size_t bytes);
};

// An array of T in host memory (mem == nullptr: an AlignedBuffer) or in mem's; resize discards
// the contents and zero-fills.
template <class T>
class MemoryBuffer {
 public:
  explicit MemoryBuffer(const MemoryResource* mem = nullptr) : mem_(mem) {}
  MemoryBuffer(std::size_t n, const MemoryResource* mem) : mem_(mem) { resize(n); }

  void resize(std::size_t n) {
    if (!mem_) return host_.resize(n);
    if (n == size_) return;
    device_.reset();
    size_ = 0;
    if (n == 0) return;
    if (n > SIZE_MAX / sizeof(T)) throw Error("buffer size overflows", "MemoryBuffer");
    device_ = std::unique_ptr<T, Release>(static_cast<T*>(mem_->allocate(n * sizeof(T))), Release{mem_});
    size_ = n;
  }
  T* data() noexcept { return mem_ ? device_.get() : host_.data(); }
  const T* data() const noexcept { return mem_ ? device_.get() : host_.data(); }
  std::size_t size() const noexcept { return mem_ ? size_ : host_.size(); }
  bool empty() const noexcept { return size() == 0; }
  const MemoryResource* memory() const noexcept { return mem_; }

 private:
  struct Release {
    const MemoryResource* mem;
    void operator()(T* p) const noexcept { mem->release(p); }
  };
  const MemoryResource* mem_;
  AlignedBuffer<T> host_;
  std::unique_ptr<T, Release> device_{nullptr, Release{nullptr}};
  std::size_t size_ = 0;
};

}  // namespace tinyllm

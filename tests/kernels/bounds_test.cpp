// Every CPU kernel on rows that end exactly where readable memory ends: a tail handled with a
// full-width load or store would touch the protected page after them and crash the test.
#include <tinyllm/kernels/cpu/cpu.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

// n values of T whose last one is the last byte before an inaccessible page.
template <class T>
class GuardedArray {
 public:
  explicit GuardedArray(std::size_t n) : n_(n) {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    const std::size_t data_pages = (n * sizeof(T) + page - 1) / page;
    bytes_ = (data_pages + 1) * page;
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    base_ = static_cast<std::uint8_t*>(p);
    REQUIRE(mprotect(base_ + data_pages * page, page, PROT_NONE) == 0);
    data_ = reinterpret_cast<T*>(base_ + data_pages * page - n * sizeof(T));
    for (std::size_t i = 0; i < n; ++i) data_[i] = T{};
  }
  GuardedArray(const GuardedArray&) = delete;
  GuardedArray& operator=(const GuardedArray&) = delete;
  ~GuardedArray() { munmap(base_, bytes_); }
  T* data() { return data_; }
  T& operator[](std::size_t i) { return data_[i]; }

 private:
  std::size_t n_, bytes_ = 0;
  std::uint8_t* base_ = nullptr;
  T* data_ = nullptr;
};

void fill(float* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) p[i] = 0.01f * float(i % 17) - 0.05f;
}

}  // namespace

TEST_CASE("element-wise kernels and rope touch nothing past the end of their rows") {
  test::for_each_target([&] {
    for (std::size_t n : {1, 3, 5, 15, 17, 33, 100}) {
      CAPTURE(n);
      GuardedArray<float> x(n), w(n), out(n);
      fill(x.data(), n);
      fill(w.data(), n);
      cpu::rmsnorm(x.data(), w.data(), out.data(), n, 1e-5f);
      cpu::softmax(x.data(), n);
      cpu::silu(x.data(), n);
      cpu::swiglu(x.data(), w.data(), n);
    }
    for (std::size_t head_dim : {2, 6, 10, 34})
      for (RopeStyle style : {RopeStyle::adjacent_pairs, RopeStyle::half_split}) {
        CAPTURE(head_dim);
        const auto inv_freq = rope_inv_freq(head_dim, 10000.0f);
        GuardedArray<float> x(3 * head_dim);
        fill(x.data(), 3 * head_dim);
        cpu::rope(x.data(), 3, head_dim, 5, inv_freq.data(), style);
      }
  });
}

TEST_CASE("cpu::matmul touches nothing past the end of w, x or y") {
  test::for_each_target([&] {
    ThreadPool pool(2);
    for (std::size_t n_in : {1, 7, 17, 1030})
      for (std::size_t n_tok : {1, 3, 7}) {
        CAPTURE(n_in);
        CAPTURE(n_tok);
        const std::size_t n_out = 9;
        GuardedArray<float> w(n_out * n_in), x(n_tok * n_in), y(n_tok * n_out);
        GuardedArray<F16> wh(n_out * n_in);
        fill(w.data(), n_out * n_in);
        fill(x.data(), n_tok * n_in);
        for (std::size_t i = 0; i < n_out * n_in; ++i) wh[i] = F16{f32_to_f16(w[i])};
        cpu::matmul(pool, MatrixView<const float>(w.data(), n_out, n_in), MatrixView<const float>(x.data(), n_tok, n_in),
                    MatrixView<float>(y.data(), n_tok, n_out));
        cpu::matmul(pool, MatrixView<const F16>(wh.data(), n_out, n_in), MatrixView<const float>(x.data(), n_tok, n_in),
                    MatrixView<float>(y.data(), n_tok, n_out));
      }
  });
}

TEST_CASE("cpu::attention touches nothing past the end of q, out or the KV blocks") {
  test::for_each_target([&] {
    ThreadPool pool(2);
    for (std::size_t head_dim : {1, 5, 17, 40}) {
      CAPTURE(head_dim);
      const std::size_t n_heads = 4, n_kv_heads = 2, kv_dim = n_kv_heads * head_dim, n_ctx = 6;
      GuardedArray<float> k(n_ctx * kv_dim), v(n_ctx * kv_dim), q(2 * n_heads * head_dim), out(2 * n_heads * head_dim),
          scratch(pool.size() * cpu::attention_scratch_cols(n_heads, n_kv_heads, head_dim));
      fill(k.data(), n_ctx * kv_dim);
      fill(v.data(), n_ctx * kv_dim);
      fill(q.data(), 2 * n_heads * head_dim);
      float* k_blocks[] = {k.data()};
      float* v_blocks[] = {v.data()};
      const KVLayerView kv{k_blocks, v_blocks, n_ctx, kv_dim};
      const std::vector<std::int32_t> positions{5, 2};
      cpu::attention(pool, MatrixView<const float>(q.data(), 2, n_heads * head_dim), positions, kv, n_heads, n_kv_heads,
                     head_dim, AttentionParams{.scale = 0.5f}, MatrixView<float>(out.data(), 2, n_heads * head_dim),
                     MatrixView<float>(scratch.data(), pool.size(), cpu::attention_scratch_cols(n_heads, n_kv_heads, head_dim)));
    }
  });
}

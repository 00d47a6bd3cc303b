// Every cuda:: kernel (kernels/cuda/cuda.hpp) against the scalar reference (kernels/reference.hpp,
// kernels/quant_reference.hpp) on random inputs with odd sizes. Built only with TINYLLM_CUDA=ON;
// each case reports itself skipped where no CUDA device is usable.
//
// Tolerances (per output, S = sum_i |w_i x_i|, the magnitudes of the terms of a dot product):
//  - matmul, quantized weights: the matvec path rounds x to 8 bits per chunk of 32, at most
//    1/2 sum_i |w_i| d(i) with d(i) = max|x| / 127 over i's chunk (kernels/cuda/block_dot.hpp);
//    the GEMM path rounds x and the dequantized weights to F16, at most 2^-10 S; plus 1e-5 S for
//    float sums. The bound is the sum of both, whichever path the batch size takes.
//  - matmul, F32 / F16 weights: 2^-10 S (x in F16 on the GEMM path) + 1e-5 S; BF16 weights: 2^-8 S.
//  - rmsnorm, rope, the activations, softmax, embed: a few float roundings, 1e-5 relative (with an
//    absolute floor scaled by the inputs where results cancel).
//  - attention: a convex combination of values: 5e-5 max|v|.
//  - store_kv, gather_rows: exact (F16 storage: the same round-to-nearest-even as the host).
#include <tinyllm/kernels/cuda/cuda.hpp>
#include <tinyllm/kernels/quant_reference.hpp>
#include <tinyllm/kernels/reference.hpp>
#include <tinyllm/quant/dequantize.hpp>
#include <tinyllm/quant/quantize.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

// Ends the test case as skipped (CTest's SKIP_REGULAR_EXPRESSION) without a usable device.
#define TINYLLM_REQUIRE_CUDA_DEVICE()                                                   \
  do {                                                                                  \
    std::string why;                                                                    \
    if (cuda::usable_devices(&why) == 0) {                                              \
      MESSAGE("TINYLLM_SKIP: no usable CUDA device (" << why << ")");                   \
      return;                                                                           \
    }                                                                                   \
  } while (0)

namespace {

// Device memory holding a copy of a host vector.
class DeviceArray {
 public:
  explicit DeviceArray(std::size_t bytes) : bytes_(bytes), data_(cuda::alloc(bytes)) {}
  template <class T>
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size() * sizeof(T)) {
    cuda::copy_to_device(data_, host.data(), bytes_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cuda::release(data_); }

  template <class T = void>
  T* get() const { return static_cast<T*>(data_); }
  template <class T>
  std::vector<T> to_host() const {
    std::vector<T> host(bytes_ / sizeof(T));
    cuda::copy_to_host(host.data(), data_, bytes_);
    return host;
  }

 private:
  std::size_t bytes_;
  void* data_;
};

struct ContextDeleter {
  void operator()(cuda::Context* ctx) const noexcept { cuda::destroy_context(ctx); }
};
using ContextPtr = std::unique_ptr<cuda::Context, ContextDeleter>;
ContextPtr make_context(std::size_t max_tokens = 64, std::size_t max_in = 4096) {
  return ContextPtr(cuda::create_context(max_tokens, max_in));
}

std::vector<float> gaussian(std::size_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> g(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = g(rng);
  return v;
}

// Weights of `type` [n_out, n_in] as a file stores them, quantized from Gaussian values.
std::vector<unsigned char> random_weights(DType type, std::size_t n_out, std::size_t n_in, std::mt19937& rng) {
  const std::vector<float> values = gaussian(n_out * n_in, rng, 0.05f);
  std::vector<unsigned char> bytes(n_out * row_bytes(type, n_in));
  for (std::size_t o = 0; o < n_out; ++o)
    quantize_row(type, values.data() + o * n_in, bytes.data() + o * row_bytes(type, n_in), n_in);
  return bytes;
}

std::vector<float> dequantized(DType type, const std::vector<unsigned char>& w, std::size_t n_out, std::size_t n_in) {
  std::vector<float> out(n_out * n_in);
  for (std::size_t o = 0; o < n_out; ++o)
    dequantize_row(type, w.data() + o * row_bytes(type, n_in), out.data() + o * n_in, n_in);
  return out;
}

bool is_quantized(DType type) { return type != DType::F32 && type != DType::F16 && type != DType::BF16; }

void check_matmul(DType type, std::size_t n_out, std::size_t n_in, std::size_t n_tok, std::mt19937& rng) {
  CAPTURE(name(type));
  CAPTURE(n_out);
  CAPTURE(n_in);
  CAPTURE(n_tok);
  auto ctx = make_context(64, 4096);
  const std::size_t x_stride = n_in + 3, y_stride = n_out + 5;
  const auto w = random_weights(type, n_out, n_in, rng);
  std::vector<float> x = gaussian(n_tok * x_stride, rng);
  for (std::size_t t = 0; t < n_tok; ++t) x[t * x_stride + rng() % n_in] *= 20.0f;   // outliers
  DeviceArray w_dev(w), x_dev(x), y_dev(std::vector<float>(n_tok * y_stride, -1.0f));
  cuda::matmul(*ctx, type, w_dev.get(), n_out, n_in, x_dev.get<float>(), x_stride, n_tok, y_dev.get<float>(), y_stride);
  const auto y = y_dev.to_host<float>();

  ThreadPool pool(1);
  std::vector<float> ref(n_tok * n_out);
  ref::qmatmul(pool, type, w.data(), n_out, n_in, MatrixView<const float>{x.data(), n_tok, n_in, x_stride},
               MatrixView<float>{ref.data(), n_tok, n_out});
  const std::vector<float> wf = dequantized(type, w, n_out, n_in);
  const double f16_rel = type == DType::BF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -10);
  for (std::size_t t = 0; t < n_tok; ++t) {
    std::vector<double> chunk_d(n_in / 32 + 1, 0.0);
    for (std::size_t i = 0; i < n_in; ++i)
      chunk_d[i / 32] = std::max(chunk_d[i / 32], std::fabs(double(x[t * x_stride + i])) / 127);
    for (std::size_t o = 0; o < n_out; ++o) {
      double magnitude = 0, rounding = 0;
      for (std::size_t i = 0; i < n_in; ++i) {
        magnitude += std::fabs(double(wf[o * n_in + i]) * x[t * x_stride + i]);
        rounding += 0.5 * std::fabs(double(wf[o * n_in + i])) * chunk_d[i / 32];
      }
      const double bound = (is_quantized(type) ? rounding : 0.0) + (f16_rel + 1e-5) * magnitude + 1e-30;
      const double err = std::fabs(double(y[t * y_stride + o]) - ref[t * n_out + o]);
      if (!(err <= bound)) {
        CAPTURE(t);
        CAPTURE(o);
        CAPTURE(bound);
        REQUIRE(y[t * y_stride + o] == doctest::Approx(ref[t * n_out + o]));
      }
    }
    for (std::size_t o = n_out; o < y_stride; ++o) REQUIRE(y[t * y_stride + o] == -1.0f);
  }
}

void check_close(const std::vector<float>& got, const std::vector<float>& want, double rel, double abs_floor) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(double(got[i]) - want[i]) <= rel * std::fabs(want[i]) + abs_floor)) {
      CAPTURE(i);
      REQUIRE(got[i] == doctest::Approx(want[i]));
    }
}

}  // namespace

TEST_CASE("cuda: device, memory and errors") {
  TINYLLM_REQUIRE_CUDA_DEVICE();
  MESSAGE(cuda::describe_device());
  CHECK(cuda::alloc(0) == nullptr);
  std::vector<int> host(1000);
  std::iota(host.begin(), host.end(), 0);
  DeviceArray a(host), b(host.size() * sizeof(int));
  cuda::copy_on_device(b.get(), a.get(), host.size() * sizeof(int));
  CHECK(b.to_host<int>() == host);
  cuda::zero(b.get(), host.size() * sizeof(int));
  CHECK(b.to_host<int>() == std::vector<int>(host.size(), 0));
  CHECK_THROWS_AS(cuda::alloc(std::size_t(1) << 62), Error);

  auto ctx = make_context();
  CHECK(cuda::matmul_supports(DType::Q4_K));
  CHECK_FALSE(cuda::matmul_supports(DType::Q2_K));
  CHECK_THROWS_AS(cuda::matmul(*ctx, DType::Q2_K, nullptr, 1, 256, nullptr, 256, 1, nullptr, 1), Error);
  CHECK_THROWS_AS(cuda::matmul(*ctx, DType::Q4_K, nullptr, 1, 100, nullptr, 100, 1, nullptr, 1), Error);
}

TEST_CASE("cuda::matmul: quantized weights, 1..8, 9, 16, 33 and 40 tokens, odd sizes") {
  TINYLLM_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(1);
  for (const DType type : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    const std::size_t block = info(type).block_size;
    const std::vector<std::size_t> n_ins = block == 32 ? std::vector<std::size_t>{32, 96, 800, 4096}
                                                       : std::vector<std::size_t>{256, 768, 2816};
    for (const std::size_t n_in : n_ins)
      for (const std::size_t n_out : {1u, 7u, 129u})
        for (const std::size_t n_tok : {1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u, 9u, 16u, 33u, 40u})
          if (n_tok <= 9 || n_out == 129) check_matmul(type, n_out, n_in, n_tok, rng);
  }
  check_matmul(DType::Q4_K, 513, 4096, 64, rng);   // more rows than one GEMM tile of some shapes
}

TEST_CASE("cuda::matmul: F32, F16 and BF16 weights, matvec and GEMM batches") {
  TINYLLM_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(2);
  for (const DType type : {DType::F32, DType::F16, DType::BF16})
    for (const std::size_t n_in : {1u, 33u, 100u, 1000u})
      for (const std::size_t n_out : {1u, 7u, 130u})
        for (const std::size_t n_tok : {1u, 3u, 8u, 9u, 33u, 40u}) check_matmul(type, n_out, n_in, n_tok, rng);
}

TEST_CASE("cuda::rmsnorm_rows and gather_rows") {
  TINYLLM_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(3);
  auto ctx = make_context();
  for (const std::size_t n : {1u, 31u, 4099u})
    for (const std::size_t rows : {1u, 5u, 33u}) {
      CAPTURE(n);
      CAPTURE(rows);
      const std::size_t stride = n + 2;
      const auto x = gaussian(rows * stride, rng, 3.0f), w = gaussian(n, rng);
      DeviceArray x_dev(x), w_dev(w), out_dev(rows * stride * sizeof(float));
      std::vector<float> want(rows * n), got(rows * n);
      for (std::size_t r = 0; r < rows; ++r) ref::rmsnorm(x.data() + r * stride, w.data(), want.data() + r * n, n, 1e-5f);
      cuda::rmsnorm_rows(*ctx, x_dev.get<float>(), stride, w_dev.get<float>(), out_dev.get<float>(), stride, rows, n, 1e-5f);
      auto out = out_dev.to_host<float>();
      for (std::size_t r = 0; r < rows; ++r) std::copy_n(out.begin() + r * stride, n, got.begin() + r * n);
      check_close(got, want, 1e-5, 1e-6);
      // In place.
      cuda::rmsnorm_rows(*ctx, x_dev.get<float>(), stride, w_dev.get<float>(), x_dev.get<float>(), stride, rows, n, 1e-5f);
      out = x_dev.to_host<float>();
      for (std::size_t r = 0; r < rows; ++r) std::copy_n(out.begin() + r * stride, n, got.begin() + r * n);
      check_close(got, want, 1e-5, 1e-6);
    }

  const std::size_t cols = 77, src_stride = 80, dst_stride = 79;
  const auto src = gaussian(10 * src_stride, rng);
  const std::vector<std::size_t> rows = {9, 0, 3, 3, 7};
  DeviceArray src_dev(src), dst_dev(rows.size() * dst_stride * sizeof(float));
  cuda::gather_rows(*ctx, src_dev.get<float>(), src_stride, rows, dst_dev.get<float>(), dst_stride, cols);
  const auto dst = dst_dev.to_host<float>();
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t c = 0; c < cols; ++c) REQUIRE(dst[i * dst_stride + c] == src[rows[i] * src_stride + c]);
}

TEST_CASE("cuda: add_rows, add_bias, swiglu, geglu, softcap, softmax_rows") {
  TINYLLM_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(4);
  auto ctx = make_context();
  const std::size_t rows = 6, cols = 1001, stride = 1003;
  {
    const auto x = gaussian(rows * stride, rng), y = gaussian(rows * stride, rng), bias = gaussian(cols, rng);
    DeviceArray x_dev(x), y_dev(y), bias_dev(bias);
    cuda::add_rows(*ctx, x_dev.get<float>(), stride, y_dev.get<float>(), stride, rows, cols, 0.5f);
    cuda::add_bias(*ctx, x_dev.get<float>(), stride, rows, cols, bias_dev.get<float>());
    const auto got = x_dev.to_host<float>();
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t c = 0; c < stride; ++c) {
        const double want = c < cols ? double(x[r * stride + c]) + 0.5 * y[r * stride + c] + bias[c] : x[r * stride + c];
        REQUIRE(std::fabs(got[r * stride + c] - want) <= 1e-6 * (std::fabs(x[r * stride + c]) + std::fabs(y[r * stride + c]) + std::fabs(bias[c % cols])));
      }
  }
  const std::size_t n = 10007;
  const auto gate = gaussian(n, rng, 4.0f), up = gaussian(n, rng);
  std::vector<float> floor_terms(n);
  for (std::size_t i = 0; i < n; ++i) floor_terms[i] = std::fabs(gate[i] * up[i]);
  for (const bool gelu : {false, true}) {
    CAPTURE(gelu);
    DeviceArray g_dev(gate), u_dev(up);
    if (gelu) cuda::geglu(*ctx, g_dev.get<float>(), u_dev.get<float>(), n);
    else cuda::swiglu(*ctx, g_dev.get<float>(), u_dev.get<float>(), n);
    std::vector<float> want = gate;
    if (gelu) ref::geglu(want.data(), up.data(), n); else ref::swiglu(want.data(), up.data(), n);
    const auto got = g_dev.to_host<float>();
    for (std::size_t i = 0; i < n; ++i) REQUIRE(std::fabs(got[i] - want[i]) <= 1e-5 * std::fabs(want[i]) + 1e-6 * floor_terms[i]);
  }
  {
    const auto x = gaussian(n, rng, 40.0f);
    DeviceArray x_dev(x);
    cuda::softcap(*ctx, x_dev.get<float>(), n, 30.0f);
    std::vector<float> want = x;
    ref::softcap(want.data(), n, 30.0f);
    check_close(x_dev.to_host<float>(), want, 1e-5, 1e-6);
  }
  for (const std::size_t softmax_cols : {1u, 5u, 1001u, 32000u}) {
    CAPTURE(softmax_cols);
    const std::size_t softmax_stride = softmax_cols + 1;
    const auto x = gaussian(rows * softmax_stride, rng, 5.0f);
    DeviceArray x_dev(x);
    cuda::softmax_rows(*ctx, x_dev.get<float>(), softmax_stride, rows, softmax_cols);
    const auto got_all = x_dev.to_host<float>();
    std::vector<float> got, want;
    for (std::size_t r = 0; r < rows; ++r) {
      std::vector<float> row(x.begin() + r * softmax_stride, x.begin() + r * softmax_stride + softmax_cols);
      ref::softmax(row.data(), softmax_cols);
      want.insert(want.end(), row.begin(), row.end());
      got.insert(got.end(), got_all.begin() + r * softmax_stride, got_all.begin() + r * softmax_stride + softmax_cols);
    }
    check_close(got, want, 1e-5, 1e-9);
  }
}

TEST_CASE("cuda::rope_rows: both styles, large positions") {
  TINYLLM_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(5);
  auto ctx = make_context();
  const std::size_t n_heads = 5, head_dim = 96, stride = n_heads * head_dim + 4;
  const std::vector<std::int32_t> positions = {0, 1, 17, 4095, 100000, 3};
  const std::size_t rows = positions.size();
  const std::vector<std::int32_t> tokens(rows, 0);
  const std::vector<std::uint32_t> views(rows, 0);
  cuda::begin_step(*ctx, tokens, positions, views);
  const auto inv_freq = rope_inv_freq(head_dim, 10000.0f);
  DeviceArray freq_dev(inv_freq);
  for (const RopeStyle style : {RopeStyle::adjacent_pairs, RopeStyle::half_split}) {
    const auto x = gaussian(rows * stride, rng);
    DeviceArray x_dev(x);
    cuda::rope_rows(*ctx, x_dev.get<float>(), stride, rows, n_heads, head_dim, freq_dev.get<float>(), style);
    const auto got = x_dev.to_host<float>();
    std::vector<float> want = x;
    for (std::size_t t = 0; t < rows; ++t)
      ref::rope(want.data() + t * stride, n_heads, head_dim, std::size_t(positions[t]), inv_freq.data(), style);
    for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(std::fabs(got[i] - want[i]) <= 1e-5 * (std::fabs(x[i]) + 1.0));
  }
}

TEST_CASE("cuda::embed: every table type, repeated tokens, a scale") {
  TINYLLM_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(6);
  auto ctx = make_context();
  const std::size_t vocab = 37;
  const std::vector<std::int32_t> tokens = {5, 0, 36, 5, 17};
  const std::vector<std::int32_t> positions = {0, 1, 2, 3, 4};
  const std::vector<std::uint32_t> views(tokens.size(), 0);
  cuda::begin_step(*ctx, tokens, positions, views);
  for (const DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    CAPTURE(name(type));
    const std::size_t n_embd = info(type).block_size == 256 ? 512 : 96;
    const auto table = random_weights(type, vocab, n_embd, rng);
    const auto values = dequantized(type, table, vocab, n_embd);
    DeviceArray table_dev(table), x_dev(tokens.size() * n_embd * sizeof(float));
    cuda::embed(*ctx, type, table_dev.get(), n_embd, 1.5f, x_dev.get<float>());
    const auto got = x_dev.to_host<float>();
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      const float* row = values.data() + std::size_t(tokens[t]) * n_embd;
      const float row_max = std::fabs(*std::max_element(row, row + n_embd, [](float a, float b) { return std::fabs(a) < std::fabs(b); }));
      for (std::size_t i = 0; i < n_embd; ++i)
        REQUIRE(std::fabs(got[t * n_embd + i] - 1.5 * row[i]) <= 1e-6 * 1.5 * row_max);
    }
  }
}

namespace {

// A paged KV layer for several sequences on the device: every block of every sequence in one
// pool, in shuffled order; the same bytes mirrored on the host for ref::attention.
struct PagedLayer {
  KVType type;
  std::size_t block_size, kv_dim, elem, block_bytes;
  std::vector<std::vector<std::size_t>> k_slots, v_slots;   // per sequence: pool slot of each block
  std::unique_ptr<DeviceArray> pool;
  std::vector<unsigned char> host;                         // the pool's bytes, after sync_to_host
  std::vector<std::vector<float*>> k32, v32;               // block tables (device or host addresses)
  std::vector<std::vector<F16*>> k16, v16;

  PagedLayer(KVType t, std::size_t bs, std::size_t dim, const std::vector<std::size_t>& lengths, std::mt19937& rng)
      : type(t), block_size(bs), kv_dim(dim), elem(kv_row_bytes(t, 1)), block_bytes(bs * kv_row_bytes(t, dim)) {
    std::size_t n_slots = 0;
    for (const std::size_t len : lengths) n_slots += 2 * ((len + bs - 1) / bs);
    std::vector<std::size_t> order(n_slots);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    std::size_t at = 0;
    for (const std::size_t len : lengths) {
      k_slots.emplace_back(), v_slots.emplace_back();
      for (std::size_t b = 0; b < (len + bs - 1) / bs; ++b) {
        k_slots.back().push_back(order[at++]);
        v_slots.back().push_back(order[at++]);
      }
    }
    // NaN everywhere (0xff bytes), so a kernel reading an unwritten row shows it.
    pool = std::make_unique<DeviceArray>(std::vector<unsigned char>(n_slots * block_bytes, 0xff));
  }

  // The views, with block pointers into `base` (the device pool or its host mirror); a block
  // whose slot is in `released` becomes null.
  std::vector<KVLayerView> views(unsigned char* base, const std::vector<std::vector<bool>>& released = {}) {
    k32.clear(), v32.clear(), k16.clear(), v16.clear();
    std::vector<KVLayerView> out;
    for (std::size_t s = 0; s < k_slots.size(); ++s) {
      k32.emplace_back(), v32.emplace_back(), k16.emplace_back(), v16.emplace_back();
      for (std::size_t b = 0; b < k_slots[s].size(); ++b) {
        const bool gone = !released.empty() && released[s][b];
        unsigned char* k = gone ? nullptr : base + k_slots[s][b] * block_bytes;
        unsigned char* v = gone ? nullptr : base + v_slots[s][b] * block_bytes;
        k32.back().push_back(reinterpret_cast<float*>(k)), v32.back().push_back(reinterpret_cast<float*>(v));
        k16.back().push_back(reinterpret_cast<F16*>(k)), v16.back().push_back(reinterpret_cast<F16*>(v));
      }
    }
    for (std::size_t s = 0; s < k_slots.size(); ++s) {
      KVLayerView view;
      view.block_size = block_size, view.kv_dim = kv_dim;
      if (type == KVType::f16) view.k_blocks_f16 = k16[s].data(), view.v_blocks_f16 = v16[s].data();
      else view.k_blocks = k32[s].data(), view.v_blocks = v32[s].data();
      out.push_back(view);
    }
    return out;
  }
  std::vector<KVLayerView> device_views(const std::vector<std::vector<bool>>& released = {}) {
    return views(pool->get<unsigned char>(), released);
  }
  std::vector<KVLayerView> host_views() {
    host = pool->to_host<unsigned char>();
    return views(host.data());
  }
};

struct AttentionCase {
  KVType type;
  std::size_t block_size, n_heads, n_kv_heads, head_dim;
  AttentionParams params;
  std::vector<std::size_t> lengths;      // each sequence's cache length after the step
  std::vector<std::size_t> step_tokens;  // the step's tokens of each sequence: its last positions
  bool release_outside_window = false;
};

void check_attention(const AttentionCase& c, std::mt19937& rng) {
  CAPTURE(kv_type_name(c.type));
  CAPTURE(c.block_size);
  CAPTURE(c.n_heads);
  CAPTURE(c.n_kv_heads);
  CAPTURE(c.head_dim);
  CAPTURE(c.params.window);
  CAPTURE(c.params.softcap);
  auto ctx = make_context(4096, 4096);
  const std::size_t kv_dim = c.n_kv_heads * c.head_dim, q_dim = c.n_heads * c.head_dim;
  PagedLayer layer(c.type, c.block_size, kv_dim, c.lengths, rng);

  // Every position of every sequence written by store_kv in one step.
  std::vector<std::int32_t> positions;
  std::vector<std::uint32_t> view_of_token;
  for (std::size_t s = 0; s < c.lengths.size(); ++s)
    for (std::size_t p = 0; p < c.lengths[s]; ++p) positions.push_back(std::int32_t(p)), view_of_token.push_back(std::uint32_t(s));
  const std::size_t n_all = positions.size(), k_stride = kv_dim + 1;
  const auto k = gaussian(n_all * k_stride, rng), v = gaussian(n_all * k_stride, rng);
  {
    DeviceArray k_dev(k), v_dev(v);
    cuda::begin_step(*ctx, std::vector<std::int32_t>(n_all, 0), positions, view_of_token);
    cuda::set_kv_views(*ctx, layer.device_views());
    cuda::store_kv(*ctx, k_dev.get<float>(), k_stride, v_dev.get<float>(), k_stride, n_all);
  }
  const std::vector<KVLayerView> host_views = layer.host_views();
  float v_max = 0;
  for (std::size_t t = 0; t < n_all; ++t) {
    const KVLayerView& view = host_views[view_of_token[t]];
    const auto p = std::size_t(positions[t]);
    for (std::size_t i = 0; i < kv_dim; ++i) {
      const float kw = k[t * k_stride + i], vw = v[t * k_stride + i];
      const float kr = c.type == KVType::f16 ? f16_to_f32(f32_to_f16(kw)) : kw;
      const float vr = c.type == KVType::f16 ? f16_to_f32(f32_to_f16(vw)) : vw;
      REQUIRE(view.key_at(p, i) == kr);
      REQUIRE(view.value_at(p, i) == vr);
      v_max = std::max(v_max, std::fabs(vr));
    }
  }

  // The step: the last step_tokens[s] positions of each sequence.
  positions.clear(), view_of_token.clear();
  std::vector<std::vector<bool>> released(c.lengths.size());
  for (std::size_t s = 0; s < c.lengths.size(); ++s) {
    const std::size_t first = c.lengths[s] - c.step_tokens[s];
    for (std::size_t p = first; p < c.lengths[s]; ++p) positions.push_back(std::int32_t(p)), view_of_token.push_back(std::uint32_t(s));
    released[s].assign(layer.k_slots[s].size(), false);
    if (c.release_outside_window) {
      const std::size_t reach = attention_start(first, c.params.window);
      for (std::size_t b = 0; b < released[s].size(); ++b) released[s][b] = (b + 1) * c.block_size <= reach;
    }
  }
  const std::size_t rows = positions.size(), q_stride = q_dim + 2, out_stride = q_dim + 3;
  const auto q = gaussian(rows * q_stride, rng);
  DeviceArray q_dev(q), out_dev(std::vector<float>(rows * out_stride, -7.0f));
  cuda::begin_step(*ctx, std::vector<std::int32_t>(rows, 1), positions, view_of_token);
  cuda::set_kv_views(*ctx, layer.device_views(released));
  cuda::attention(*ctx, q_dev.get<float>(), q_stride, rows, c.n_heads, c.n_kv_heads, c.head_dim, c.params,
                  out_dev.get<float>(), out_stride);
  const auto out = out_dev.to_host<float>();

  ThreadPool pool(1);
  std::size_t row0 = 0;
  for (std::size_t s = 0; s < c.lengths.size(); ++s) {
    const std::size_t n = c.step_tokens[s];
    std::vector<float> want(n * q_dim), scratch(c.lengths[s]);
    ref::attention(pool, MatrixView<const float>{q.data() + row0 * q_stride, n, q_dim, q_stride},
                   std::span<const std::int32_t>(positions.data() + row0, n), host_views[s], c.n_heads, c.n_kv_heads,
                   c.head_dim, c.params, MatrixView<float>{want.data(), n, q_dim},
                   MatrixView<float>{scratch.data(), 1, scratch.size()});
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t i = 0; i < out_stride; ++i) {
        const float got = out[(row0 + t) * out_stride + i];
        if (i >= q_dim) {
          REQUIRE(got == -7.0f);
        } else if (!(std::fabs(got - want[t * q_dim + i]) <= 5e-5 * v_max)) {
          CAPTURE(s);
          CAPTURE(t);
          CAPTURE(i);
          REQUIRE(got == doctest::Approx(want[t * q_dim + i]));
        }
      }
    row0 += n;
  }
}

}  // namespace

TEST_CASE("cuda::store_kv and cuda::attention: paged, shuffled blocks, GQA, windows, softcap, F32 and F16") {
  TINYLLM_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(7);
  for (const KVType type : {KVType::f32, KVType::f16}) {
    // Decoding: one token per sequence.
    check_attention({type, 16, 8, 2, 64, {0.125f, 0, 0}, {1, 37, 300}, {1, 1, 1}}, rng);
    // Prefill beside decoding, 33 new tokens; head_dim 40 (two lanes' worth, partly filled).
    check_attention({type, 16, 6, 3, 40, {0.158f, 0, 0}, {33, 70, 5}, {33, 1, 5}}, rng);
    // Sliding window with the blocks before it released, and soft-capping.
    check_attention({type, 8, 4, 4, 128, {0.088f, 50, 30.0f}, {200, 49, 51}, {3, 1, 2}, true}, rng);
    // A long context, split across many blocks of the grid; head_dim 256, block size 1.
    check_attention({type, 1, 2, 1, 256, {0.0625f, 0, 0}, {3000}, {1}}, rng);
    check_attention({type, 32, 16, 2, 128, {0.088f, 0, 50.0f}, {5000, 1200}, {1, 2}}, rng);
  }
}

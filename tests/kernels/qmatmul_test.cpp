// cpu::qmatmul (quantized weights, activations quantized to 8 bits) against ref::qmatmul
// (dequantize each weight row, then float dot products) on random blocks of every supported type,
// many shapes, strided views and 1, 2 and 3 threads; and the activation quantizer on its own.
//
// Tolerance. The kernel computes sum_i w_i * d_b(i) * q_i exactly in integers, where the
// activation x_i is rounded to q_i = round(x_i / d_b), d_b = max|x| / 127 over its block of 32
// (Q8_0, Q4_0) or 256 (K-quants); so |x_i - d_b q_i| <= d_b / 2 and, per output,
//   |qmatmul - ref| <= 1/2 * sum_i |w_i| * d_b(i)  +  kFloatRel * sum_i |w_i| * |x_i|,
// the second term for the float scaling and summing of the per-block integer sums (measured
// below ~2e-7; 1e-5 is the stated bound). The first is at most sum_i |w_i| * max|x| / 254.
// A second, tighter check compares with sum_i w_i * d_b q_i computed in double from the same
// quantized activations: only float rounding (kFloatRel) separates them.
#include <tinyllm/kernels/cpu/cpu.hpp>
#include <tinyllm/kernels/cpu/per_target.hpp>  // the activation quantizer, for the static target
#include <tinyllm/kernels/quant_reference.hpp>
#include <tinyllm/quant/dequantize.hpp>
#include <tinyllm/quant/quantize.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <type_traits>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

#ifndef QMATMUL_TEST_PREFIX
#define QMATMUL_TEST_PREFIX "cpu::qmatmul"
#endif

namespace {

constexpr double kFloatRel = 1e-5;

template <class Block> constexpr DType kDType = test::kBlockDType<Block>;
using test::random_scale;

// Random bytes, but sane f16 scales (any sign: the kernels must not assume one).
template <class Block>
Block random_block(std::mt19937& rng) {
  Block b;
  auto* bytes = reinterpret_cast<std::uint8_t*>(&b);
  for (std::size_t i = 0; i < sizeof b; ++i) bytes[i] = static_cast<std::uint8_t>(rng());
  b.d = random_scale(rng);
  if constexpr (requires { b.dmin; }) b.dmin = random_scale(rng);
  return b;
}

// A block whose scales are NaN: placed in the row padding, it poisons any result that reads it.
template <class Block>
Block poison_block() {
  Block b;
  std::memset(&b, 0x55, sizeof b);
  b.d = 0x7e00;
  if constexpr (requires { b.dmin; }) b.dmin = 0x7e00;
  return b;
}

// [rows, cols] weights; each row holds cols / block_values blocks and `pad` poisoned ones after.
template <class Block>
struct Weights {
  std::size_t rows, cols, stride;
  std::vector<Block> data;
  Weights(std::size_t r, std::size_t c, std::size_t pad, std::mt19937& rng)
      : rows(r), cols(c), stride(c / cpu::block_values<Block> + pad), data(r * stride, poison_block<Block>()) {
    for (std::size_t o = 0; o < rows; ++o)
      for (std::size_t b = 0; b < cols / cpu::block_values<Block>; ++b) data[o * stride + b] = random_block<Block>(rng);
  }
  MatrixView<const Block> view() const { return {data.data(), rows, cols, stride}; }
  // The rows without their padding, as a file holds them.
  std::vector<Block> contiguous() const {
    std::vector<Block> v(rows * (cols / cpu::block_values<Block>));
    for (std::size_t o = 0; o < rows; ++o)
      std::copy_n(data.data() + o * stride, cols / cpu::block_values<Block>, v.data() + o * (cols / cpu::block_values<Block>));
    return v;
  }
  std::vector<float> dequantized_row(std::size_t o) const {
    std::vector<float> v(cols);
    dequantize_row(data.data() + o * stride, v.data(), cols);
    return v;
  }
};

// A [rows, cols] float matrix with row stride cols + pad; padding holds NaN.
struct Padded {
  std::size_t rows, cols, stride;
  std::vector<float> data;
  Padded(std::size_t r, std::size_t c, std::size_t pad)
      : rows(r), cols(c), stride(c + pad), data(r * (c + pad) + 64, std::numeric_limits<float>::quiet_NaN()) {}
  float& at(std::size_t r, std::size_t c) { return data[r * stride + c]; }
  float at(std::size_t r, std::size_t c) const { return data[r * stride + c]; }
  MatrixView<float> view() { return {data.data(), rows, cols, stride}; }
  MatrixView<const float> cview() const { return {data.data(), rows, cols, stride}; }
};

// cpu::qmatmul (the dispatched entry point) of w's rows by x.
template <class Block>
void qmatmul(ThreadPool& pool, const Weights<Block>& w, MatrixView<const float> x, MatrixView<float> y,
             cpu::QuantScratch& scratch) {
  const std::vector<Block> rows = w.contiguous();
  cpu::qmatmul(pool, kDType<Block>, rows.data(), w.rows, w.cols, x, y, scratch);
}

// Activations with some structure: a per-token magnitude, an outlier now and then, and a zero
// token and a zero block when there is room for them.
Padded random_activations(std::size_t n_tok, std::size_t n_in, std::size_t pad, std::mt19937& rng) {
  Padded x(n_tok, n_in, pad);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (std::size_t t = 0; t < n_tok; ++t) {
    const float scale = std::ldexp(1.0f, int(rng() % 9) - 4);
    for (std::size_t i = 0; i < n_in; ++i) x.at(t, i) = scale * u(rng);
    if (rng() % 3 == 0) x.at(t, rng() % n_in) = scale * 40.0f;
    if (n_in >= 64 && rng() % 4 == 0) std::fill_n(&x.at(t, 32), 32, 0.0f);
  }
  if (n_tok >= 3) std::fill_n(&x.at(1, 0), n_in, 0.0f);
  return x;
}

bool same_bits(const Padded& a, const Padded& b) {
  for (std::size_t r = 0; r < a.rows; ++r)
    if (std::memcmp(&a.data[r * a.stride], &b.data[r * b.stride], a.cols * sizeof(float)) != 0) return false;
  return true;
}

bool padding_untouched(const Padded& y) {
  for (std::size_t r = 0; r < y.rows; ++r)
    for (std::size_t c = y.cols; c < y.stride; ++c)
      if (!std::isnan(y.at(r, c))) return false;
  return true;
}

struct Worst {
  double vs_ref = 0;        // |got - ref| / tolerance
  double vs_quantized = 0;  // |got - sum w * xhat| / (sum |w * xhat|)
};

template <class Block>
void check_shape(std::size_t n_out, std::size_t n_in, std::size_t n_tok, std::size_t pad, std::mt19937& rng,
                 const std::vector<ThreadPool*>& pools, cpu::QuantScratch& scratch, Worst& worst) {
  CAPTURE(n_out);
  CAPTURE(n_in);
  CAPTURE(n_tok);
  CAPTURE(pad);
  constexpr std::size_t kBlock = cpu::ActFormat<Block>::block;
  const Weights<Block> w(n_out, n_in, pad % 3, rng);
  const Padded x = random_activations(n_tok, n_in, (pad * 7 + 1) % 17, rng);
  Padded want(n_tok, n_out, 0);
  ref::qmatmul(*pools[0], w.view(), x.cview(), want.view());

  // The activations as the kernel sees them, and the per-value rounding bound d_b / 2.
  cpu::QuantScratch own;
  const cpu::QuantizedActs a = cpu::HWY_NAMESPACE::quantize_activations<Block>(*pools[0], x.cview(), own);
  std::vector<double> xhat(n_tok * n_in), half_step(n_tok * n_in);
  for (std::size_t t = 0; t < n_tok; ++t)
    for (std::size_t i = 0; i < n_in; ++i) {
      const double d = a.d_at(t, i / kBlock);
      xhat[t * n_in + i] = d * a.q_at(t, i);
      half_step[t * n_in + i] = d / 2;
    }

  Padded first(n_tok, n_out, pad % 5);
  for (std::size_t p = 0; p < pools.size(); ++p) {
    CAPTURE(pools[p]->size());
    Padded got(n_tok, n_out, pad % 5);
    qmatmul(*pools[p], w, x.cview(), got.view(), scratch);
    CHECK(padding_untouched(got));
    if (p == 0) {
      first = got;
    } else {
      CHECK(same_bits(got, first));  // the thread count does not change the arithmetic
    }
  }

  // The same weights packed once (cpu/qpack.hpp), as models hold them: the kernels pack the
  // file's layout the same way group by group, so the same bits on any thread count.
  std::optional<Padded> packed;
  {
    const std::vector<Block> rows = w.contiguous();
    AlignedBuffer<std::byte> p(cpu::packed_bytes(kDType<Block>, n_out, n_in));
    cpu::pack_rows(kDType<Block>, rows.data(), n_out, n_in, p.data(), 0, (n_out + 15) / 16);
    for (std::size_t i = 0; i < pools.size(); ++i) {
      Padded got(n_tok, n_out, pad % 5);
      cpu::qmatmul_packed(*pools[i], kDType<Block>, p.data(), n_out, n_in, x.cview(), got.view(), scratch);
      CHECK(padding_untouched(got));
      CHECK(same_bits(got, first));
      if (i == 0) packed = got;
    }
  }

  const auto check_result = [&](const Padded& result, const char* layout) {
    CAPTURE(layout);
    bool within = true;
    for (std::size_t o = 0; o < n_out; ++o) {
      const std::vector<float> row = w.dequantized_row(o);
      for (std::size_t t = 0; t < n_tok; ++t) {
        double rounding = 0, magnitude = 0, exact_q = 0, magnitude_q = 0;
        for (std::size_t i = 0; i < n_in; ++i) {
          const double wi = row[i], xi = x.at(t, i), xq = xhat[t * n_in + i];
          rounding += std::abs(wi) * half_step[t * n_in + i];
          magnitude += std::abs(wi * xi);
          exact_q += wi * xq;
          magnitude_q += std::abs(wi * xq);
        }
        const double got = result.at(t, o);
        const double tol = rounding * (1 + 1e-6) + kFloatRel * magnitude + 1e-30;
        const double err = std::abs(got - want.at(t, o));
        const double err_q = std::abs(got - exact_q);
        if (!(err <= tol) || !(err_q <= kFloatRel * magnitude_q + 1e-30)) {
          if (within) {
            CAPTURE(o);
            CAPTURE(t);
            CAPTURE(got);
            CAPTURE(want.at(t, o));
            CAPTURE(exact_q);
            CAPTURE(tol);
            CHECK(err <= tol);
            CHECK(err_q <= kFloatRel * magnitude_q + 1e-30);
          }
          within = false;
        }
        worst.vs_ref = std::max(worst.vs_ref, err / tol);
        worst.vs_quantized = std::max(worst.vs_quantized, err_q / std::max(magnitude_q, 1e-30));
      }
    }
    CHECK(within);
  };
  check_result(first, "file");
  if (packed) check_result(*packed, "packed");
}

template <class Block>
void check_many_shapes() {
  ThreadPool pool1(1), pool2(2), pool3(3);
  std::mt19937 rng(4321);
  constexpr bool kLegacy = cpu::block_values<Block> == 32;
  // Block multiples, odd counts, and past the kernels' 512-value panels (1056 = 2 * 512 + one block).
  const std::vector<std::size_t> n_ins =
      kLegacy ? std::vector<std::size_t>{32, 64, 96, 160, 1056, 4096} : std::vector<std::size_t>{256, 512, 768, 1280, 4096};
  const std::size_t n_outs[] = {1, 3, 17, 33};
  const std::size_t n_toks[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 33, 64};
  cpu::QuantScratch scratch(64, 4096);
  const std::size_t capacity = scratch.capacity_bytes();
  Worst worst;
  std::size_t k = 0;
  for (std::size_t n_in : n_ins)
    for (std::size_t n_out : n_outs)
      for (std::size_t n_tok : n_toks) {
        if (n_in == 4096 && n_tok > 13 && n_out > 17) continue;  // the double reference is slow
        const std::size_t pad = (k++ * 5) % 19;
        std::vector<ThreadPool*> pools{&pool1};
        if (k % 3 == 0) pools = {&pool1, &pool2, &pool3};
        check_shape<Block>(n_out, n_in, n_tok, pad, rng, pools, scratch, worst);
      }
  CHECK(scratch.capacity_bytes() == capacity);  // reserved once: no call allocated
  MESSAGE(name(kDType<Block>) << ": worst |qmatmul - ref| / tolerance = " << worst.vs_ref
                              << ", worst |qmatmul - sum w * xhat| / sum |w * xhat| = " << worst.vs_quantized);
}

}  // namespace

TEST_CASE(QMATMUL_TEST_PREFIX " Q8_0 equals ref::qmatmul within the activation rounding") {
  test::for_each_target([&] { check_many_shapes<BlockQ8_0>(); });
}
TEST_CASE(QMATMUL_TEST_PREFIX " Q4_0 equals ref::qmatmul within the activation rounding") {
  test::for_each_target([&] { check_many_shapes<BlockQ4_0>(); });
}
TEST_CASE(QMATMUL_TEST_PREFIX " Q4_K equals ref::qmatmul within the activation rounding") {
  test::for_each_target([&] { check_many_shapes<BlockQ4_K>(); });
}
TEST_CASE(QMATMUL_TEST_PREFIX " Q5_K equals ref::qmatmul within the activation rounding") {
  test::for_each_target([&] { check_many_shapes<BlockQ5_K>(); });
}
TEST_CASE(QMATMUL_TEST_PREFIX " Q6_K equals ref::qmatmul within the activation rounding") {
  test::for_each_target([&] { check_many_shapes<BlockQ6_K>(); });
}

// A token's outputs do not depend on the batch it is in: one token alone (plain activation rows),
// a few (the decode kernel) and many (the panel kernel) give the same bits.
TEST_CASE(QMATMUL_TEST_PREFIX " a token gets the same bits alone, in a small batch and in a large one") {
  test::for_each_target([&] {
    ThreadPool pool(2);
    cpu::QuantScratch scratch;
    std::mt19937 rng(11);
    auto check = [&]<class Block>(std::type_identity<Block>) {
      CAPTURE(name(kDType<Block>));
      const std::size_t n_in = 1536, n_out = 37;
      const Weights<Block> w(n_out, n_in, 1, rng);
      const Padded x = random_activations(40, n_in, 3, rng);
      Padded all(40, n_out, 0);
      qmatmul(pool, w, x.cview(), all.view(), scratch);
      for (std::size_t first : {0, 5, 17, 39})
        for (std::size_t n : {1, 3, 8, 13, 20}) {
          if (first + n > 40) continue;
          CAPTURE(first);
          CAPTURE(n);
          Padded some(n, n_out, 0);
          qmatmul(pool, w, MatrixView<const float>(&x.data[first * x.stride], n, n_in, x.stride), some.view(), scratch);
          bool same = true;
          for (std::size_t t = 0; t < n; ++t) same = same && std::memcmp(&some.at(t, 0), &all.at(first + t, 0), n_out * 4) == 0;
          CHECK(same);
        }
    };
    check(std::type_identity<BlockQ8_0>{});
    check(std::type_identity<BlockQ4_0>{});
    check(std::type_identity<BlockQ4_K>{});
    check(std::type_identity<BlockQ5_K>{});
    check(std::type_identity<BlockQ6_K>{});
  });
}

// Larger magnitudes: all quants at their extremes (saturating intermediate sums would show).
TEST_CASE(QMATMUL_TEST_PREFIX " extreme quants and activations") {
  test::for_each_target([&] {
    ThreadPool pool(2);
    cpu::QuantScratch scratch;
    auto run = [&]<class Block>(std::type_identity<Block>, std::uint8_t fill) {
      CAPTURE(name(kDType<Block>));
      CAPTURE(int(fill));
      const std::size_t n_in = 512, n_out = 20;
      for (std::size_t n_tok : {1, 9}) {
        std::mt19937 rng(7);
        Weights<Block> w(n_out, n_in, 0, rng);
        for (auto& b : w.data) {
          const std::uint16_t d = b.d;
          std::memset(&b, fill, sizeof b);
          b.d = d;
          if constexpr (requires { b.dmin; }) b.dmin = 0x2000;
        }
        Padded x(n_tok, n_in, 0);
        for (std::size_t t = 0; t < n_tok; ++t)
          for (std::size_t i = 0; i < n_in; ++i) x.at(t, i) = (t % 2 ? -1.0f : 1.0f) * ((i % 3) == 0 ? 1.0f : 0.999f);
        Padded want(n_tok, n_out, 0), got(n_tok, n_out, 0);
        ref::qmatmul(pool, w.view(), x.cview(), want.view());
        qmatmul(pool, w, x.cview(), got.view(), scratch);
        for (std::size_t t = 0; t < n_tok; ++t)
          for (std::size_t o = 0; o < n_out; ++o) {
            const std::vector<float> row = w.dequantized_row(o);
            double bound = 0;
            for (std::size_t i = 0; i < n_in; ++i) bound += std::abs(row[i]) * (0.5 / 127 + kFloatRel);
            CHECK(std::abs(got.at(t, o) - want.at(t, o)) <= bound);
          }
      }
    };
    for (std::uint8_t fill : {0x00, 0xFF, 0x80, 0x7F}) {
      run(std::type_identity<BlockQ8_0>{}, fill);
      run(std::type_identity<BlockQ4_0>{}, fill);
      run(std::type_identity<BlockQ4_K>{}, fill);
      run(std::type_identity<BlockQ5_K>{}, fill);
      run(std::type_identity<BlockQ6_K>{}, fill);
    }
  });
}

TEST_CASE(QMATMUL_TEST_PREFIX " F32 weights go to cpu::matmul; other types and partial blocks throw") {
  test::for_each_target([&] {
    ThreadPool pool(2);
    cpu::QuantScratch scratch(5, 512);
    std::mt19937 rng(99);
    // F32 weights go to cpu::matmul.
    std::vector<float> wf(3 * 64, 0.5f);
    const Padded x = random_activations(2, 64, 0, rng);
    Padded y(2, 3, 0), want(2, 3, 0);
    cpu::qmatmul(pool, DType::F32, wf.data(), 3, 64, x.cview(), y.view(), scratch);
    cpu::matmul(pool, MatrixView<const float>(wf.data(), 3, 64), x.cview(), want.view());
    CHECK(same_bits(y, want));

    std::vector<std::uint8_t> raw(1 << 16);
    Padded y2(2, 2, 0);
    CHECK_THROWS_AS(cpu::qmatmul(pool, DType::Q4_1, raw.data(), 2, 64, x.cview(), y2.view(), scratch), Error);
    CHECK_THROWS_AS(cpu::qmatmul(pool, DType::Q8_K, raw.data(), 2, 256, x.cview(), y2.view(), scratch), Error);
    CHECK_THROWS_AS(cpu::qmatmul(pool, DType::Q4_K, raw.data(), 2, 64, x.cview(), y2.view(), scratch), Error);
  });
}

// The quantizer on its own: d = max|x| / 127 per block, |x - d q| <= d / 2, the sums, and
// agreement with quant/'s Q8_0 and Q8_K quantization.
// Tokens one by one (group 1) and interleaved by 8 as the prefill kernel reads them.
template <class Block>
void check_quantizer(std::size_t group) {
  CAPTURE(group);
  constexpr std::size_t kBlock = cpu::ActFormat<Block>::block, n_in = 1024, n_tok = 13;
  ThreadPool pool(2);
  std::mt19937 rng(11);
  const Padded x = random_activations(n_tok, n_in, 3, rng);
  cpu::QuantScratch scratch(n_tok, n_in);
  const cpu::QuantizedActs a = cpu::HWY_NAMESPACE::quantize_activations<Block>(pool, x.cview(), scratch, group);
  CHECK(scratch.capacity_bytes() == cpu::QuantScratch::bytes_for(n_tok, n_in));
  for (std::size_t t = 0; t < n_tok; ++t) {
    CAPTURE(t);
    for (std::size_t b = 0; b < n_in / kBlock; ++b) {
      float amax = 0;
      for (std::size_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::abs(x.at(t, kBlock * b + i)));
      const float d = a.d_at(t, b);
      CHECK(d == amax / 127.0f);
      for (std::size_t i = kBlock * b; i < kBlock * (b + 1); ++i) {
        const int q = a.q_at(t, i);
        CHECK(std::abs(q) <= 127);
        CHECK(std::abs(double(x.at(t, i)) - double(d) * q) <= double(d) * (0.5 + 1e-5));
      }
    }
    // The per-unit aux values.
    for (std::size_t g = 0; g < n_in / 16; ++g) {
      int s = 0;
      for (std::size_t i = 16 * g; i < 16 * g + 16; ++i) s += a.q_at(t, i);
      if constexpr (std::is_same_v<Block, BlockQ6_K>) CHECK(a.aux_at(t, g) == -32 * s);
    }
    for (std::size_t g = 0; g < n_in / 32; ++g) {
      int s = 0;
      for (std::size_t i = 32 * g; i < 32 * g + 32; ++i) s += a.q_at(t, i);
      if constexpr (std::is_same_v<Block, BlockQ8_0>) CHECK(a.aux_at(t, g) == -128 * s);
      if constexpr (std::is_same_v<Block, BlockQ4_0>) CHECK(a.aux_at(t, g) == -8 * s);
      if constexpr (std::is_same_v<Block, BlockQ4_K> || std::is_same_v<Block, BlockQ5_K>)
        CHECK(std::int16_t(a.aux_at(t, g / 2) >> (g % 2 == 0 ? 0 : 16)) == s);  // two int16 halves
    }
    // quant/'s 8-bit formats: Q8_0 rounds x * (1 / d) as we do (halves away from zero rather
    // than to even: random data has no exact halves), so the quants are equal; Q8_K uses the
    // signed extreme and its own reciprocal, so each value is within one step.
    if constexpr (kBlock == 32) {
      std::vector<BlockQ8_0> q8(n_in / 32);
      quantize_row(&x.data[t * x.stride], q8.data(), n_in);
      for (std::size_t i = 0; i < n_in; ++i) CHECK(q8[i / 32].qs[i % 32] == a.q_at(t, i));
    } else {
      std::vector<BlockQ8_K> q8(n_in / 256);
      quantize_row(&x.data[t * x.stride], q8.data(), n_in);
      for (std::size_t i = 0; i < n_in; ++i) {
        const float d = a.d_at(t, i / 256);
        CHECK(std::abs(double(q8[i / 256].d) * q8[i / 256].qs[i % 256] - double(d) * a.q_at(t, i)) <= d * 1.0001);
      }
    }
  }
}

TEST_CASE(QMATMUL_TEST_PREFIX " activation quantizer: scales and rounding and sums agree with quant/") {
  for (std::size_t group : {1, 8}) {
    check_quantizer<BlockQ8_0>(group);
    check_quantizer<BlockQ4_0>(group);
    check_quantizer<BlockQ4_K>(group);
    check_quantizer<BlockQ5_K>(group);
    check_quantizer<BlockQ6_K>(group);
  }
}

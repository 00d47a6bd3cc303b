// Quantization: each format's error stays within its known bound, ggml's closed-form rules hold
// exactly where they are closed-form, and degenerate rows (zero, constant) come back intact.
#include <tinyllm/quant/quant.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

std::vector<float> gaussian_row(std::size_t n, std::uint32_t seed, float sigma = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> x(n);
  for (float& v : x) v = normal(g);
  return x;
}

std::vector<std::uint8_t> quantize(DType type, const std::vector<float>& x) {
  std::vector<std::uint8_t> q(quantized_bytes(type, x.size()));
  quantize_row(type, x.data(), q.data(), x.size());
  return q;
}

std::vector<float> dequantize(DType type, const std::vector<std::uint8_t>& q, std::size_t n) {
  std::vector<float> y(n);
  dequantize_row(type, q.data(), y.data(), n);
  return y;
}

std::vector<float> round_trip(DType type, const std::vector<float>& x) {
  return dequantize(type, quantize(type, x), x.size());
}

// RMS of the error relative to the RMS of the input.
double relative_rms_error(const std::vector<float>& x, const std::vector<float>& y) {
  double err = 0, ref = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    err += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    ref += double(x[i]) * x[i];
  }
  return std::sqrt(err / ref);
}

template <class Block>
const Block* blocks_of(const std::vector<std::uint8_t>& q) {
  return reinterpret_cast<const Block*>(q.data());
}

}  // namespace

TEST_CASE("F16 and BF16 quantize each value with f32_to_f16 and f32_to_bf16") {
  std::vector<float> x = gaussian_row(4096, 11, 100.0f);
  for (float v : {0.0f, -0.0f, 65504.0f, 65520.0f, 1e-8f, -3e-5f, 1e30f,
                  std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                  std::numeric_limits<float>::denorm_min()})
    x.push_back(v);
  std::vector<F16> h(x.size());
  std::vector<BF16> b(x.size());
  quantize_row(x.data(), h.data(), x.size());
  quantize_row(DType::BF16, x.data(), b.data(), x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    REQUIRE(h[i].bits == f32_to_f16(x[i]));
    REQUIRE(b[i].bits == f32_to_bf16(x[i]));
  }
  CHECK(quantized_bytes(DType::F16, 10) == 20);
  CHECK(quantized_bytes(DType::BF16, 10) == 20);
}

// Q8_0: d = amax / 127, q = round(x / d). Stored, d is rounded to f16 (relative error <= 2^-11),
// so |x - d16 * q| <= d / 2 + |q| * |d - d16|.
TEST_CASE("Q8_0: per-value error at most d/2 plus the f16 rounding of d, and re-quantizes to itself") {
  const auto x = gaussian_row(32 * 512, 21);
  const auto q = quantize(DType::Q8_0, x);
  const auto y = dequantize(DType::Q8_0, q, x.size());
  const auto* blocks = blocks_of<BlockQ8_0>(q);
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[32 * b + i]));
    const float d = amax / 127, d16 = f16_to_f32(blocks[b].d);
    CHECK(blocks[b].d == f32_to_f16(d));
    for (int i = 0; i < 32; ++i) {
      const float bound = d / 2 + std::abs(blocks[b].qs[i]) * std::fabs(d - d16) + 1e-7f * amax;
      REQUIRE(std::fabs(x[32 * b + i] - y[32 * b + i]) <= bound);
    }
  }
  const double rel = relative_rms_error(x, y);
  MESSAGE("Q8_0 relative RMS error on N(0,1): " << rel);
  CHECK(rel < 0.0065);  // measured 0.0054
  // A dequantized row is exactly representable: quantizing it again gives the same bytes.
  CHECK(quantize(DType::Q8_0, y) == q);
}

// Q4_0 (ggml): d = m / -8 where m is the value of largest magnitude, q = min(15, floor(x/d + 8.5)),
// value = d16 * (q - 8). So m itself is level 0 (exact up to the f16 rounding of d), every value is
// within d/2 of its level, except those above 7.5 d (only values of the opposite sign to m, up to
// -m = 8 d), which clamp to level 15 and are within |d|.
TEST_CASE("Q4_0: ggml's rule, largest value at level 0, error at most d/2 (|d| where clamped)") {
  const auto x = gaussian_row(32 * 512, 31);
  const auto q = quantize(DType::Q4_0, x);
  const auto y = dequantize(DType::Q4_0, q, x.size());
  const auto* blocks = blocks_of<BlockQ4_0>(q);
  int clamped = 0;
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    const float* xb = &x[32 * b];
    const float m = *std::max_element(xb, xb + 32, [](float a, float c) {
      return std::fabs(a) < std::fabs(c);
    });
    const float d = m / -8, d16 = f16_to_f32(blocks[b].d);
    CHECK(blocks[b].d == f32_to_f16(d));
    const float slack = 8 * std::fabs(d - d16) + 1e-6f * std::fabs(m);
    for (int i = 0; i < 32; ++i) {
      const int level = i < 16 ? blocks[b].qs[i] & 15 : blocks[b].qs[i - 16] >> 4;
      const float err = std::fabs(xb[i] - y[32 * b + i]);
      if (xb[i] == m) REQUIRE(level == 0);
      if (xb[i] / d > 7.5f) {
        ++clamped;
        REQUIRE(level == 15);
        REQUIRE(err <= std::fabs(d16) + slack);
      } else {
        REQUIRE(err <= std::fabs(d16) / 2 + slack);
      }
    }
  }
  CHECK(clamped > 0);  // the clamp was exercised
  const double rel = relative_rms_error(x, y);
  MESSAGE("Q4_0 relative RMS error on N(0,1): " << rel);
  CHECK(rel < 0.10);  // measured 0.086
}

// K-quants: each value is at its nearest level given its sub-block's scale and offset as stored
// (the levels are recomputed after the scales are quantized), and the RMS error relative to the
// input's RMS on Gaussian rows stays below a bound with ~20% margin over what ggml's search
// achieves (measured: Q4_K 0.0715, Q5_K 0.0362, Q6_K 0.0178).
TEST_CASE("K-quants: every value at its nearest level and relative RMS error within bounds") {
  const auto x = gaussian_row(256 * 256, 41);
  struct Case { DType type; double bound; };
  for (const Case c :
       {Case{DType::Q4_K, 0.085}, Case{DType::Q5_K, 0.043}, Case{DType::Q6_K, 0.021}}) {
    CAPTURE(name(c.type));
    const auto q = quantize(c.type, x);
    const auto y = dequantize(c.type, q, x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      // step, offset and level range of value i: value = step * level - offset.
      const std::size_t b = i / 256;
      const int k = int(i % 256);
      double step, offset;
      int lo, hi;
      if (c.type == DType::Q6_K) {
        const auto& blk = blocks_of<BlockQ6_K>(q)[b];
        step = double(f16_to_f32(blk.d)) * blk.scales[k / 16];
        offset = 0;
        lo = -32, hi = 31;
      } else {
        const bool q5 = c.type == DType::Q5_K;
        const std::uint8_t* scales = q5 ? blocks_of<BlockQ5_K>(q)[b].scales
                                        : blocks_of<BlockQ4_K>(q)[b].scales;
        const std::uint16_t d = q5 ? blocks_of<BlockQ5_K>(q)[b].d : blocks_of<BlockQ4_K>(q)[b].d;
        const std::uint16_t dmin = q5 ? blocks_of<BlockQ5_K>(q)[b].dmin
                                      : blocks_of<BlockQ4_K>(q)[b].dmin;
        std::uint8_t sc, m;
        get_scale_min_k4(k / 32, scales, sc, m);
        step = double(f16_to_f32(d)) * sc;
        offset = double(f16_to_f32(dmin)) * m;
        lo = 0, hi = q5 ? 31 : 15;
      }
      const double a = std::min(step * lo, step * hi) - offset;
      const double z = std::max(step * lo, step * hi) - offset;
      const double err = std::fabs(double(x[i]) - y[i]);
      const double eps = 1e-6 * (std::fabs(x[i]) + offset);
      if (x[i] < a) REQUIRE(std::fabs(y[i] - a) <= eps);
      else if (x[i] > z) REQUIRE(std::fabs(y[i] - z) <= eps);
      else REQUIRE(err <= std::fabs(step) / 2 + eps);
    }
    const double rel = relative_rms_error(x, y);
    MESSAGE(name(c.type) << " relative RMS error on N(0,1): " << rel);
    CHECK(rel < c.bound);
  }
}

// Q8_K (ggml): the value of largest magnitude m maps to -127: d = -m / 127 kept in f32,
// q = min(127, round(x / d)), and bsums hold the sums of each 16 quants.
TEST_CASE("Q8_K: d = -max/127 in f32, error at most |d|/2, bsums are the sums of 16 quants") {
  const auto x = gaussian_row(256 * 64, 51, 3.0f);
  const auto q = quantize(DType::Q8_K, x);
  const auto y = dequantize(DType::Q8_K, q, x.size());
  const auto* blocks = blocks_of<BlockQ8_K>(q);
  for (std::size_t b = 0; b < x.size() / 256; ++b) {
    const float* xb = &x[256 * b];
    const float m = *std::max_element(xb, xb + 256, [](float a, float c) {
      return std::fabs(a) < std::fabs(c);
    });
    CHECK(blocks[b].d == doctest::Approx(-m / 127).epsilon(1e-6));
    for (int i = 0; i < 256; ++i) {
      if (xb[i] == m) REQUIRE(blocks[b].qs[i] == -127);
      REQUIRE(std::fabs(xb[i] - y[256 * b + i]) <= std::fabs(blocks[b].d) * 0.5f * (1 + 1e-5f));
    }
    for (int j = 0; j < 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += blocks[b].qs[16 * j + i];
      REQUIRE(blocks[b].bsums[j] == sum);
    }
  }
  const double rel = relative_rms_error(x, y);
  MESSAGE("Q8_K relative RMS error on N(0,3): " << rel);
  CHECK(rel < 0.0085);  // measured 0.0070
}

TEST_CASE("zero rows come back zero and constant rows come back as the constant") {
  for (DType t : {DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K,
                  DType::Q6_K, DType::Q8_K}) {
    CAPTURE(name(t));
    const std::vector<float> zeros(512, 0.0f);
    for (float v : round_trip(t, zeros)) REQUIRE(v == 0.0f);
    for (float c : {1.0f, -0.37f, 1e-3f, -250.0f}) {
      CAPTURE(c);
      const std::vector<float> row(512, c);
      // The scales are f16 (and 6-bit sub-block scales for Q4_K/Q5_K): relative error 2^-9 or so.
      for (float v : round_trip(t, row)) REQUIRE(v == doctest::Approx(c).epsilon(4e-3));
    }
  }
}

TEST_CASE("quantize_row(DType) equals the typed forms and rejects what it cannot encode") {
  const auto x = gaussian_row(512, 61);
  std::vector<BlockQ4_K> typed(2);
  quantize_row(x.data(), typed.data(), x.size());
  CHECK(std::memcmp(typed.data(), quantize(DType::Q4_K, x).data(), sizeof(BlockQ4_K) * 2) == 0);
  std::vector<BlockQ6_K> typed6(2);
  quantize_row(x.data(), typed6.data(), x.size());
  CHECK(std::memcmp(typed6.data(), quantize(DType::Q6_K, x).data(), sizeof(BlockQ6_K) * 2) == 0);
  CHECK(round_trip(DType::F32, x) == x);

  CHECK(quantized_bytes(DType::Q4_K, 512) == 288);
  CHECK(quantized_bytes(DType::Q8_0, 64) == 68);
  CHECK_THROWS_AS(quantized_bytes(DType::Q6_K, 100), Error);
  std::vector<std::uint8_t> out(4096);
  for (DType t : {DType::Q2_K, DType::Q4_1, DType::IQ4_XS}) {
    CHECK_FALSE(can_quantize(t));
    try {
      quantize_row(t, x.data(), out.data(), 256);
      FAIL("no exception for " << name(t));
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find(std::string(name(t))) != std::string::npos);
    }
  }
  CHECK_THROWS_AS(quantize_row(DType::Q8_0, x.data(), out.data(), 40), Error);
}

// Dequantization against the GGUF formats as specified, on blocks of random bytes. The decoders
// here are deliberately naive and independent of the library: one value at a time, each bit found
// from the value's index as the format describes it, computed in double (where every product is
// exact) and rounded to f32 once.
#include <tinyllm/quant/dequantize.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

// A random normal f16 of either sign, magnitude 2^-10 .. 2^4: a sane block scale.
std::uint16_t random_scale(std::mt19937& g) {
  const float magnitude = std::exp2(std::uniform_real_distribution<float>(-10.0f, 4.0f)(g));
  return f32_to_f16(g() % 2 ? magnitude : -magnitude);
}

// `count` blocks of random bytes, then sane scales written over the scale fields.
template <class Block>
std::vector<Block> random_blocks(std::size_t count, std::mt19937& g) {
  std::vector<Block> blocks(count);
  auto* bytes = reinterpret_cast<unsigned char*>(blocks.data());
  for (std::size_t i = 0; i < count * sizeof(Block); ++i)
    bytes[i] = static_cast<unsigned char>(g());
  for (Block& b : blocks) {
    if constexpr (std::is_same_v<Block, BlockQ8_K>) {
      b.d = f16_to_f32(random_scale(g)) * 0.01f;  // any f32
    } else {
      b.d = random_scale(g);
    }
    if constexpr (requires { b.dmin; }) b.dmin = random_scale(g);
  }
  return blocks;
}

int bits_of(std::uint8_t byte, int first, int count) {
  return (byte >> first) & ((1 << count) - 1);
}

// Q4_0: 32 values; value i sits in byte i mod 16, low nibble for i < 16; value = d * (q - 8).
float naive_q4_0(const BlockQ4_0& b, int i) {
  const int q = bits_of(b.qs[i % 16], i < 16 ? 0 : 4, 4);
  return float(double(f16_to_f32(b.d)) * (q - 8));
}

float naive_q8_0(const BlockQ8_0& b, int i) { return float(double(f16_to_f32(b.d)) * b.qs[i]); }

// K-quant 6-bit scale and min of sub-block s from the 12 scale bytes, gathered bit group by bit
// group: bits 0-3 and bits 4-5 of each.
int k4_scale(const std::uint8_t* sc, int s) {
  const int low = s < 4 ? bits_of(sc[s], 0, 4) : bits_of(sc[s + 4], 0, 4);
  const int high = s < 4 ? bits_of(sc[s], 4, 2) : bits_of(sc[s - 4], 6, 2);
  return low + 16 * high;
}
int k4_min(const std::uint8_t* sc, int s) {
  const int low = s < 4 ? bits_of(sc[s + 4], 0, 4) : bits_of(sc[s + 4], 4, 4);
  const int high = s < 4 ? bits_of(sc[s + 4], 4, 2) : bits_of(sc[s], 6, 2);
  return low + 16 * high;
}

// Q4_K: 256 values in 8 sub-blocks of 32. Value i: sub-block i / 32; its 4 bits are in byte
// 32 * (i / 64) + i % 32, the low nibble in the first half of each 64 and the high in the second.
// value = d * scale * q - dmin * min.
float naive_q4_k(const BlockQ4_K& b, int i) {
  const int s = i / 32;
  const int q = bits_of(b.qs[32 * (i / 64) + i % 32], (i % 64) < 32 ? 0 : 4, 4);
  return float(double(f16_to_f32(b.d)) * k4_scale(b.scales, s) * q -
               double(f16_to_f32(b.dmin)) * k4_min(b.scales, s));
}

// Q5_K: as Q4_K with a fifth bit, bit i / 32 of qh[i % 32].
float naive_q5_k(const BlockQ5_K& b, int i) {
  const int s = i / 32;
  const int q = bits_of(b.qs[32 * (i / 64) + i % 32], (i % 64) < 32 ? 0 : 4, 4) +
                16 * bits_of(b.qh[i % 32], i / 32, 1);
  return float(double(f16_to_f32(b.d)) * k4_scale(b.scales, s) * q -
               double(f16_to_f32(b.dmin)) * k4_min(b.scales, s));
}

// Q6_K: 256 values, 16 sub-blocks of 16 with int8 scales. Value i, in half h = i / 128 at r = i %
// 128: low 4 bits in ql[64h + r % 64] (low nibble for r < 64), high 2 bits in qh[32h + r % 32] at
// bit 2 * (r / 32). value = d * scales[i / 16] * (q - 32).
float naive_q6_k(const BlockQ6_K& b, int i) {
  const int h = i / 128, r = i % 128;
  const int low = bits_of(b.ql[64 * h + r % 64], r < 64 ? 0 : 4, 4);
  const int high = bits_of(b.qh[32 * h + r % 32], 2 * (r / 32), 2);
  return float(double(f16_to_f32(b.d)) * b.scales[i / 16] * (low + 16 * high - 32));
}

float naive_q8_k(const BlockQ8_K& b, int i) { return float(double(b.d) * b.qs[i]); }

template <class Block, class Naive>
void check_against_naive(DType type, Naive naive, std::uint32_t seed) {
  const int block_size = int(info(type).block_size);
  std::mt19937 g(seed);
  for (std::size_t count : {1u, 3u, 17u}) {
    const auto blocks = random_blocks<Block>(count, g);
    std::vector<float> got(count * block_size);
    dequantize_row(blocks.data(), got.data(), got.size());
    for (std::size_t b = 0; b < count; ++b) {
      for (int i = 0; i < block_size; ++i) {
        const float want = naive(blocks[b], i);
        REQUIRE(std::isfinite(want));
        if (got[b * block_size + i] != want)
          FAIL(name(type) << " block " << b << " value " << i << ": "
                          << got[b * block_size + i] << " != " << want);
      }
    }
    // The DType entry point gives the same.
    std::vector<float> via_dtype(got.size());
    dequantize_row(type, blocks.data(), via_dtype.data(), via_dtype.size());
    CHECK(std::memcmp(via_dtype.data(), got.data(), got.size() * sizeof(float)) == 0);
  }
}

}  // namespace

TEST_CASE("get_scale_min_k4 unpacks the 6-bit scales and mins as the format packs them") {
  std::mt19937 g(7);
  for (int trial = 0; trial < 1000; ++trial) {
    std::uint8_t packed[12];
    for (auto& byte : packed) byte = static_cast<std::uint8_t>(g());
    for (int s = 0; s < 8; ++s) {
      std::uint8_t sc = 0, m = 0;
      get_scale_min_k4(s, packed, sc, m);
      REQUIRE(int(sc) == k4_scale(packed, s));
      REQUIRE(int(m) == k4_min(packed, s));
    }
  }
  // Known packing: sub-block s has scale 10 + s and min 50 + s (both need 6 bits).
  std::uint8_t packed[12] = {};
  for (int s = 0; s < 8; ++s) {
    const int sc = 10 + s, m = 50 + s;
    if (s < 4) {
      packed[s] |= std::uint8_t(sc);
      packed[s + 4] |= std::uint8_t(m);
    } else {
      packed[s + 4] = std::uint8_t((sc & 15) | (m & 15) << 4);
      packed[s - 4] |= std::uint8_t((sc >> 4) << 6);
      packed[s] |= std::uint8_t((m >> 4) << 6);
    }
  }
  for (int s = 0; s < 8; ++s) {
    std::uint8_t sc = 0, m = 0;
    get_scale_min_k4(s, packed, sc, m);
    CHECK(int(sc) == 10 + s);
    CHECK(int(m) == 50 + s);
  }
}

TEST_CASE("F16 and BF16 rows dequantize every bit pattern as the core conversions do") {
  std::vector<F16> h(0x10000);
  std::vector<BF16> bh(0x10000);
  for (std::uint32_t i = 0; i < 0x10000; ++i) {
    h[i].bits = std::uint16_t(i);
    bh[i].bits = std::uint16_t(i);
  }
  std::vector<float> out(0x10000), out_b(0x10000);
  dequantize_row(DType::F16, h.data(), out.data(), out.size());
  dequantize_row(DType::BF16, bh.data(), out_b.data(), out_b.size());
  for (std::uint32_t i = 0; i < 0x10000; ++i) {
    REQUIRE(std::bit_cast<std::uint32_t>(out[i]) ==
            std::bit_cast<std::uint32_t>(f16_to_f32(std::uint16_t(i))));
    REQUIRE(std::bit_cast<std::uint32_t>(out_b[i]) == std::uint32_t(i) << 16);
  }
}

TEST_CASE("Q8_0 dequantizes as the spec's d * q") {
  check_against_naive<BlockQ8_0>(DType::Q8_0, naive_q8_0, 1);
}
TEST_CASE("Q4_0 dequantizes as the spec's d * (q - 8), nibbles split 16/16") {
  check_against_naive<BlockQ4_0>(DType::Q4_0, naive_q4_0, 2);
}
TEST_CASE("Q4_K dequantizes as the spec's d * scale * q - dmin * min") {
  check_against_naive<BlockQ4_K>(DType::Q4_K, naive_q4_k, 3);
}
TEST_CASE("Q5_K dequantizes as the spec's d * scale * q - dmin * min, fifth bit from qh") {
  check_against_naive<BlockQ5_K>(DType::Q5_K, naive_q5_k, 4);
}
TEST_CASE("Q6_K dequantizes as the spec's d * scale * (q - 32), ql/qh interleaved") {
  check_against_naive<BlockQ6_K>(DType::Q6_K, naive_q6_k, 5);
}
TEST_CASE("Q8_K dequantizes as the spec's d * q with an f32 d") {
  check_against_naive<BlockQ8_K>(DType::Q8_K, naive_q8_k, 6);
}

TEST_CASE("dequantize_row(DType) copies F32 and rejects what it cannot decode, naming it") {
  const std::vector<float> x = {1.5f, -2.0f, 0.25f};
  std::vector<float> y(3);
  dequantize_row(DType::F32, x.data(), y.data(), 3);
  CHECK(y == x);

  std::vector<std::uint8_t> bytes(1024);
  std::vector<float> out(256);
  for (DType t : {DType::Q2_K, DType::Q3_K, DType::Q4_1, DType::IQ4_NL, DType::I32}) {
    CHECK_FALSE(can_dequantize(t));
    try {
      dequantize_row(t, bytes.data(), out.data(), 256);
      FAIL("no exception for " << name(t));
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find(std::string(name(t))) != std::string::npos);
    }
  }
  CHECK_THROWS_AS(dequantize_row(DType::Q4_K, bytes.data(), out.data(), 100), Error);  // not 256k
  CHECK_THROWS_AS(dequantize_row(DType::Q8_0, bytes.data(), out.data(), 33), Error);
}

// The arithmetic of the CUDA quantized matvec (kernels/cuda/block_dot.hpp), checked on the host
// where it compiles as plain C++: the GPU kernels call these same functions, so these tests
// catch their math mistakes on a machine without a GPU.
//
// Tolerances.
//  - A weight chunk's values equal dequantize_row's bit for bit (same float operations).
//  - Activation quants: |x - d q| <= d / 2 (a rounding to nearest), with d = max|x| / 127 over the
//    chunk; the largest magnitude maps to +-127; the sum is exact.
//  - chunk_dot against sum_l w_l * (d q_l) computed in double from the same quants: integer dot
//    products are exact, so only a few float roundings remain: 1e-5 of sum_l |w_l d q_l|.
//  - A whole row against ref::qmatmul with the unquantized x: the 8-bit rounding of x adds at
//    most 1/2 sum_i |w_i| d(i), d(i) the scale of x's chunk around i.
#include <tinyllm/kernels/cuda/block_dot.hpp>
#include <tinyllm/kernels/quant_reference.hpp>
#include <tinyllm/quant/dequantize.hpp>
#include <tinyllm/quant/quantize.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

template <class Block> constexpr DType kDType = test::kBlockDType<Block>;
using test::random_scale;

// Blocks of two kinds: random bytes with sane f16 scales of either sign (every bit pattern of
// the quants and sub-block scales), and blocks that quantize_row makes from Gaussian values.
template <class Block>
std::vector<Block> random_blocks(std::size_t n, std::mt19937& rng) {
  constexpr std::size_t values = BlockFormat<Block>::values;
  std::vector<Block> blocks(n);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> x(values);
  for (std::size_t k = 0; k < n; ++k) {
    if (k % 2 == 0) {
      auto* bytes = reinterpret_cast<std::uint8_t*>(&blocks[k]);
      for (std::size_t i = 0; i < sizeof(Block); ++i) bytes[i] = static_cast<std::uint8_t>(rng());
      blocks[k].d = random_scale(rng);
      if constexpr (requires { blocks[k].dmin; }) blocks[k].dmin = random_scale(rng);
    } else {
      const float magnitude = std::ldexp(1.0f, int(rng() % 8) - 4);
      for (float& v : x) v = magnitude * gauss(rng);
      quantize_row(x.data(), &blocks[k], values);
    }
  }
  return blocks;
}

// Activations with a per-row magnitude, an outlier now and then and an all-zero chunk.
std::vector<float> random_acts(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  const float magnitude = std::ldexp(1.0f, int(rng() % 10) - 5);
  std::vector<float> x(n);
  for (float& v : x) v = magnitude * gauss(rng);
  x[rng() % n] *= 50.0f;
  if (n >= 64) std::fill_n(x.begin() + 32, 32, 0.0f);
  return x;
}

std::vector<std::int32_t> packed_words(const std::int8_t* q, std::size_t n) {
  std::vector<std::int32_t> words(n / 4);
  std::memcpy(words.data(), q, n);
  return words;
}

template <class Block>
void check_chunks_decode_as_dequantize() {
  CAPTURE(name(kDType<Block>));
  std::mt19937 rng(7);
  constexpr std::size_t values = BlockFormat<Block>::values;
  const auto blocks = random_blocks<Block>(64, rng);
  std::vector<float> expected(values);
  for (const Block& b : blocks) {
    dequantize_row(&b, expected.data(), values);
    for (int c = 0; c < cuda::kChunksPerBlock<Block>; ++c) {
      const cuda::WeightChunk w = cuda::load_chunk(b, c);
      for (int l = 0; l < 32; ++l) {
        const float got = cuda::chunk_value(w, l), want = expected[32 * c + l];
        if (std::memcmp(&got, &want, sizeof got) != 0) {
          CAPTURE(c);
          CAPTURE(l);
          REQUIRE(got == want);
        }
      }
    }
  }
}

template <class Block>
void check_row_dots() {
  CAPTURE(name(kDType<Block>));
  std::mt19937 rng(11);
  constexpr std::size_t values = BlockFormat<Block>::values;
  for (const std::size_t n_blocks : {1u, 3u, 8u}) {
    const std::size_t n = n_blocks * values;
    CAPTURE(n);
    const auto blocks = random_blocks<Block>(n_blocks, rng);
    std::vector<float> w(n);
    dequantize_row(blocks.data(), w.data(), n);
    for (int trial = 0; trial < 20; ++trial) {
      const std::vector<float> x = random_acts(n, rng);
      std::vector<std::int8_t> q(n);
      std::vector<cuda::ActScale> scales(n / 32);
      cuda::quantize_acts(x.data(), n, q.data(), scales.data());
      const std::vector<std::int32_t> aq = packed_words(q.data(), n);

      float got = 0.0f;
      double exact_quantized = 0, magnitude_quantized = 0, rounding_bound = 0;
      for (std::size_t c = 0; c < n / 32; ++c) {
        const Block& b = blocks[c / cuda::kChunksPerBlock<Block>];
        const auto w_chunk = cuda::load_chunk(b, int(c % cuda::kChunksPerBlock<Block>));
        got += cuda::chunk_dot(w_chunk, aq.data() + 8 * c, scales[c]);
        for (std::size_t l = 0; l < 32; ++l) {
          const double xq = double(scales[c].d) * q[32 * c + l];
          exact_quantized += w[32 * c + l] * xq;
          magnitude_quantized += std::fabs(w[32 * c + l] * xq);
          rounding_bound += 0.5 * std::fabs(w[32 * c + l]) * scales[c].d;
        }
      }
      CHECK(std::fabs(got - exact_quantized) <= 1e-5 * magnitude_quantized + 1e-30);

      // ref::qmatmul of the one row with the float activations.
      ThreadPool pool(1);
      float ref = 0.0f;
      ref::qmatmul(pool, kDType<Block>, blocks.data(), 1, n, MatrixView<const float>{x.data(), 1, n, n},
                   MatrixView<float>{&ref, 1, 1, 1});
      double magnitude = 0;
      for (std::size_t i = 0; i < n; ++i) magnitude += std::fabs(double(w[i]) * x[i]);
      CHECK(std::fabs(got - ref) <= rounding_bound * (1 + 1e-5) + 1e-5 * magnitude + 1e-30);
    }
  }
}

}  // namespace

TEST_CASE("cuda::load_chunk: a weight chunk's values are dequantize_row's, bit for bit") {
  check_chunks_decode_as_dequantize<BlockQ8_0>();
  check_chunks_decode_as_dequantize<BlockQ4_0>();
  check_chunks_decode_as_dequantize<BlockQ4_K>();
  check_chunks_decode_as_dequantize<BlockQ5_K>();
  check_chunks_decode_as_dequantize<BlockQ6_K>();
}

TEST_CASE("cuda::quantize_acts: chunks of 32 rounded to nearest, max|x| to 127, exact sums") {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 50; ++trial) {
    const std::size_t n = 32 * (1 + rng() % 9);
    std::vector<float> x = random_acts(n, rng);
    if (trial == 0) std::fill(x.begin(), x.end(), 0.0f);
    std::vector<std::int8_t> q(n);
    std::vector<cuda::ActScale> scales(n / 32);
    cuda::quantize_acts(x.data(), n, q.data(), scales.data());
    for (std::size_t c = 0; c < n / 32; ++c) {
      float amax = 0;
      std::int32_t sum = 0;
      int qmax = 0;
      for (std::size_t l = 0; l < 32; ++l) {
        const std::size_t i = 32 * c + l;
        amax = std::max(amax, std::fabs(x[i]));
        sum += q[i];
        qmax = std::max(qmax, std::abs(int(q[i])));
        CHECK(std::abs(int(q[i])) <= 127);
        CHECK(std::fabs(x[i] - scales[c].d * q[i]) <= 0.5 * scales[c].d * (1 + 1e-6));
      }
      CHECK(scales[c].d == amax / 127.0f);
      CHECK(scales[c].sum == sum);
      CHECK(qmax == (amax > 0 ? 127 : 0));
    }
  }
}

TEST_CASE("cuda::chunk_dot: rows of every quantized type against the exact sums and ref::qmatmul") {
  check_row_dots<BlockQ8_0>();
  check_row_dots<BlockQ4_0>();
  check_row_dots<BlockQ4_K>();
  check_row_dots<BlockQ5_K>();
  check_row_dots<BlockQ6_K>();
}

TEST_CASE("cuda::dot4_i8: the host fallback of __dp4a on extreme bytes") {
  const std::int32_t a = std::int32_t(0x807f01ffu), b = std::int32_t(0x80807f02u);
  // bytes of a: -1, 1, 127, -128; of b: 2, 127, -128, -128
  CHECK(cuda::dot4_i8(a, b, 5) == 5 + (-1 * 2) + (1 * 127) + (127 * -128) + (-128 * -128));
}

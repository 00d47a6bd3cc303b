// The reference kernels against values worked out by hand: the specification checked on its own.
#include <tinyllm/kernels/reference.hpp>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

TEST_CASE("ref::matmul: a 2x3 weight times two tokens, f32 and f16") {
  ThreadPool pool(1);
  const float w[] = {1, 2, 3,
                     4, 5, 6};                 // [2, 3]
  const float x[] = {1, 0, -1,
                     0.5f, 0.5f, 0.5f};        // [2 tokens, 3]
  float y[4];                                  // [2 tokens, 2]
  ref::matmul(pool, MatrixView<const float>(w, 2, 3), MatrixView<const float>(x, 2, 3), MatrixView<float>(y, 2, 2));
  CHECK(y[0] == -2.0f);  // 1 - 3
  CHECK(y[1] == -2.0f);  // 4 - 6
  CHECK(y[2] == 3.0f);   // (1 + 2 + 3) / 2
  CHECK(y[3] == 7.5f);   // (4 + 5 + 6) / 2

  F16 wh[6];
  for (int i = 0; i < 6; ++i) wh[i] = F16{f32_to_f16(w[i])};
  float yh[4];
  ref::matmul(pool, MatrixView<const F16>(wh, 2, 3), MatrixView<const float>(x, 2, 3), MatrixView<float>(yh, 2, 2));
  CHECK(std::vector<float>(yh, yh + 4) == std::vector<float>(y, y + 4));
}

TEST_CASE("ref::rmsnorm of known vectors") {
  const float x[] = {2, -2, 2, -2}, w[] = {1, 2, 3, 4};
  float out[4];
  ref::rmsnorm(x, w, out, 4, 0.0f);  // rms = 2
  CHECK(out[0] == 1.0f);
  CHECK(out[1] == -2.0f);
  CHECK(out[2] == 3.0f);
  CHECK(out[3] == -4.0f);

  const float y[] = {3, 4}, ones[] = {1, 1};
  ref::rmsnorm(y, ones, out, 2, 0.5f);  // sqrt((9 + 16) / 2 + 0.5) = sqrt(13)
  CHECK(out[0] == doctest::Approx(3 / std::sqrt(13.0)).epsilon(1e-7));
  CHECK(out[1] == doctest::Approx(4 / std::sqrt(13.0)).epsilon(1e-7));
}

TEST_CASE("ref::rope rotates by a known angle, and the styles pair different values") {
  const float inv_freq[] = {0.5f};
  float a[] = {1, 0}, b[] = {0, 1};
  ref::rope(a, 1, 2, 2, inv_freq, RopeStyle::adjacent_pairs);  // angle = 2 * 0.5 = 1 rad
  ref::rope(b, 1, 2, 2, inv_freq, RopeStyle::half_split);      // one pair: both styles agree
  CHECK(a[0] == doctest::Approx(std::cos(1.0)).epsilon(1e-7));
  CHECK(a[1] == doctest::Approx(std::sin(1.0)).epsilon(1e-7));
  CHECK(b[0] == doctest::Approx(-std::sin(1.0)).epsilon(1e-7));
  CHECK(b[1] == doctest::Approx(std::cos(1.0)).epsilon(1e-7));

  // Pair 0 turns a quarter turn, pair 1 not at all: adjacent pairs (0, 1), half_split pairs (0, 2).
  const float quarter[] = {float(std::numbers::pi / 2), 0.0f};
  float adj[] = {1, 0, 0, 0}, neox[] = {1, 0, 0, 0};
  ref::rope(adj, 1, 4, 1, quarter, RopeStyle::adjacent_pairs);
  ref::rope(neox, 1, 4, 1, quarter, RopeStyle::half_split);
  const float expect_adj[] = {0, 1, 0, 0}, expect_neox[] = {0, 0, 1, 0};
  for (int i = 0; i < 4; ++i) {
    CHECK(adj[i] == doctest::Approx(expect_adj[i]).epsilon(1e-7));
    CHECK(neox[i] == doctest::Approx(expect_neox[i]).epsilon(1e-7));
  }

  float at_zero[] = {0.3f, -0.7f};
  ref::rope(at_zero, 1, 2, 0, inv_freq, RopeStyle::adjacent_pairs);  // position 0: identity
  CHECK(at_zero[0] == 0.3f);
  CHECK(at_zero[1] == -0.7f);
}

TEST_CASE("ref::softmax, silu and swiglu of known values") {
  float s[] = {0, float(std::log(3.0))};
  ref::softmax(s, 2);
  CHECK(s[0] == doctest::Approx(0.25).epsilon(1e-7));
  CHECK(s[1] == doctest::Approx(0.75).epsilon(1e-7));
  float big[] = {1000, 1000, 1000, 1000};  // exp(1000) overflows unless the max is subtracted
  ref::softmax(big, 4);
  for (float v : big) CHECK(v == 0.25f);

  float x[] = {0, 1, -1};
  ref::silu(x, 3);
  CHECK(x[0] == 0.0f);
  CHECK(x[1] == doctest::Approx(1 / (1 + std::exp(-1.0))).epsilon(1e-7));
  CHECK(x[2] == doctest::Approx(-1 / (1 + std::exp(1.0))).epsilon(1e-7));

  float gate[] = {1, 2}, up[] = {2, -1};
  ref::swiglu(gate, up, 2);
  CHECK(gate[0] == doctest::Approx(2 / (1 + std::exp(-1.0))).epsilon(1e-7));
  CHECK(gate[1] == doctest::Approx(-2 / (1 + std::exp(-2.0))).epsilon(1e-7));
}

TEST_CASE("ref::attention: weights 1/4 and 3/4 from known scores, and the GQA head mapping") {
  ThreadPool pool(1);
  // One KV head, head_dim 2, positions 0 and 1. q.k0 = 0, q.k1 = ln 3: softmax gives 1/4, 3/4.
  float k[] = {0, 0, float(std::log(3.0)), 0}, v[] = {4, 0, 0, 8};  // [2 positions, 2]
  float* k_blocks[] = {k};
  float* v_blocks[] = {v};
  const KVLayerView kv{k_blocks, v_blocks, 2, 2};
  const float q[] = {1, 0,   // token at position 1
                     1, 0};  // token at position 0: sees only value 0
  const std::int32_t positions[] = {1, 0};
  float out[4], scratch[2];
  ref::attention(pool, MatrixView<const float>(q, 2, 2), positions, kv, 1, 1, 2, {.scale = 1.0f}, MatrixView<float>(out, 2, 2),
                 MatrixView<float>(scratch, 1, 2));
  CHECK(out[0] == doctest::Approx(1.0).epsilon(1e-7));  // 4 / 4
  CHECK(out[1] == doctest::Approx(6.0).epsilon(1e-7));  // 8 * 3 / 4
  CHECK(out[2] == 4.0f);
  CHECK(out[3] == 0.0f);

  // Four query heads on two KV heads, one position: heads 0, 1 return KV head 0's value, 2, 3 head 1's.
  float k2[] = {0.1f, 0.2f}, v2[] = {10, 20};  // [1 position, 2 KV heads * head_dim 1]
  float* k2_blocks[] = {k2};
  float* v2_blocks[] = {v2};
  const KVLayerView kv2{k2_blocks, v2_blocks, 1, 2};
  const float q2[] = {1, 2, 3, 4};
  const std::int32_t pos0[] = {0};
  float out2[4];
  ref::attention(pool, MatrixView<const float>(q2, 1, 4), pos0, kv2, 4, 2, 1, {.scale = 1.0f}, MatrixView<float>(out2, 1, 4),
                 MatrixView<float>(scratch, 1, 1));
  CHECK(out2[0] == 10.0f);
  CHECK(out2[1] == 10.0f);
  CHECK(out2[2] == 20.0f);
  CHECK(out2[3] == 20.0f);
}

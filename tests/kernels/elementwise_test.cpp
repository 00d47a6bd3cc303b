// cpu::rmsnorm, softmax, silu, swiglu and rope against the reference on random inputs of many sizes.
#include <tinyllm/kernels/cpu/cpu.hpp>
#include <tinyllm/kernels/reference.hpp>
#include <tinyllm/kernels/rope.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

constexpr double kUlp = 1.0 / (1 << 24);  // half an ulp of 1.0f: one float rounding

// Error of a float sum of n terms in >= 8 lanes, relative to the sum of |terms| (see matmul_test).
double sum_tolerance(std::size_t n) { return (double(n) / 8 + 16) * kUlp; }

const std::size_t kSizes[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 257, 1000, 2048, 5003, 32000};

std::vector<float> random_vector(std::size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& e : v) e = u(rng);
  return v;
}

// Largest |a - b| / (|b| + floor) over the elements.
double max_rel_error(const std::vector<float>& a, const std::vector<float>& b, double floor) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::abs(double(a[i]) - b[i]) / (std::abs(double(b[i])) + floor));
  }
  return worst;
}

}  // namespace

TEST_CASE("cpu::rmsnorm equals ref::rmsnorm, also in place") {
  test::for_each_target([&] {
    std::mt19937 rng(1);
    for (std::size_t n : kSizes) {
      CAPTURE(n);
      const auto x = random_vector(n, rng, -3, 3), w = random_vector(n, rng, -2, 2);
      std::vector<float> want(n), got(n);
      ref::rmsnorm(x.data(), w.data(), want.data(), n, 1e-5f);
      cpu::rmsnorm(x.data(), w.data(), got.data(), n, 1e-5f);
      // The sum of squares carries sum_tolerance; 1/sqrt halves it; a few roundings follow.
      CHECK(max_rel_error(got, want, 1e-30) <= sum_tolerance(n) / 2 + 4 * kUlp);
      std::vector<float> in_place = x;
      cpu::rmsnorm(in_place.data(), w.data(), in_place.data(), n, 1e-5f);
      CHECK(in_place == got);
    }
  });
}

TEST_CASE("cpu::softmax equals ref::softmax and sums to 1") {
  test::for_each_target([&] {
    std::mt19937 rng(2);
    for (float offset : {0.0f, 1000.0f, -1000.0f})  // large offsets: stable only if the max is subtracted
      for (std::size_t n : kSizes) {
        CAPTURE(n);
        CAPTURE(offset);
        auto x = random_vector(n, rng, -20, 20);
        for (float& v : x) v += offset;
        auto want = x, got = x;
        ref::softmax(want.data(), n);
        cpu::softmax(got.data(), n);
        // Rounding x - max in float moves exp's argument by up to |x - max| ulp, exp itself is good
        // to a few ulp, and the normalising sum adds sum_tolerance.
        const float max = *std::max_element(x.begin(), x.end());
        double worst_excess = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const double allowed = (std::abs(x[i] - max) * 2 + 8) * kUlp + sum_tolerance(n);
          worst_excess = std::max(worst_excess, std::abs(double(got[i]) - want[i]) / (want[i] + 1e-30) - allowed);
        }
        CHECK(worst_excess <= 0);
        double sum = 0;
        for (float v : got) sum += v;
        CHECK(std::abs(sum - 1.0) <= sum_tolerance(n) + 8 * kUlp);
      }
  });
}

TEST_CASE("cpu::softmax gives masked (-inf) entries exactly zero weight") {
  test::for_each_target([&] {
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> x(37, -inf);
    x[3] = 1.0f;
    x[20] = 1.0f;
    x[36] = 1.0f + std::log(2.0f);
    cpu::softmax(x.data(), x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      CAPTURE(i);
      if (i == 3 || i == 20) CHECK(x[i] == doctest::Approx(0.25).epsilon(1e-6));
      else if (i == 36) CHECK(x[i] == doctest::Approx(0.5).epsilon(1e-6));
      else CHECK(x[i] == 0.0f);
    }
  });
}

TEST_CASE("cpu::silu and cpu::swiglu equal the reference, extremes included") {
  test::for_each_target([&] {
    std::mt19937 rng(3);
    const float extremes[] = {0.0f, -0.0f, 1e-20f, -1e-20f, 1.0f, -1.0f, 20.0f, -20.0f, 87.0f, -87.0f, 89.0f,
                              -89.0f, 100.0f, -100.0f, 103.0f, -103.0f, 105.0f, -105.0f, 1e10f, -1e10f};
    for (std::size_t n : kSizes) {
      CAPTURE(n);
      auto x = random_vector(n, rng, -30, 30);
      for (std::size_t i = 0; i < std::min(n, std::size(extremes)); ++i) x[(i * 7919) % n] = extremes[i];
      const auto up = random_vector(n, rng, -2, 2);
      auto want = x, got = x;
      ref::silu(want.data(), n);
      cpu::silu(got.data(), n);
      // exp and the division are good to a few ulp; the floor absorbs results that underflow.
      CHECK(max_rel_error(got, want, 1e-36) <= 8 * kUlp);
      auto want_g = x, got_g = x;
      ref::swiglu(want_g.data(), up.data(), n);
      cpu::swiglu(got_g.data(), up.data(), n);
      CHECK(max_rel_error(got_g, want_g, 1e-36) <= 8 * kUlp);
    }
  });
}

TEST_CASE("cpu::geglu and cpu::softcap equal the reference, and GELU and the cap at known points") {
  test::for_each_target([&] {
    std::mt19937 rng(5);
    for (std::size_t n : kSizes) {
      CAPTURE(n);
      const auto x = random_vector(n, rng, -12, 12), up = random_vector(n, rng, -2, 2);
      auto want = x, got = x;
      ref::geglu(want.data(), up.data(), n);
      cpu::geglu(got.data(), up.data(), n);
      // tanh is good to a few ulp, but for x << 0 the float sum 1 + tanh(...) cancels: about 1e-7
      // absolute on results below 1, relative beyond (floor 1).
      CHECK(max_rel_error(got, want, 1.0) <= 2e-6);
      auto want_c = x, got_c = x;
      ref::softcap(want_c.data(), n, 5.0f);
      cpu::softcap(got_c.data(), n, 5.0f);
      CHECK(max_rel_error(got_c, want_c, 1e-30) <= 16 * kUlp);
    }
    // gelu(1) = 0.5 (1 + tanh(0.79788456 * 1.044715)) = 0.841192; gelu(-1) = 1 - gelu(1) - 1 = -0.158808.
    float g[2] = {1.0f, -1.0f};
    const float ones[2] = {1.0f, 1.0f};
    ref::geglu(g, ones, 2);
    CHECK(g[0] == doctest::Approx(0.841192).epsilon(1e-5));
    CHECK(g[1] == doctest::Approx(-0.158808).epsilon(1e-4));
    float c[3] = {0.0f, 1e6f, -1e6f};
    cpu::softcap(c, 3, 30.0f);
    CHECK(c[0] == 0.0f);
    CHECK(c[1] == doctest::Approx(30.0f));
    CHECK(c[2] == doctest::Approx(-30.0f));
  });
}

namespace {

// Rotation written per output element, independently of the kernels' pair loops:
// out[j] = x[j] cos(a_k) + sign_j x[partner(j)] sin(a_k), with pair k and partner from the style.
std::vector<float> rope_direct(const std::vector<float>& x, std::size_t n_heads, std::size_t head_dim,
                               std::size_t pos, const std::vector<float>& inv_freq, RopeStyle style) {
  std::vector<float> out(x.size());
  const std::size_t half = head_dim / 2;
  for (std::size_t h = 0; h < n_heads; ++h)
    for (std::size_t j = 0; j < head_dim; ++j) {
      const bool adjacent = style == RopeStyle::adjacent_pairs;
      const std::size_t k = adjacent ? j / 2 : j % half;
      const std::size_t partner = adjacent ? (j ^ 1) : (j < half ? j + half : j - half);
      const double sign = (adjacent ? j % 2 == 0 : j < half) ? -1.0 : 1.0;
      const double angle = static_cast<float>(pos) * inv_freq[k];
      out[h * head_dim + j] = static_cast<float>(x[h * head_dim + j] * std::cos(angle) +
                                                 sign * x[h * head_dim + partner] * std::sin(angle));
    }
  return out;
}

}  // namespace

TEST_CASE("rope: ref and cpu equal the direct formula, both styles") {
  test::for_each_target([&] {
    std::mt19937 rng(4);
    for (RopeStyle style : {RopeStyle::adjacent_pairs, RopeStyle::half_split})
      for (std::size_t head_dim : {2, 4, 6, 8, 16, 30, 32, 34, 64, 80, 96, 128, 256, 300})
        for (std::size_t n_heads : {1, 3, 8})
          for (std::size_t pos : {0, 1, 7, 100, 2047, 100000}) {
            CAPTURE(int(style));
            CAPTURE(head_dim);
            CAPTURE(n_heads);
            CAPTURE(pos);
            const auto inv_freq = rope_inv_freq(head_dim, pos % 2 ? 10000.0f : 500000.0f);
            const auto x = random_vector(n_heads * head_dim, rng, -1, 1);
            const auto want = rope_direct(x, n_heads, head_dim, pos, inv_freq, style);
            auto r = x, c = x;
            ref::rope(r.data(), n_heads, head_dim, pos, inv_freq.data(), style);
            cpu::rope(c.data(), n_heads, head_dim, pos, inv_freq.data(), style);
            // |x| <= 1: a few roundings of values below sqrt(2); cpu takes float cos/sin (1 ulp each).
            CHECK(max_rel_error(r, want, 1.0) <= 4 * kUlp);
            CHECK(max_rel_error(c, want, 1.0) <= 16 * kUlp);
          }
  });
}

TEST_CASE("rope_inv_freq is 1 / theta^(2i / head_dim)") {
  test::for_each_target([&] {
    const auto f4 = rope_inv_freq(4, 10000.0f);
    REQUIRE(f4.size() == 2);
    CHECK(f4[0] == 1.0f);
    CHECK(f4[1] == doctest::Approx(0.01).epsilon(1e-7));
    const auto f128 = rope_inv_freq(128, 500000.0f);
    REQUIRE(f128.size() == 64);
    for (std::size_t i = 0; i < 64; ++i)
      CHECK(f128[i] == doctest::Approx(std::pow(500000.0, -double(i) / 64)).epsilon(1e-7));
  });
}

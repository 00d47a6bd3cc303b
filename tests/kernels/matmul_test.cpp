// cpu::matmul against ref::matmul on random inputs of many shapes, both weight types, strided
// views and 1, 2 and 3 threads; and bit-identical results across thread counts and batch sizes.
#include <tinyllm/kernels/cpu/cpu.hpp>
#include <tinyllm/kernels/reference.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

// A float sum of n products in >= 8 independent lanes, combined at the end, is off by at most
// (n/8 + log2(lanes) + 1) roundings of the sum of |products|; 16 covers the combining steps.
double dot_tolerance(std::size_t n) { return (double(n) / 8 + 16) * std::ldexp(1.0, -24); }

template <class T>
T from_f32(float v) {
  if constexpr (std::is_same_v<T, F16>) return F16{f32_to_f16(v)};
  else if constexpr (std::is_same_v<T, BF16>) return BF16{f32_to_bf16(v)};
  else return v;
}

template <class T>
T quiet_nan() {
  if constexpr (std::is_same_v<T, F16>) return F16{0x7e00};
  else if constexpr (std::is_same_v<T, BF16>) return BF16{0x7fc0};
  else return std::numeric_limits<float>::quiet_NaN();
}

// A [rows, cols] matrix with row stride cols + pad. Padding (and a tail after the last row) holds
// NaN, so a kernel that reads outside the logical matrix poisons its result.
template <class T>
struct Padded {
  std::size_t rows, cols, stride;
  std::vector<T> data;
  Padded(std::size_t r, std::size_t c, std::size_t pad)
      : rows(r), cols(c), stride(c + pad), data(r * (c + pad) + 64, quiet_nan<T>()) {}
  void fill_random(std::mt19937& rng) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t c = 0; c < cols; ++c) data[r * stride + c] = from_f32<T>(u(rng));
  }
  MatrixView<T> view() { return {data.data(), rows, cols, stride}; }
  MatrixView<const T> cview() const { return {data.data(), rows, cols, stride}; }
};

// Largest |cpu - ref| over the entries, measured in units of sum_i |w[o, i] * x[t, i]|.
template <class W>
double max_scaled_error(const Padded<W>& w, const Padded<float>& x, const Padded<float>& got,
                        const Padded<float>& want) {
  double worst = 0;
  for (std::size_t t = 0; t < x.rows; ++t)
    for (std::size_t o = 0; o < w.rows; ++o) {
      double magnitude = 0;
      for (std::size_t i = 0; i < w.cols; ++i)
        magnitude += std::abs(ref::weight_value(w.data[o * w.stride + i]) * x.data[t * x.stride + i]);
      const double err = std::abs(double(got.data[t * got.stride + o]) - want.data[t * want.stride + o]);
      worst = std::max(worst, err / std::max(magnitude, 1e-30));
      if (std::isnan(got.data[t * got.stride + o])) return std::numeric_limits<double>::infinity();
    }
  return worst;
}

bool same_entries(const Padded<float>& a, const Padded<float>& b) {
  for (std::size_t r = 0; r < a.rows; ++r)
    if (!std::equal(a.data.begin() + r * a.stride, a.data.begin() + r * a.stride + a.cols, b.data.begin() + r * b.stride))
      return false;
  return true;
}

// Output padding must be left alone.
bool padding_untouched(const Padded<float>& y) {
  for (std::size_t r = 0; r < y.rows; ++r)
    for (std::size_t c = y.cols; c < y.stride; ++c)
      if (!std::isnan(y.data[r * y.stride + c])) return false;
  return true;
}

template <class W>
void check_shape(std::size_t n_out, std::size_t n_in, std::size_t n_tok, std::size_t pad, std::mt19937& rng,
                 std::vector<ThreadPool*> pools) {
  CAPTURE(n_out);
  CAPTURE(n_in);
  CAPTURE(n_tok);
  CAPTURE(pad);
  Padded<W> w(n_out, n_in, pad);
  Padded<float> x(n_tok, n_in, (pad * 7 + 1) % 17);
  w.fill_random(rng);
  x.fill_random(rng);
  Padded<float> want(n_tok, n_out, 0);
  ref::matmul(*pools[0], w.cview(), x.cview(), want.view());
  const double tol = dot_tolerance(n_in);

  Padded<float> first(n_tok, n_out, pad % 5);
  for (std::size_t p = 0; p < pools.size(); ++p) {
    CAPTURE(pools[p]->size());
    Padded<float> got(n_tok, n_out, pad % 5);
    cpu::matmul(*pools[p], w.cview(), x.cview(), got.view());
    CHECK(max_scaled_error(w, x, got, want) <= tol);
    CHECK(padding_untouched(got));
    if (p == 0) first = got;
    else CHECK(same_entries(got, first));  // the thread count does not change the arithmetic
  }
  // Nor do the other tokens of the call: each token alone gives the same bits.
  for (std::size_t t = 0; t < n_tok; t += 1 + n_tok / 4) {
    CAPTURE(t);
    Padded<float> alone(1, n_out, 0);
    cpu::matmul(*pools.back(), w.cview(), MatrixView<const float>(x.data.data() + t * x.stride, 1, n_in),
                alone.view());
    CHECK(std::equal(alone.data.begin(), alone.data.begin() + n_out, first.data.begin() + t * first.stride));
  }
}

template <class W>
void check_many_shapes() {
  ThreadPool pool1(1), pool2(2), pool3(3);
  std::mt19937 rng(1234);
  const std::size_t n_ins[] = {1, 3, 15, 16, 17, 63, 64, 65, 257, 1000};
  const std::size_t n_outs[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 31, 32, 33, 37, 100, 259};
  const std::size_t n_toks[] = {1, 2, 3, 4, 5, 7, 8, 13, 64};
  std::size_t k = 0;
  for (std::size_t n_in : n_ins)
    for (std::size_t n_out : n_outs)
      for (std::size_t n_tok : n_toks) {
        const std::size_t pad = (k++ * 5) % 19;  // strides from dense to 18 past the row
        std::vector<ThreadPool*> pools{&pool1};
        if (k % 4 == 0) pools = {&pool1, &pool2, &pool3};
        check_shape<W>(n_out, n_in, n_tok, pad, rng, pools);
      }
}

}  // namespace

TEST_CASE("cpu::matmul f32 equals ref::matmul over many shapes and strides") {
  test::for_each_target([&] { check_many_shapes<float>(); });
}

TEST_CASE("cpu::matmul f16 equals ref::matmul over many shapes and strides") {
  test::for_each_target([&] { check_many_shapes<F16>(); });
}

TEST_CASE("cpu::matmul bf16 equals ref::matmul over many shapes and strides") {
  test::for_each_target([&] { check_many_shapes<BF16>(); });
}

TEST_CASE("cpu::matmul: token counts beyond one L2 chunk, 1 to 3 threads") {
  test::for_each_target([&] {
    ThreadPool pool1(1), pool2(2), pool3(3);
    std::mt19937 rng(99);
    for (std::size_t n_in : {4096, 5003})
      for (std::size_t n_tok : {17, 70}) {
        check_shape<float>(37, n_in, n_tok, 3, rng, {&pool1, &pool2, &pool3});
        check_shape<F16>(37, n_in, n_tok, 3, rng, {&pool1, &pool2, &pool3});
        check_shape<BF16>(37, n_in, n_tok, 3, rng, {&pool1, &pool2, &pool3});
      }
  });
}

// The quantized test models, written by llama.cpp's llama-quantize from the F32 llama.gguf:
// every quantized tensor dequantizes to finite values close to its F32 original, and quantizing
// the original here reproduces llama.cpp's bytes.
#include <tinyllm/io/gguf.hpp>
#include <tinyllm/quant/quant.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

struct TypeStats {
  double err2 = 0, ref2 = 0;        // sums of squared error and of squared reference values
  std::size_t blocks = 0, same_blocks = 0;
  std::size_t tensors = 0;
};

}  // namespace

TEST_CASE("llama-{Q8_0,Q4_0,Q4_K_M,Q5_K_M,Q6_K}.gguf dequantize close to llama.gguf and quantize to the same bytes") {
  TINYLLM_REQUIRE_TESTDATA("arch/llama.gguf");
  const GGUFFile reference = GGUFFile::open(test::testdata("arch/llama.gguf").string());

  // Bounds on the relative RMS error of each type (measured below on these N(0, 0.02) weights,
  // with margin); the same as the Gaussian-row bounds of quantize_test.cpp.
  const std::map<DType, double> bound = {{DType::Q8_0, 0.0065}, {DType::Q4_0, 0.10},
                                         {DType::Q4_K, 0.085},  {DType::Q5_K, 0.043},
                                         {DType::Q6_K, 0.021}};
  std::map<DType, TypeStats> stats;
  for (const char* file : {"llama-Q8_0.gguf", "llama-Q4_0.gguf", "llama-Q4_K_M.gguf",
                           "llama-Q5_K_M.gguf", "llama-Q6_K.gguf"}) {
    CAPTURE(file);
    const std::string rel = std::string("arch/") + file;
    TINYLLM_REQUIRE_TESTDATA(rel);
    const GGUFFile quantized = GGUFFile::open(test::testdata(rel).string());
    for (const TensorView& t : quantized.tensors()) {
      if (t.dtype == DType::F32) continue;
      CAPTURE(t.name);
      REQUIRE(can_dequantize(t.dtype));
      const TensorView& ref = reference.tensor(t.name);
      REQUIRE(ref.dtype == DType::F32);
      REQUIRE(ref.dims == t.dims);
      const std::size_t n = t.n_elements();
      std::vector<float> y(n);
      dequantize_row(t.dtype, t.data, y.data(), n);
      const float* x = static_cast<const float*>(ref.data);
      TypeStats& s = stats[t.dtype];
      ++s.tensors;
      double err2 = 0, ref2 = 0;
      for (std::size_t i = 0; i < n; ++i) {
        REQUIRE(std::isfinite(y[i]));
        err2 += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
        ref2 += double(x[i]) * x[i];
      }
      s.err2 += err2;
      s.ref2 += ref2;
      CHECK(std::sqrt(err2 / ref2) < bound.at(t.dtype));

      // The same rows quantized here, compared block by block with llama.cpp's bytes.
      std::vector<std::uint8_t> mine(quantized_bytes(t.dtype, n));
      REQUIRE(mine.size() == t.n_bytes);
      for (std::size_t r = 0; r < t.rows(); ++r) {
        const std::size_t row = quantized_bytes(t.dtype, t.cols());
        quantize_row(t.dtype, x + r * t.cols(), mine.data() + r * row, t.cols());
      }
      const std::size_t block_bytes = info(t.dtype).block_bytes;
      const auto* theirs = static_cast<const std::uint8_t*>(t.data);
      for (std::size_t off = 0; off < mine.size(); off += block_bytes) {
        ++s.blocks;
        s.same_blocks += std::memcmp(mine.data() + off, theirs + off, block_bytes) == 0;
      }
    }
  }
  for (const auto& [type, s] : stats) {
    const double rel = std::sqrt(s.err2 / s.ref2);
    MESSAGE(name(type) << ": " << s.tensors << " tensors, relative RMS error " << rel << "; "
                       << s.same_blocks << " of " << s.blocks
                       << " blocks quantized here equal llama.cpp's");
    CHECK(rel < bound.at(type));
    CHECK(s.same_blocks == s.blocks);
  }
  CHECK(stats.size() == 5);
}

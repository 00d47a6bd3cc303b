#include <tinyllm/core/buffer.hpp>
#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/core/mapped_file.hpp>
#include <tinyllm/core/thread_pool.hpp>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

TEST_CASE("f16 conversion: every half round-trips through float") {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(std::uint16_t(h));
    if (std::isnan(f)) {
      CHECK((h & 0x7c00u) == 0x7c00u);
      CHECK(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    REQUIRE(f32_to_f16(f) == h);
  }
}

TEST_CASE("f16 conversion matches the IEEE definition on known values") {
  CHECK(f16_to_f32(0x3c00) == 1.0f);
  CHECK(f16_to_f32(0xc000) == -2.0f);
  CHECK(f16_to_f32(0x7bff) == 65504.0f);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(f16_to_f32(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(std::isinf(f16_to_f32(0x7c00)));
  CHECK(f32_to_f16(65520.0f) == 0x7c00);                 // rounds up to inf
  CHECK(f32_to_f16(65519.0f) == 0x7bff);
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie to even (down)
  CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);  // tie to even (up)
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);    // half of the smallest subnormal: to even
  CHECK(f32_to_f16(std::ldexp(1.5f, -25)) == 0x0001);
}

TEST_CASE("f16 rounding is nearest: error within half an ulp on random floats") {
  std::uint32_t s = 1;
  for (int i = 0; i < 100000; ++i) {
    s = s * 1664525u + 1013904223u;
    const float f = std::ldexp(float(s >> 8) / float(1 << 24) * 2 - 1, int(s % 30) - 20);
    const float r = f16_to_f32(f32_to_f16(f));
    const float ulp = std::ldexp(1.0f, std::max(std::ilogb(f) - 10, -24));
    REQUIRE(std::fabs(r - f) <= ulp / 2);
  }
}

TEST_CASE("bf16 conversion rounds to nearest even and keeps NaN") {
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(f32_to_bf16(std::bit_cast<float>(0x3f808000u)) == 0x3f80);  // tie, even stays
  CHECK(f32_to_bf16(std::bit_cast<float>(0x3f818000u)) == 0x3f82);  // tie, odd rounds up
  CHECK(f32_to_bf16(std::bit_cast<float>(0x3f808001u)) == 0x3f81);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_f32(std::uint16_t(h));
    if (!std::isnan(f)) REQUIRE(f32_to_bf16(f) == h);
  }
}

TEST_CASE("dtype table: GGUF block sizes and unknown ids") {
  CHECK(row_bytes(DType::F32, 64) == 256);
  CHECK(row_bytes(DType::Q8_0, 64) == 68);
  CHECK(row_bytes(DType::Q4_K, 512) == 288);
  CHECK(row_bytes(DType::Q6_K, 256) == 210);
  CHECK(name(DType::BF16) == "BF16");
  CHECK_FALSE(dtype_info(4).has_value());  // Q4_2, removed from GGUF
  CHECK_FALSE(dtype_info(1000).has_value());
  CHECK_THROWS_AS(info(static_cast<DType>(5)), Error);
}

TEST_CASE("Error carries what, where and expected") {
  const Error e("bad magic", "model.gguf, byte 0", "\"GGUF\"");
  CHECK(std::string(e.what()) == "tinyllm: bad magic (at model.gguf, byte 0); expected \"GGUF\"");
  CHECK(e.where() == "model.gguf, byte 0");
}

TEST_CASE("AlignedBuffer is aligned and zeroed") {
  AlignedBuffer<float> b(1001);
  CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % kAlignment == 0);
  for (float v : b) REQUIRE(v == 0.0f);
  b.resize(0);
  CHECK(b.empty());
}

TEST_CASE("MappedFile maps a file and names a missing one") {
  const auto path = std::filesystem::temp_directory_path() / "tinyllm_mapped_file_test.bin";
  {
    std::ofstream f(path, std::ios::binary);
    f << "hello tinyllm";
  }
  MappedFile m(path.string());
  REQUIRE(m.size() == 13);
  CHECK(std::string(reinterpret_cast<const char*>(m.data()), m.size()) == "hello tinyllm");
  MappedFile moved = std::move(m);
  CHECK(moved.size() == 13);
  CHECK(m.data() == nullptr);
  std::filesystem::remove(path);
  try {
    MappedFile missing("/nonexistent/tinyllm/file.gguf");
    FAIL("no error for a missing file");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("/nonexistent/tinyllm/file.gguf") != std::string::npos);
  }
}

TEST_CASE("ThreadPool covers every index exactly once, for many sizes and thread counts") {
  for (unsigned threads : {1u, 2u, 3u, 5u}) {
    ThreadPool pool(threads);
    CHECK(pool.size() == threads);
    for (std::size_t n : {0u, 1u, 2u, 7u, 64u, 1000u}) {
      for (std::size_t grain : {1u, 4u, 16u}) {
        std::vector<std::atomic<int>> hits(n);
        pool.parallel_for(n, [&](std::size_t b, std::size_t e) {
          CHECK((b % grain == 0));
          for (std::size_t i = b; i < e; ++i) hits[i].fetch_add(1);
        }, grain);
        for (std::size_t i = 0; i < n; ++i) REQUIRE(hits[i].load() == 1);
      }
    }
    std::atomic<unsigned> calls{0};
    for (int rep = 0; rep < 1000; ++rep) pool.run([&](unsigned, unsigned nt) { calls.fetch_add(1); });
    CHECK(calls.load() == 1000 * threads);
  }
}

TEST_CASE("ThreadPool passes an exception from a worker to the caller") {
  ThreadPool pool(3);
  CHECK_THROWS_AS(pool.run([](unsigned t, unsigned) { if (t == 2) throw Error("boom"); }), Error);
  std::atomic<int> after{0};
  pool.run([&](unsigned, unsigned) { after.fetch_add(1); });
  CHECK(after.load() == 3);
}

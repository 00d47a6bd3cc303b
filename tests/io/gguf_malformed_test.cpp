// Malformed GGUF input: every truncation, targeted corruptions of each field, and random byte
// mutations. The only acceptable outcomes are a valid parse or a tinyllm::Error that names the
// field, the byte offset and the file; never a crash, an out-of-bounds read or a huge allocation.
#include <tinyllm/io/gguf.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

using V = GGUFValue;
using T = GGUFType;

std::vector<std::byte> small_gguf() {
  GGUFWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_f32("llama.rope.freq_base", 10000.0f);
  w.set_bool("llama.flag", true);
  const std::vector<std::string> tokens{"<s>", "a", "bc"};
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set("nested", V::array(T::ARRAY, {V::array(T::INT16, {V::int16(-1)}), V::array(T::STRING, {})}));
  std::vector<std::byte> q8(34, std::byte{3});
  w.add_tensor("blk.0.q8", DType::Q8_0, {32}, q8.data(), q8.size());
  std::vector<float> f32(12, 1.5f);
  w.add_tensor("blk.0.f32", DType::F32, {4, 3}, f32.data(), f32.size() * sizeof(float));
  return w.to_bytes();
}

// A hand-assembled GGUF, for files the writer refuses to produce.
struct Raw {
  std::vector<std::byte> bytes;

  template <class U>
  Raw& put(U v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof v);
    return *this;
  }
  Raw& str(std::string_view s) {
    put<std::uint64_t>(s.size());
    for (char c : s) bytes.push_back(std::byte(c));
    return *this;
  }
  Raw& type(T t) { return put<std::uint32_t>(static_cast<std::uint32_t>(t)); }
  Raw& kv_u32(std::string_view key, std::uint32_t v) { return str(key).type(T::UINT32).put(v); }
  Raw& tensor(std::string_view name, std::vector<std::uint64_t> dims, DType type, std::uint64_t offset) {
    str(name).put<std::uint32_t>(static_cast<std::uint32_t>(dims.size()));
    for (auto d : dims) put(d);
    return put<std::uint32_t>(static_cast<std::uint32_t>(type)).put(offset);
  }
  Raw& pad_data(std::size_t n_data_bytes) {
    bytes.resize((bytes.size() + 31) / 32 * 32 + n_data_bytes);
    return *this;
  }
};

Raw header(std::uint64_t n_tensors, std::uint64_t n_kv, std::uint32_t version = 3) {
  return Raw{}.put(kGGUFMagic).put(version).put(n_tensors).put(n_kv);
}

// The parse must fail with an Error whose message contains `needle`, the file name and an offset.
void check_error(const Raw& raw, std::string_view needle) {
  CAPTURE(needle);
  try {
    GGUFFile::parse(raw.bytes, "bad.gguf");
    FAIL("parsed without error");
  } catch (const Error& e) {
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(what.find(needle) != std::string::npos);
    CHECK(what.find("bad.gguf, byte ") != std::string::npos);
  }
}

}  // namespace

TEST_CASE("the hand-assembled GGUF of the targeted cases is valid when left intact") {
  const auto f = GGUFFile::parse(
      header(1, 2).kv_u32("a", 1).kv_u32("general.alignment", 32).tensor("w", {8}, DType::F32, 0).pad_data(32).bytes,
      "raw.gguf");
  CHECK(f.get_u32("a") == 1);
  CHECK(f.tensor("w").n_bytes == 32);
}

TEST_CASE("a GGUF truncated at every byte offset fails cleanly") {
  const auto bytes = small_gguf();
  const auto full = GGUFFile::parse(bytes, "small.gguf");
  REQUIRE(full.tensors().size() == 2);
  // Only the padding after the last tensor's data may be cut.
  std::size_t data_end = 0;
  for (const auto& t : full.tensors())
    data_end = std::max(data_end, std::size_t(static_cast<const std::byte*>(t.data) - bytes.data()) + t.n_bytes);
  for (std::size_t n = 0; n <= bytes.size(); ++n) {
    CAPTURE(n);
    const std::span<const std::byte> prefix(bytes.data(), n);
    if (n < data_end)
      CHECK_THROWS_AS(GGUFFile::parse(prefix, "small.gguf"), Error);
    else
      CHECK(GGUFFile::parse(prefix, "small.gguf").tensors().size() == 2);
  }
}

TEST_CASE("bad magic and bad versions are named") {
  check_error(Raw{}.put<std::uint32_t>(0x46554748).put<std::uint32_t>(3).put<std::uint64_t>(0).put<std::uint64_t>(0), "magic");
  check_error(Raw{}.put<std::uint16_t>(0x4747), "magic");
  check_error(header(0, 0, 1), "version 1");
  check_error(header(0, 0, 4), "version 4");
  check_error(header(0, 0, 0xFFFFFFFF), "version 4294967295");
  check_error(header(0, 0, 0x03000000), "big-endian");
  CHECK_NOTHROW(GGUFFile::parse(header(0, 0, 2).bytes, "v2.gguf"));
}

TEST_CASE("counts and lengths larger than the file are rejected before allocating") {
  check_error(header(1ull << 60, 0), "tensor count");
  check_error(header(UINT64_MAX, 0), "tensor count");
  check_error(header(0, 1ull << 60), "metadata count");
  check_error(header(0, 2).kv_u32("a", 1), "metadata count");
  check_error(header(0, 1).put<std::uint64_t>(1ull << 40).put<std::uint64_t>(0), "metadata key string length");
  check_error(header(0, 1).put<std::uint64_t>(UINT64_MAX).put<std::uint64_t>(0), "metadata key string length");
  check_error(header(0, 1).str("k").type(T::STRING).put<std::uint64_t>(5).put<std::uint32_t>(0), "metadata 'k' string length 5");
  check_error(header(0, 1).str("k").type(T::ARRAY).type(T::UINT32).put<std::uint64_t>(1ull << 61), "metadata 'k' array count");
  check_error(header(0, 1).str("k").type(T::ARRAY).type(T::STRING).put<std::uint64_t>(3).str("a"), "array count 3");
  check_error(header(0, 1).str("k").type(T::ARRAY).type(T::ARRAY).put<std::uint64_t>(UINT64_MAX), "array count");
  check_error(header(1, 0).put<std::uint64_t>(1ull << 50).put<std::uint64_t>(0).put<std::uint64_t>(0).put<std::uint64_t>(0).put<std::uint64_t>(0),
              "tensor name string length");
}

TEST_CASE("unknown type ids, bad bools and bad keys are named") {
  check_error(header(0, 1).str("k").put<std::uint32_t>(13).put<std::uint32_t>(0), "metadata 'k' has unknown value type id 13");
  check_error(header(0, 1).str("k").put<std::uint32_t>(0xFFFFFFFF).put<std::uint32_t>(0), "unknown value type id 4294967295");
  check_error(header(0, 1).str("k").type(T::ARRAY).put<std::uint32_t>(99).put<std::uint64_t>(0),
              "metadata 'k' array element has unknown value type id 99");
  check_error(header(0, 1).str("k").type(T::BOOL).put<std::uint8_t>(2), "bool of value 2");
  check_error(header(0, 1).str("").type(T::UINT32).put<std::uint32_t>(0), "metadata key length 0");
  check_error(header(0, 2).kv_u32("k", 1).kv_u32("k", 2), "duplicate metadata key 'k'");
  check_error(header(1, 0).tensor("w", {32}, DType(99), 0).pad_data(128), "tensor 'w' has unknown tensor type id 99");
  check_error(header(1, 0).tensor("w", {32}, DType(4), 0).pad_data(128), "unknown tensor type id 4");  // the removed Q4_2
}

TEST_CASE("bad general.alignment values are named") {
  check_error(header(0, 1).kv_u32("general.alignment", 0), "general.alignment");
  check_error(header(0, 1).kv_u32("general.alignment", 3), "general.alignment");
  check_error(header(0, 1).kv_u32("general.alignment", 48), "general.alignment");
  check_error(header(0, 1).str("general.alignment").type(T::STRING).str("32"), "general.alignment");
  check_error(header(0, 1).str("general.alignment").type(T::INT32).put<std::int32_t>(-32), "general.alignment");
  // Another integer type holding a power of two is accepted.
  const auto f = GGUFFile::parse(header(0, 1).str("general.alignment").type(T::UINT64).put<std::uint64_t>(64).bytes, "a.gguf");
  CHECK(f.alignment() == 64);
}

TEST_CASE("found by fuzzing: alignments below 8, and metadata arrays past the value budget") {
  // An alignment of 1, 2 or 4 would leave blocks misaligned in memory
  // (tests/fuzz/regressions/gguf/alignment-1-misaligned-q8_0.gguf).
  check_error(header(0, 1).kv_u32("general.alignment", 4), "at least 8");
  // Each array value takes ~40 bytes of memory for 1 in the file: past the budget is an Error.
  Raw big = header(0, 1).str("big").type(T::ARRAY).type(T::UINT8).put<std::uint64_t>(kGGUFMaxMetadataValues + 1);
  big.bytes.resize(big.bytes.size() + kGGUFMaxMetadataValues + 1);
  check_error(big, "budget");
}

TEST_CASE("arrays nested past the depth limit are rejected without deep recursion") {
  auto nested = [](int levels) {
    Raw r = header(0, 1).str("deep").type(T::ARRAY);
    for (int i = 1; i < levels; ++i) r.type(T::ARRAY).put<std::uint64_t>(1);
    return r.type(T::UINT8).put<std::uint64_t>(0);
  };
  CHECK_NOTHROW(GGUFFile::parse(nested(kGGUFMaxArrayDepth).bytes, "ok.gguf"));
  check_error(nested(kGGUFMaxArrayDepth + 1), "nesting depth");
  check_error(nested(100000), "nesting depth");
}

TEST_CASE("bad tensor infos are named: n_dims, dimensions, block size, offsets, names") {
  check_error(header(1, 0).tensor("w", {1, 1, 1, 1, 1}, DType::F32, 0).pad_data(32), "tensor 'w' has n_dims 5");
  check_error(header(1, 0).tensor("w", {}, DType::F32, 0).pad_data(32), "tensor 'w' has n_dims 0");
  check_error(header(1, 0).tensor("w", {8, 0}, DType::F32, 0).pad_data(32), "tensor 'w' dimension 1 is 0");
  check_error(header(1, 0).tensor("w", {1ull << 63}, DType::F32, 0).pad_data(32), "tensor 'w' dimension 0 is");
  check_error(header(1, 0).tensor("w", {1ull << 32, 1ull << 32}, DType::F32, 0).pad_data(32), "product overflows");
  check_error(header(1, 0).tensor("w", {1ull << 21, 1ull << 21, 1ull << 21}, DType::I8, 0).pad_data(32), "product overflows");
  check_error(header(1, 0).tensor("w", {1ull << 62}, DType::F64, 0).pad_data(32), "byte size overflows");
  check_error(header(1, 0).tensor("w", {16}, DType::Q8_0, 0).pad_data(64), "not a multiple of the Q8_0 block size 32");
  check_error(header(1, 0).tensor("w", {8}, DType::F32, 4).pad_data(64), "tensor 'w' data offset 4 is not a multiple of the alignment 32");
  check_error(header(1, 0).tensor("w", {8}, DType::F32, 32).pad_data(32), "tensor 'w' data (offset 32, 32 bytes) lies past the end");
  check_error(header(1, 0).tensor("w", {8}, DType::F32, 0).pad_data(31), "lies past the end");
  check_error(header(1, 0).tensor("w", {8}, DType::F32, 1ull << 40).pad_data(32), "lies past the end");
  check_error(header(1, 0).tensor("w", {8}, DType::F32, UINT64_MAX - 31).pad_data(32), "lies past the end");
  check_error(header(1, 0).tensor("w", {1ull << 40}, DType::F32, 0).pad_data(32), "lies past the end");
  check_error(header(2, 0).tensor("w", {8}, DType::F32, 0).tensor("w", {8}, DType::F32, 32).pad_data(64), "duplicate tensor name 'w'");
  check_error(header(2, 0).tensor("a", {16}, DType::F32, 0).tensor("b", {8}, DType::F32, 32).pad_data(96), "tensor 'b' data overlaps tensor 'a'");
  check_error(header(2, 0).tensor("a", {8}, DType::F32, 32).tensor("b", {8}, DType::F32, 32).pad_data(96), "overlaps");
  check_error(header(1, 0).tensor("", {8}, DType::F32, 0).pad_data(32), "tensor name length 0");
  check_error(header(1, 0).tensor(std::string(65, 'n'), {8}, DType::F32, 0).pad_data(32), "tensor name length 65");
  // Tensors may be stored out of order, and a non-default alignment governs the offsets.
  const auto f = GGUFFile::parse(
      header(2, 1).kv_u32("general.alignment", 8).tensor("a", {2}, DType::F32, 8).tensor("b", {2}, DType::F32, 0).pad_data(16).bytes,
      "ok.gguf");
  CHECK(f.tensor("a").data == static_cast<const std::byte*>(f.tensor("b").data) + 8);
}

TEST_CASE("random byte mutations of a valid GGUF give a valid parse or a tinyllm::Error") {
  const auto original = small_gguf();
  const std::size_t header_bytes = GGUFFile::parse(original, "small.gguf").data_offset();
  std::mt19937 rng(20240607);
  int n_ok = 0, n_error = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    auto bytes = original;
    const int n_mutations = 1 + int(rng() % 4);
    for (int m = 0; m < n_mutations; ++m) {
      // Mostly the header, metadata and tensor infos, where the structure lives.
      const std::size_t at = rng() % 8 ? rng() % header_bytes : rng() % bytes.size();
      switch (rng() % 4) {
        case 0: bytes[at] = std::byte(rng() & 0xff); break;
        case 1: bytes[at] ^= std::byte(1u << (rng() % 8)); break;
        case 2: bytes[at] = std::byte{0xff}; break;
        case 3: bytes[at] = std::byte{0}; break;
      }
    }
    if (rng() % 16 == 0) bytes.resize(rng() % bytes.size());
    try {
      const auto f = GGUFFile::parse(bytes, "fuzz.gguf");
      for (const auto& t : f.tensors()) {
        const auto* p = static_cast<const std::byte*>(t.data);
        REQUIRE(p >= bytes.data() + f.data_offset());
        REQUIRE(p + t.n_bytes <= bytes.data() + bytes.size());
      }
      ++n_ok;
    } catch (const Error&) {
      ++n_error;
    }
  }
  MESSAGE("fuzz: " << n_ok << " parsed, " << n_error << " rejected");
  CHECK(n_ok > 0);
  CHECK(n_error > 0);
}

TEST_CASE("found by fuzzing: a NaN weight gives NaN logits, never finite nonsense") {
  // tests/fuzz/regressions/gguf/nan-in-norm-weight-q8_0.gguf: a Q8_0 model whose first attention
  // norm weight is NaN. The activations the quantized matmul reads are then NaN.
  LoadedModel lm = load(std::string(TINYLLM_SOURCE_DIR) + "/tests/fuzz/regressions/gguf/nan-in-norm-weight-q8_0.gguf");
  ThreadPool pool(1);
  const std::size_t vocab = lm.config().vocab_size;
  std::vector<float> logits(vocab);
  const std::int32_t token = 1, pos = 0;
  auto cache = lm.model().new_kv_cache(1);
  lm.model().forward(pool, std::span(&token, 1), std::span(&pos, 1), *cache, MatrixView<float>(logits.data(), 1, vocab));
  CHECK(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isnan(v); }));
}

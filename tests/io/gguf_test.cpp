#include <tinyllm/core/half.hpp>
#include <tinyllm/io/gguf.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "test_util.hpp"

using namespace tinyllm;
using tinyllm::test::testdata;

namespace {

using V = GGUFValue;
using T = GGUFType;

// One value of every type, arrays of several kinds among them, in the order they are written.
std::vector<std::pair<std::string, GGUFValue>> every_type() {
  return {
      {"t.uint8", V::uint8(250)},
      {"t.int8", V::int8(-100)},
      {"t.uint16", V::uint16(65000)},
      {"t.int16", V::int16(-32000)},
      {"t.uint32", V::uint32(4000000000u)},
      {"t.int32", V::int32(-2000000000)},
      {"t.float32", V::float32(3.25f)},
      {"t.bool_true", V::boolean(true)},
      {"t.bool_false", V::boolean(false)},
      {"t.string", V::string("h\xc3\xa9llo, \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\xa6\x99")},  // héllo, 世界 🦙
      {"t.string_empty", V::string("")},
      {"t.uint64", V::uint64(0xFEDCBA9876543210ull)},
      {"t.int64", V::int64(INT64_MIN)},
      {"t.float64", V::float64(-1.0e300)},
      {"t.array_uint8", V::array(T::UINT8, {V::uint8(1), V::uint8(255)})},
      {"t.array_bool", V::array(T::BOOL, {V::boolean(true), V::boolean(false)})},
      {"t.array_string", V::array(T::STRING, {V::string("a"), V::string(""), V::string("\xc3\xbc")})},
      {"t.array_float64", V::array(T::FLOAT64, {V::float64(0.5), V::float64(-2.0)})},
      {"t.array_empty_float32", V::array(T::FLOAT32, {})},
      {"t.array_of_arrays",  // inner arrays of different element types, one of them empty
       V::array(T::ARRAY, {V::array(T::INT16, {V::int16(-1), V::int16(7)}),
                           V::array(T::STRING, {V::string("x")}),
                           V::array(T::UINT64, {})})},
      {"t.array_3_deep",
       V::array(T::ARRAY, {V::array(T::ARRAY, {V::array(T::INT64, {V::int64(-5)})})})},
      {"t.array_empty_of_arrays", V::array(T::ARRAY, {})},
  };
}

std::vector<std::byte> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> b(n);
  for (auto& x : b) x = std::byte(rng() & 0xff);
  return b;
}

std::size_t offset_in(const GGUFFile& f, const TensorView& t) {
  return static_cast<std::size_t>(static_cast<const std::byte*>(t.data) - f.bytes().data());
}

}  // namespace

TEST_CASE("writer to reader round trip keeps every metadata type, in order") {
  GGUFWriter w;
  for (const auto& [key, value] : every_type()) w.set(key, value);
  const auto bytes = w.to_bytes();
  const auto f = GGUFFile::parse(bytes, "every_type.gguf");

  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  CHECK_FALSE(f.has("general.alignment"));
  CHECK(f.tensors().empty());
  CHECK(f.metadata() == every_type());
  for (std::uint32_t id = 0; id < kGGUFTypeCount; ++id) {
    CAPTURE(id);
    CHECK(std::any_of(f.metadata().begin(), f.metadata().end(),
                      [&](const auto& kv) { return kv.second.type() == GGUFType(id); }));
  }
  CHECK(f.find("t.string")->as<std::string>() == "h\xc3\xa9llo, \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\xa6\x99");
  CHECK(f.find("t.array_empty_float32")->array_type() == GGUFType::FLOAT32);
  CHECK(f.find("t.array_empty_float32")->items().empty());
  const auto& nested = f.find("t.array_of_arrays")->items();
  REQUIRE(nested.size() == 3);
  CHECK(nested[1].array_type() == GGUFType::STRING);
  CHECK(nested[2].array_type() == GGUFType::UINT64);
}

TEST_CASE("writer to reader round trip keeps F32, F16 and Q8_0 tensors byte for byte, aligned") {
  std::vector<float> f32(15);  // [3, 5]
  for (std::size_t i = 0; i < f32.size(); ++i) f32[i] = 0.25f * float(i) - 1.0f;
  std::vector<F16> f16(7);     // odd length, so padding follows it
  for (std::size_t i = 0; i < f16.size(); ++i) f16[i] = F16{f32_to_f16(float(i) / 3.0f)};
  const auto q8 = random_bytes(2 * 2 * 34, 7);  // [2, 64]: 2 rows of 2 blocks

  for (const std::uint32_t alignment : {32u, 64u, 8u, 128u}) {
    CAPTURE(alignment);
    GGUFWriter w(alignment);
    w.set_string("general.architecture", "test");
    w.add_tensor("f16.weight", DType::F16, {7}, f16.data(), f16.size() * sizeof(F16));
    w.add_tensor("f32.weight", DType::F32, {5, 3}, f32.data(), f32.size() * sizeof(float));
    w.add_tensor("q8.weight", DType::Q8_0, {64, 2}, q8.data(), q8.size());
    const auto bytes = w.to_bytes();
    const auto f = GGUFFile::parse(bytes, "tensors.gguf");

    CHECK(f.alignment() == alignment);
    CHECK(f.has("general.alignment") == (alignment != 32));
    if (alignment != 32) CHECK(f.get_u32("general.alignment") == alignment);
    CHECK(f.data_offset() % alignment == 0);
    REQUIRE(f.tensors().size() == 3);
    CHECK(f.tensors()[0].name == "f16.weight");  // file order

    const auto& a = f.tensor("f32.weight");
    CHECK(a.dtype == DType::F32);
    CHECK(a.n_dims == 2);
    CHECK(a.dims == std::array<std::uint64_t, 4>{5, 3, 1, 1});
    CHECK(a.rows() == 3);
    CHECK(a.cols() == 5);
    REQUIRE(a.n_bytes == f32.size() * sizeof(float));
    CHECK(std::memcmp(a.data, f32.data(), a.n_bytes) == 0);

    const auto& h = f.tensor("f16.weight");
    CHECK(h.dtype == DType::F16);
    CHECK(h.n_dims == 1);
    REQUIRE(h.n_bytes == 14);
    CHECK(std::memcmp(h.data, f16.data(), h.n_bytes) == 0);

    const auto& q = f.tensor("q8.weight");
    CHECK(q.dtype == DType::Q8_0);
    REQUIRE(q.n_bytes == q8.size());
    CHECK(std::memcmp(q.data, q8.data(), q.n_bytes) == 0);

    for (const auto& t : f.tensors()) {
      CAPTURE(t.name);
      CHECK(offset_in(f, t) % alignment == 0);
      CHECK(offset_in(f, t) >= f.data_offset());
      CHECK(offset_in(f, t) + t.n_bytes <= bytes.size());
    }
  }
}

TEST_CASE("GGUFWriter::write and GGUFFile::open round trip through a real file") {
  const auto path = std::filesystem::temp_directory_path() /
                    ("tinyllm_io_test_" + std::to_string(::getpid()) + ".gguf");
  const std::vector<float> x{1.0f, -2.0f, 3.5f, 0.0f};
  {
    GGUFWriter w(64);
    w.set_u32("test.n", 4);
    w.add_tensor("x", DType::F32, {4}, x.data(), x.size() * sizeof(float));
    w.write(path.string());
  }
  {
    const auto f = GGUFFile::open(path.string());
    CHECK(f.name() == path.string());
    CHECK(f.get_u32("test.n") == 4);
    CHECK(f.alignment() == 64);
    const auto& t = f.tensor("x");
    REQUIRE(t.n_bytes == 16);
    CHECK(std::memcmp(t.data, x.data(), 16) == 0);
    CHECK(reinterpret_cast<std::uintptr_t>(t.data) % 64 == 0);  // mmap is page aligned
  }
  std::filesystem::remove(path);
  CHECK_THROWS_WITH_AS(GGUFFile::open(path.string()), doctest::Contains("cannot open"), Error);
  CHECK_THROWS_AS(GGUFWriter().write("/nonexistent-dir/x.gguf"), Error);
}

TEST_CASE("typed getters convert integers that fit and name the key when they cannot") {
  GGUFWriter w;
  w.set_u32("a.u32", 7);
  w.set("a.i64", V::int64(42));
  w.set("a.neg", V::int32(-1));
  w.set("a.big", V::uint64(1ull << 40));
  w.set_f32("a.f32", 0.125f);
  w.set("a.f64", V::float64(0.5));
  w.set_bool("a.bool", true);
  w.set_string("a.str", "hi");
  const std::vector<std::string> strs{"x", "yz"};
  w.set_string_array("a.strs", strs);
  const std::vector<float> floats{1.5f, -2.0f};
  w.set_f32_array("a.floats", floats);
  const std::vector<std::int32_t> ints{-3, 9};
  w.set_i32_array("a.ints", ints);
  w.set("a.u8s", V::array(T::UINT8, {V::uint8(200), V::uint8(1)}));
  w.set("a.u32s", V::array(T::UINT32, {V::uint32(3000000000u)}));
  w.set_u32("a.u32", 8);  // replaces, keeping the first position
  const auto bytes = w.to_bytes();
  const auto f = GGUFFile::parse(bytes, "getters.gguf");

  CHECK(f.metadata()[0].first == "a.u32");
  CHECK(f.get_u32("a.u32") == 8);
  CHECK(f.get_u32("a.i64") == 42);
  CHECK(f.get_u64("a.big") == (1ull << 40));
  CHECK(f.get_u32_or("a.missing", 5) == 5);
  CHECK(f.get_u32_or("a.u32", 5) == 8);
  CHECK(f.get_f32("a.f32") == 0.125f);
  CHECK(f.get_f32("a.f64") == 0.5f);
  CHECK(f.get_f32_or("a.missing", 2.5f) == 2.5f);
  CHECK(f.get_bool_or("a.bool", false));
  CHECK_FALSE(f.get_bool_or("a.missing", false));
  CHECK(f.get_string("a.str") == "hi");
  CHECK(f.get_string_array("a.strs") == strs);
  CHECK(f.get_f32_array("a.floats") == floats);
  CHECK(f.get_i32_array("a.ints") == ints);
  CHECK(f.get_i32_array("a.u8s") == std::vector<std::int32_t>{200, 1});
  CHECK(f.find("a.missing") == nullptr);

  CHECK_THROWS_WITH_AS(f.get_u32("a.missing"), doctest::Contains("missing metadata key 'a.missing'"), Error);
  CHECK_THROWS_WITH_AS(f.get_u32("a.missing"), doctest::Contains("getters.gguf"), Error);
  CHECK_THROWS_WITH_AS(f.get_u32("a.neg"), doctest::Contains("'a.neg' holds an integer out of range"), Error);
  CHECK_THROWS_WITH_AS(f.get_u32("a.big"), doctest::Contains("'a.big'"), Error);
  CHECK_THROWS_WITH_AS(f.get_u32("a.str"), doctest::Contains("'a.str' has type STRING"), Error);
  CHECK_THROWS_WITH_AS(f.get_u32_or("a.str", 1), doctest::Contains("'a.str'"), Error);
  CHECK_THROWS_WITH_AS(f.get_f32("a.u32"), doctest::Contains("'a.u32' has type UINT32"), Error);
  CHECK_THROWS_WITH_AS(f.get_bool_or("a.u32", true), doctest::Contains("'a.u32'"), Error);
  CHECK_THROWS_WITH_AS(f.get_string("a.strs"), doctest::Contains("ARRAY of STRING"), Error);
  CHECK_THROWS_WITH_AS(f.get_f32_array("a.ints"), doctest::Contains("'a.ints' has type ARRAY of INT32"), Error);
  CHECK_THROWS_WITH_AS(f.get_string_array("a.floats"), doctest::Contains("'a.floats'"), Error);
  CHECK_THROWS_WITH_AS(f.get_i32_array("a.u32s"), doctest::Contains("'a.u32s' holds an integer out of range"), Error);
  CHECK_THROWS_WITH_AS(f.get_i32_array("a.strs"), doctest::Contains("'a.strs'"), Error);
  CHECK(f.find_tensor("nope") == nullptr);
  CHECK_THROWS_WITH_AS(f.tensor("nope"), doctest::Contains("no tensor named 'nope'"), Error);
  CHECK_THROWS_AS(f.find("a.str")->as<std::uint32_t>(), Error);
}

TEST_CASE("GGUFWriter rejects what the reader would reject") {
  CHECK_THROWS_WITH_AS(GGUFWriter(0), doctest::Contains("alignment"), Error);
  CHECK_THROWS_WITH_AS(GGUFWriter(3), doctest::Contains("alignment"), Error);
  CHECK_THROWS_WITH_AS(GGUFWriter(4), doctest::Contains("alignment"), Error);  // the spec asks for a multiple of 8
  GGUFWriter w;
  CHECK_THROWS_WITH_AS(w.set_u32("general.alignment", 64), doctest::Contains("constructor"), Error);
  CHECK_THROWS_AS(w.set_u32("", 1), Error);
  CHECK_THROWS_AS(V::array(T::UINT8, {V::uint8(1), V::int8(1)}), Error);
  CHECK_THROWS_AS(V::array(GGUFType(13), {}), Error);

  GGUFValue deep = V::array(T::UINT8, {});
  for (int level = 1; level < kGGUFMaxArrayDepth; ++level) deep = V::array(T::ARRAY, {deep});
  CHECK_NOTHROW(w.set("deep.ok", deep));
  CHECK_THROWS_WITH_AS(w.set("deep.bad", V::array(T::ARRAY, {deep})), doctest::Contains("too deep"), Error);
  CHECK_NOTHROW(GGUFFile::parse(w.to_bytes(), "deep.gguf"));

  const std::vector<float> x(64);
  CHECK_THROWS_WITH_AS(w.add_tensor("x", DType::F32, {8, 8}, x.data(), 4 * 63), doctest::Contains("252 bytes"), Error);
  CHECK_THROWS_AS(w.add_tensor("x", DType::F32, {}, x.data(), 4), Error);
  CHECK_THROWS_AS(w.add_tensor("x", DType::F32, {1, 1, 1, 1, 1}, x.data(), 4), Error);
  CHECK_THROWS_AS(w.add_tensor("x", DType::F32, {8, 0}, x.data(), 0), Error);
  CHECK_THROWS_WITH_AS(w.add_tensor("x", DType::Q8_0, {16}, x.data(), 17), doctest::Contains("block size 32"), Error);
  CHECK_THROWS_AS(w.add_tensor(std::string(65, 'n'), DType::F32, {1}, x.data(), 4), Error);
  w.add_tensor("x", DType::F32, {64}, x.data(), 256);
  CHECK_THROWS_WITH_AS(w.add_tensor("x", DType::F32, {64}, x.data(), 256), doctest::Contains("duplicate"), Error);
}

TEST_CASE("every shared vocab GGUF reads, with consistent tokenizer arrays") {
  TINYLLM_REQUIRE_TESTDATA("vocab");
  struct Expect { const char* name; const char* model; std::size_t n_tokens; };
  for (const Expect e : {Expect{"llama-spm", "llama", 32000}, Expect{"phi-3", "llama", 32064},
                         Expect{"gpt-2", "gpt2", 50257}, Expect{"falcon", "gpt2", 65024},
                         Expect{"deepseek-llm", "gpt2", 102400}}) {
    CAPTURE(e.name);
    const auto f = GGUFFile::open(testdata(std::string("vocab/ggml-vocab-") + e.name + ".gguf").string());
    CHECK(f.tensors().empty());
    CHECK(f.get_string("tokenizer.ggml.model") == e.model);
    const auto tokens = f.get_string_array("tokenizer.ggml.tokens");
    CHECK(tokens.size() == e.n_tokens);
    if (f.has("tokenizer.ggml.scores")) CHECK(f.get_f32_array("tokenizer.ggml.scores").size() == tokens.size());
    if (f.has("tokenizer.ggml.token_type"))
      CHECK(f.get_i32_array("tokenizer.ggml.token_type").size() == tokens.size());
    if (std::string(e.model) == "gpt2") CHECK(!f.get_string_array("tokenizer.ggml.merges").empty());
    CHECK(f.get_u32("tokenizer.ggml.bos_token_id") < tokens.size());
  }
}

TEST_CASE("every shared arch GGUF reads and each tensor lies inside the file") {
  TINYLLM_REQUIRE_TESTDATA("arch");
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(testdata("arch")))
    if (entry.path().extension() == ".gguf") paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  CHECK(paths.size() >= 10);
  for (const auto& path : paths) {
    CAPTURE(path.filename().string());
    const auto f = GGUFFile::open(path.string());
    CHECK(!f.get_string("general.architecture").empty());
    CHECK(!f.tensors().empty());
    for (const auto& t : f.tensors()) {
      CAPTURE(t.name);
      const std::size_t at = offset_in(f, t);
      CHECK(at >= f.data_offset());
      CHECK(at % f.alignment() == 0);
      CHECK(at + t.n_bytes <= f.bytes().size());
      CHECK(t.n_bytes == row_bytes(t.dtype, t.cols()) * t.rows());
    }
  }
  const auto llama = GGUFFile::open(testdata("arch/llama.gguf").string());
  CHECK(llama.tensors().size() == 30);
  const auto& emb = llama.tensor("token_embd.weight");  // [vocab 512, n_embd 256]
  CHECK(emb.dtype == DType::F32);
  CHECK(emb.n_dims == 2);
  CHECK(emb.dims == std::array<std::uint64_t, 4>{256, 512, 1, 1});
}

TEST_CASE("quantized arch GGUFs have the tensor types llama-quantize reported") {
  TINYLLM_REQUIRE_TESTDATA("arch/quant_tensor_types.txt");
  // Lines: "== FILE  general.file_type=N", then "  NAME TYPE" or "  blk.*.NAME L0=TYPE L1=TYPE ...".
  std::ifstream in(testdata("arch/quant_tensor_types.txt"));
  std::map<std::string, std::map<std::string, std::string>> expected;  // file -> tensor -> type
  std::string line, file;
  int n_checked = 0;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string first, second;
    words >> first >> second;
    if (first == "==") { file = second; continue; }
    if (first.empty()) continue;
    if (first.rfind("blk.*.", 0) == 0) {
      for (std::string layer = second; !layer.empty(); layer.clear(), words >> layer) {
        const auto eq = layer.find('=');
        expected[file]["blk." + layer.substr(1, eq - 1) + "." + first.substr(6)] = layer.substr(eq + 1);
      }
    } else {
      expected[file][first] = second;
    }
  }
  REQUIRE(expected.size() == 5);
  for (const auto& [name, types] : expected) {
    CAPTURE(name);
    const auto f = GGUFFile::open(testdata("arch/" + name).string());
    for (const auto& [tensor, type] : types) {
      CAPTURE(tensor);
      CHECK(std::string(tinyllm::name(f.tensor(tensor).dtype)) == type);
      ++n_checked;
    }
  }
  CHECK(n_checked == 5 * (3 + 9 * 3));
}

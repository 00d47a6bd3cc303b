// safetensors: the writer's files read back; every malformed header a clear Error.
#include <tinyllm/tinyllm.hpp>

#include <cstring>

#include "test_util.hpp"

using namespace tinyllm;

namespace {

// A file of the given header text and data bytes.
std::vector<std::byte> file_of(const std::string& header, std::size_t data_bytes) {
  std::vector<std::byte> out(8 + header.size() + data_bytes);
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[std::size_t(i)] = std::byte((n >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

void check_rejected(const std::string& header, std::size_t data_bytes, const std::string& why) {
  CAPTURE(header);
  const auto bytes = file_of(header, data_bytes);
  CHECK_THROWS_WITH_AS(SafetensorsFile::parse_bytes(bytes, "bad.safetensors"), doctest::Contains(why.c_str()), Error);
}

}  // namespace

TEST_CASE("safetensors: written tensors and metadata read back in place") {
  SafetensorsWriter w;
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -1.0f};
  const std::vector<std::uint16_t> b = {0x3c00, 0xc000, 0x7bff};   // F16 1, -2, 65504
  const std::vector<std::uint16_t> c = {0x3f80, 0x4049};            // BF16 1, 3.140625
  w.add_tensor("a", DType::F32, {2, 3}, a.data(), a.size() * 4);
  w.add_tensor("b", DType::F16, {3}, b.data(), b.size() * 2);
  w.add_tensor("c", DType::BF16, {1, 2}, c.data(), c.size() * 2);
  w.set_metadata("format", "pt");
  const auto bytes = w.to_bytes();
  const auto f = SafetensorsFile::parse_bytes(bytes, "mem");
  REQUIRE(f.tensors().size() == 3);
  CHECK(f.metadata().at("format") == "pt");
  const auto& ta = f.tensor("a");
  CHECK(ta.dtype == DType::F32);
  CHECK(ta.shape == std::vector<std::uint64_t>{2, 3});
  CHECK(std::memcmp(ta.data, a.data(), 24) == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(ta.data) % 8 == 0);   // the header is padded to 8 bytes
  const TensorView v = ta.view("mem");
  CHECK(v.rows() == 2);
  CHECK(v.cols() == 3);
  CHECK(f16_to_f32(static_cast<const std::uint16_t*>(f.tensor("b").data)[2]) == 65504.0f);
  CHECK(bf16_to_f32(static_cast<const std::uint16_t*>(f.tensor("c").data)[1]) == 3.140625f);
  CHECK(f.find("missing") == nullptr);
  CHECK_THROWS_WITH_AS(f.tensor("missing"), doctest::Contains("missing tensor missing"), Error);
  CHECK_THROWS_AS(w.add_tensor("a", DType::F32, {1}, a.data(), 4), Error);      // twice
  CHECK_THROWS_AS(w.add_tensor("d", DType::F32, {2}, a.data(), 4), Error);      // size is not the shape's
}

TEST_CASE("safetensors: malformed files are clear errors") {
  CHECK_THROWS_WITH_AS(SafetensorsFile::parse_bytes(std::vector<std::byte>(5), "short"), doctest::Contains("8-byte header"), Error);
  auto huge = file_of("{}", 0);
  huge[6] = std::byte(1);   // a header length far past the end
  CHECK_THROWS_WITH_AS(SafetensorsFile::parse_bytes(huge, "huge"), doctest::Contains("fits in the file"), Error);
  check_rejected("{\"a\": ", 0, "not JSON");
  check_rejected("[1, 2]", 0, "not a JSON object");
  check_rejected(R"({"a": {"dtype": "F32", "shape": [2]}})", 8, "without dtype, shape and data_offsets");
  check_rejected(R"({"a": {"dtype": "F31", "shape": [2], "data_offsets": [0, 8]}})", 8, "unknown dtype F31");
  check_rejected(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}})", 8, "within the 8 bytes");
  check_rejected(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8, "12 for its shape");
  check_rejected(R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8, "non-negative");
  check_rejected(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8, "data_offsets [8, 0]");
  check_rejected(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12, "overlap");
  check_rejected(R"({"__metadata__": {"k": 1}})", 0, "not a string");
  check_rejected(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 8]}})", 8,
                 "too large");
  // A dtype the format has but the library cannot compute with is named when used.
  const auto ok = file_of(R"({"a": {"dtype": "U16", "shape": [2], "data_offsets": [0, 4]}})", 4);
  const auto f = SafetensorsFile::parse_bytes(ok, "u16");
  CHECK_THROWS_WITH_AS(f.tensor("a").view("u16"), doctest::Contains("dtype U16 is not supported"), Error);
}

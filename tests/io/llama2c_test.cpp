#include <tinyllm/io/llama2c.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace tinyllm;
using tinyllm::test::testdata;

namespace {

// dim 8, hidden 12, 2 layers, 2 heads of 4, 1 KV head, vocab 10, context 4.
constexpr Llama2cConfig kTiny{8, 12, 2, 2, 1, 10, 4, true};

// A llama2.c model whose float k holds the value k, so a pointer's first value is its offset in
// floats from the first weight. Floats are whole-number exact far beyond this size.
std::vector<std::byte> tiny_model(const Llama2cConfig& c, bool with_rope_tables = true) {
  const std::int32_t header[7] = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                                  c.shared_classifier ? c.vocab_size : -c.vocab_size, c.seq_len};
  const std::size_t L = c.n_layers, D = c.dim, KV = c.kv_dim(), H = c.hidden_dim, V = c.vocab_size;
  std::size_t n = V * D + L * D + L * D * D + 2 * L * KV * D + L * D * D + L * D + 3 * L * H * D + D;
  if (with_rope_tables) n += std::size_t(c.seq_len) * c.head_size();
  if (!c.shared_classifier) n += V * D;
  std::vector<float> w(n);
  for (std::size_t k = 0; k < n; ++k) w[k] = float(k);
  std::vector<std::byte> bytes(sizeof header + n * sizeof(float));
  std::memcpy(bytes.data(), header, sizeof header);
  std::memcpy(bytes.data() + sizeof header, w.data(), n * sizeof(float));
  return bytes;
}

std::vector<std::byte> with_header_field(std::vector<std::byte> bytes, int field, std::int32_t v) {
  std::memcpy(bytes.data() + 4 * field, &v, 4);
  return bytes;
}

struct Token { float score; std::string piece; };

std::vector<std::byte> tokenizer_bytes(std::int32_t max_len, const std::vector<Token>& tokens) {
  std::vector<std::byte> b;
  auto put = [&](const void* p, std::size_t n) {  // resize + memcpy: g++ 12 misreports insert here
    const std::size_t at = b.size();
    b.resize(at + n);
    if (n != 0) std::memcpy(b.data() + at, p, n);
  };
  put(&max_len, 4);
  for (const auto& t : tokens) {
    const auto len = static_cast<std::int32_t>(t.piece.size());
    put(&t.score, 4);
    put(&len, 4);
    put(t.piece.data(), t.piece.size());
  }
  return b;
}

const std::vector<Token> kTokens{{0.5f, "a"}, {-1.0f, "bc"}, {0.0f, ""}, {2.0f, "xyz"}};

void check_error(std::span<const std::byte> bytes, const std::string& needle) {
  CAPTURE(needle);
  try {
    Llama2cFile::parse(bytes, "bad.bin");
    FAIL("parsed without error");
  } catch (const Error& e) {
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(what.find(needle) != std::string::npos);
    CHECK(what.find("bad.bin") != std::string::npos);
  }
}

void check_vocab_error(std::span<const std::byte> bytes, const std::string& needle, int vocab_size = 0) {
  CAPTURE(needle);
  try {
    parse_llama2c_vocab(bytes, "bad_tok.bin", vocab_size);
    FAIL("parsed without error");
  } catch (const Error& e) {
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(what.find(needle) != std::string::npos);
    CHECK(what.find("bad_tok.bin") != std::string::npos);
  }
}

}  // namespace

TEST_CASE("stories260K.bin: config, shared classifier, weights ending exactly at the RoPE tables") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/stories260K.bin");
  const auto path = testdata("llama2c/stories260K.bin");
  const auto f = Llama2cFile::open(path.string());
  const auto& c = f.config();
  CHECK(c.dim == 64);
  CHECK(c.hidden_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.vocab_size == 512);
  CHECK(c.seq_len == 512);
  CHECK(c.shared_classifier);
  CHECK(c.head_size() == 8);
  CHECK(c.kv_dim() == 32);

  const auto& w = f.weights();
  const std::ptrdiff_t L = 5, D = 64, KV = 32, H = 172, V = 512;
  CHECK(w.rms_att - w.token_embedding == V * D);
  CHECK(w.wq - w.rms_att == L * D);
  CHECK(w.wk - w.wq == L * D * D);
  CHECK(w.wv - w.wk == L * KV * D);
  CHECK(w.wo - w.wv == L * KV * D);
  CHECK(w.rms_ffn - w.wo == L * D * D);
  CHECK(w.w1 - w.rms_ffn == L * D);
  CHECK(w.w2 - w.w1 == L * H * D);
  CHECK(w.w3 - w.w2 == L * D * H);
  CHECK(w.rms_final - w.w3 == L * H * D);
  CHECK(w.wcls == w.token_embedding);
  // After rms_final come the two RoPE tables [seq_len, head_size / 2], then the end of the file.
  const std::ptrdiff_t end_in_floats = (w.rms_final - w.token_embedding) + D + 2 * 512 * 4;
  CHECK(28 + end_in_floats * 4 == std::ptrdiff_t(std::filesystem::file_size(path)));
  for (const float* p : {w.rms_att, w.rms_ffn, w.rms_final}) CHECK(std::isfinite(p[0]));
}

TEST_CASE("llama2.c tokenizers: tok512.bin and tokenizer.bin") {
  TINYLLM_REQUIRE_TESTDATA("llama2c/tok512.bin");
  const auto tok512 = read_llama2c_vocab(testdata("llama2c/tok512.bin").string());
  CHECK(tok512.pieces.size() == 512);
  CHECK(tok512.scores.size() == 512);
  CHECK(tok512.max_token_length == 7);
  CHECK(tok512.pieces[0] == "<unk>");
  CHECK(tok512.pieces[1] == "\n<s>\n");
  CHECK(tok512.pieces[3] == "<0x00>");
  CHECK(read_llama2c_vocab(testdata("llama2c/tok512.bin").string(), 512).pieces == tok512.pieces);
  CHECK_THROWS_WITH_AS(read_llama2c_vocab(testdata("llama2c/tok512.bin").string(), 511),
                       doctest::Contains("trailing bytes"), Error);
  CHECK_THROWS_AS(read_llama2c_vocab(testdata("llama2c/tok512.bin").string(), 513), Error);

  TINYLLM_REQUIRE_TESTDATA("llama2c/tokenizer.bin");
  const auto llama = read_llama2c_vocab(testdata("llama2c/tokenizer.bin").string(), 32000);
  CHECK(llama.pieces.size() == 32000);
  CHECK(llama.max_token_length == 27);
  CHECK(llama.pieces[0] == "<unk>");
}

TEST_CASE("an unshared classifier (negative vocab_size) is read from after the RoPE tables") {
  Llama2cConfig c = kTiny;
  c.shared_classifier = false;
  const auto bytes = tiny_model(c);
  const auto f = Llama2cFile::parse(bytes, "unshared.bin");
  CHECK(f.config().vocab_size == 10);
  CHECK_FALSE(f.config().shared_classifier);
  const auto& w = f.weights();
  // Offsets in floats, as run.c lays them out: V*D, L*D, L*D*D, L*KV*D (twice), L*D*D, L*D, L*H*D (3x), D.
  CHECK(w.token_embedding[0] == 0.0f);
  CHECK(w.rms_att[0] == 80.0f);
  CHECK(w.wq[0] == 96.0f);
  CHECK(w.wk[0] == 224.0f);
  CHECK(w.wv[0] == 288.0f);
  CHECK(w.wo[0] == 352.0f);
  CHECK(w.rms_ffn[0] == 480.0f);
  CHECK(w.w1[0] == 496.0f);
  CHECK(w.w2[0] == 688.0f);
  CHECK(w.w3[0] == 880.0f);
  CHECK(w.rms_final[0] == 1072.0f);
  CHECK(w.wcls[0] == 1072.0f + 8 + 16);  // after rms_final and the 2 x [4, 2] RoPE tables
  CHECK(reinterpret_cast<const std::byte*>(w.wcls + 10 * 8) == bytes.data() + bytes.size());

  const auto shared_bytes = tiny_model(kTiny);
  const auto shared = Llama2cFile::parse(shared_bytes, "shared.bin");
  CHECK(shared.weights().wcls == shared.weights().token_embedding);
  CHECK(shared_bytes.size() + 10 * 8 * 4 == bytes.size());
}

TEST_CASE("a llama2.c model truncated at every byte, or one float too long, fails cleanly") {
  for (const bool shared : {true, false}) {
    Llama2cConfig c = kTiny;
    c.shared_classifier = shared;
    auto bytes = tiny_model(c);
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      CAPTURE(n);
      CHECK_THROWS_AS(Llama2cFile::parse(std::span(bytes.data(), n), "trunc.bin"), Error);
    }
    bytes.resize(bytes.size() + 4);
    check_error(bytes, "does not match its header");
  }
  check_error(tiny_model(kTiny, false), "does not match its header");  // RoPE tables missing
}

TEST_CASE("bad llama2.c header values are named") {
  const auto good = tiny_model(kTiny);
  check_error(with_header_field(good, 0, 0), "dim is 0");
  check_error(with_header_field(good, 1, -5), "hidden_dim is -5");
  check_error(with_header_field(good, 2, 0), "n_layers is 0");
  check_error(with_header_field(good, 3, -2), "n_heads is -2");
  check_error(with_header_field(good, 4, 0), "n_kv_heads is 0");
  check_error(with_header_field(good, 5, 0), "vocab_size is 0");
  check_error(with_header_field(good, 5, INT32_MIN), "vocab_size is -2147483648");
  check_error(with_header_field(good, 6, 0), "seq_len is 0");
  check_error(with_header_field(good, 3, 3), "dim 8 is not a multiple of n_heads 3");
  check_error(with_header_field(with_header_field(good, 3, 4), 4, 3), "n_heads 4 is not a multiple of n_kv_heads 3");
  check_error(with_header_field(with_header_field(good, 3, 8), 4, 8), "head size dim / n_heads = 1 is odd");
  check_error(with_header_field(good, 0, 0x616b3432), "ak42");
  check_error(with_header_field(good, 5, 11), "does not match its header");
  // Sizes that overflow 64 bits are caught, not wrapped into a plausible file size.
  auto huge = with_header_field(with_header_field(good, 0, 1 << 30), 1, INT32_MAX);
  huge = with_header_field(with_header_field(huge, 2, INT32_MAX), 3, 2);
  check_error(huge, "overflow");
  check_error(with_header_field(good, 6, INT32_MAX), "does not match its header");
  // Weights are handed out as float*, so the bytes must be float aligned.
  std::vector<std::byte> shifted(good.size() + 1);
  std::memcpy(shifted.data() + 1, good.data(), good.size());
  check_error(std::span(shifted.data() + 1, good.size()), "aligned");
}

TEST_CASE("random mutations of a llama2.c header give a valid parse or a tinyllm::Error") {
  const auto good = tiny_model(kTiny);
  std::mt19937 rng(42);
  int n_ok = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto bytes = good;
    for (int m = 0; m < 1 + int(rng() % 3); ++m) bytes[rng() % 28] = std::byte(rng() & 0xff);
    try {
      Llama2cFile::parse(bytes, "fuzz.bin");
      ++n_ok;
    } catch (const Error&) {
    }
  }
  CHECK(n_ok < 3000);
}

TEST_CASE("llama2.c tokenizer bytes: round trip, truncation at every byte, bad fields") {
  const auto bytes = tokenizer_bytes(3, kTokens);
  const auto v = parse_llama2c_vocab(bytes, "tok.bin");
  CHECK(v.max_token_length == 3);
  CHECK(v.pieces == std::vector<std::string>{"a", "bc", "", "xyz"});
  CHECK(v.scores == std::vector<float>{0.5f, -1.0f, 0.0f, 2.0f});
  CHECK(parse_llama2c_vocab(bytes, "tok.bin", 4).pieces == v.pieces);

  // With the count given every prefix fails; read to the end, a prefix that ends between two
  // tokens is a valid shorter vocabulary.
  std::vector<std::size_t> boundaries{4};
  for (const auto& t : kTokens) boundaries.push_back(boundaries.back() + 8 + t.piece.size());
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    CAPTURE(n);
    const std::span<const std::byte> prefix(bytes.data(), n);
    CHECK_THROWS_AS(parse_llama2c_vocab(prefix, "trunc.bin", 4), Error);
    const auto boundary = std::find(boundaries.begin(), boundaries.end(), n);
    if (boundary == boundaries.end())
      CHECK_THROWS_AS(parse_llama2c_vocab(prefix, "trunc.bin"), Error);
    else
      CHECK(parse_llama2c_vocab(prefix, "trunc.bin").pieces.size() == std::size_t(boundary - boundaries.begin()));
  }

  check_vocab_error(tokenizer_bytes(0, kTokens), "max_token_length is 0");
  check_vocab_error(tokenizer_bytes(-1, kTokens), "max_token_length is -1");
  check_vocab_error(tokenizer_bytes(2, kTokens), "length of token 3 is 3");
  check_vocab_error(tokenizer_bytes(3, {{0.0f, "a"}, {std::numeric_limits<float>::quiet_NaN(), "b"}}), "score of token 1 is NaN");
  auto negative = bytes;
  const std::int32_t minus_one = -1;
  std::memcpy(negative.data() + 4 + 4, &minus_one, 4);
  check_vocab_error(negative, "length of token 0 is -1");
  check_vocab_error(bytes, "trailing bytes", 3);
  check_vocab_error(bytes, "cannot fit", 1000000);
  check_vocab_error(bytes, "vocab_size -1", -1);
  auto long_len = bytes;
  const std::int32_t three = 3;
  std::memcpy(long_len.data() + 4 + 4, &three, 4);  // "a" claims 3 bytes: shifts the stream
  CHECK_THROWS_AS(parse_llama2c_vocab(long_len, "tok.bin", 4), Error);
}

TEST_CASE("random mutations of a llama2.c tokenizer give a valid parse or a tinyllm::Error") {
  const auto good = tokenizer_bytes(3, kTokens);
  std::mt19937 rng(7);
  int n_ok = 0, n_error = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto bytes = good;
    for (int m = 0; m < 1 + int(rng() % 3); ++m) bytes[rng() % bytes.size()] = std::byte(rng() & 0xff);
    try {
      const auto v = parse_llama2c_vocab(bytes, "fuzz.bin", rng() % 2 ? 0 : 4);
      for (const auto& p : v.pieces) REQUIRE(p.size() <= v.max_token_length);
      ++n_ok;
    } catch (const Error&) {
      ++n_error;
    }
  }
  MESSAGE("fuzz: " << n_ok << " parsed, " << n_error << " rejected");
  CHECK(n_ok > 0);
  CHECK(n_error > 0);
}

#pragma once
// llama2.c's legacy model .bin (what its run.c reads) and its tokenizer .bin.
//
// Model, all little-endian:
//   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//   float32 weights, in the order of Llama2cWeights (token_embedding ... rms_final)
//   float32 freq_cis_real, freq_cis_imag [seq_len, head_size / 2] each: legacy RoPE tables, skipped
//   float32 wcls [vocab, dim], only when vocab_size was stored negative (an unshared classifier)
// The file must be exactly that long. Weights are used in place, so they are only 4-byte aligned.
//
// Tokenizer: int32 max_token_length, then per token: float32 score, int32 length, length bytes.
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tinyllm/core/error.hpp>
#include <tinyllm/core/mapped_file.hpp>
#include <tinyllm/io/byte_reader.hpp>

namespace tinyllm {

struct Llama2cConfig {
  int dim = 0;          // transformer width
  int hidden_dim = 0;   // FFN width
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;   // < n_heads for grouped-query attention
  int vocab_size = 0;   // positive; the file's sign is in shared_classifier
  int seq_len = 0;      // longest context
  bool shared_classifier = true;

  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return dim / n_heads * n_kv_heads; }
};

// Pointers into the file: float32, row-major [rows, cols].
struct Llama2cWeights {
  const float* token_embedding = nullptr;  // [vocab, dim]
  const float* rms_att = nullptr;          // [layers, dim]
  const float* wq = nullptr;               // [layers, dim, dim]
  const float* wk = nullptr;               // [layers, kv_dim, dim]
  const float* wv = nullptr;               // [layers, kv_dim, dim]
  const float* wo = nullptr;               // [layers, dim, dim]
  const float* rms_ffn = nullptr;          // [layers, dim]
  const float* w1 = nullptr;               // [layers, hidden, dim]
  const float* w2 = nullptr;               // [layers, dim, hidden]
  const float* w3 = nullptr;               // [layers, hidden, dim]
  const float* rms_final = nullptr;        // [dim]
  const float* wcls = nullptr;             // [vocab, dim]; == token_embedding when shared
};

class Llama2cFile {
 public:
  static Llama2cFile open(const std::string& path) {
    MappedFile file(path);
    Llama2cFile f = parse(file.bytes(), path);
    f.file_ = std::move(file);  // moving a mapping keeps its address, so the pointers stay valid
    return f;
  }
  // Does not own `bytes`: they must outlive the Llama2cFile. `name` is used in error messages.
  static Llama2cFile parse(std::span<const std::byte> bytes, std::string name);

  const Llama2cConfig& config() const noexcept { return config_; }
  const Llama2cWeights& weights() const noexcept { return weights_; }

 private:
  Llama2cFile() = default;

  MappedFile file_;  // empty when parsed from caller-owned bytes
  Llama2cConfig config_;
  Llama2cWeights weights_;
};

inline Llama2cFile Llama2cFile::parse(std::span<const std::byte> bytes, std::string name) {
  constexpr std::int32_t kVersionedMagic = 0x616b3432;  // "ak42": llama2.c's newer export formats
  constexpr std::array<const char*, 7> kFields{"dim", "hidden_dim", "n_layers", "n_heads",
                                               "n_kv_heads", "vocab_size", "seq_len"};
  constexpr std::size_t kHeaderBytes = 7 * sizeof(std::int32_t);

  ByteReader r(bytes, name);
  std::array<std::int32_t, 7> h{};
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = r.read<std::int32_t>(kFields[i]);
  if (h[0] == kVersionedMagic)
    r.fail_at(0, "versioned llama2.c export (magic \"ak42\") is not supported",
              "the legacy format that run.c reads");
  for (std::size_t i = 0; i < h.size(); ++i) {
    const bool bad = i == 5 ? h[i] == 0 || h[i] == INT32_MIN : h[i] <= 0;
    if (bad)
      r.fail_at(i * 4, std::string("llama2.c header field ") + kFields[i] + " is " + std::to_string(h[i]),
                i == 5 ? "a nonzero vocab_size" : "a positive value");
  }

  Llama2cFile f;
  Llama2cConfig& c = f.config_;
  c = {h[0], h[1], h[2], h[3], h[4], h[5] < 0 ? -h[5] : h[5], h[6], h[5] > 0};
  if (c.dim % c.n_heads != 0)
    r.fail_at(12, "dim " + std::to_string(c.dim) + " is not a multiple of n_heads " +
                      std::to_string(c.n_heads));
  if (c.n_heads % c.n_kv_heads != 0)
    r.fail_at(16, "n_heads " + std::to_string(c.n_heads) + " is not a multiple of n_kv_heads " +
                      std::to_string(c.n_kv_heads));
  if (c.head_size() % 2 != 0)  // RoPE rotates pairs of a head's values
    r.fail_at(12, "head size dim / n_heads = " + std::to_string(c.head_size()) + " is odd", "an even head size");
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(float) != 0)
    throw Error("llama2.c model bytes are not 4-byte aligned in memory", name);

  // Lay the tensors out as run.c does, counting floats with overflow checks: header values are
  // at most 2^31, so a product of three can overflow 64 bits.
  std::uint64_t n_floats = 0;
  auto place = [&](std::uint64_t rows, std::uint64_t cols, std::uint64_t depth) {
    const auto rc = checked_mul(rows, cols);
    const auto count = rc ? checked_mul(*rc, depth) : std::nullopt;
    const auto end = count ? checked_add(n_floats, *count) : std::nullopt;
    if (!end) throw Error("the weight sizes the llama2.c header implies overflow", name, "a smaller model");
    const std::uint64_t start = n_floats;
    n_floats = *end;
    return start;
  };
  const std::uint64_t L = c.n_layers, D = c.dim, KV = c.kv_dim(), H = c.hidden_dim, V = c.vocab_size;
  const auto token_embedding = place(V, D, 1);
  const auto rms_att = place(L, D, 1);
  const auto wq = place(L, D, D);
  const auto wk = place(L, KV, D);
  const auto wv = place(L, KV, D);
  const auto wo = place(L, D, D);
  const auto rms_ffn = place(L, D, 1);
  const auto w1 = place(L, H, D);
  const auto w2 = place(L, D, H);
  const auto w3 = place(L, H, D);
  const auto rms_final = place(D, 1, 1);
  place(2, c.seq_len, c.head_size() / 2);  // freq_cis_real and freq_cis_imag
  const auto wcls = c.shared_classifier ? token_embedding : place(V, D, 1);

  const auto weight_bytes = checked_mul(n_floats, sizeof(float));
  const auto expected = weight_bytes ? checked_add(*weight_bytes, kHeaderBytes) : std::nullopt;
  if (!expected || *expected != bytes.size())
    throw Error("llama2.c file is " + std::to_string(bytes.size()) + " bytes, which does not match its header",
                name,
                (expected ? std::to_string(*expected) : std::string("more than 2^64")) +
                    " bytes: header, weights, RoPE tables" + (c.shared_classifier ? "" : ", classifier"));

  const auto* base = reinterpret_cast<const float*>(bytes.data() + kHeaderBytes);
  f.weights_ = {base + token_embedding, base + rms_att, base + wq, base + wk, base + wv,
                base + wo, base + rms_ffn, base + w1, base + w2, base + w3,
                base + rms_final, base + wcls};
  return f;
}

struct Llama2cVocab {
  std::vector<std::string> pieces;  // raw bytes of each token
  std::vector<float> scores;
  std::uint32_t max_token_length = 0;
};

// vocab_size = 0 reads tokens until the end of the file; otherwise the file must hold exactly
// that many.
inline Llama2cVocab parse_llama2c_vocab(std::span<const std::byte> bytes, std::string name,
                                        int vocab_size = 0) {
  constexpr std::size_t kTokenHeaderBytes = 8;  // score and length
  if (vocab_size < 0) throw Error("vocab_size " + std::to_string(vocab_size), name, "0 or more");
  ByteReader r(bytes, name);
  const auto max_len = r.read<std::int32_t>("max_token_length");
  if (max_len <= 0)
    r.fail_at(0, "max_token_length is " + std::to_string(max_len), "a positive value");
  if (static_cast<std::size_t>(vocab_size) > r.remaining() / kTokenHeaderBytes)
    r.fail_at(4, "vocab_size " + std::to_string(vocab_size) + " tokens cannot fit in the " +
                     std::to_string(r.remaining()) + " bytes left");

  Llama2cVocab v;
  v.max_token_length = static_cast<std::uint32_t>(max_len);
  // Each token consumes at least 8 bytes, so reading to the end terminates.
  while (vocab_size > 0 ? v.pieces.size() < static_cast<std::size_t>(vocab_size) : !r.at_end()) {
    const std::size_t at = r.offset();
    if (r.remaining() < kTokenHeaderBytes)
      r.fail_at(at, "file ends inside the score and length of token " + std::to_string(v.pieces.size()));
    const auto score = r.read<float>("token score");
    if (std::isnan(score)) r.fail_at(at, "score of token " + std::to_string(v.pieces.size()) + " is NaN");
    const auto len = r.read<std::int32_t>("token length");
    if (len < 0 || len > max_len)
      r.fail_at(at + 4, "length of token " + std::to_string(v.pieces.size()) + " is " + std::to_string(len),
                "0 to max_token_length " + std::to_string(max_len));
    if (static_cast<std::size_t>(len) > r.remaining())
      r.fail_at(at + 8, "file ends inside the bytes of token " + std::to_string(v.pieces.size()),
                std::to_string(len) + " bytes");
    const auto piece = r.take(static_cast<std::uint64_t>(len), "token bytes");
    v.pieces.emplace_back(reinterpret_cast<const char*>(piece.data()), piece.size());
    v.scores.push_back(score);
  }
  if (!r.at_end())
    r.fail_at(r.offset(), std::to_string(r.remaining()) + " trailing bytes after token " +
                              std::to_string(vocab_size - 1), "the file to end after the last token");
  return v;
}

inline Llama2cVocab read_llama2c_vocab(const std::string& path, int vocab_size = 0) {
  const MappedFile file(path);
  return parse_llama2c_vocab(file.bytes(), path, vocab_size);
}

}  // namespace tinyllm

#pragma once
// Activations quantized to 8 bits, the other operand of qmatmul's integer dot products.
//
// Each token row is cut into blocks: of 32 values for Q8_0 and Q4_0 weights (as llama.cpp's
// Q8_0), of 256 for the K-quants (as Q8_K). A block keeps d = max|x| / 127 and the quants
// q = round(x / d) in [-127, 127], so x ≈ d * q. Beside them the quantizer stores what the
// kernels would otherwise recompute for every weight row:
//   aux    int32 per weight sub-block, what the kernel adds for the weights' offset or minimum:
//            Q4_0, Q8_0  per 32:  -offset * sum(q), offset 8 (Q4_0) or 128 (Q8_0: the VNNI
//                        kernels read the signed weights as unsigned w + 128; int8_dot.hpp);
//            Q6_K        per 16:  -32 * sum(q) (the weights are stored as q + 32);
//            Q4_K, Q5_K  per 64:  the sums of q over its two halves of 32, as the low and high
//                        int16 halves, for the term -dmin * m * sum(x) (|sum| <= 32 * 127).
// The planes are laid out in one buffer that QuantScratch owns; it is sized once for the
// largest batch, so a call allocates nothing.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/buffer.hpp>

namespace tinyllm::cpu {

// How the activations that meet a weight block type are quantized.
template <class Block> struct ActFormat;
template <> struct ActFormat<BlockQ8_0> { static constexpr std::size_t block = 32, aux_group = 32; static constexpr int aux_factor = -128; };
template <> struct ActFormat<BlockQ4_0> { static constexpr std::size_t block = 32, aux_group = 32; static constexpr int aux_factor = -8; };
template <> struct ActFormat<BlockQ4_K> { static constexpr std::size_t block = 256, aux_group = 64; static constexpr int aux_factor = 1; };
template <> struct ActFormat<BlockQ5_K> { static constexpr std::size_t block = 256, aux_group = 64; static constexpr int aux_factor = 1; };
template <> struct ActFormat<BlockQ6_K> { static constexpr std::size_t block = 256, aux_group = 16; static constexpr int aux_factor = -32; };

// One call's quantized activations [n_tok, n_in]: a view into QuantScratch.
//
// Tokens are stored in groups of `group` (1, or 8 for the prefill kernel, which broadcasts 4
// quants of each of 8 tokens in turn and then wants them side by side): with g = t / group and
// l = t % group,
//   quant i    at qs   [g * group * qs_stride  + (i / 4) * 4 * group + 4 * l + i % 4]
//   block b    at d    [g * group * d_stride   + b * group + l]
//   unit u     at aux  [g * group * aux_stride + u * group + l]
// so group 1 is plain rows.
struct QuantizedActs {
  std::int8_t* qs = nullptr;
  float* d = nullptr;               // one scale per block
  std::int32_t* aux = nullptr;
  std::size_t qs_stride = 0, d_stride = 0, aux_stride = 0;  // elements per token row
  std::size_t n_tok = 0, n_in = 0, group = 1;

  // Rows of token t (group 1 only).
  const std::int8_t* q_row(std::size_t t) const noexcept { return qs + t * qs_stride; }
  const float* d_row(std::size_t t) const noexcept { return d + t * d_stride; }
  const std::int32_t* aux_row(std::size_t t) const noexcept { return aux + t * aux_stride; }

  // Any layout.
  std::size_t q_index(std::size_t t, std::size_t i) const noexcept {
    return (t - t % group) * qs_stride + (i / 4) * 4 * group + 4 * (t % group) + i % 4;
  }
  std::int8_t q_at(std::size_t t, std::size_t i) const noexcept { return qs[q_index(t, i)]; }
  float d_at(std::size_t t, std::size_t b) const noexcept { return d[(t - t % group) * d_stride + b * group + t % group]; }
  std::int32_t aux_at(std::size_t t, std::size_t u) const noexcept {
    return aux[(t - t % group) * aux_stride + u * group + t % group];
  }
};

// Scratch for the quantized activations. reserve() once (at model load) for the largest batch
// and input width; a call that needs more grows the buffer (an allocation), one that fits does not.
class QuantScratch {
 public:
  QuantScratch() = default;
  QuantScratch(std::size_t n_tok, std::size_t n_in) { reserve(n_tok, n_in); }

  void reserve(std::size_t n_tok, std::size_t n_in) {
    const std::size_t need = bytes_for(n_tok, n_in);
    if (need > buf_.size()) buf_.resize(need);
  }
  std::size_t capacity_bytes() const noexcept { return buf_.size(); }

  // Bytes that [n_tok, n_in] activations take, in any grouping up to kMaxGroup: the quants plus
  // about half as much again.
  static std::size_t bytes_for(std::size_t n_tok, std::size_t n_in) {
    const Strides s = strides(n_in);
    return round_up(n_tok, kMaxGroup) * (s.qs + 4 * s.d + 4 * s.aux);
  }

  static constexpr std::size_t kMaxGroup = 8;

  // The planes for [n_tok, n_in] in groups of `group` tokens; grows the buffer if reserve was too small.
  QuantizedActs layout(std::size_t n_tok, std::size_t n_in, std::size_t group = 1) {
    reserve(n_tok, n_in);
    const Strides s = strides(n_in);
    const std::size_t rows = round_up(n_tok, kMaxGroup);
    std::byte* p = buf_.data();
    QuantizedActs a;
    a.n_tok = n_tok;
    a.n_in = n_in;
    a.group = group;
    a.qs_stride = s.qs, a.d_stride = s.d, a.aux_stride = s.aux;
    a.qs = reinterpret_cast<std::int8_t*>(p);
    p += rows * s.qs;
    a.d = reinterpret_cast<float*>(p);
    p += rows * s.d * 4;
    a.aux = reinterpret_cast<std::int32_t*>(p);
    return a;
  }

 private:
  struct Strides { std::size_t qs, d, aux; };  // elements per row, each row a multiple of 64 bytes
  static std::size_t round_up(std::size_t n, std::size_t m) { return (n + m - 1) / m * m; }
  static Strides strides(std::size_t n_in) {
    return {round_up(n_in, 64), round_up((n_in + 31) / 32, 16), round_up((n_in + 15) / 16, 16)};
  }

  AlignedBuffer<std::byte> buf_;
};

}  // namespace tinyllm::cpu

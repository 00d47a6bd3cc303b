// Rotary position embedding (Highway). The angles of a chunk of pairs are computed once with the
// same float product as the reference (pos * inv_freq[i]) and applied to every head.
// Per-target code: compiled once for the static target, or once per target where
// foreach_target.h re-includes it (dispatch.hpp); hence the toggled guard instead of #pragma once.
#if defined(TINYLLM_KERNELS_CPU_ROPE_HPP_) == defined(HWY_TARGET_TOGGLE)
#ifdef TINYLLM_KERNELS_CPU_ROPE_HPP_
#undef TINYLLM_KERNELS_CPU_ROPE_HPP_
#else
#define TINYLLM_KERNELS_CPU_ROPE_HPP_
#endif
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>

#include <tinyllm/kernels/cpu/simd.hpp>
#include <tinyllm/kernels/rope.hpp>

HWY_BEFORE_NAMESPACE();
namespace tinyllm::cpu::HWY_NAMESPACE {
namespace detail {

// Pairs whose cos/sin are tabulated at once; the tables live on the stack (1 KiB).
inline constexpr std::size_t kRopeChunk = 64;

// v * c + swap_pairs(v) * s, with s = (-sin, +sin, ...): (a, b) -> (a cos - b sin, b cos + a sin).
HWY_INLINE void rope_adjacent_chunk(float* x, std::size_t n_heads, std::size_t head_dim, std::size_t first,
                                    std::size_t count, const float* cos2, const float* sin2) {
  const DF d;
  const std::size_t N = hn::Lanes(d);
  for (std::size_t h = 0; h < n_heads; ++h) {
    float* p = x + h * head_dim + first;
    for (std::size_t j = 0; j < count; j += N) {
      const VF v = load_upto(d, p + j, count - j);  // N is even, so a tail never splits a pair
      const VF r = hn::MulAdd(v, hn::LoadU(d, cos2 + j), hn::Mul(hn::Reverse2(d, v), hn::LoadU(d, sin2 + j)));
      store_upto(r, d, p + j, count - j);
    }
  }
}

// (lo, hi) = (x[i], x[i + half]) -> (lo cos - hi sin, hi cos + lo sin).
HWY_INLINE void rope_half_split_chunk(float* x, std::size_t n_heads, std::size_t head_dim, std::size_t first,
                                      std::size_t count, const float* cos1, const float* sin1) {
  const DF d;
  const std::size_t N = hn::Lanes(d), half = head_dim / 2;
  for (std::size_t h = 0; h < n_heads; ++h) {
    float* lo_p = x + h * head_dim + first;
    float* hi_p = lo_p + half;
    for (std::size_t j = 0; j < count; j += N) {
      const VF lo = load_upto(d, lo_p + j, count - j), hi = load_upto(d, hi_p + j, count - j);
      const VF c = hn::LoadU(d, cos1 + j), s = hn::LoadU(d, sin1 + j);
      store_upto(hn::MulSub(lo, c, hn::Mul(hi, s)), d, lo_p + j, count - j);
      store_upto(hn::MulAdd(hi, c, hn::Mul(lo, s)), d, hi_p + j, count - j);
    }
  }
}

}  // namespace detail

// Rotates n_heads heads of head_dim values (x: [n_heads, head_dim]) in place for position pos;
// pair i turns by pos * inv_freq[i], inv_freq having head_dim / 2 entries.
inline void rope(float* x, std::size_t n_heads, std::size_t head_dim, std::size_t pos, const float* inv_freq,
                 RopeStyle style) {
  assert(head_dim % 2 == 0);
  constexpr std::size_t C = detail::kRopeChunk;
  // Tables padded to whole vectors so that the tail's full-width loads stay inside them.
  alignas(64) float cos_table[2 * C + hn::MaxLanes(detail::DF())] = {};
  alignas(64) float sin_table[2 * C + hn::MaxLanes(detail::DF())] = {};
  const std::size_t half = head_dim / 2;
  for (std::size_t first = 0; first < half; first += C) {
    const std::size_t count = std::min(C, half - first);
    for (std::size_t i = 0; i < count; ++i) {
      const float angle = static_cast<float>(pos) * inv_freq[first + i];
      const float c = std::cos(angle), s = std::sin(angle);
      if (style == RopeStyle::adjacent_pairs) {
        cos_table[2 * i] = cos_table[2 * i + 1] = c;
        sin_table[2 * i] = -s;
        sin_table[2 * i + 1] = s;
      } else {
        cos_table[i] = c;
        sin_table[i] = s;
      }
    }
    if (style == RopeStyle::adjacent_pairs)
      detail::rope_adjacent_chunk(x, n_heads, head_dim, 2 * first, 2 * count, cos_table, sin_table);
    else
      detail::rope_half_split_chunk(x, n_heads, head_dim, first, count, cos_table, sin_table);
  }
}

}  // namespace tinyllm::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard

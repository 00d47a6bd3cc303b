#pragma once
// Quantization: f32 rows to GGUF blocks by ggml's reference rules (its quantize_row_*_ref, which
// llama-quantize uses when no importance matrix is given), so a row quantized here decodes as the
// same row quantized by llama.cpp would. Q8_0, Q4_0 and Q8_K have closed-form rules; the K-quants
// search for their scales as ggml does: Q4_K and Q5_K by make_qkx2_quants' weighted least-squares
// fit of a scale and an offset per sub-block of 32, Q6_K by make_qx_quants' search for a symmetric
// scale per sub-block of 16; the sub-block scales are then themselves quantized (6 or 8 bits under
// an f16 super-block scale) and the quants recomputed against the scales as stored.
//
// The bytes match llama.cpp's (tests/quant/llama_files_test.cpp checks every block of
// its Q8_0, Q4_0, Q4_K, Q5_K and Q6_K test models). Scalar code: this runs when weights are
// written, not in the inference loop. Inputs must be finite.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <tinyllm/core/blocks.hpp>
#include <tinyllm/core/dtype.hpp>
#include <tinyllm/core/error.hpp>
#include <tinyllm/core/half.hpp>
#include <tinyllm/quant/dequantize.hpp>

// The rules hold as written, each operation rounded: a fused multiply-add rounds differently and
// in rare ties picks another level or scale than llama.cpp does (about 1% of Q4_K blocks). g++
// fuses by default when targeting FMA hardware, so fusion is off for this header alone (clang's
// -ffp-contract=fast overrides the pragma).
#if defined(__clang__)
#pragma float_control(push)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

namespace tinyllm {

namespace quant_detail {

// Round half to even, as ggml's nearest_int does (it adds 1.5 * 2^23 and reads the mantissa).
inline int nearest_int(float x) {
  assert(std::fabs(x) <= 4194303.0f);
  return static_cast<int>(std::nearbyint(x));
}

// Fits x[i] ~ scale * L[i] - offset with levels L[i] in 0..nmax and offset >= 0: one sub-block of
// Q4_K or Q5_K, w the weight of each value's squared error. ggml's make_qkx2_quants search: start
// from the min-max fit, then for k = 0..nstep round against the inverse scale
// (nmax + rmin + k * rdelta) / (max - min), solve the weighted least-squares problem for scale and
// offset in closed form (2x2 normal equations), and keep the fit of least error. As in ggml, each
// candidate measures x from the best offset found so far. Returns the scale.
inline float fit_scale_offset(int n, int nmax, const float* x, const float* w, std::uint8_t* L,
                              float& offset, float rmin, float rdelta, int nstep) {
  assert(n <= 32);
  float lo = x[0], hi = x[0];
  float sum_w = w[0], sum_x = w[0] * x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  float min = std::min(lo, 0.0f);  // the offset is only ever subtracted: 0 stays in range
  if (hi == min) {
    std::fill(L, L + n, std::uint8_t{0});
    offset = -min;
    return 0.0f;
  }
  const float range = hi - min;
  const auto level = [&](float inv_scale, float from, float v) {
    return std::clamp(nearest_int(inv_scale * (v - from)), 0, nmax);
  };

  const float first_inv_scale = float(nmax) / range;
  float scale = 1.0f / first_inv_scale;
  float best_error = 0.0f;
  for (int i = 0; i < n; ++i) {
    L[i] = std::uint8_t(level(first_inv_scale, min, x[i]));
    const float diff = scale * float(L[i]) + min - x[i];
    best_error += w[i] * (diff * diff);
  }
  std::uint8_t trial[32];
  for (int k = 0; k <= nstep; ++k) {
    const float inv_scale = (rmin + rdelta * float(k) + float(nmax)) / (hi - min);
    float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = level(inv_scale, min, x[i]);
      trial[i] = std::uint8_t(l);
      sum_l += w[i] * float(l);
      sum_l2 += w[i] * float(l) * float(l);
      sum_xl += w[i] * float(l) * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0.0f)) continue;
    float trial_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float trial_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (trial_min > 0.0f) {  // a positive offset is not representable: refit the scale alone
      trial_min = 0.0f;
      trial_scale = sum_xl / sum_l2;
    }
    float error = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float diff = trial_scale * float(trial[i]) + trial_min - x[i];
      error += w[i] * (diff * diff);
    }
    if (error < best_error) {
      std::copy(trial, trial + n, L);
      best_error = error;
      scale = trial_scale;
      min = trial_min;
    }
  }
  offset = -min;
  return scale;
}

// Fits x[i] ~ scale * (L[i] - nmax) with L[i] - nmax in -nmax..nmax-1, the squared error of each
// value weighted by x[i]^2: one sub-block of Q6_K. ggml's make_qx_quants (rmse_type 1): the
// largest-magnitude value maps to -nmax; inverse scales -(nmax + k/10)/max for k = -9..9 are
// tried, each with its least-squares scale, and the one that explains the most of x is kept.
// The scale is negative when the largest-magnitude value is positive. Returns the scale.
inline float fit_symmetric_scale(int n, int nmax, const float* x, std::uint8_t* L) {
  float max = 0.0f, amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (amax < 1e-15f) {
    std::fill(L, L + n, std::uint8_t{0});
    return 0.0f;
  }
  const auto level = [&](float inv_scale, float v) {
    return std::clamp(nearest_int(inv_scale * v), -nmax, nmax - 1);
  };
  // Sums of x.l and l.l, weighted by x^2, for the levels of one inverse scale.
  const auto sums = [&](float inv_scale, float& sum_xl, float& sum_l2) {
    sum_xl = sum_l2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float l = float(level(inv_scale, x[i]));
      const float weight = x[i] * x[i];
      sum_xl += weight * x[i] * l;
      sum_l2 += weight * l * l;
    }
  };
  const auto set_levels = [&](float inv_scale) {
    for (int i = 0; i < n; ++i) L[i] = std::uint8_t(level(inv_scale, x[i]) + nmax);
  };

  float inv_scale = float(-nmax) / max;
  float sum_xl, sum_l2;
  sums(inv_scale, sum_xl, sum_l2);
  set_levels(inv_scale);
  float scale = sum_l2 != 0.0f ? sum_xl / sum_l2 : 0.0f;
  float best = scale * sum_xl;  // the squared norm of the fit: larger is a smaller error
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    inv_scale = -(float(nmax) + 0.1f * float(k)) / max;
    sums(inv_scale, sum_xl, sum_l2);
    if (sum_l2 > 0.0f && sum_xl * sum_xl > best * sum_l2) {
      set_levels(inv_scale);
      scale = sum_xl / sum_l2;
      best = scale * sum_xl;
    }
  }
  return scale;
}

// Q4_K and Q5_K share all but the width of their quants (nmax 15 or 31) and the search grid.
// Fills the super-block's f16 scales, its 12 packed scale/min bytes and its 256 levels.
inline void quantize_k4_super_block(const float* x, int nmax, float rmin, int nstep,
                                    std::uint16_t& d_bits, std::uint16_t& dmin_bits,
                                    std::uint8_t* packed, std::uint8_t* L) {
  float scales[8], offsets[8];
  float max_scale = 0.0f, max_offset = 0.0f;
  for (int s = 0; s < 8; ++s) {
    const float* xs = x + 32 * s;
    // Weights favour large values, which dominate a dot product, over the sub-block's RMS.
    float sum_x2 = 0.0f;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float rms = std::sqrt(sum_x2 / 32.0f);
    float w[32];
    for (int l = 0; l < 32; ++l) w[l] = rms + std::fabs(xs[l]);
    scales[s] = fit_scale_offset(32, nmax, xs, w, L + 32 * s, offsets[s], rmin, 0.1f, nstep);
    max_scale = std::max(max_scale, scales[s]);
    max_offset = std::max(max_offset, offsets[s]);
  }

  // 6-bit scales and offsets relative to the super-block's largest.
  const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
  const float inv_offset = max_offset > 0.0f ? 63.0f / max_offset : 0.0f;
  std::memset(packed, 0, 12);
  for (int s = 0; s < 8; ++s) {
    const auto ls = std::min<std::uint8_t>(63, std::uint8_t(nearest_int(inv_scale * scales[s])));
    const auto lm = std::min<std::uint8_t>(63, std::uint8_t(nearest_int(inv_offset * offsets[s])));
    if (s < 4) {
      packed[s] |= ls;
      packed[s + 4] |= lm;
    } else {  // the layout get_scale_min_k4 reads
      packed[s + 4] = std::uint8_t((ls & 15) | ((lm & 15) << 4));
      packed[s - 4] |= std::uint8_t((ls >> 4) << 6);
      packed[s] |= std::uint8_t((lm >> 4) << 6);
    }
  }
  d_bits = f32_to_f16(max_scale / 63.0f);
  dmin_bits = f32_to_f16(max_offset / 63.0f);

  // Levels again, against the scales as stored.
  const float d = f16_to_f32(d_bits), dmin = f16_to_f32(dmin_bits);
  for (int s = 0; s < 8; ++s) {
    std::uint8_t sc, m;
    get_scale_min_k4(s, packed, sc, m);
    const float scale = d * float(sc);
    if (scale == 0.0f) continue;
    const float offset = dmin * float(m);
    for (int l = 0; l < 32; ++l) {
      const int q = nearest_int((x[32 * s + l] + offset) / scale);
      L[32 * s + l] = std::uint8_t(std::clamp(q, 0, nmax));
    }
  }
}

}  // namespace quant_detail

inline void quantize_row(const float* src, float* dst, std::size_t n) {
  std::memcpy(dst, src, n * sizeof(float));
}

inline void quantize_row(const float* src, F16* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = F16{f32_to_f16(src[i])};
}

inline void quantize_row(const float* src, BF16* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = BF16{f32_to_bf16(src[i])};
}

// d = amax / 127, q = round(x / d), halves away from zero.
inline void quantize_row(const float* src, BlockQ8_0* dst, std::size_t n) {
  assert(n % kQK == 0);
  for (std::size_t b = 0; b < n / kQK; ++b, src += kQK) {
    float amax = 0.0f;
    for (int i = 0; i < kQK; ++i) amax = std::max(amax, std::fabs(src[i]));
    const float d = amax / 127.0f;
    // A d so small that 1 / d overflows rounds to an f16 scale of 0 anyway: every value reads 0.
    const float inv_d = d != 0.0f && std::isfinite(1.0f / d) ? 1.0f / d : 0.0f;
    dst[b].d = f32_to_f16(d);
    for (int i = 0; i < kQK; ++i) dst[b].qs[i] = std::int8_t(std::round(src[i] * inv_d));
  }
}

// d = (the value of largest magnitude, with its sign) / -8, so that value is exactly level 0;
// q = min(15, floor(x / d + 8.5)). Its opposite would be level 16 and is clamped to 15.
inline void quantize_row(const float* src, BlockQ4_0* dst, std::size_t n) {
  assert(n % kQK == 0);
  for (std::size_t b = 0; b < n / kQK; ++b, src += kQK) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < kQK; ++i) {
      if (std::fabs(src[i]) > amax) {
        amax = std::fabs(src[i]);
        max = src[i];
      }
    }
    const float d = max / -8.0f;
    const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
    dst[b].d = f32_to_f16(d);
    // x / d + 8.5 lies in [0.5, 16.5]: truncation is floor.
    const auto level = [&](float x) { return std::min(15, int(x * inv_d + 8.5f)); };
    for (int l = 0; l < kQK / 2; ++l)
      dst[b].qs[l] = std::uint8_t(level(src[l]) | (level(src[l + kQK / 2]) << 4));
  }
}

inline void quantize_row(const float* src, BlockQ4_K* dst, std::size_t n) {
  assert(n % kQKK == 0);
  for (std::size_t b = 0; b < n / kQKK; ++b, src += kQKK) {
    std::uint8_t L[kQKK];
    quant_detail::quantize_k4_super_block(src, 15, -1.0f, 20, dst[b].d, dst[b].dmin,
                                          dst[b].scales, L);
    for (int g = 0; g < 4; ++g)  // 64-value group g: low nibbles first 32, high nibbles next 32
      for (int l = 0; l < 32; ++l)
        dst[b].qs[32 * g + l] = std::uint8_t(L[64 * g + l] | (L[64 * g + 32 + l] << 4));
  }
}

inline void quantize_row(const float* src, BlockQ5_K* dst, std::size_t n) {
  assert(n % kQKK == 0);
  for (std::size_t b = 0; b < n / kQKK; ++b, src += kQKK) {
    std::uint8_t L[kQKK];
    quant_detail::quantize_k4_super_block(src, 31, -0.5f, 15, dst[b].d, dst[b].dmin,
                                          dst[b].scales, L);
    std::memset(dst[b].qh, 0, sizeof dst[b].qh);
    for (int g = 0; g < 4; ++g) {
      for (int l = 0; l < 32; ++l) {
        const int first = L[64 * g + l], second = L[64 * g + 32 + l];  // sub-blocks 2g, 2g + 1
        dst[b].qs[32 * g + l] = std::uint8_t((first & 15) | ((second & 15) << 4));
        dst[b].qh[l] |= std::uint8_t(((first >> 4) << (2 * g)) | ((second >> 4) << (2 * g + 1)));
      }
    }
  }
}

inline void quantize_row(const float* src, BlockQ6_K* dst, std::size_t n) {
  assert(n % kQKK == 0);
  for (std::size_t b = 0; b < n / kQKK; ++b, src += kQKK) {
    std::uint8_t L[kQKK];
    float scales[16];
    float max_scale = 0.0f, max_abs_scale = 0.0f;
    for (int s = 0; s < 16; ++s) {
      scales[s] = quant_detail::fit_symmetric_scale(16, 32, src + 16 * s, L + 16 * s);
      if (std::fabs(scales[s]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[s]);
        max_scale = scales[s];
      }
    }
    BlockQ6_K& out = dst[b];
    std::memset(&out, 0, sizeof out);
    if (max_abs_scale < 1e-15f) continue;  // all zero (d = 0)

    // 8-bit sub-block scales; the largest maps to -128, so d takes the sign that makes it so.
    const float inv_scale = -128.0f / max_scale;
    out.d = f32_to_f16(1.0f / inv_scale);
    for (int s = 0; s < 16; ++s)
      out.scales[s] = std::int8_t(std::min(127, quant_detail::nearest_int(inv_scale * scales[s])));
    const float d = f16_to_f32(out.d);
    for (int s = 0; s < 16; ++s) {
      const float scale = d * float(out.scales[s]);
      if (scale == 0.0f) continue;
      for (int l = 0; l < 16; ++l)
        L[16 * s + l] = std::uint8_t(
            std::clamp(quant_detail::nearest_int(src[16 * s + l] / scale), -32, 31) + 32);
    }

    // Two halves of 128; in a half, value 32k + l goes to ql[l + 32 * (k % 2)] (nibble k / 2)
    // and bits 2k, 2k + 1 of qh[l].
    for (int half = 0; half < 2; ++half) {
      std::uint8_t* ql = out.ql + 64 * half;
      std::uint8_t* qh = out.qh + 32 * half;
      const std::uint8_t* q = L + 128 * half;
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          ql[l + 32 * (k % 2)] |= std::uint8_t((q[32 * k + l] & 15) << (4 * (k / 2)));
          qh[l] |= std::uint8_t((q[32 * k + l] >> 4) << (2 * k));
        }
      }
    }
  }
}

// The largest-magnitude value maps to -127: d = -max / 127 (an f32), q = min(127, round(x / d)),
// ties to even; bsums[j] = the sum of quants 16j..16j+15.
inline void quantize_row(const float* src, BlockQ8_K* dst, std::size_t n) {
  assert(n % kQKK == 0);
  for (std::size_t b = 0; b < n / kQKK; ++b, src += kQKK) {
    BlockQ8_K& out = dst[b];
    float max = 0.0f, amax = 0.0f;
    for (int i = 0; i < kQKK; ++i) {
      if (std::fabs(src[i]) > amax) {
        amax = std::fabs(src[i]);
        max = src[i];
      }
    }
    if (amax == 0.0f) {
      std::memset(&out, 0, sizeof out);
      continue;
    }
    const float inv_d = -127.0f / max;
    for (int i = 0; i < kQKK; ++i)
      out.qs[i] = std::int8_t(std::min(127, quant_detail::nearest_int(inv_d * src[i])));
    for (int j = 0; j < kQKK / 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += out.qs[16 * j + i];
      out.bsums[j] = std::int16_t(sum);
    }
    out.d = 1.0f / inv_d;
  }
}

// Whether quantize_row(type, ...) handles this type.
inline bool can_quantize(DType type) { return can_dequantize(type); }

// Bytes that n values of `type` take; n must be a whole number of blocks.
inline std::size_t quantized_bytes(DType type, std::size_t n) {
  const std::size_t block = info(type).block_size;
  if (n % block != 0)
    throw Error("a row of " + std::to_string(n) + " " + std::string(name(type)) +
                " values is not a whole number of blocks", "quantized_bytes",
                "a multiple of " + std::to_string(block));
  return row_bytes(type, n);
}

// dst[quantized_bytes(type, n)] = the n values at src, quantized to `type`.
inline void quantize_row(DType type, const float* src, void* dst, std::size_t n) {
  if (!can_quantize(type))
    throw Error("cannot quantize to tensor type " + std::string(name(type)), "quantize_row",
                "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K or Q8_K");
  quantized_bytes(type, n);  // checks n
  switch (type) {
    case DType::F32: return quantize_row(src, static_cast<float*>(dst), n);
    case DType::F16: return quantize_row(src, static_cast<F16*>(dst), n);
    case DType::BF16: return quantize_row(src, static_cast<BF16*>(dst), n);
    case DType::Q8_0: return quantize_row(src, static_cast<BlockQ8_0*>(dst), n);
    case DType::Q4_0: return quantize_row(src, static_cast<BlockQ4_0*>(dst), n);
    case DType::Q4_K: return quantize_row(src, static_cast<BlockQ4_K*>(dst), n);
    case DType::Q5_K: return quantize_row(src, static_cast<BlockQ5_K*>(dst), n);
    case DType::Q6_K: return quantize_row(src, static_cast<BlockQ6_K*>(dst), n);
    case DType::Q8_K: return quantize_row(src, static_cast<BlockQ8_K*>(dst), n);
    default: break;
  }
}

}  // namespace tinyllm

#if defined(__clang__)
#pragma float_control(pop)
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#pragma once
// Paged causal attention with an online softmax (flash-decoding): a thread block takes one
// (token, head) and one split of its positions; its warps take every fourth position of the
// split, each keeping a running maximum, the sum of exponentials and the weighted sum of values,
// so no score array exists and memory does not grow with the context. A long context is cut into
// splits of kSplitPositions positions, which fill the GPU when few tokens decode, and a second
// kernel merges the splits' partial results. The split length is fixed, not chosen from the
// step's size: a token's result then depends on its own positions only, so a request gives the
// same output batched or alone. nvcc only.
#include <cuda_fp16.h>

#include <algorithm>

#include <tinyllm/kernels/cuda/common.cuh>
#include <tinyllm/kernels/cuda/kv.cuh>

namespace tinyllm::cuda {

inline constexpr int kAttentionWarps = 4;
inline constexpr std::size_t kMaxHeadDim = 256;
inline constexpr std::size_t kSplitPositions = 256;

__device__ inline float kv_value(const float* p) { return *p; }
__device__ inline float kv_value(const __half* p) { return __half2float(*p); }

struct AttentionArgs {
  const float* q;
  std::size_t q_stride, n_heads, group, head_dim;
  float scale, softcap;
  std::size_t window, split_positions, n_splits;
  const DeviceKVView* views;
  const std::int32_t* positions;
  const std::uint32_t* view_of_token;
  std::size_t block_size, kv_dim;
  float* out;                 // n_splits == 1: the result [rows, n_heads * head_dim]
  std::size_t out_stride;
  float* partial_values;      // n_splits > 1: [rows, n_heads, n_splits, head_dim], unnormalised
  float2* partial_stats;      //               [rows, n_heads, n_splits]: (max, sum of exponentials)
};

// Lane l holds values l, l + 32, ... of a head: kDims = ceil(head_dim / 32) registers each.
// grid: (split, head, token).
template <class T, int kDims>
__global__ void __launch_bounds__(32 * kAttentionWarps) attention_kernel(AttentionArgs a) {
  __shared__ float shared_values[kAttentionWarps][kMaxHeadDim];
  __shared__ float2 shared_stats[kAttentionWarps];
  const std::size_t split = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const std::size_t pos = std::size_t(a.positions[t]);
  // attention_start (attention_params.hpp): the window's first position.
  const std::size_t first = a.window > 0 && pos + 1 > a.window ? pos + 1 - a.window : 0;
  const std::size_t begin = first + split * a.split_positions;
  const std::size_t end = pos + 1 < begin + a.split_positions ? pos + 1 : begin + a.split_positions;
  const DeviceKVView view = a.views[a.view_of_token[t]];
  const std::size_t kv_offset = (h / a.group) * a.head_dim;

  float q[kDims], acc[kDims];
  const float* q_head = a.q + t * a.q_stride + h * a.head_dim;
#pragma unroll
  for (int k = 0; k < kDims; ++k) {
    const std::size_t i = 32 * k + lane;
    q[k] = i < a.head_dim ? q_head[i] : 0.0f;
    acc[k] = 0.0f;
  }
  float max = -INFINITY, sum = 0.0f;
  for (std::size_t p = begin + warp; p < end; p += kAttentionWarps) {
    const T* key = kv_row<const T>(view.k_blocks, p, a.block_size, a.kv_dim) + kv_offset;
    const T* value = kv_row<const T>(view.v_blocks, p, a.block_size, a.kv_dim) + kv_offset;
    float dot = 0.0f;
#pragma unroll
    for (int k = 0; k < kDims; ++k)
      if (32 * k + lane < a.head_dim) dot += q[k] * kv_value(key + 32 * k + lane);
    float score = warp_sum(dot) * a.scale;
    if (a.softcap > 0.0f) score = a.softcap * tanhf(score / a.softcap);
    const float new_max = fmaxf(max, score);
    const float rescale = expf(max - new_max), weight = expf(score - new_max);
    sum = sum * rescale + weight;
#pragma unroll
    for (int k = 0; k < kDims; ++k)
      if (32 * k + lane < a.head_dim) acc[k] = acc[k] * rescale + weight * kv_value(value + 32 * k + lane);
    max = new_max;
  }

  // The warps' running results merged: each rescaled to the block's maximum.
#pragma unroll
  for (int k = 0; k < kDims; ++k)
    if (32 * k + lane < a.head_dim) shared_values[warp][32 * k + lane] = acc[k];
  if (lane == 0) shared_stats[warp] = make_float2(max, sum);
  __syncthreads();
  float block_max_score = -INFINITY;
  for (int w = 0; w < kAttentionWarps; ++w) block_max_score = fmaxf(block_max_score, shared_stats[w].x);
  float factor[kAttentionWarps], block_sum_exp = 0.0f;
  for (int w = 0; w < kAttentionWarps; ++w) {
    // A warp that saw no position has max -inf and contributes nothing (and no NaN).
    factor[w] = shared_stats[w].x == -INFINITY ? 0.0f : expf(shared_stats[w].x - block_max_score);
    block_sum_exp += factor[w] * shared_stats[w].y;
  }
  const std::size_t pair = t * a.n_heads + h;
  for (std::size_t i = threadIdx.x; i < a.head_dim; i += blockDim.x) {
    float v = 0.0f;
    for (int w = 0; w < kAttentionWarps; ++w) v += factor[w] * shared_values[w][i];
    if (a.n_splits == 1)
      a.out[t * a.out_stride + h * a.head_dim + i] = v / block_sum_exp;
    else
      a.partial_values[(pair * a.n_splits + split) * a.head_dim + i] = v;
  }
  if (a.n_splits > 1 && threadIdx.x == 0)
    a.partial_stats[pair * a.n_splits + split] = make_float2(block_max_score, block_sum_exp);
}

// grid: (head, token); the splits' partial results rescaled to their common maximum.
__global__ void attention_merge_kernel(AttentionArgs a) {
  const std::size_t h = blockIdx.x, t = blockIdx.y, pair = t * a.n_heads + h;
  const float2* stats = a.partial_stats + pair * a.n_splits;
  float max = -INFINITY;
  for (std::size_t s = 0; s < a.n_splits; ++s) max = fmaxf(max, stats[s].x);
  float total = 0.0f;
  for (std::size_t s = 0; s < a.n_splits; ++s)
    if (stats[s].x != -INFINITY) total += expf(stats[s].x - max) * stats[s].y;
  for (std::size_t i = threadIdx.x; i < a.head_dim; i += blockDim.x) {
    float v = 0.0f;
    for (std::size_t s = 0; s < a.n_splits; ++s)
      if (stats[s].x != -INFINITY) v += expf(stats[s].x - max) * a.partial_values[(pair * a.n_splits + s) * a.head_dim + i];
    a.out[t * a.out_stride + h * a.head_dim + i] = v / total;
  }
}

template <class T>
void launch_attention(Context& ctx, const AttentionArgs& args, dim3 grid) {
  const std::size_t dims = (args.head_dim + 31) / 32;
  auto launch = [&](auto kernel) { kernel<<<grid, 32 * kAttentionWarps, 0, ctx.stream>>>(args); };
  switch (dims) {
    case 1: launch(attention_kernel<T, 1>); break;
    case 2: launch(attention_kernel<T, 2>); break;
    case 3: launch(attention_kernel<T, 3>); break;
    case 4: launch(attention_kernel<T, 4>); break;
    case 5: launch(attention_kernel<T, 5>); break;
    case 6: launch(attention_kernel<T, 6>); break;
    case 7: launch(attention_kernel<T, 7>); break;
    case 8: launch(attention_kernel<T, 8>); break;
    default: break;
  }
  static_assert(kMaxHeadDim == 8 * 32, "the cases above cover every head_dim up to kMaxHeadDim");
}

void attention(Context& ctx, const float* q, std::size_t q_stride, std::size_t rows, std::size_t n_heads,
               std::size_t n_kv_heads, std::size_t head_dim, const AttentionParams& params, float* out,
               std::size_t out_stride) {
  if (rows == 0) return;
  if (ctx.n_views == 0 || rows > ctx.n_rows())
    throw Error("attention over " + std::to_string(rows) + " rows", "cuda::attention",
                "begin_step, then set_kv_views, then at most the step's tokens");
  if (n_kv_heads == 0 || n_heads % n_kv_heads != 0 || head_dim == 0 || head_dim > kMaxHeadDim ||
      n_kv_heads * head_dim != ctx.kv_dim || rows > 65535 || n_heads > 65535)
    throw Error("attention with " + std::to_string(n_heads) + " heads, " + std::to_string(n_kv_heads) +
                    " KV heads of " + std::to_string(head_dim) + " over kv_dim " + std::to_string(ctx.kv_dim) +
                    ", " + std::to_string(rows) + " rows",
                "cuda::attention",
                "n_heads a multiple of n_kv_heads, head_dim 1.." + std::to_string(kMaxHeadDim) +
                    ", n_kv_heads * head_dim = kv_dim, at most 65535 rows and heads");
  std::size_t longest = 1;
  for (std::size_t t = 0; t < rows; ++t) {
    const auto pos = std::size_t(ctx.host_positions[t]);
    longest = std::max(longest, pos + 1 - attention_start(pos, params.window));
  }
  const std::size_t pairs = rows * n_heads, split_positions = kSplitPositions;
  const std::size_t n_splits = (longest + split_positions - 1) / split_positions;

  AttentionArgs args{q, q_stride, n_heads, n_heads / n_kv_heads, head_dim, params.scale, params.softcap,
                     params.window, split_positions, n_splits, ctx.views, ctx.positions, ctx.view_of_token,
                     ctx.kv_block_size, ctx.kv_dim, out, out_stride, nullptr, nullptr};
  if (n_splits > 1) {
    // The float2 statistics first: cudaMalloc's alignment suits them, and the floats after them.
    const std::size_t stats_bytes = pairs * n_splits * sizeof(float2);
    auto* scratch = static_cast<unsigned char*>(
        ctx.attention_partials.reserve(stats_bytes + pairs * n_splits * head_dim * sizeof(float)));
    args.partial_stats = reinterpret_cast<float2*>(scratch);
    args.partial_values = reinterpret_cast<float*>(scratch + stats_bytes);
  }
  const dim3 grid{unsigned(n_splits), unsigned(n_heads), unsigned(rows)};
  if (ctx.kv_type == KVType::f16)
    launch_attention<__half>(ctx, args, grid);
  else
    launch_attention<float>(ctx, args, grid);
  TINYLLM_CUDA_CHECK_LAUNCH();
  if (n_splits > 1) {
    attention_merge_kernel<<<dim3(unsigned(n_heads), unsigned(rows)), 128, 0, ctx.stream>>>(args);
    TINYLLM_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace tinyllm::cuda

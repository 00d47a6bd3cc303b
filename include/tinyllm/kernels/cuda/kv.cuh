#pragma once
// The step's token arrays, the layer's KV block tables on the device, and store_kv. nvcc only.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>

#include <tinyllm/kernels/cuda/common.cuh>

namespace tinyllm::cuda {

void begin_step(Context& ctx, std::span<const std::int32_t> tokens, std::span<const std::int32_t> positions,
                std::span<const std::uint32_t> view_of_token) {
  const std::size_t n = positions.size();
  if (tokens.size() != n || view_of_token.size() != n)
    throw Error("begin_step with " + std::to_string(tokens.size()) + " tokens, " + std::to_string(n) +
                    " positions and " + std::to_string(view_of_token.size()) + " view indices",
                "cuda::begin_step", "one position and one view index per token");
  for (const std::int32_t p : positions)
    if (p < 0) throw Error("negative position " + std::to_string(p), "cuda::begin_step", "positions >= 0");
  ctx.host_positions.assign(positions.begin(), positions.end());
  ctx.host_view_of_token.assign(view_of_token.begin(), view_of_token.end());
  // One upload: tokens, positions, view indices.
  ctx.staging.resize(3 * n * sizeof(std::int32_t));
  std::memcpy(ctx.staging.data(), tokens.data(), tokens.size_bytes());
  std::memcpy(ctx.staging.data() + n * 4, positions.data(), positions.size_bytes());
  std::memcpy(ctx.staging.data() + 2 * n * 4, view_of_token.data(), view_of_token.size_bytes());
  auto* device = ctx.step_arrays.reserve_as<std::int32_t>(std::max<std::size_t>(3 * n, 1));
  upload(ctx, device, ctx.staging.data(), ctx.staging.size());
  ctx.tokens = device;
  ctx.positions = device + n;
  ctx.view_of_token = reinterpret_cast<const std::uint32_t*>(device + 2 * n);
  ctx.n_views = 0;   // the previous step's tables no longer apply
}

void set_kv_views(Context& ctx, std::span<const KVLayerView> views) {
  if (views.empty()) throw Error("no KV views", "cuda::set_kv_views", "one view per sequence of the step");
  const KVLayerView& first = views.front();
  if (first.type() == KVType::q8_0)
    throw Error("Q8_0 K/V", "cuda::set_kv_views", "f16 or f32 K/V on the CUDA backend");
  for (const KVLayerView& v : views)
    if (v.type() != first.type() || v.block_size != first.block_size || v.kv_dim != first.kv_dim ||
        v.block_size == 0)
      throw Error("KV views of one layer differ in storage type, block size or kv_dim (or a block size is 0)",
                  "cuda::set_kv_views", "one type, block size and kv_dim per layer");
  // A view's table needs the blocks up to its furthest token's position (KVLayerView does not
  // carry its length).
  std::vector<std::size_t> n_blocks(views.size(), 0);
  for (std::size_t t = 0; t < ctx.n_rows(); ++t) {
    const std::uint32_t v = ctx.host_view_of_token[t];
    if (v >= views.size())
      throw Error("token " + std::to_string(t) + " names KV view " + std::to_string(v), "cuda::set_kv_views",
                  "a view index below " + std::to_string(views.size()));
    n_blocks[v] = std::max(n_blocks[v], std::size_t(ctx.host_positions[t]) / first.block_size + 1);
  }
  std::size_t n_pointers = 0;
  for (const std::size_t n : n_blocks) n_pointers += 2 * n;

  // Device layout: DeviceKVView [n_views], then each view's K table and V table.
  const std::size_t header = views.size() * sizeof(DeviceKVView);
  ctx.staging.resize(header + n_pointers * sizeof(void*));
  auto* device = static_cast<unsigned char*>(ctx.kv_tables.reserve(ctx.staging.size()));
  auto* host_views = reinterpret_cast<DeviceKVView*>(ctx.staging.data());
  auto* host_tables = reinterpret_cast<const void**>(ctx.staging.data() + header);
  auto* device_tables = reinterpret_cast<const void* const*>(device + header);
  const bool f16 = first.type() == KVType::f16;
  std::size_t at = 0;
  for (std::size_t v = 0; v < views.size(); ++v) {
    host_views[v].k_blocks = device_tables + at;
    for (std::size_t b = 0; b < n_blocks[v]; ++b)
      host_tables[at++] = f16 ? static_cast<const void*>(views[v].k_blocks_f16[b]) : views[v].k_blocks[b];
    host_views[v].v_blocks = device_tables + at;
    for (std::size_t b = 0; b < n_blocks[v]; ++b)
      host_tables[at++] = f16 ? static_cast<const void*>(views[v].v_blocks_f16[b]) : views[v].v_blocks[b];
  }
  upload(ctx, device, ctx.staging.data(), ctx.staging.size());
  ctx.views = reinterpret_cast<const DeviceKVView*>(device);
  ctx.n_views = views.size();
  ctx.kv_block_size = first.block_size;
  ctx.kv_dim = first.kv_dim;
  ctx.kv_type = first.type();
}

// The row of `table` (a K or V table) at `pos`.
template <class T>
__device__ inline T* kv_row(const void* const* table, std::size_t pos, std::size_t block_size, std::size_t kv_dim) {
  return static_cast<T*>(const_cast<void*>(table[pos / block_size])) + (pos % block_size) * kv_dim;
}

__device__ inline void store_value(float* to, float v) { *to = v; }
__device__ inline void store_value(__half* to, float v) { *to = __float2half_rn(v); }

// blockIdx.y: the row (token).
template <class T>
__global__ void store_kv_kernel(const float* __restrict__ k, std::size_t k_stride, const float* __restrict__ v,
                                std::size_t v_stride, const DeviceKVView* __restrict__ views,
                                const std::int32_t* __restrict__ positions,
                                const std::uint32_t* __restrict__ view_of_token, std::size_t block_size,
                                std::size_t kv_dim) {
  const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x, t = blockIdx.y;
  if (i >= kv_dim) return;
  const DeviceKVView view = views[view_of_token[t]];
  const std::size_t pos = std::size_t(positions[t]);
  store_value(kv_row<T>(view.k_blocks, pos, block_size, kv_dim) + i, k[t * k_stride + i]);
  store_value(kv_row<T>(view.v_blocks, pos, block_size, kv_dim) + i, v[t * v_stride + i]);
}

void store_kv(Context& ctx, const float* k, std::size_t k_stride, const float* v, std::size_t v_stride,
              std::size_t rows) {
  if (rows == 0) return;
  if (ctx.n_views == 0 || rows > ctx.n_rows())
    throw Error("store_kv of " + std::to_string(rows) + " rows", "cuda::store_kv",
                "begin_step, then set_kv_views, then at most the step's tokens");
  const dim3 grid(blocks_for(ctx.kv_dim, 256), unsigned(rows));
  if (ctx.kv_type == KVType::f16)
    store_kv_kernel<__half><<<grid, 256, 0, ctx.stream>>>(k, k_stride, v, v_stride, ctx.views, ctx.positions,
                                                          ctx.view_of_token, ctx.kv_block_size, ctx.kv_dim);
  else
    store_kv_kernel<float><<<grid, 256, 0, ctx.stream>>>(k, k_stride, v, v_stride, ctx.views, ctx.positions,
                                                         ctx.view_of_token, ctx.kv_block_size, ctx.kv_dim);
  TINYLLM_CUDA_CHECK_LAUNCH();
}

}  // namespace tinyllm::cuda

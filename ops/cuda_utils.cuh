// cuda_utils.cuh: device helpers shared by the ops' .cu files (C++17, include only from .cu files).
//   - dtype: to_float / from_float<T> for float and __nv_bfloat16; float_dispatch runs a functor with
//     float{} or __nv_bfloat16{} for an f32/bf16 tensor and throws a clear mo::Error otherwise (f64 etc.).
//   - 16-byte vectors: Pack<T> (4 floats or 8 bf16), load_pack / store_pack, aligned16().
//   - reductions with a fixed order (deterministic for a given blockDim): warp_sum / warp_max,
//     block_sum / block_max (blockDim.x a multiple of 32, at most 1024).
//   - allow_tf32(): the MO_ALLOW_TF32=1 switch for float32 GEMM / convolution.
//   - map1 / map2: elementwise out = op(a) / op(a, b) with 16-byte vectors when aligned.
//   - grid_1d(n, threads): a grid-stride launch size capped at a fixed multiple of 132 SMs.
//   - sm_count(dev) / resident_blocks(kernel, threads, smem, dev): occupancy for persistent grids.
//   - FastDiv (from autograd/fast_div.cuh): 32-bit division by a runtime divisor as a multiply-high and
//     a shift (the divisor's magic number is computed once on the host), for index decoding.
//   - column_sum: deterministic two-pass column reduction out[b, j] = scale · Σ_i f(b, i, j) over an
//     (batch, M, N) index space, fp32 accumulation, no atomics (bias / γ gradients, spatial means).
// Everything here is stable API for the other .cu files (layer_norm, dwconv2d, gated_dwconv, ...).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "autograd/cuda_check.h"
#include "autograd/fast_div.cuh"
#include "autograd/tensor.h"

namespace mo::cu {

using bf16 = __nv_bfloat16;

// ---- scalar conversions -------------------------------------------------------------------------
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float v) { return __float2bfloat16_rn(v); }

// ---- host-side dtype dispatch --------------------------------------------------------------------
template <typename T> struct cuda_dtype_of;
template <> struct cuda_dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct cuda_dtype_of<bf16> { static constexpr DType value = DType::bf16; };

// f(float{}) for float32, f(bf16{}) for bfloat16; anything else names the op and the tensor.
template <typename F>
void float_dispatch(const char* op, const Tensor& t, F&& f) {
  switch (t.dtype()) {
    case DType::f32: f(float{}); break;
    case DType::bf16: f(bf16{}); break;
    default: MO_FAIL("{}: CUDA kernels take float32 or bfloat16, got {}", op, t.str());
  }
}

// MO_ALLOW_TF32=1 lets float32 matrix products / convolutions use TF32 tensor cores (faster, ~1e-3
// relative error). Default off: float32 on CUDA then matches the CPU to ~1e-6.
inline bool allow_tf32() {
  static const bool on = [] {
    const char* e = std::getenv("MO_ALLOW_TF32");
    return e != nullptr && std::strcmp(e, "1") == 0;
  }();
  return on;
}

// Typed device pointer to element 0 of a tensor (no dtype check; dispatch first).
template <typename T> T* ptr(const Tensor& t) { return static_cast<T*>(t.raw_data()); }

// ---- 16-byte vectors -----------------------------------------------------------------------------
template <typename T>
struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};
template <typename T> __device__ __forceinline__ Pack<T> load_pack(const T* p) {  // p 16-byte aligned
  return *reinterpret_cast<const Pack<T>*>(p);
}
template <typename T> __device__ __forceinline__ void store_pack(T* p, const Pack<T>& v) {
  *reinterpret_cast<Pack<T>*>(p) = v;
}
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---- launch sizes ----------------------------------------------------------------------------------
// Grid for a grid-stride loop over n items: enough blocks to fill the GPU, capped (deterministic: the
// cap is a constant, not read from the device, so results never depend on the SM count).
inline int grid_1d(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(b, 132 * 32)));
}

// ---- occupancy ---------------------------------------------------------------------------------------
// SMs of device `dev` (cached per device), and the blocks of `kernel` that fit on the whole GPU at once
// (persistent grids and per-block partial counts).
inline int sm_count(int dev) {
  static std::atomic<int> cache[64];
  if (dev < 0 || dev >= 64) dev = 0;
  int n = cache[dev].load();
  if (n == 0) {
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    cache[dev].store(n);
  }
  return n;
}
template <typename K>
int64_t resident_blocks(K kernel, int threads, size_t smem, int dev) {
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  return static_cast<int64_t>(std::max(1, per_sm)) * sm_count(dev);
}

// ---- division by a runtime divisor: FastDiv lives in autograd/fast_div.cuh (the tensor copies use it too)
using ::mo::FastDiv;

// ---- elementwise maps --------------------------------------------------------------------------------
// out[i] = op(a[i]) (map1) or op(a[i], b[i]) (map2) with op a functor on floats; storage type T is
// converted on load/store. 16-byte vector loads/stores when every pointer is 16-byte aligned (the tail
// n % (16 / sizeof T) is done element-wise). out may alias an input (same index only).
template <typename T, typename Op>
__global__ void map1_kernel(Op op, const T* a, T* out, int64_t n, int64_t nvec) {
  constexpr int V = Pack<T>::N;
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = tid; p < nvec; p += step) {
    const Pack<T> va = load_pack(a + p * V);
    Pack<T> vo;
#pragma unroll
    for (int k = 0; k < V; ++k) vo.v[k] = from_float<T>(op(to_float(va.v[k])));
    store_pack(out + p * V, vo);
  }
  for (int64_t i = nvec * V + tid; i < n; i += step) out[i] = from_float<T>(op(to_float(a[i])));
}
template <typename T, typename Op>
__global__ void map2_kernel(Op op, const T* a, const T* b, T* out, int64_t n, int64_t nvec) {
  constexpr int V = Pack<T>::N;
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = tid; p < nvec; p += step) {
    const Pack<T> va = load_pack(a + p * V), vb = load_pack(b + p * V);
    Pack<T> vo;
#pragma unroll
    for (int k = 0; k < V; ++k) vo.v[k] = from_float<T>(op(to_float(va.v[k]), to_float(vb.v[k])));
    store_pack(out + p * V, vo);
  }
  for (int64_t i = nvec * V + tid; i < n; i += step) out[i] = from_float<T>(op(to_float(a[i]), to_float(b[i])));
}
template <typename T, typename Op>
void map1(const Op& op, const T* a, T* out, int64_t n) {
  if (n <= 0) return;
  const int64_t nvec = aligned16(a) && aligned16(out) ? n / Pack<T>::N : 0;
  map1_kernel<T, Op><<<grid_1d(nvec > 0 ? nvec : n, 256), 256, 0, stream()>>>(op, a, out, n, nvec);
  CUDA_CHECK_LAUNCH();
}
template <typename T, typename Op>
void map2(const Op& op, const T* a, const T* b, T* out, int64_t n) {
  if (n <= 0) return;
  const int64_t nvec = aligned16(a) && aligned16(b) && aligned16(out) ? n / Pack<T>::N : 0;
  map2_kernel<T, Op><<<grid_1d(nvec > 0 ? nvec : n, 256), 256, 0, stream()>>>(op, a, b, out, n, nvec);
  CUDA_CHECK_LAUNCH();
}

// ---- reductions (fixed order) ------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over the block (1-D blocks, blockDim.x a multiple of 32). Every thread gets the result.
// `red` is shared scratch of at least 33 floats; the call ends with a barrier so it can be reused.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < nw ? red[lane] : 0.0f;
    s = warp_sum(s);
    if (lane == 0) red[32] = s;
  }
  __syncthreads();
  float r = red[32];
  __syncthreads();
  return r;
}
__device__ __forceinline__ float block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < nw ? red[lane] : -INFINITY;
    s = warp_max(s);
    if (lane == 0) red[32] = s;
  }
  __syncthreads();
  float r = red[32];
  __syncthreads();
  return r;
}

// ---- deterministic column sums ---------------------------------------------------------------------
// out[b*N + j] = scale · Σ_{i<M} f(b, i, j) for b < batch, j < N, with F a functor with
//   __device__ float operator()(int64_t b, int64_t i, int64_t j) const.
// Pass 1: block (32, 8) covers 32 columns × one chunk of rows (lanes along j: coalesced reads when f
// reads row-major [.., M, N] data); the 8 row-lanes are combined in a fixed tree. If there is more
// than one chunk, pass 2 adds the fp32 partials of the chunks in order. The chunking depends only on
// (batch, M, N), so the result is bit-identical from run to run.
constexpr int kColTile = 32, kColRows = 8;

template <typename F, typename OutT>
__global__ void column_sum_pass1(F f, int64_t M, int64_t N, int64_t rows_per_chunk, float scale, float* partial,
                                 OutT* out) {
  __shared__ float sh[kColRows][kColTile + 1];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColTile + threadIdx.x;
  const int64_t chunk = blockIdx.y, b = blockIdx.z, nchunks = gridDim.y;
  const int64_t i0 = chunk * rows_per_chunk, i1 = min(M, i0 + rows_per_chunk);
  float acc = 0.0f;
  if (j < N)
    for (int64_t i = i0 + threadIdx.y; i < i1; i += kColRows) acc += f(b, i, j);
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
#pragma unroll
  for (int s = kColRows / 2; s > 0; s >>= 1) {
    if (threadIdx.y < s) sh[threadIdx.y][threadIdx.x] += sh[threadIdx.y + s][threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.y == 0 && j < N) {
    if (nchunks == 1) out[b * N + j] = from_float<OutT>(sh[0][threadIdx.x] * scale);
    else partial[(b * nchunks + chunk) * N + j] = sh[0][threadIdx.x];
  }
}

template <typename OutT>
__global__ void column_sum_pass2(const float* partial, int64_t batch, int64_t nchunks, int64_t N, float scale,
                                 OutT* out) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < batch * N;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = t / N, j = t % N;
    const float* p = partial + b * nchunks * N + j;
    float s = 0.0f;
    for (int64_t c = 0; c < nchunks; ++c) s += p[c * N];
    out[t] = from_float<OutT>(s * scale);
  }
}

// Host launcher. `device` is the CUDA device for the fp32 scratch (taken from the caching allocator).
template <typename F, typename OutT>
void column_sum(const F& f, int64_t batch, int64_t M, int64_t N, float scale, OutT* out, Device device) {
  if (batch == 0 || N == 0) return;
  MO_CHECK(batch <= 65535, "column_sum: batch {} exceeds the grid limit 65535", batch);
  const int64_t tiles = (N + kColTile - 1) / kColTile;
  // Aim for ~2048 blocks in total, at least 64 rows per chunk, at most 1024 chunks.
  int64_t want = std::max<int64_t>(1, 2048 / (tiles * batch));
  int64_t chunks = std::min<int64_t>({want, std::max<int64_t>(1, (M + 63) / 64), 1024});
  int64_t rows_per_chunk = std::max<int64_t>(1, (M + chunks - 1) / chunks);
  chunks = std::max<int64_t>(1, (M + rows_per_chunk - 1) / rows_per_chunk);
  MO_CHECK(tiles <= 2147483647, "column_sum: {} columns is too many", N);
  dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks), static_cast<unsigned>(batch));
  dim3 block(kColTile, kColRows);
  if (chunks == 1) {
    column_sum_pass1<F, OutT><<<grid, block, 0, stream()>>>(f, M, N, rows_per_chunk, scale, nullptr, out);
    CUDA_CHECK_LAUNCH();
    return;
  }
  Tensor partial = Tensor::empty({batch, chunks, N}, DType::f32, device);
  column_sum_pass1<F, OutT><<<grid, block, 0, stream()>>>(f, M, N, rows_per_chunk, scale, partial.data<float>(), out);
  CUDA_CHECK_LAUNCH();
  column_sum_pass2<OutT><<<grid_1d(batch * N, 256), 256, 0, stream()>>>(partial.data<float>(), batch, chunks, N,
                                                                        scale, out);
  CUDA_CHECK_LAUNCH();
}

// f(b, i, j) = x[(b*M + i)*N + j]: plain column sums of a row-major [batch, M, N] array.
template <typename T>
struct ColumnLoad {
  const T* x;
  int64_t M, N;
  __device__ float operator()(int64_t b, int64_t i, int64_t j) const { return to_float(x[(b * M + i) * N + j]); }
};

}  // namespace mo::cu

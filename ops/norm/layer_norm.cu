// layer_norm.cu: CUDA LayerNorm over the last dim (maths and the CPU twin: layer_norm.cpp).
//
// Fast path (C a multiple of the 16-byte vector width V = 4 f32 / 8 bf16, 16-byte aligned pointers,
// C <= 1024): a "row group" of LANES consecutive lanes (4, 8, 16 or 32) owns one row; lane l holds the
// vectors l, l+LANES, ... of the row in registers (NV vectors at most), so x is read once and the
// statistics are two-pass (mean, then Σ(x−μ)²) from registers, in fp32. LANES is the smallest group
// that keeps a lane at <= 16 elements (C = 96 bf16: 8 lanes × 2 vectors), so narrow rows do not idle
// most of a warp. Grid-stride over rows with a grid of (resident blocks × SMs); w/b stay in registers.
// Backward: same layout; each lane also accumulates dw = Σ dy·x̂ and db = Σ dy for its own columns
// over every row it visits (registers), then the row groups of a warp are added by xor-shuffles, the
// warps of a block in a fixed order through shared memory, and each block writes one fp32 partial
// row [block][2][C]; cu::column_sum adds the partials in a fixed order. No atomics: bit-identical from
// run to run on a given GPU model (the partition depends on the SM count and the kernel's occupancy).
// Fallback (any C, any alignment, and C > 1024, i.e. the head's 1152..3072 on only B rows): one warp
// per row, three passes over the row in global memory (L1-resident), dw/db by cu::column_sum straight
// from dy, x, mean, rstd.
//
// Bytes and expected time, mambaout_tiny stage 1, batch 256, bf16 (R = 256·56·56 = 802,816, C = 96):
//   forward  : read x 154 MB, write y 154 MB, mean+rstd 6.4 MB          = 315 MB → ~85 µs at ~3.7 TB/s
//   backward : read x, dy 308 MB + mean/rstd 6.4 MB, write dx 154 MB   = 469 MB → ~125 µs
//              (+ the partial sums: ~0.4 MB and two tiny column-sum launches, a few µs)
// Occupancy (nvcc 13.0, sm_90): forward 79 registers (3 blocks, 24 warps per SM), backward 112 (2 blocks,
// 16 warps); each warp has 4 rows (1.5 KB of loads) in flight, so expect ~75-90% of those figures.
#include "ops/norm/layer_norm.h"

#include <algorithm>
#include <atomic>
#include <type_traits>

#include "ops/cuda_utils.cuh"

namespace mo::cuda {

namespace {

using cu::bf16;
constexpr int kThreads = 256;
constexpr unsigned kFull = 0xffffffffu;

// Sum over a group of LANES consecutive lanes (LANES a power of two <= 32); every lane gets the sum.
template <int LANES>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = LANES / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ void unpack(const cu::Pack<T>& p, float* f) {
#pragma unroll
  for (int i = 0; i < cu::Pack<T>::N; ++i) f[i] = cu::to_float(p.v[i]);
}
template <typename T>
__device__ __forceinline__ cu::Pack<T> pack(const float* f) {
  cu::Pack<T> p;
#pragma unroll
  for (int i = 0; i < cu::Pack<T>::N; ++i) p.v[i] = cu::from_float<T>(f[i]);
  return p;
}

// ---- fast path ------------------------------------------------------------------------------------
// y = (x − μ)·rstd·w + b; rows [R, C], row group of LANES lanes, NV vectors per lane.
template <typename T, int LANES, int NV>
__global__ void __launch_bounds__(kThreads) ln_forward_vec(const T* __restrict__ x, const T* __restrict__ w,
                                                          const T* __restrict__ b, T* __restrict__ y,
                                                          float* __restrict__ mean, float* __restrict__ rstd,
                                                          int64_t R, int C, float eps) {
  constexpr int V = cu::Pack<T>::N, GPW = 32 / LANES;  // row groups per warp
  const int nvec = C / V, lane = threadIdx.x % LANES, grp = (threadIdx.x % 32) / LANES;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  float wv[NV][V], bv[NV][V];
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    const int idx = lane + k * LANES;
#pragma unroll
    for (int e = 0; e < V; ++e) wv[k][e] = bv[k][e] = 0.0f;
    if (idx < nvec) {
      unpack(cu::load_pack(w + idx * V), wv[k]);
      unpack(cu::load_pack(b + idx * V), bv[k]);
    }
  }
  // The loop bound depends on the warp only, so every lane of a warp runs the same iterations
  // (the shuffles need the whole warp); rows past R are computed on zeros and not stored.
  for (int64_t base = warp * GPW; base < R; base += nwarps * GPW) {
    const int64_t row = base + grp;
    const bool valid = row < R;
    float v[NV][V];
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const int idx = lane + k * LANES;
#pragma unroll
      for (int e = 0; e < V; ++e) v[k][e] = 0.0f;
      if (valid && idx < nvec) unpack(cu::load_pack(x + row * C + idx * V), v[k]);
    }
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; ++k)
#pragma unroll
      for (int e = 0; e < V; ++e) s += v[k][e];
    const float mu = group_sum<LANES>(s) / static_cast<float>(C);
    float q = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; ++k)
      if (lane + k * LANES < nvec)
#pragma unroll
        for (int e = 0; e < V; ++e) q += (v[k][e] - mu) * (v[k][e] - mu);
    const float rs = 1.0f / sqrtf(group_sum<LANES>(q) / static_cast<float>(C) + eps);
    if (valid) {
#pragma unroll
      for (int k = 0; k < NV; ++k) {
        const int idx = lane + k * LANES;
        if (idx < nvec) {
          float o[V];
#pragma unroll
          for (int e = 0; e < V; ++e) o[e] = (v[k][e] - mu) * rs * wv[k][e] + bv[k][e];
          cu::store_pack(y + row * C + idx * V, pack<T>(o));
        }
      }
      if (lane == 0) {
        mean[row] = mu;
        rstd[row] = rs;
      }
    }
  }
}

// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w; per-block fp32 partials of dw = Σ dy·x̂, db = Σ dy
// into part[blockIdx.x][0 / 1][C]. Dynamic shared memory: 2·C floats.
template <typename T, int LANES, int NV>
__global__ void __launch_bounds__(kThreads) ln_backward_vec(const T* __restrict__ dy, const T* __restrict__ x,
                                                           const T* __restrict__ w, const float* __restrict__ mean,
                                                           const float* __restrict__ rstd, T* __restrict__ dx,
                                                           float* __restrict__ part, int64_t R, int C) {
  extern __shared__ float s_red[];  // [2][C]
  constexpr int V = cu::Pack<T>::N, GPW = 32 / LANES;
  const int nvec = C / V, lane = threadIdx.x % LANES, grp = (threadIdx.x % 32) / LANES;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  float wv[NV][V], aw[NV][V], ab[NV][V];
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    const int idx = lane + k * LANES;
#pragma unroll
    for (int e = 0; e < V; ++e) wv[k][e] = aw[k][e] = ab[k][e] = 0.0f;
    if (idx < nvec) unpack(cu::load_pack(w + idx * V), wv[k]);
  }
  for (int64_t base = warp * GPW; base < R; base += nwarps * GPW) {  // warp-uniform, see forward
    const int64_t row = base + grp;
    const bool valid = row < R;
    float xv[NV][V], gv[NV][V];
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const int idx = lane + k * LANES;
#pragma unroll
      for (int e = 0; e < V; ++e) xv[k][e] = gv[k][e] = 0.0f;
      if (valid && idx < nvec) {
        unpack(cu::load_pack(x + row * C + idx * V), xv[k]);
        unpack(cu::load_pack(dy + row * C + idx * V), gv[k]);
      }
    }
    const float mu = valid ? mean[row] : 0.0f, rs = valid ? rstd[row] : 0.0f;
    // Padding entries (idx >= nvec, invalid rows) have dy = 0, so they add nothing below.
    float sg = 0.0f, sgx = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; ++k)
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float xh = (xv[k][e] - mu) * rs, d = gv[k][e];
        xv[k][e] = xh;
        sg += d * wv[k][e];
        sgx += d * wv[k][e] * xh;
        aw[k][e] += d * xh;
        ab[k][e] += d;
      }
    const float mg = group_sum<LANES>(sg) / static_cast<float>(C);
    const float mgx = group_sum<LANES>(sgx) / static_cast<float>(C);
    if (valid) {
#pragma unroll
      for (int k = 0; k < NV; ++k) {
        const int idx = lane + k * LANES;
        if (idx < nvec) {
          float o[V];
#pragma unroll
          for (int e = 0; e < V; ++e) o[e] = rs * (gv[k][e] * wv[k][e] - mg - xv[k][e] * mgx);
          cu::store_pack(dx + row * C + idx * V, pack<T>(o));
        }
      }
    }
  }
  // Row groups of one warp hold the same columns: add them (fixed xor tree).
#pragma unroll
  for (int k = 0; k < NV; ++k)
#pragma unroll
    for (int e = 0; e < V; ++e)
#pragma unroll
      for (int o = 16; o >= LANES; o >>= 1) {
        aw[k][e] += __shfl_xor_sync(kFull, aw[k][e], o);
        ab[k][e] += __shfl_xor_sync(kFull, ab[k][e], o);
      }
  // Warps of the block, in order 0, 1, ...: lanes < LANES of warp i add into s_red.
  const int wib = threadIdx.x / 32;
  for (int i = 0; i < kThreads / 32; ++i) {
    if (wib == i && (threadIdx.x % 32) < LANES) {
#pragma unroll
      for (int k = 0; k < NV; ++k) {
        const int idx = lane + k * LANES;
        if (idx < nvec)
#pragma unroll
          for (int e = 0; e < V; ++e) {
            const int c = idx * V + e;
            s_red[c] = (i == 0 ? 0.0f : s_red[c]) + aw[k][e];
            s_red[C + c] = (i == 0 ? 0.0f : s_red[C + c]) + ab[k][e];
          }
      }
    }
    __syncthreads();
  }
  float* out = part + static_cast<int64_t>(blockIdx.x) * 2 * C;
  for (int t = threadIdx.x; t < 2 * C; t += kThreads) out[t] = s_red[t];
}

// ---- fallback: any C, any alignment ------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(kThreads) ln_forward_any(const T* __restrict__ x, const T* __restrict__ w,
                                                          const T* __restrict__ b, T* __restrict__ y,
                                                          float* __restrict__ mean, float* __restrict__ rstd,
                                                          int64_t R, int C, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32; row < R; row += nwarps) {
    const T* xr = x + row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += cu::to_float(xr[c]);
    const float mu = cu::warp_sum(s) / static_cast<float>(C);
    float q = 0.0f;
    for (int c = lane; c < C; c += 32) {
      const float d = cu::to_float(xr[c]) - mu;
      q += d * d;
    }
    const float rs = 1.0f / sqrtf(cu::warp_sum(q) / static_cast<float>(C) + eps);
    for (int c = lane; c < C; c += 32)
      y[row * C + c] = cu::from_float<T>((cu::to_float(xr[c]) - mu) * rs * cu::to_float(w[c]) + cu::to_float(b[c]));
    if (lane == 0) {
      mean[row] = mu;
      rstd[row] = rs;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) ln_backward_dx_any(const T* __restrict__ dy, const T* __restrict__ x,
                                                              const T* __restrict__ w, const float* __restrict__ mean,
                                                              const float* __restrict__ rstd, T* __restrict__ dx,
                                                              int64_t R, int C) {
  const int lane = threadIdx.x % 32;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32; row < R; row += nwarps) {
    const T *xr = x + row * C, *dr = dy + row * C;
    const float mu = mean[row], rs = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int c = lane; c < C; c += 32) {
      const float g = cu::to_float(dr[c]) * cu::to_float(w[c]);
      sg += g;
      sgx += g * (cu::to_float(xr[c]) - mu) * rs;
    }
    const float mg = cu::warp_sum(sg) / static_cast<float>(C), mgx = cu::warp_sum(sgx) / static_cast<float>(C);
    for (int c = lane; c < C; c += 32) {
      const float g = cu::to_float(dr[c]) * cu::to_float(w[c]), xh = (cu::to_float(xr[c]) - mu) * rs;
      dx[row * C + c] = cu::from_float<T>(rs * (g - mg - xh * mgx));
    }
  }
}

// Column-sum terms for the fallback: f(0, r, c) = dy·x̂ (dw) or dy (db).
template <typename T>
struct DwTerm {
  const T *dy, *x;
  const float *mean, *rstd;
  int64_t C;
  __device__ float operator()(int64_t, int64_t r, int64_t c) const {
    return cu::to_float(dy[r * C + c]) * (cu::to_float(x[r * C + c]) - mean[r]) * rstd[r];
  }
};
// f(0, s, c) = part[s][which][c] (the fast path's block partials).
struct PartialTerm {
  const float* part;
  int64_t C, which;
  __device__ float operator()(int64_t, int64_t s, int64_t c) const { return part[(s * 2 + which) * C + c]; }
};

template <typename T, typename F>
void column_sum_to(const F& f, int64_t M, int64_t C, const Tensor& out) {
  cu::column_sum(f, 1, M, C, 1.0f, cu::ptr<T>(out), out.device());
}

// Picks (LANES, NV) for the fast path and calls f(integral_constant<LANES>, integral_constant<NV>);
// returns false when the row is too wide (fallback).
template <typename T, typename F>
bool with_plan(int C, F&& f) {
  using std::integral_constant;
  constexpr int V = cu::Pack<T>::N, S = 16 / V, M = 24 / V, L = 32 / V;  // vectors for 16/24/32 elements
  const int nvec = C / V;
  if (nvec <= 4 * S) f(integral_constant<int, 4>{}, integral_constant<int, S>{});
  else if (nvec <= 8 * S) f(integral_constant<int, 8>{}, integral_constant<int, S>{});
  else if (nvec <= 16 * S) f(integral_constant<int, 16>{}, integral_constant<int, S>{});
  else if (nvec <= 32 * S) f(integral_constant<int, 32>{}, integral_constant<int, S>{});
  else if (nvec <= 32 * M) f(integral_constant<int, 32>{}, integral_constant<int, M>{});
  else if (nvec <= 32 * L) f(integral_constant<int, 32>{}, integral_constant<int, L>{});
  else return false;
  return true;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_args(const char* op, const Tensor& x, int64_t C) {
  MO_CHECK(C > 0 && C <= (1 << 24), "{} (CUDA): channel count {} out of range for {}", op, C, x.str());
}

}  // namespace

void layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y,
                        const Tensor& mean, const Tensor& rstd) {
  cu::float_dispatch("layer_norm (CUDA)", x, [&](auto tag) {
    using T = decltype(tag);
    const int64_t C = w.size(0), R = x.numel() / std::max<int64_t>(C, 1);
    check_args("layer_norm", x, C);
    MO_CHECK(x.is_contiguous() && y.is_contiguous() && w.is_contiguous() && b.is_contiguous(),
             "layer_norm (CUDA): x {}, y {}, w {}, b {} must be contiguous", x.str(), y.str(), w.str(), b.str());
    MO_CHECK(mean.dtype() == DType::f32 && rstd.dtype() == DType::f32,
             "layer_norm (CUDA): mean/rstd must be float32, got {} / {}", mean.str(), rstd.str());
    if (R == 0) return;
    const T *px = cu::ptr<T>(x), *pw = cu::ptr<T>(w), *pb = cu::ptr<T>(b);
    T* py = cu::ptr<T>(y);
    float *pm = cu::ptr<float>(mean), *pr = cu::ptr<float>(rstd);
    const int dev = x.device().index;
    const float e = static_cast<float>(eps);
    const bool fast = C % cu::Pack<T>::N == 0 && cu::aligned16(px) && cu::aligned16(pw) && cu::aligned16(pb) &&
                      cu::aligned16(py) &&
                      with_plan<T>(static_cast<int>(C), [&](auto lanes, auto nv) {
                        constexpr int LANES = decltype(lanes)::value, NV = decltype(nv)::value;
                        auto kern = ln_forward_vec<T, LANES, NV>;
                        const int64_t need = ceil_div(R, kThreads / LANES);
                        const int grid = static_cast<int>(std::min(need, cu::resident_blocks(kern, kThreads, 0, dev)));
                        kern<<<grid, kThreads, 0, stream()>>>(px, pw, pb, py, pm, pr, R, static_cast<int>(C), e);
                        CUDA_CHECK_LAUNCH();
                      });
    if (!fast) {
      auto kern = ln_forward_any<T>;
      const int grid = static_cast<int>(std::min(ceil_div(R, kThreads / 32), cu::resident_blocks(kern, kThreads, 0, dev)));
      kern<<<grid, kThreads, 0, stream()>>>(px, pw, pb, py, pm, pr, R, static_cast<int>(C), e);
      CUDA_CHECK_LAUNCH();
    }
  });
}

void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         const Tensor& dx, const Tensor& dw, const Tensor& db) {
  cu::float_dispatch("layer_norm backward (CUDA)", x, [&](auto tag) {
    using T = decltype(tag);
    const int64_t C = w.size(0), R = x.numel() / std::max<int64_t>(C, 1);
    check_args("layer_norm backward", x, C);
    MO_CHECK(dy.dtype() == x.dtype() && dx.dtype() == x.dtype() && dw.dtype() == w.dtype() &&
                 db.dtype() == w.dtype() && w.dtype() == x.dtype(),
             "layer_norm backward (CUDA): dtypes differ: dy {}, x {}, w {}, dx {}, dw {}, db {}", dy.str(), x.str(),
             w.str(), dx.str(), dw.str(), db.str());
    MO_CHECK(dy.is_contiguous() && x.is_contiguous() && dx.is_contiguous() && w.is_contiguous() &&
                 dw.is_contiguous() && db.is_contiguous(),
             "layer_norm backward (CUDA): tensors must be contiguous (dy {}, x {}, dx {})", dy.str(), x.str(),
             dx.str());
    if (R == 0) {
      Tensor(dw).zero_();
      Tensor(db).zero_();
      return;
    }
    const T *pd = cu::ptr<T>(dy), *px = cu::ptr<T>(x), *pw = cu::ptr<T>(w);
    const float *pm = cu::ptr<float>(mean), *pr = cu::ptr<float>(rstd);
    T* pdx = cu::ptr<T>(dx);
    const int dev = x.device().index;
    const bool fast =
        C % cu::Pack<T>::N == 0 && cu::aligned16(pd) && cu::aligned16(px) && cu::aligned16(pw) &&
        cu::aligned16(pdx) && with_plan<T>(static_cast<int>(C), [&](auto lanes, auto nv) {
          constexpr int LANES = decltype(lanes)::value, NV = decltype(nv)::value;
          auto kern = ln_backward_vec<T, LANES, NV>;
          const size_t smem = 2 * C * sizeof(float);
          const int64_t need = ceil_div(R, kThreads / LANES);
          const int grid = static_cast<int>(std::min(need, cu::resident_blocks(kern, kThreads, smem, dev)));
          Tensor part = Tensor::empty({grid, 2, C}, DType::f32, x.device());
          kern<<<grid, kThreads, smem, stream()>>>(pd, px, pw, pm, pr, pdx, part.data<float>(), R,
                                                   static_cast<int>(C));
          CUDA_CHECK_LAUNCH();
          column_sum_to<T>(PartialTerm{part.data<float>(), C, 0}, grid, C, dw);
          column_sum_to<T>(PartialTerm{part.data<float>(), C, 1}, grid, C, db);
        });
    if (!fast) {
      auto kern = ln_backward_dx_any<T>;
      const int grid = static_cast<int>(std::min(ceil_div(R, kThreads / 32), cu::resident_blocks(kern, kThreads, 0, dev)));
      kern<<<grid, kThreads, 0, stream()>>>(pd, px, pw, pm, pr, pdx, R, static_cast<int>(C));
      CUDA_CHECK_LAUNCH();
      column_sum_to<T>(DwTerm<T>{pd, px, pm, pr, C}, R, C, dw);
      column_sum_to<T>(cu::ColumnLoad<T>{pd, R, C}, R, C, db);
    }
  });
}

}  // namespace mo::cuda

// attention.cu: fused multi-head attention for head dim 64 (maths and the CPU twin: attention.cpp).
//
// Forward (FlashAttention's idea, our own code): a block owns 64 query rows of one (batch, head) and walks
// the keys in tiles of 32 through shared memory, keeping per row a running max m and sum l in fp32 and the
// output accumulator in registers: for each tile, m' = max(m, max_j s_j), acc ← acc·e^{m−m'} + Σ_j e^{s_j−m'} v_j,
// l ← l·e^{m−m'} + Σ_j e^{s_j−m'}. The L×L scores never reach global memory; it writes O and lse = m + log l.
// Four lanes share a row (each 8 of a tile's keys and 16 of the 64 output columns); row statistics are
// combined with two xor-shuffles inside the warp.
// Backward, deterministic (no atomics): δ_i = Σ_d dO_id·O_id (one warp per row); then dK, dV per 32-key block,
// looping over the query blocks that see it (P = e^{s−lse} recomputed); then dQ per 32-query block,
// looping over the key blocks it sees. Each output element is written once by one thread, summing in a
// fixed order: the same bits on every run.
// Causal: a query block stops at the key tile holding its last row, and a key block starts at the query
// block holding its first row, so the tiles above the diagonal are never loaded (about half the work).
// Inputs are float32 or bfloat16 (converted to fp32 on the load into shared memory); all arithmetic fp32.
//
// Shared memory per block: ~41 KB (rows padded to 65 floats: no bank conflicts on the column walks).
// Memory: O (B·L·H·64) and lse/δ (B·H·L floats) besides qkv: linear in L.
// Work, ViT-S/16 at 224 (B 256, L 197, H 6): 4·B·H·L²·64 ≈ 15 GFLOP forward (×2.5 backward) of fp32 FMAs from
// shared memory, no tensor cores: a few ms per layer pass on an H200; tensor-core tiles would be the next step.
#include "ops/attention/attention.h"

#include <climits>
#include <cmath>

#include "ops/cuda_utils.cuh"

namespace mo::cuda {

namespace {

constexpr int kD = 64;            // head dim
constexpr int kP = kD + 1;        // shared-memory row pitch (floats)
constexpr int kThreads = 256;
constexpr int kFQ = 64, kFK = 32; // forward tile: query rows, key rows
constexpr int kBQ = 32, kBK = 32; // backward tiles
constexpr unsigned kFull = 0xffffffffu;

// tile[r][c] = src[(r0 + r)·pitch + c] as float for r < n, c < 64; rows at or past L are zero.
template <typename T>
__device__ void load_tile(float* tile, const T* src, int64_t pitch, int r0, int n, int L) {
  for (int e = threadIdx.x; e < n * kD; e += blockDim.x) {
    const int r = e / kD, c = e % kD, gr = r0 + r;
    tile[r * kP + c] = gr < L ? cu::to_float(src[static_cast<int64_t>(gr) * pitch + c]) : 0.0f;
  }
}

// ---- forward ---------------------------------------------------------------------------------------
// grid (B·H, ⌈L/64⌉); qkv (B, L, 3, H, 64), out (B, L, H, 64), lse (B, H, L).
template <typename T>
__global__ void __launch_bounds__(kThreads) attn_forward(const T* __restrict__ qkv, T* __restrict__ out,
                                                         float* __restrict__ lse, int L, int H, float scale,
                                                         bool causal) {
  __shared__ float Qs[kFQ * kP], Ks[kFK * kP], Vs[kFK * kP], Ps[kFQ * (kFK + 1)];
  const int bh = blockIdx.x, b = bh / H, h = bh % H, q0 = blockIdx.y * kFQ;
  const int64_t pitch = 3LL * H * kD;
  const T* base = qkv + static_cast<int64_t>(b) * L * pitch + static_cast<int64_t>(h) * kD;
  load_tile(Qs, base, pitch, q0, kFQ, L);
  const int r = threadIdx.x / 4, c4 = threadIdx.x % 4, i = q0 + r;
  float m = -INFINITY, l = 0.0f, acc[16];
#pragma unroll
  for (int dd = 0; dd < 16; ++dd) acc[dd] = 0.0f;
  const int last = causal ? min(L, q0 + kFQ) : L;  // keys [0, last) are seen by some row of this block
  for (int k0 = 0; k0 < last; k0 += kFK) {
    __syncthreads();  // the previous tile is consumed (first pass: Qs is complete after the next barrier)
    load_tile(Ks, base + static_cast<int64_t>(H) * kD, pitch, k0, kFK, L);
    load_tile(Vs, base + 2LL * H * kD, pitch, k0, kFK, L);
    __syncthreads();
    float s[8], bmax = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      const int j = c4 + 4 * jj, kj = k0 + j;
      float a = 0.0f;
#pragma unroll 16
      for (int c = 0; c < kD; ++c) a += Qs[r * kP + c] * Ks[j * kP + c];
      s[jj] = kj < L && (!causal || kj <= i) ? a * scale : -INFINITY;
      bmax = fmaxf(bmax, s[jj]);
    }
    bmax = fmaxf(bmax, __shfl_xor_sync(kFull, bmax, 1));
    bmax = fmaxf(bmax, __shfl_xor_sync(kFull, bmax, 2));
    const float mnew = fmaxf(m, bmax);
    const float mref = mnew == -INFINITY ? 0.0f : mnew;  // a row that has seen no key yet stays at 0
    const float alpha = expf(m - mref);                  // m = −∞ → 0
    float psum = 0.0f;
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      const float p = expf(s[jj] - mref);
      Ps[r * (kFK + 1) + c4 + 4 * jj] = p;
      psum += p;
    }
    psum += __shfl_xor_sync(kFull, psum, 1);
    psum += __shfl_xor_sync(kFull, psum, 2);
    l = l * alpha + psum;
    m = mnew;
    __syncwarp();  // row r's probabilities come from the four lanes of row r, all in this warp
#pragma unroll
    for (int dd = 0; dd < 16; ++dd) acc[dd] *= alpha;
    for (int j = 0; j < kFK; ++j) {
      const float p = Ps[r * (kFK + 1) + j];
#pragma unroll
      for (int dd = 0; dd < 16; ++dd) acc[dd] += p * Vs[j * kP + c4 + 4 * dd];
    }
  }
  if (i < L) {  // l > 0: key 0 is seen by every row
    T* o = out + (static_cast<int64_t>(b) * L + i) * H * kD + static_cast<int64_t>(h) * kD;
    const float inv = 1.0f / l;
#pragma unroll
    for (int dd = 0; dd < 16; ++dd) o[c4 + 4 * dd] = cu::from_float<T>(acc[dd] * inv);
    if (c4 == 0) lse[static_cast<int64_t>(bh) * L + i] = m + logf(l);
  }
}

// ---- backward ------------------------------------------------------------------------------------------
// δ (B, H, L) = Σ_d dO·O over each row of 64; one warp per (b, i, h) row of the (B, L, H, 64) layout.
template <typename T>
__global__ void attn_delta(const T* __restrict__ dout, const T* __restrict__ out, float* __restrict__ delta,
                           int64_t rows, int L, int H) {
  const int lane = threadIdx.x % 32;
  const int64_t step = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; w < rows; w += step) {
    const T *g = dout + w * kD, *o = out + w * kD;
    float v = cu::to_float(g[lane]) * cu::to_float(o[lane]) + cu::to_float(g[lane + 32]) * cu::to_float(o[lane + 32]);
    v = cu::warp_sum(v);
    const int64_t bi = w / H;  // b·L + i
    const int h = static_cast<int>(w % H);
    if (lane == 0) delta[(bi / L * H + h) * L + bi % L] = v;
  }
}

// The scores role shared by both backward kernels: thread t owns row si = t/8 of the query tile and keys
// j = t%8 + 8·jj (jj < 4) of the key tile; writes P (when Ps) and dS = P ⊙ (dO·Vᵀ − δ) into shared memory.
__device__ void scores_and_ds(const float* Qs, const float* dOs, const float* Ks, const float* Vs, float* Ps,
                              float* dSs, int q0, int k0, int L, bool causal, float scale, float lse_i,
                              float delta_i) {
  const int si = threadIdx.x / 8, i = q0 + si;
#pragma unroll
  for (int jj = 0; jj < 4; ++jj) {
    const int j = threadIdx.x % 8 + 8 * jj, kj = k0 + j;
    float a = 0.0f, dp = 0.0f;
#pragma unroll 16
    for (int c = 0; c < kD; ++c) {
      a += Qs[si * kP + c] * Ks[j * kP + c];
      dp += dOs[si * kP + c] * Vs[j * kP + c];
    }
    const bool seen = i < L && kj < L && (!causal || kj <= i);
    const float p = seen ? expf(a * scale - lse_i) : 0.0f;
    if (Ps) Ps[si * (kBK + 1) + j] = p;
    dSs[si * (kBK + 1) + j] = p * (dp - delta_i);
  }
}

// grid (B·H, ⌈L/32⌉): dK, dV of one 32-key block, over the query blocks that see it.
template <typename T>
__global__ void __launch_bounds__(kThreads) attn_backward_kv(const T* __restrict__ qkv, const T* __restrict__ dout,
                                                             const float* __restrict__ lse,
                                                             const float* __restrict__ delta, T* __restrict__ dqkv,
                                                             int L, int H, float scale, bool causal) {
  __shared__ float Ks[kBK * kP], Vs[kBK * kP], Qs[kBQ * kP], dOs[kBQ * kP], Ps[kBQ * (kBK + 1)],
      dSs[kBQ * (kBK + 1)];
  const int bh = blockIdx.x, b = bh / H, h = bh % H, k0 = blockIdx.y * kBK;
  const int64_t pitch = 3LL * H * kD, opitch = static_cast<int64_t>(H) * kD;
  const int64_t head = static_cast<int64_t>(h) * kD;
  const T* base = qkv + static_cast<int64_t>(b) * L * pitch + head;
  const T* gbase = dout + static_cast<int64_t>(b) * L * opitch + head;
  load_tile(Ks, base + opitch, pitch, k0, kBK, L);
  load_tile(Vs, base + 2 * opitch, pitch, k0, kBK, L);
  const int aj = threadIdx.x / 8, ad = threadIdx.x % 8;  // accumulation role: key aj, columns ad + 8·dd
  float dk[8], dv[8];
#pragma unroll
  for (int dd = 0; dd < 8; ++dd) dk[dd] = dv[dd] = 0.0f;
  for (int q0 = causal ? k0 / kBQ * kBQ : 0; q0 < L; q0 += kBQ) {
    __syncthreads();
    load_tile(Qs, base, pitch, q0, kBQ, L);
    load_tile(dOs, gbase, opitch, q0, kBQ, L);
    const int i = q0 + threadIdx.x / 8;
    const float lse_i = i < L ? lse[static_cast<int64_t>(bh) * L + i] : 0.0f;
    const float delta_i = i < L ? delta[static_cast<int64_t>(bh) * L + i] : 0.0f;
    __syncthreads();
    scores_and_ds(Qs, dOs, Ks, Vs, Ps, dSs, q0, k0, L, causal, scale, lse_i, delta_i);
    __syncthreads();
    for (int r = 0; r < kBQ; ++r) {  // dV += Pᵀ·dO, dK += dSᵀ·Q
      const float p = Ps[r * (kBK + 1) + aj], ds = dSs[r * (kBK + 1) + aj];
#pragma unroll
      for (int dd = 0; dd < 8; ++dd) {
        dv[dd] += p * dOs[r * kP + ad + 8 * dd];
        dk[dd] += ds * Qs[r * kP + ad + 8 * dd];
      }
    }
  }
  const int kj = k0 + aj;
  if (kj < L) {
    T* g = dqkv + (static_cast<int64_t>(b) * L + kj) * pitch + head;
#pragma unroll
    for (int dd = 0; dd < 8; ++dd) {
      g[opitch + ad + 8 * dd] = cu::from_float<T>(dk[dd] * scale);
      g[2 * opitch + ad + 8 * dd] = cu::from_float<T>(dv[dd]);
    }
  }
}

// grid (B·H, ⌈L/32⌉): dQ of one 32-query block, over the key blocks it sees.
template <typename T>
__global__ void __launch_bounds__(kThreads) attn_backward_q(const T* __restrict__ qkv, const T* __restrict__ dout,
                                                            const float* __restrict__ lse,
                                                            const float* __restrict__ delta, T* __restrict__ dqkv,
                                                            int L, int H, float scale, bool causal) {
  __shared__ float Qs[kBQ * kP], dOs[kBQ * kP], Ks[kBK * kP], Vs[kBK * kP], dSs[kBQ * (kBK + 1)];
  const int bh = blockIdx.x, b = bh / H, h = bh % H, q0 = blockIdx.y * kBQ;
  const int64_t pitch = 3LL * H * kD, opitch = static_cast<int64_t>(H) * kD;
  const int64_t head = static_cast<int64_t>(h) * kD;
  const T* base = qkv + static_cast<int64_t>(b) * L * pitch + head;
  load_tile(Qs, base, pitch, q0, kBQ, L);
  load_tile(dOs, dout + static_cast<int64_t>(b) * L * opitch + head, opitch, q0, kBQ, L);
  const int i = q0 + threadIdx.x / 8;
  const float lse_i = i < L ? lse[static_cast<int64_t>(bh) * L + i] : 0.0f;
  const float delta_i = i < L ? delta[static_cast<int64_t>(bh) * L + i] : 0.0f;
  const int ai = threadIdx.x / 8, ad = threadIdx.x % 8;  // accumulation role: query ai, columns ad + 8·dd
  float dq[8];
#pragma unroll
  for (int dd = 0; dd < 8; ++dd) dq[dd] = 0.0f;
  const int last = causal ? min(L, q0 + kBQ) : L;
  for (int k0 = 0; k0 < last; k0 += kBK) {
    __syncthreads();
    load_tile(Ks, base + opitch, pitch, k0, kBK, L);
    load_tile(Vs, base + 2 * opitch, pitch, k0, kBK, L);
    __syncthreads();
    scores_and_ds(Qs, dOs, Ks, Vs, nullptr, dSs, q0, k0, L, causal, scale, lse_i, delta_i);
    __syncthreads();
    for (int j = 0; j < kBK; ++j) {  // dQ += dS·K
      const float ds = dSs[ai * (kBK + 1) + j];
#pragma unroll
      for (int dd = 0; dd < 8; ++dd) dq[dd] += ds * Ks[j * kP + ad + 8 * dd];
    }
  }
  if (q0 + ai < L) {
    T* g = dqkv + (static_cast<int64_t>(b) * L + q0 + ai) * pitch + head;
#pragma unroll
    for (int dd = 0; dd < 8; ++dd) g[ad + 8 * dd] = cu::from_float<T>(dq[dd] * scale);
  }
}

struct Launch {
  int B, L, H;
  float scale;
};

Launch check_launch(const Tensor& qkv, int64_t heads) {
  const int64_t B = qkv.size(0), L = qkv.size(1), D = qkv.size(2) / (3 * heads);
  MO_CHECK(D == kD, "attention: the CUDA kernels take head dim 64, got {} (qkv {}, {} heads)", D, qkv.str(), heads);
  MO_CHECK(L <= 65535LL * kBQ && B * heads <= INT_MAX,
           "attention: qkv {} with {} heads is past the CUDA launch limits (L <= {}, B·heads < 2^31)", qkv.str(),
           heads, 65535LL * kBQ);
  return {static_cast<int>(B), static_cast<int>(L), static_cast<int>(heads), 1.0f / std::sqrt(static_cast<float>(kD))};
}

}  // namespace

void attention_forward(const Tensor& qkv, int64_t heads, bool causal, const Tensor& out, const Tensor& lse) {
  const Launch g = check_launch(qkv, heads);
  if (g.B == 0) return;
  cu::float_dispatch("attention", qkv, [&](auto z) {
    using T = decltype(z);
    const dim3 grid(g.B * g.H, (g.L + kFQ - 1) / kFQ);
    attn_forward<T><<<grid, kThreads, 0, stream()>>>(cu::ptr<T>(qkv), cu::ptr<T>(out), cu::ptr<float>(lse), g.L, g.H,
                                                     g.scale, causal);
    CUDA_CHECK_LAUNCH();
  });
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int64_t heads,
                        bool causal, const Tensor& dqkv) {
  const Launch g = check_launch(qkv, heads);
  if (g.B == 0) return;
  Tensor delta = Tensor::empty({g.B, g.H, g.L}, DType::f32, qkv.device());
  cu::float_dispatch("attention", qkv, [&](auto z) {
    using T = decltype(z);
    const int64_t rows = static_cast<int64_t>(g.B) * g.L * g.H;
    attn_delta<T><<<cu::grid_1d(rows * 32, 256), 256, 0, stream()>>>(cu::ptr<T>(dout), cu::ptr<T>(out),
                                                                     cu::ptr<float>(delta), rows, g.L, g.H);
    CUDA_CHECK_LAUNCH();
    const dim3 grid(g.B * g.H, (g.L + kBK - 1) / kBK);
    attn_backward_kv<T><<<grid, kThreads, 0, stream()>>>(cu::ptr<T>(qkv), cu::ptr<T>(dout), cu::ptr<float>(lse),
                                                         cu::ptr<float>(delta), cu::ptr<T>(dqkv), g.L, g.H, g.scale,
                                                         causal);
    CUDA_CHECK_LAUNCH();
    attn_backward_q<T><<<grid, kThreads, 0, stream()>>>(cu::ptr<T>(qkv), cu::ptr<T>(dout), cu::ptr<float>(lse),
                                                        cu::ptr<float>(delta), cu::ptr<T>(dqkv), g.L, g.H, g.scale,
                                                        causal);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mo::cuda

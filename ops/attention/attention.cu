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
// float32: the kernels below, converted to fp32 on the load into shared memory, all arithmetic fp32 FMAs
// (exact enough for the fp32 tests, but 6 TFLOP/s: 2.3 + 7.4 ms per ViT-S/16 layer at batch 256).
// bfloat16: the tensor-core kernels further down (WMMA 16×16×16 bf16 products, fp32 accumulators):
//   - forward, per block 64 query rows (16 per warp), 64-key tiles: pass 1 keeps the running max and sum per
//     row (S = Q·Kᵀ on tensor cores, the statistics from S in shared memory), pass 2 recomputes S and
//     accumulates O = P·V with P = e^{s−lse} already normalised (rounded to bf16 as FlashAttention rounds P),
//     so the accumulator fragments never need rescaling (their element layout is opaque in WMMA). One more
//     Q·Kᵀ than the online form, none of its per-tile rescaling.
//   - backward, the same two deterministic kernels as for fp32 on 64-row tiles: dK, dV per key block
//     (Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, then dV += Pᵀ·dO, dK += dSᵀ·Q) and dQ per query block (S, dP, dQ += dS·K),
//     dS rounded to bf16 before its products.
//   Scores sit in shared memory as fp32 (row pitch 68); each row's bf16 P or dS overwrites the first half of
//   the same row (pitch 136 bf16), so the two never collide across lanes. bf16 tiles have a 72-element pitch
//   (144 bytes: 16-byte rows, ldmatrix without bank conflicts).
// Memory: O (B·L·H·64) and lse/δ (B·H·L floats) besides qkv: linear in L.
#include "ops/attention/attention.h"

#include <mma.h>

#include <climits>
#include <cmath>
#include <type_traits>

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

// ---- bfloat16 on tensor cores ----------------------------------------------------------------------------
namespace wm = nvcuda::wmma;
using cu::bf16;
constexpr int kT = 64;    // rows of a tile: 64 queries or keys per block, 16 per warp
constexpr int kTP = 72;   // bf16 tile pitch (elements)
constexpr int kSP = 68;   // fp32 score pitch; the bf16 P / dS of a row start at the same address, pitch 2·kSP
constexpr int kTW = 4;    // warps per block
constexpr int kTile = kT * kTP;       // bf16 elements of one tile
constexpr int kWarpS = 16 * kSP;      // floats of one warp's score block
using FragA = wm::fragment<wm::matrix_a, 16, 16, 16, bf16, wm::row_major>;
using FragBt = wm::fragment<wm::matrix_b, 16, 16, 16, bf16, wm::col_major>;  // a row-major tile read transposed
using FragB = wm::fragment<wm::matrix_b, 16, 16, 16, bf16, wm::row_major>;
using FragC = wm::fragment<wm::accumulator, 16, 16, 16, float>;
constexpr size_t kFwdSmem = 3 * kTile * sizeof(bf16) + kTW * kWarpS * sizeof(float);               // 45,056 B
constexpr size_t kBwdSmem = 4 * kTile * sizeof(bf16) + (2 * kT + 2 * kTW * kWarpS) * sizeof(float);  // 72,192 B

// tile[r][0, 64) = src row r0 + r, rows at or past L zero; 16-byte copies when the rows are 16-byte aligned.
__device__ void load_tile_bf16(bf16* tile, const bf16* src, int64_t pitch, int r0, int L, bool vec) {
  if (vec) {
    for (int e = threadIdx.x; e < kT * 8; e += blockDim.x) {
      const int r = e / 8, c = e % 8 * 8, gr = r0 + r;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (gr < L) v = *reinterpret_cast<const uint4*>(src + static_cast<int64_t>(gr) * pitch + c);
      *reinterpret_cast<uint4*>(tile + r * kTP + c) = v;
    }
  } else {
    for (int e = threadIdx.x; e < kT * kD; e += blockDim.x) {
      const int r = e / kD, c = e % kD, gr = r0 + r;
      tile[r * kTP + c] = gr < L ? src[static_cast<int64_t>(gr) * pitch + c] : __float2bfloat16_rn(0.0f);
    }
  }
}

// s (16 × 64 floats, pitch kSP) = a (16 rows of a tile) · bᵀ (b: a 64-row tile); one warp.
__device__ void mm_abt(const bf16* a, const bf16* b, float* s) {
  FragA fa[4];
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) wm::load_matrix_sync(fa[kk], a + kk * 16, kTP);
#pragma unroll
  for (int nn = 0; nn < 4; ++nn) {
    FragC c;
    wm::fill_fragment(c, 0.0f);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      FragBt fb;
      wm::load_matrix_sync(fb, b + nn * 16 * kTP + kk * 16, kTP);
      wm::mma_sync(c, fa[kk], fb, c);
    }
    wm::store_matrix_sync(s + nn * 16, c, kSP, wm::mem_row_major);
  }
}

// acc (16 × 64) += p (16 × 64 bf16, pitch 2·kSP) · b (a 64-row tile); one warp.
__device__ void mm_ab_acc(const bf16* p, const bf16* b, FragC (&acc)[4]) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    FragA fa;
    wm::load_matrix_sync(fa, p + kk * 16, 2 * kSP);
#pragma unroll
    for (int nn = 0; nn < 4; ++nn) {
      FragB fb;
      wm::load_matrix_sync(fb, b + kk * 16 * kTP + nn * 16, kTP);
      wm::mma_sync(acc[nn], fa, fb, acc[nn]);
    }
  }
}

// The warp's 16 × 64 accumulator through its score block (fp32), then each lane's half row (32 values,
// times mul) to dst, when the row exists.
__device__ void store_rows(FragC (&acc)[4], float* sw, bf16* dst, float mul, bool row_ok) {
#pragma unroll
  for (int nn = 0; nn < 4; ++nn) wm::store_matrix_sync(sw + nn * 16, acc[nn], kSP, wm::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x % 32, rr = lane / 2, cb = 32 * (lane % 2);
  if (row_ok)
#pragma unroll 8
    for (int c = 0; c < 32; ++c) dst[cb + c] = __float2bfloat16_rn(sw[rr * kSP + cb + c] * mul);
  __syncwarp();
}

// grid (B·H, ⌈L/64⌉), kTW warps. Lane role in the elementwise steps: row rr = lane/2 of the warp's 16,
// columns [cb, cb + 32) of the 64-key tile.
__global__ void __launch_bounds__(kTW * 32) attn_forward_tc(const bf16* __restrict__ qkv, bf16* __restrict__ out,
                                                           float* __restrict__ lse, int L, int H, float scale,
                                                           bool causal, bool vec) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16 *Qs = reinterpret_cast<bf16*>(smem), *Ks = Qs + kTile, *Vs = Ks + kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, rr = lane / 2, cb = 32 * (lane % 2);
  float* sw = reinterpret_cast<float*>(Vs + kTile) + warp * kWarpS;
  bf16* pw = reinterpret_cast<bf16*>(sw);
  const int bh = blockIdx.x, b = bh / H, h = bh % H, q0 = blockIdx.y * kT, i = q0 + warp * 16 + rr;
  const int64_t pitch = 3LL * H * kD;
  const bf16* base = qkv + static_cast<int64_t>(b) * L * pitch + static_cast<int64_t>(h) * kD;
  load_tile_bf16(Qs, base, pitch, q0, L, vec);
  const bf16* qw = Qs + warp * 16 * kTP;
  const int last = causal ? min(L, q0 + kT) : L;
  auto seen = [&](int j) { return j < L && (!causal || j <= i); };
  float m = -INFINITY, l = 0.0f;  // pass 1: the row's max and sum of e^{s - max}
  for (int k0 = 0; k0 < last; k0 += kT) {
    __syncthreads();
    load_tile_bf16(Ks, base + static_cast<int64_t>(H) * kD, pitch, k0, L, vec);
    __syncthreads();
    mm_abt(qw, Ks, sw);
    __syncwarp();
    float tmax = -INFINITY;
    for (int c = 0; c < 32; ++c)
      if (seen(k0 + cb + c)) tmax = fmaxf(tmax, sw[rr * kSP + cb + c] * scale);
    tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, 1));
    const float mnew = fmaxf(m, tmax), mref = mnew == -INFINITY ? 0.0f : mnew;
    float sum = 0.0f;
    for (int c = 0; c < 32; ++c)
      if (seen(k0 + cb + c)) sum += expf(sw[rr * kSP + cb + c] * scale - mref);
    sum += __shfl_xor_sync(kFull, sum, 1);
    l = l * expf(m - mref) + sum;
    m = mnew;
    __syncwarp();
  }
  const float lse_i = m + logf(l);  // finite for rows < L (key 0 is seen by every row)
  FragC acc[4];
#pragma unroll
  for (int nn = 0; nn < 4; ++nn) wm::fill_fragment(acc[nn], 0.0f);
  for (int k0 = 0; k0 < last; k0 += kT) {  // pass 2: O = Σ_tiles P·V, P = e^{s - lse}
    __syncthreads();
    load_tile_bf16(Ks, base + static_cast<int64_t>(H) * kD, pitch, k0, L, vec);
    load_tile_bf16(Vs, base + 2LL * H * kD, pitch, k0, L, vec);
    __syncthreads();
    mm_abt(qw, Ks, sw);
    __syncwarp();
    float p[32];
#pragma unroll
    for (int c = 0; c < 32; ++c) p[c] = seen(k0 + cb + c) ? expf(sw[rr * kSP + cb + c] * scale - lse_i) : 0.0f;
    __syncwarp();
#pragma unroll
    for (int c = 0; c < 32; ++c) pw[rr * 2 * kSP + cb + c] = __float2bfloat16_rn(p[c]);
    __syncwarp();
    mm_ab_acc(pw, Vs, acc);
    __syncwarp();
  }
  bf16* o = out + (static_cast<int64_t>(b) * L + min(i, L - 1)) * H * kD + static_cast<int64_t>(h) * kD;
  store_rows(acc, sw, o, 1.0f, i < L);
  if (i < L && cb == 0) lse[static_cast<int64_t>(bh) * L + i] = lse_i;
}

// grid (B·H, ⌈L/64⌉): dK, dV of one 64-key block over the query tiles that see it. Lane role: key row rr of
// the warp's 16, queries [cb, cb + 32) of the query tile.
__global__ void __launch_bounds__(kTW * 32) attn_backward_kv_tc(const bf16* __restrict__ qkv,
                                                               const bf16* __restrict__ dout,
                                                               const float* __restrict__ lse,
                                                               const float* __restrict__ delta,
                                                               bf16* __restrict__ dqkv, int L, int H, float scale,
                                                               bool causal, bool vec) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16 *Ks = reinterpret_cast<bf16*>(smem), *Vs = Ks + kTile, *Qs = Vs + kTile, *dOs = Qs + kTile;
  float *lse_s = reinterpret_cast<float*>(dOs + kTile), *dl_s = lse_s + kT;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, rr = lane / 2, cb = 32 * (lane % 2);
  float *st = dl_s + kT + warp * 2 * kWarpS, *dpt = st + kWarpS;
  bf16 *pt = reinterpret_cast<bf16*>(st), *dst = reinterpret_cast<bf16*>(dpt);
  const int bh = blockIdx.x, b = bh / H, h = bh % H, k0 = blockIdx.y * kT, kj = k0 + warp * 16 + rr;
  const int64_t pitch = 3LL * H * kD, opitch = static_cast<int64_t>(H) * kD, head = static_cast<int64_t>(h) * kD;
  const bf16* base = qkv + static_cast<int64_t>(b) * L * pitch + head;
  const bf16* gbase = dout + static_cast<int64_t>(b) * L * opitch + head;
  load_tile_bf16(Ks, base + opitch, pitch, k0, L, vec);
  load_tile_bf16(Vs, base + 2 * opitch, pitch, k0, L, vec);
  FragC dk[4], dv[4];
#pragma unroll
  for (int nn = 0; nn < 4; ++nn) wm::fill_fragment(dk[nn], 0.0f), wm::fill_fragment(dv[nn], 0.0f);
  for (int q0 = causal ? k0 : 0; q0 < L; q0 += kT) {
    __syncthreads();
    load_tile_bf16(Qs, base, pitch, q0, L, vec);
    load_tile_bf16(dOs, gbase, opitch, q0, L, vec);
    for (int t = threadIdx.x; t < kT; t += blockDim.x) {
      const bool ok = q0 + t < L;
      lse_s[t] = ok ? lse[static_cast<int64_t>(bh) * L + q0 + t] : 0.0f;
      dl_s[t] = ok ? delta[static_cast<int64_t>(bh) * L + q0 + t] : 0.0f;
    }
    __syncthreads();
    mm_abt(Ks + warp * 16 * kTP, Qs, st);    // Sᵀ (keys × queries)
    mm_abt(Vs + warp * 16 * kTP, dOs, dpt);  // dPᵀ = V·dOᵀ
    __syncwarp();
    float p[32], ds[32];
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const int qi = cb + c, gi = q0 + qi;
      const bool ok = gi < L && kj < L && (!causal || kj <= gi);
      p[c] = ok ? expf(st[rr * kSP + qi] * scale - lse_s[qi]) : 0.0f;
      ds[c] = p[c] * (dpt[rr * kSP + qi] - dl_s[qi]);
    }
    __syncwarp();
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      pt[rr * 2 * kSP + cb + c] = __float2bfloat16_rn(p[c]);
      dst[rr * 2 * kSP + cb + c] = __float2bfloat16_rn(ds[c]);
    }
    __syncwarp();
    mm_ab_acc(pt, dOs, dv);  // dV += Pᵀ·dO
    mm_ab_acc(dst, Qs, dk);  // dK += dSᵀ·Q
    __syncwarp();
  }
  bf16* g = dqkv + (static_cast<int64_t>(b) * L + min(kj, L - 1)) * pitch + head;
  store_rows(dk, st, g + opitch, scale, kj < L);
  store_rows(dv, st, g + 2 * opitch, 1.0f, kj < L);
}

// grid (B·H, ⌈L/64⌉): dQ of one 64-query block over the key tiles it sees. Lane role: query row rr of the
// warp's 16, keys [cb, cb + 32) of the key tile.
__global__ void __launch_bounds__(kTW * 32) attn_backward_q_tc(const bf16* __restrict__ qkv,
                                                              const bf16* __restrict__ dout,
                                                              const float* __restrict__ lse,
                                                              const float* __restrict__ delta,
                                                              bf16* __restrict__ dqkv, int L, int H, float scale,
                                                              bool causal, bool vec) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16 *Qs = reinterpret_cast<bf16*>(smem), *dOs = Qs + kTile, *Ks = dOs + kTile, *Vs = Ks + kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, rr = lane / 2, cb = 32 * (lane % 2);
  float *sw = reinterpret_cast<float*>(Vs + kTile) + 2 * kT + warp * 2 * kWarpS, *dpw = sw + kWarpS;
  bf16* dsw = reinterpret_cast<bf16*>(sw);
  const int bh = blockIdx.x, b = bh / H, h = bh % H, q0 = blockIdx.y * kT, i = q0 + warp * 16 + rr;
  const int64_t pitch = 3LL * H * kD, opitch = static_cast<int64_t>(H) * kD, head = static_cast<int64_t>(h) * kD;
  const bf16* base = qkv + static_cast<int64_t>(b) * L * pitch + head;
  load_tile_bf16(Qs, base, pitch, q0, L, vec);
  load_tile_bf16(dOs, dout + static_cast<int64_t>(b) * L * opitch + head, opitch, q0, L, vec);
  const float lse_i = i < L ? lse[static_cast<int64_t>(bh) * L + i] : 0.0f;
  const float delta_i = i < L ? delta[static_cast<int64_t>(bh) * L + i] : 0.0f;
  FragC dq[4];
#pragma unroll
  for (int nn = 0; nn < 4; ++nn) wm::fill_fragment(dq[nn], 0.0f);
  const int last = causal ? min(L, q0 + kT) : L;
  for (int k0 = 0; k0 < last; k0 += kT) {
    __syncthreads();
    load_tile_bf16(Ks, base + opitch, pitch, k0, L, vec);
    load_tile_bf16(Vs, base + 2 * opitch, pitch, k0, L, vec);
    __syncthreads();
    mm_abt(Qs + warp * 16 * kTP, Ks, sw);    // S
    mm_abt(dOs + warp * 16 * kTP, Vs, dpw);  // dP = dO·Vᵀ
    __syncwarp();
    float ds[32];
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const int j = k0 + cb + c;
      const bool ok = i < L && j < L && (!causal || j <= i);
      const float p = ok ? expf(sw[rr * kSP + cb + c] * scale - lse_i) : 0.0f;
      ds[c] = p * (dpw[rr * kSP + cb + c] - delta_i);
    }
    __syncwarp();
#pragma unroll
    for (int c = 0; c < 32; ++c) dsw[rr * 2 * kSP + cb + c] = __float2bfloat16_rn(ds[c]);
    __syncwarp();
    mm_ab_acc(dsw, Ks, dq);  // dQ += dS·K
    __syncwarp();
  }
  store_rows(dq, sw, dqkv + (static_cast<int64_t>(b) * L + min(i, L - 1)) * pitch + head, scale, i < L);
}

struct Launch {
  int B, L, H;
  float scale;
};

bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0; }

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
    if constexpr (std::is_same_v<T, bf16>) {
      CUDA_CHECK(cudaFuncSetAttribute(attn_forward_tc, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(kFwdSmem)));
      const dim3 grid(g.B * g.H, (g.L + kT - 1) / kT);
      attn_forward_tc<<<grid, kTW * 32, kFwdSmem, stream()>>>(cu::ptr<bf16>(qkv), cu::ptr<bf16>(out),
                                                              cu::ptr<float>(lse), g.L, g.H, g.scale, causal,
                                                              aligned16(qkv));
    } else {
      const dim3 grid(g.B * g.H, (g.L + kFQ - 1) / kFQ);
      attn_forward<T><<<grid, kThreads, 0, stream()>>>(cu::ptr<T>(qkv), cu::ptr<T>(out), cu::ptr<float>(lse), g.L,
                                                       g.H, g.scale, causal);
    }
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
    if constexpr (std::is_same_v<T, bf16>) {
      const bool vec = aligned16(qkv) && aligned16(dout);
      const dim3 grid(g.B * g.H, (g.L + kT - 1) / kT);
      CUDA_CHECK(cudaFuncSetAttribute(attn_backward_kv_tc, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(kBwdSmem)));
      attn_backward_kv_tc<<<grid, kTW * 32, kBwdSmem, stream()>>>(
          cu::ptr<bf16>(qkv), cu::ptr<bf16>(dout), cu::ptr<float>(lse), cu::ptr<float>(delta), cu::ptr<bf16>(dqkv),
          g.L, g.H, g.scale, causal, vec);
      CUDA_CHECK_LAUNCH();
      CUDA_CHECK(cudaFuncSetAttribute(attn_backward_q_tc, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(kBwdSmem)));
      attn_backward_q_tc<<<grid, kTW * 32, kBwdSmem, stream()>>>(
          cu::ptr<bf16>(qkv), cu::ptr<bf16>(dout), cu::ptr<float>(lse), cu::ptr<float>(delta), cu::ptr<bf16>(dqkv),
          g.L, g.H, g.scale, causal, vec);
      CUDA_CHECK_LAUNCH();
      return;
    }
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

// attention.cu: fused multi-head attention for head dim 64 (maths and the CPU twin: attention.cpp). Both
// dtypes follow FlashAttention's idea (our own code): a block owns a tile of query (or key) rows of one
// (batch, head) and walks the other side in tiles through shared memory, so the L×L scores never reach
// global memory; the forward writes O and lse = m + log l (B, H, L) in fp32, natural log, as the CPU twin
// does; the backward recomputes P = e^{s−lse}. Memory: O and lse/δ besides qkv, linear in L.
// Backward, deterministic (no atomics) in both: δ_i = Σ_d dO_id·O_id per row; dK, dV per key block,
// looping over the query tiles that see it; dQ per query block, looping over the key tiles it sees. Each
// output element is summed by one thread in tile order and written once: the same bits on every run.
// Causal: a query block stops at the key tile holding its last row, a key block starts at the query tile
// holding its first key, so the tiles above the diagonal are never loaded (about half the work).
//
// bfloat16, the training path (docs/optimization_notes.md item 23, where it was an experiment beside the
// kernel benchmark until it won): all products are raw mma.sync.m16n8k16 (bf16 in, fp32 accumulators) on
// fragments read by ldmatrix (.trans where k runs along a tile's rows). The accumulator layout (PTX ISA
// "Matrix Fragments for mma.m16n8k16"): lane (g = lane/4, t = lane%4) holds rows g and g + 8, columns
// 2t, 2t + 1 of each 8-column block; the A layout of a 16-column step k is the C layout of the blocks 2k,
// 2k + 1, so scores turned into P or dS are rounded to bf16 and fed back as A operands without leaving
// the registers.
//   Forward, per block 4 warps × 16 query rows, 64-key tiles of K and V double-buffered with cp.async
//   (tile t + 1 lands while tile t is computed; one barrier per tile). Per warp and tile: S (16 × 64) =
//   Q·Kᵀ (Q re-read from shared memory per tile, as FlashAttention-2 does: 16 registers fewer, ≤ 128 a
//   lane); online softmax in registers: a row's max is 16 values a lane and two xor-shuffles over the
//   row's 4 lanes, m' = max(m, max_j s_j·c), O ← O·2^{m−m'}, P = 2^{s·c−m'} (c = log₂e/√64),
//   l ← l·2^{m−m'} + Σ P (lane-partial, summed over the row's lanes at the end); O += P·V. O/l goes
//   through the warp's own Q rows to 16-byte stores; lse = (m + log₂ l)·ln 2.
//   Backward: dK, dV per 64-key block (4 warps × 16 keys) over 32-query tiles (Q, dO, lse, δ
//   double-buffered): Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, Pᵀ = 2^{Sᵀ·c − lse·log₂e}, dSᵀ = Pᵀ ⊙ (dPᵀ − δ),
//   dV += Pᵀ·dO, dK += dSᵀ·Q; dQ per 64-query block over 32-key tiles: S, dP, dS as before, dQ += dS·K.
//   Edges: rows at or past L are zero-filled and never stored; a warp whose rows all lie past L only helps
//   load. 16-row blocks of a tile that none of the warp's rows needs (past L, causal above the diagonal)
//   are skipped, so L = 197 computes 208 keys, not 256; masking runs only on the tiles that need it.
//   Why 4 warps × 16 rows, not 8: at ViT's L = 197 (13 groups of 16 rows a head) both leave 3 of 16 warps
//   idle, but 64-row blocks (6,144 at batch 256) of ≤ 128 registers a lane and ≤ 46 KB fit 4 to an SM, so
//   one block's prologue (Q, the first tile) and barrier waits hide behind three others' math. The blocks
//   of one head are adjacent in launch order (1-D grid, row block fastest): K, V come from L2 after their
//   first read.
//   Alignment: the kernels move 16-byte rows (cp.async, ldmatrix, vector stores). Every row pitch (3·H·64,
//   H·64) and head offset is a multiple of 64 elements, so only a tensor's start matters: qkv or dout off
//   16 bytes (a view into a larger buffer) is copied to a fresh tensor first, and out or dqkv off 16 bytes
//   is written to a fresh one and copied back (fresh tensors come from the allocator 512-byte aligned).
//   Size: offsets inside one batch item are 32-bit (fewer registers: ≤ 128 a lane without spills); an item
//   whose qkv holds 2^31 elements or more (L·3·H·64, e.g. L > 932k tokens at 12 heads; or a grid past 2^31
//   blocks) takes the CUDA-core kernels below instead, on bf16 data, whose offsets are 64-bit.
//   Measured (H200, ViT-S/16's shape B 256, L 197, 6 heads; `mo_bench_kernels --only attention`,
//   2026-12-01, docs/bench_runs/2026-12-01_h200_late_attention_fa2.log): forward 137 µs, backward 474 µs
//   (causal 99 / 342), against 749 / 2,015 (562 / 1,484) for the WMMA kernels they replaced (item 22) and
//   PyTorch's SDPA (cuDNN flash) 89 / 700; out within one bf16 step of the WMMA kernels', dqkv 3e-3 of
//   its largest element.
// float32 (and bfloat16 items past 2^31 elements): CUDA-core kernels (64 query rows × 32-key tiles forward,
// 32 × 32 backward), converted to fp32 on the load into shared memory, all arithmetic fp32 FMAs: exact
// enough for the fp32 tests, but about 6 TFLOP/s. Four lanes share a forward row (each 8 of a tile's keys
// and 16 of the 64 output columns); row statistics are combined with two xor-shuffles inside the warp.
#include "ops/attention/attention.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "ops/cuda_utils.cuh"

namespace mo::cuda {

namespace {

constexpr int kD = 64;  // head dim
constexpr unsigned kFull = 0xffffffffu;

// ---- float32 (CUDA cores) ---------------------------------------------------------------------------------
constexpr int kP = kD + 1;        // shared-memory row pitch (floats)
constexpr int kThreads = 256;
constexpr int kFQ = 64, kFK = 32; // forward tile: query rows, key rows
constexpr int kBQ = 32, kBK = 32; // backward tiles

// tile[r][c] = src[(r0 + r)·pitch + c] as float for r < n, c < 64; rows at or past L are zero.
template <typename T>
__device__ void load_tile(float* tile, const T* src, int64_t pitch, int r0, int n, int L) {
  for (int e = threadIdx.x; e < n * kD; e += blockDim.x) {
    const int r = e / kD, c = e % kD, gr = r0 + r;
    tile[r * kP + c] = gr < L ? cu::to_float(src[static_cast<int64_t>(gr) * pitch + c]) : 0.0f;
  }
}

// float32 forward
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

// float32 backward
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

// ---- bfloat16 (tensor cores, mma.sync) -------------------------------------------------------------------
using cu::bf16;
constexpr int kBM = 64;             // rows (queries, or keys in dK/dV) per block, 16 per warp
constexpr int kWarps = kBM / 16;
constexpr int kPitch = 72;          // shared row pitch (bf16): 144 bytes, ldmatrix without bank conflicts
constexpr int kTile = 64 * kPitch;  // elements of one 64-row tile
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared, zero-filled when !valid (src must still be a mapped address).
__device__ __forceinline__ void cp_async16(bf16* dst, const bf16* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Four 8×8 bf16 matrices; lane i gives the address of row i%8 of matrix i/8, receives r[j] = row lane/4,
// columns 2·(lane%4), +1 of matrix j (.trans: row 2·(lane%4), +1, column lane/4 of each stored matrix).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");  // orders it against the plain shared stores of the epilogue
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");
}
// d (16 × 8 fp32) += a (16 × 16 bf16, row) · b (16 × 8 bf16, col).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 2^x by the SFU (ex2.approx.ftz: relative error ~2^-22, 2^-inf = 0), one instruction where exp2f takes more.
__device__ __forceinline__ float exp2_fast(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {  // lo in the low half (lower column)
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// tile[r][0, 64) = src row r0 + r for r < ROWS (zeros at or past L), 16-byte copies over the block's lanes.
template <int ROWS>
__device__ __forceinline__ void load_rows(bf16* tile, const bf16* src, int pitch, int r0, int L) {
#pragma unroll
  for (int j = 0; j < ROWS * 8 / (kWarps * 32); ++j) {
    const int e = threadIdx.x + j * kWarps * 32, r = e / 8, c = e % 8 * 8, gr = r0 + r;
    cp_async16(tile + r * kPitch + c, src + (min(gr, L - 1) * pitch + c), gr < L);
  }
}
__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(valid ? 4 : 0));
}

// Lane addresses of a 16 × 16 block at (r0, c0) of a tile: frag_a gives an A operand (and, by .trans, the
// B operands of the 8-column blocks c0, c0 + 8 with k along the rows: r[0], r[1] and r[2], r[3]); frag_b
// gives the B operands of the 8-row blocks r0, r0 + 8 read as n, k along the columns (r[0], r[1]; r[2], r[3]).
__device__ __forceinline__ const bf16* frag_a(const bf16* tile, int r0, int c0) {
  const int lane = threadIdx.x % 32;
  return tile + (r0 + lane % 8 + 8 * (lane / 8 % 2)) * kPitch + c0 + 8 * (lane / 16);
}
__device__ __forceinline__ const bf16* frag_b(const bf16* tile, int r0, int c0) {
  const int lane = threadIdx.x % 32;
  return tile + (r0 + lane % 8 + 8 * (lane / 16)) * kPitch + c0 + 8 * (lane / 8 % 2);
}
// Bit j set when rows [r0 + 16j, r0 + 16j + 16) meet [lo, hi): the 16-row blocks of a tile worth computing.
__device__ __forceinline__ unsigned live_blocks(int n, int r0, int lo, int hi) {
  unsigned m = 0;
  for (int j = 0; j < n; ++j) m |= (r0 + 16 * j + 16 > lo && r0 + 16 * j < hi ? 1u : 0u) << j;
  return m;
}

// s (16 × 16·NB: 8-column blocks) = rows [r0, r0 + 16) of at · (rows [0, 16·NB) of bt)ᵀ, both 64 wide;
// the 16-row blocks j of bt not in live are left 0. A fragments re-read per 16-step (4 registers).
template <int NB>
__device__ __forceinline__ void mm_abt(float (&s)[2 * NB][4], const bf16* at, int r0, const bf16* bt, unsigned live) {
#pragma unroll
  for (int n = 0; n < 2 * NB; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    uint32_t a[4];
    ldsm_x4(a, frag_a(at, r0, 16 * kk));
#pragma unroll
    for (int j = 0; j < NB; ++j) {
      if (!(live >> j & 1u)) continue;
      uint32_t b[4];
      ldsm_x4(b, frag_b(bt, 16 * j, 16 * kk));
      mma_bf16(s[2 * j], a, b[0], b[1]);
      mma_bf16(s[2 * j + 1], a, b[2], b[3]);
    }
  }
}
// acc (16 × 64: 8-column blocks) += bf16(a) (16 × 16·NB, fp32 C fragments) · rows [0, 16·NB) of tile;
// the 16-steps j not in live are skipped.
template <int NB>
__device__ __forceinline__ void acc_ab(float (&acc)[8][4], const float (&a)[2 * NB][4], const bf16* tile,
                                       unsigned live) {
#pragma unroll
  for (int j = 0; j < NB; ++j) {
    if (!(live >> j & 1u)) continue;
    const uint32_t pa[4] = {pack_bf16(a[2 * j][0], a[2 * j][1]), pack_bf16(a[2 * j][2], a[2 * j][3]),
                            pack_bf16(a[2 * j + 1][0], a[2 * j + 1][1]), pack_bf16(a[2 * j + 1][2], a[2 * j + 1][3])};
#pragma unroll
    for (int dp = 0; dp < 4; ++dp) {
      uint32_t b[4];
      ldsm_x4_trans(b, frag_a(tile, 16 * j, 16 * dp));
      mma_bf16(acc[2 * dp], pa, b[0], b[1]);
      mma_bf16(acc[2 * dp + 1], pa, b[2], b[3]);
    }
  }
}
// The warp's 16 × 64 accumulator (rows g ·mul0, g + 8 ·mul1) as bf16 through its own 16 rows of a shared
// tile, then 16-byte stores to rows r0 + r < L of dst (row pitch `pitch`).
__device__ __forceinline__ void store_acc(const float (&acc)[8][4], float mul0, float mul1, bf16* rows, bf16* dst,
                                          int64_t pitch, int r0, int L) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  __syncwarp();
#pragma unroll
  for (int nd = 0; nd < 8; ++nd) {
    *reinterpret_cast<uint32_t*>(rows + g * kPitch + nd * 8 + 2 * t) = pack_bf16(acc[nd][0] * mul0, acc[nd][1] * mul0);
    *reinterpret_cast<uint32_t*>(rows + (g + 8) * kPitch + nd * 8 + 2 * t) =
        pack_bf16(acc[nd][2] * mul1, acc[nd][3] * mul1);
  }
  __syncwarp();
#pragma unroll
  for (int e = lane; e < 16 * 8; e += 32) {
    const int r = e / 8, col = e % 8 * 8;
    if (r0 + r < L)
      *reinterpret_cast<uint4*>(dst + (r0 + r) * pitch + col) =
          *reinterpret_cast<const uint4*>(rows + r * kPitch + col);
  }
}

// bfloat16 forward
// 1-D grid of nq·B·H blocks (nq = ⌈L/64⌉, query block fastest); qkv (B, L, 3, H, 64), out (B, L, H, 64),
// lse (B, H, L). Offsets inside one batch item's qkv are 32-bit (the launcher routes larger items elsewhere).
__global__ void __launch_bounds__(kWarps * 32, 4)
    attn_forward_mma(const bf16* __restrict__ qkv, bf16* __restrict__ out, float* __restrict__ lse, int L, int H,
        int nq, float c, bool causal) {
  __shared__ __align__(128) bf16 Qs[kTile], Ks[2][kTile], Vs[2][kTile];  // 46,080 B
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int qb = static_cast<int>(blockIdx.x % nq), bh = static_cast<int>(blockIdx.x / nq), b = bh / H, h = bh % H;
  const int q0 = (causal ? nq - 1 - qb : qb) * kBM;  // causal: the heavier blocks of a head start first
  const int w0 = q0 + warp * 16;                     // the warp's first row
  const int pitch = 3 * H * kD;
  const bf16* qsrc = qkv + static_cast<int64_t>(b) * L * pitch + static_cast<int64_t>(h) * kD;
  const bf16 *ksrc = qsrc + H * kD, *vsrc = qsrc + 2 * H * kD;
  const int kend_block = causal ? min(L, q0 + kBM) : L;  // keys [0, kend) seen by some row of the block
  const int kend = causal ? min(L, w0 + 16) : L;          // ... of this warp
  const int ntiles = (kend_block + 63) / 64;
  const bool active = w0 < L;
  load_rows<64>(Qs, qsrc, pitch, q0, L);
  load_rows<64>(Ks[0], ksrc, pitch, 0, L);
  load_rows<64>(Vs[0], vsrc, pitch, 0, L);
  cp_async_commit();
  float o[8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // O: 8-dim blocks; m, l: rows g, g+8
#pragma unroll
  for (int nd = 0; nd < 8; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
  for (int it = 0; it < ntiles; ++it) {
    cp_async_wait_all();
    __syncthreads();  // tile it has landed for every lane, and every warp is done with tile it−1's buffers
    const int k0 = it * 64, st = it & 1;
    if (it + 1 < ntiles) {
      load_rows<64>(Ks[st ^ 1], ksrc, pitch, k0 + 64, L);
      load_rows<64>(Vs[st ^ 1], vsrc, pitch, k0 + 64, L);
      cp_async_commit();
    }
    const unsigned live = live_blocks(4, k0, 0, kend);
    if (!active || live == 0) continue;  // warp-uniform
    float s[8][4];  // [nb][e]: row w0 + g + 8(e/2), key k0 + 8nb + 2t + e%2
    mm_abt<4>(s, Qs, warp * 16, Ks[st], live);
    if (k0 + 64 > L || (causal && k0 + 63 > w0)) {  // the tile holds masked keys for some row
#pragma unroll
      for (int nb = 0; nb < 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + nb * 8 + 2 * t + e % 2, row = w0 + g + 8 * (e / 2);
          if (key >= L || (causal && key > row)) s[nb][e] = -INFINITY;  // covers the skipped blocks too
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // online softmax of row g + 8r
      float mx = -INFINITY;
#pragma unroll
      for (int nb = 0; nb < 8; ++nb) mx = fmaxf(mx, fmaxf(s[nb][2 * r], s[nb][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 2));
      const float mnew = fmaxf(m[r], mx * c);
      const float mref = mnew == -INFINITY ? 0.0f : mnew;  // a row with no key seen yet stays at 0
      const float alpha = exp2_fast(m[r] - mref);          // m = −∞ → 0
      m[r] = mnew;
      float sum = 0.0f;
#pragma unroll
      for (int nb = 0; nb < 8; ++nb) {
        s[nb][2 * r] = exp2_fast(fmaf(s[nb][2 * r], c, -mref));
        s[nb][2 * r + 1] = exp2_fast(fmaf(s[nb][2 * r + 1], c, -mref));
        sum += s[nb][2 * r] + s[nb][2 * r + 1];
      }
      l[r] = l[r] * alpha + sum;
#pragma unroll
      for (int nd = 0; nd < 8; ++nd) o[nd][2 * r] *= alpha, o[nd][2 * r + 1] *= alpha;
    }
    acc_ab<4>(o, s, Vs[st], live);  // O += P·V
  }
  if (!active) return;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFull, l[r], 1);
    l[r] += __shfl_xor_sync(kFull, l[r], 2);
  }
  store_acc(o, l[0] > 0.0f ? 1.0f / l[0] : 0.0f, l[1] > 0.0f ? 1.0f / l[1] : 0.0f, Qs + warp * 16 * kPitch,
            out + (static_cast<int64_t>(b) * L * H + h) * kD, static_cast<int64_t>(H) * kD, w0, L);
  if (t == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = w0 + g + 8 * r;
      if (row < L) lse[static_cast<int64_t>(bh) * L + row] = m[r] * 0.6931471805599453f + logf(l[r]);
    }
  }
}

// bfloat16 backward
// δ (B, H, L) = Σ_d dO·O per row; one warp per (b, i, h) row of the (B, L, H, 64) layout (a grid-stride
// loop: one row a warp at any real size).
__global__ void attn_delta_bf16(const bf16* __restrict__ dout, const bf16* __restrict__ out,
                                float* __restrict__ delta, int64_t rows, int L, int H) {
  const int lane = threadIdx.x % 32;
  const int64_t step = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; w < rows; w += step) {
    const __nv_bfloat162 a = reinterpret_cast<const __nv_bfloat162*>(dout + w * kD)[lane],
                         o = reinterpret_cast<const __nv_bfloat162*>(out + w * kD)[lane];
    const float v = cu::warp_sum(__low2float(a) * __low2float(o) + __high2float(a) * __high2float(o));
    const int64_t bi = w / H;  // b·L + i
    if (lane == 0) delta[(bi / L * H + w % H) * L + bi % L] = v;
  }
}

// dK, dV of one 64-key block (4 warps × 16 keys) over the 32-query tiles that see it (Q, dO, lse, δ
// double-buffered); 1-D grid of nk·B·H blocks, key block fastest.
__global__ void __launch_bounds__(kWarps * 32, 4)
    attn_backward_kv_mma(const bf16* __restrict__ qkv, const bf16* __restrict__ dout, const float* __restrict__ lse,
        const float* __restrict__ delta, bf16* __restrict__ dqkv, int L, int H, int nk, float c, float scale,
        bool causal) {
  __shared__ __align__(128) bf16 Ks[kTile], Vs[kTile], Qs[2][kTile / 2], dOs[2][kTile / 2];  // 36,864 B
  __shared__ float lse_s[2][32], dl_s[2][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int bh = static_cast<int>(blockIdx.x / nk), b = bh / H, h = bh % H;
  const int k0 = static_cast<int>(blockIdx.x % nk) * kBM, kw0 = k0 + warp * 16;  // block's, warp's first key
  const int pitch = 3 * H * kD, opitch = H * kD;
  const int64_t head = static_cast<int64_t>(h) * kD;
  const bf16* qsrc = qkv + static_cast<int64_t>(b) * L * pitch + head;
  const bf16* gsrc = dout + static_cast<int64_t>(b) * L * opitch + head;
  const float *lse_b = lse + static_cast<int64_t>(bh) * L, *dl_b = delta + static_cast<int64_t>(bh) * L;
  const int qstart = causal ? k0 : 0;  // queries before the block's first key see none of it
  const int qlo = causal ? kw0 : 0;    // ... of the warp's keys: it needs queries [qlo, L)
  const int ntiles = (L - qstart + 31) / 32;
  const bool active = kw0 < L;
  auto load_q = [&](int st, int q0) {
    load_rows<32>(Qs[st], qsrc, pitch, q0, L);
    load_rows<32>(dOs[st], gsrc, opitch, q0, L);
    if (threadIdx.x < 64) {
      const int i = q0 + threadIdx.x % 32;
      cp_async4((threadIdx.x < 32 ? lse_s[st] : dl_s[st]) + threadIdx.x % 32,
                (threadIdx.x < 32 ? lse_b : dl_b) + min(i, L - 1), i < L);
    }
  };
  load_rows<64>(Ks, qsrc + opitch, pitch, k0, L);
  load_rows<64>(Vs, qsrc + 2 * opitch, pitch, k0, L);
  load_q(0, qstart);
  cp_async_commit();
  float dk[8][4], dv[8][4];
#pragma unroll
  for (int nd = 0; nd < 8; ++nd)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[nd][e] = dv[nd][e] = 0.0f;
  for (int it = 0; it < ntiles; ++it) {
    cp_async_wait_all();
    __syncthreads();  // tile it has landed; every warp is done with tile it−1's buffers
    const int q0 = qstart + it * 32, st = it & 1;
    if (it + 1 < ntiles) {
      load_q(st ^ 1, q0 + 32);
      cp_async_commit();
    }
    const unsigned live = live_blocks(2, q0, qlo, L);
    if (!active || live == 0) continue;
    float s[4][4], dp[4][4];  // [nb][e]: key kw0 + g + 8(e/2), query q0 + 8nb + 2t + e%2
    mm_abt<2>(s, Ks, warp * 16, Qs[st], live);    // Sᵀ = K·Qᵀ
    mm_abt<2>(dp, Vs, warp * 16, dOs[st], live);  // dPᵀ = V·dOᵀ
    const bool mask = q0 + 32 > L || (causal && q0 < kw0 + 15);  // also zeroes the skipped blocks
#pragma unroll
    for (int nb = 0; nb < 4; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = nb * 8 + 2 * t + e % 2, i = q0 + col, j = kw0 + g + 8 * (e / 2);
        const bool seen = !mask || (i < L && (!causal || j <= i));
        const float p = seen ? exp2_fast(fmaf(s[nb][e], c, -kLog2e * lse_s[st][col])) : 0.0f;
        s[nb][e] = p;
        dp[nb][e] = p * (dp[nb][e] - dl_s[st][col]);  // dSᵀ
      }
    acc_ab<2>(dv, s, dOs[st], live);  // dV += Pᵀ·dO
    acc_ab<2>(dk, dp, Qs[st], live);  // dK += dSᵀ·Q
  }
  if (!active) return;
  bf16* dst = dqkv + static_cast<int64_t>(b) * L * pitch + head;
  store_acc(dk, scale, scale, Ks + warp * 16 * kPitch, dst + opitch, pitch, kw0, L);  // the warp's own K, V rows
  store_acc(dv, 1.0f, 1.0f, Vs + warp * 16 * kPitch, dst + 2 * opitch, pitch, kw0, L);
}

// dQ of one 64-query block (4 warps × 16 rows) over the 32-key tiles it sees (K, V double-buffered); 1-D
// grid of nq·B·H blocks, query block fastest.
__global__ void __launch_bounds__(kWarps * 32, 4)
    attn_backward_q_mma(const bf16* __restrict__ qkv, const bf16* __restrict__ dout, const float* __restrict__ lse,
        const float* __restrict__ delta, bf16* __restrict__ dqkv, int L, int H, int nq, float c, float scale,
        bool causal) {
  __shared__ __align__(128) bf16 Qs[kTile], dOs[kTile], Ks[2][kTile / 2], Vs[2][kTile / 2];  // 36,864 B
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int qb = static_cast<int>(blockIdx.x % nq), bh = static_cast<int>(blockIdx.x / nq), b = bh / H, h = bh % H;
  const int q0 = (causal ? nq - 1 - qb : qb) * kBM, w0 = q0 + warp * 16;
  const int pitch = 3 * H * kD, opitch = H * kD;
  const int64_t head = static_cast<int64_t>(h) * kD;
  const bf16* qsrc = qkv + static_cast<int64_t>(b) * L * pitch + head;
  const bf16 *ksrc = qsrc + opitch, *vsrc = qsrc + 2 * opitch;
  const int kend_block = causal ? min(L, q0 + kBM) : L, kend = causal ? min(L, w0 + 16) : L;
  const int ntiles = (kend_block + 31) / 32;
  const bool active = w0 < L;
  float nl[2], dl[2];  // −lse·log₂e and δ of rows g, g + 8
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = w0 + g + 8 * r;
    nl[r] = i < L ? -kLog2e * lse[static_cast<int64_t>(bh) * L + i] : 0.0f;
    dl[r] = i < L ? delta[static_cast<int64_t>(bh) * L + i] : 0.0f;
  }
  load_rows<64>(Qs, qsrc, pitch, q0, L);
  load_rows<64>(dOs, dout + static_cast<int64_t>(b) * L * opitch + head, opitch, q0, L);
  load_rows<32>(Ks[0], ksrc, pitch, 0, L);
  load_rows<32>(Vs[0], vsrc, pitch, 0, L);
  cp_async_commit();
  float dq[8][4];
#pragma unroll
  for (int nd = 0; nd < 8; ++nd) dq[nd][0] = dq[nd][1] = dq[nd][2] = dq[nd][3] = 0.0f;
  for (int it = 0; it < ntiles; ++it) {
    cp_async_wait_all();
    __syncthreads();
    const int k0 = it * 32, st = it & 1;
    if (it + 1 < ntiles) {
      load_rows<32>(Ks[st ^ 1], ksrc, pitch, k0 + 32, L);
      load_rows<32>(Vs[st ^ 1], vsrc, pitch, k0 + 32, L);
      cp_async_commit();
    }
    const unsigned live = live_blocks(2, k0, 0, kend);
    if (!active || live == 0) continue;
    float s[4][4], ds[4][4];  // [nb][e]: row w0 + g + 8(e/2), key k0 + 8nb + 2t + e%2
    mm_abt<2>(s, Qs, warp * 16, Ks[st], live);    // S = Q·Kᵀ
    mm_abt<2>(ds, dOs, warp * 16, Vs[st], live);  // dP = dO·Vᵀ
    const bool mask = k0 + 32 > L || (causal && k0 + 31 > w0);  // also zeroes the skipped block
#pragma unroll
    for (int nb = 0; nb < 4; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = k0 + nb * 8 + 2 * t + e % 2, i = w0 + g + 8 * (e / 2);
        const bool seen = !mask || (j < L && (!causal || j <= i));
        const float p = seen ? exp2_fast(fmaf(s[nb][e], c, nl[e / 2])) : 0.0f;
        ds[nb][e] = p * (ds[nb][e] - dl[e / 2]);  // dS
      }
    acc_ab<2>(dq, ds, Ks[st], live);  // dQ += dS·K
  }
  if (!active) return;
  store_acc(dq, scale, scale, Qs + warp * 16 * kPitch, dqkv + static_cast<int64_t>(b) * L * pitch + head, pitch, w0,
            L);
}

// ---- launchers -------------------------------------------------------------------------------------------
struct Launch {
  int B, L, H, nq;  // nq: blocks of 64 rows in one (batch, head)
  float scale;      // 1/√64
  bool mma;         // bfloat16 takes the mma.sync kernels: a batch item's qkv (L·3·H·64) below 2^31 elements
};

// qkv (B, L, 3·heads·64), contiguous, within the CUDA-core kernels' grids (B·H, ⌈L/32⌉); the mma.sync ones
// (⌈L/64⌉·B·H blocks in x, 32-bit offsets inside a batch item) take the sizes that fit them.
Launch check_launch(const Tensor& qkv, int64_t heads) {
  MO_CHECK(qkv.dim() == 3 && heads >= 1 && qkv.size(2) % (3 * heads) == 0,
           "attention: qkv {} must be (B, L, 3·heads·D) with heads = {}", qkv.str(), heads);
  const int64_t B = qkv.size(0), L = qkv.size(1), D = qkv.size(2) / (3 * heads), nq = (L + kBM - 1) / kBM;
  MO_CHECK(D == kD, "attention: the CUDA kernels take head dim 64, got {} (qkv {}, {} heads)", D, qkv.str(), heads);
  MO_CHECK(qkv.is_contiguous(), "attention: qkv {} must be contiguous", qkv.str());
  MO_CHECK(L <= 65535LL * kBQ && B * heads <= INT_MAX,
           "attention: qkv {} with {} heads is past the CUDA launch limits (L <= {}, B·heads < 2^31)", qkv.str(),
           heads, 65535LL * kBQ);
  return {static_cast<int>(B), static_cast<int>(L), static_cast<int>(heads), static_cast<int>(nq),
          1.0f / std::sqrt(static_cast<float>(kD)), L * qkv.size(2) <= INT_MAX && nq * B * heads <= INT_MAX};
}

// The kernels index t densely: contiguous, of shape s and dtype dt, on qkv's device.
void check_arg(const Tensor& t, const Shape& s, DType dt, const char* what, const Tensor& qkv) {
  MO_CHECK(t.defined() && t.shape() == s && t.dtype() == dt && t.is_contiguous() && t.device() == qkv.device(),
           "attention: {} {} must be a contiguous {}{} on {} (qkv {})", what, t.str(), dtype_name(dt), shape_str(s),
           qkv.device().str(), qkv.str());
}

// The bfloat16 kernels need 16-byte aligned starts (top note): an input as it is or a fresh copy; an output
// as it is or a fresh tensor that `finish` copies back into it.
Tensor aligned_input(const Tensor& t) { return cu::aligned16(t.raw_data()) ? t : t.clone(); }
Tensor aligned_output(const Tensor& t) {
  return cu::aligned16(t.raw_data()) ? t : Tensor::empty(t.shape(), t.dtype(), t.device());
}
void finish(const Tensor& written, Tensor out) {
  if (written.raw_data() != out.raw_data()) out.copy_(written);
}

// The largest shared-memory carveout, so that 4 blocks of 37–46 KB fit an SM whatever the driver's default.
template <typename K>
void max_shared(K* kernel) {
  CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
}

void forward_bf16(const Tensor& qkv_in, const Launch& g, bool causal, const Tensor& out, const Tensor& lse) {
  const Tensor qkv = aligned_input(qkv_in), o = aligned_output(out);
  max_shared(attn_forward_mma);
  attn_forward_mma<<<static_cast<unsigned>(g.nq) * g.B * g.H, kWarps * 32, 0, stream()>>>(
      cu::ptr<bf16>(qkv), cu::ptr<bf16>(o), cu::ptr<float>(lse), g.L, g.H, g.nq, kLog2e * g.scale, causal);
  CUDA_CHECK_LAUNCH();
  finish(o, out);
}

void backward_bf16(const Tensor& dout_in, const Tensor& qkv_in, const Tensor& out_in, const Tensor& lse,
                   const Launch& g, bool causal, const Tensor& dqkv) {
  const Tensor dout = aligned_input(dout_in), qkv = aligned_input(qkv_in), out = aligned_input(out_in);
  const Tensor d = aligned_output(dqkv);
  Tensor delta = Tensor::empty({g.B, g.H, g.L}, DType::f32, qkv.device());
  const int64_t rows = static_cast<int64_t>(g.B) * g.L * g.H;
  attn_delta_bf16<<<static_cast<unsigned>(std::min<int64_t>((rows + 7) / 8, INT_MAX)), 256, 0, stream()>>>(
      cu::ptr<bf16>(dout), cu::ptr<bf16>(out), cu::ptr<float>(delta), rows, g.L, g.H);
  CUDA_CHECK_LAUNCH();
  const unsigned blocks = static_cast<unsigned>(g.nq) * g.B * g.H;  // 64-key blocks = 64-query blocks
  const float c = kLog2e * g.scale;
  max_shared(attn_backward_kv_mma);
  max_shared(attn_backward_q_mma);
  attn_backward_kv_mma<<<blocks, kWarps * 32, 0, stream()>>>(cu::ptr<bf16>(qkv), cu::ptr<bf16>(dout),
                                                             cu::ptr<float>(lse), cu::ptr<float>(delta),
                                                             cu::ptr<bf16>(d), g.L, g.H, g.nq, c, g.scale, causal);
  CUDA_CHECK_LAUNCH();
  attn_backward_q_mma<<<blocks, kWarps * 32, 0, stream()>>>(cu::ptr<bf16>(qkv), cu::ptr<bf16>(dout),
                                                            cu::ptr<float>(lse), cu::ptr<float>(delta),
                                                            cu::ptr<bf16>(d), g.L, g.H, g.nq, c, g.scale, causal);
  CUDA_CHECK_LAUNCH();
  finish(d, dqkv);
}

}  // namespace

void attention_forward(const Tensor& qkv, int64_t heads, bool causal, const Tensor& out, const Tensor& lse) {
  const Launch g = check_launch(qkv, heads);
  cu::float_dispatch("attention", qkv, [&](auto z) {
    using T = decltype(z);
    check_arg(out, {g.B, g.L, g.H * kD}, qkv.dtype(), "out", qkv);
    check_arg(lse, {g.B, g.H, g.L}, DType::f32, "lse", qkv);
    if (g.B == 0 || g.L == 0) return;
    if constexpr (std::is_same_v<T, bf16>)
      if (g.mma) return forward_bf16(qkv, g, causal, out, lse);
    const dim3 grid(g.B * g.H, (g.L + kFQ - 1) / kFQ);
    attn_forward<T><<<grid, kThreads, 0, stream()>>>(cu::ptr<T>(qkv), cu::ptr<T>(out), cu::ptr<float>(lse), g.L, g.H,
                                                     g.scale, causal);
    CUDA_CHECK_LAUNCH();
  });
}

void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int64_t heads,
                        bool causal, const Tensor& dqkv) {
  const Launch g = check_launch(qkv, heads);
  cu::float_dispatch("attention", qkv, [&](auto z) {
    using T = decltype(z);
    check_arg(dout, {g.B, g.L, g.H * kD}, qkv.dtype(), "dout", qkv);
    check_arg(out, {g.B, g.L, g.H * kD}, qkv.dtype(), "out", qkv);
    check_arg(lse, {g.B, g.H, g.L}, DType::f32, "lse", qkv);
    check_arg(dqkv, qkv.shape(), qkv.dtype(), "dqkv", qkv);
    if (g.B == 0 || g.L == 0) return;
    if constexpr (std::is_same_v<T, bf16>)
      if (g.mma) return backward_bf16(dout, qkv, out, lse, g, causal, dqkv);
    Tensor delta = Tensor::empty({g.B, g.H, g.L}, DType::f32, qkv.device());
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

// attention_fa2.cu: FlashAttention-2-style bf16 attention kernels (head dim 64) that mo_bench_kernels times
// against the op's WMMA kernels (docs/optimization_notes.md item 23). Not part of the library until they win.
//
// All products are raw mma.sync.m16n8k16 (bf16 in, fp32 accumulators) on fragments read by ldmatrix
// (.trans where k runs along a tile's rows). The accumulator layout (PTX ISA "Matrix Fragments for
// mma.m16n8k16"): lane (g = lane/4, t = lane%4) holds rows g and g + 8, columns 2t, 2t + 1 of each 8-column
// block; the A layout of a 16-column step k is the C layout of the blocks 2k, 2k + 1, so scores turned into
// P or dS are rounded to bf16 and fed back as A operands without leaving the registers.
// Forward, per block 4 warps × 16 query rows of one (batch, head), 64-key tiles of K and V double-buffered
// with cp.async (tile t + 1 lands while tile t is computed; one barrier per tile). Per warp and tile:
//   S (16 × 64) = Q·Kᵀ (Q re-read from shared memory per tile, as FlashAttention-2 does: 16 registers fewer,
//   ≤ 128 a lane); online softmax in registers: a row's max is 16 values a lane and two xor-shuffles over the
//   row's 4 lanes, m' = max(m, max_j s_j·c), O ← O·2^{m−m'}, P = 2^{s·c−m'} (c = log₂e/√64),
//   l ← l·2^{m−m'} + Σ P (lane-partial, summed over the row's lanes at the end); O += P·V.
//   O/l goes through the warp's own Q rows to 16-byte stores; lse = (m + log₂ l)·ln 2, as the op writes it.
// Backward, deterministic (no atomics), as the op splits it: δ = Σ_d dO·O per row; dK, dV per 64-key block
// (4 warps × 16 keys) over 32-query tiles: Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, Pᵀ = 2^{Sᵀ·c − lse·log₂e},
// dSᵀ = Pᵀ ⊙ (dPᵀ − δ), dV += Pᵀ·dO, dK += dSᵀ·Q; dQ per 64-query block over 32-key tiles: S, dP, dS as
// before, dQ += dS·K. Each output element is summed by one lane in tile order: the same bits every run.
// Edges: rows at or past L are zero-filled and never stored; a warp whose rows all lie past L only helps
// load. 16-row blocks of a tile that none of the warp's rows needs (past L, causal above the diagonal) are
// skipped, so L = 197 computes 208 keys, not 256; masking runs only on the tiles that need it. Causal:
// a query block stops at the tile holding its last row, a key block starts at its own first row.
// Why 4 warps × 16 rows, not 8: at ViT's L = 197 (13 groups of 16 rows a head) both leave 3 of 16 warps
// idle, but 64-row blocks (6,144 at batch 256) of ≤ 128 registers a lane and ≤ 46 KB fit 4 to an SM, so
// one block's prologue (Q, the first tile) and barrier waits hide behind three others' math, where 2
// blocks of 8 warps would each stall twice the warps at a barrier. 8 warps would halve the copies of K/V
// into shared memory, not the ldmatrix reads that set the pace (each warp reads a tile's K/V fragments for
// its own 16 rows). The blocks of one head are adjacent in launch order (1-D grid, row block fastest), so
// K and V come from L2 after their first read.
#include "tools/bench/attention_fa2.h"

#include <climits>
#include <cmath>
#include <cstdint>

#include "ops/cuda_utils.cuh"

namespace mo::bench {

namespace {

using cu::bf16;
constexpr int kD = 64;              // head dim
constexpr int kBM = 64;             // rows (queries, or keys in dK/dV) per block, 16 per warp
constexpr int kWarps = kBM / 16;
constexpr int kPitch = 72;          // shared row pitch (bf16): 144 bytes, ldmatrix without bank conflicts
constexpr int kTile = 64 * kPitch;  // elements of one 64-row tile
constexpr unsigned kFull = 0xffffffffu;
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

// ---- forward ---------------------------------------------------------------------------------------------
// 1-D grid of nq·B·H blocks (nq = ⌈L/64⌉, query block fastest); qkv (B, L, 3, H, 64), out (B, L, H, 64),
// lse (B, H, L). Offsets inside one batch's qkv are 32-bit (the launcher checks they fit).
__global__ void __launch_bounds__(kWarps * 32, 4) fa2_forward(const bf16* __restrict__ qkv, bf16* __restrict__ out,
                                                               float* __restrict__ lse, int L, int H, int nq,
                                                               float c, bool causal) {
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

// ---- backward --------------------------------------------------------------------------------------------
// δ (B, H, L) = Σ_d dO·O per row; one warp per (b, i, h) row of the (B, L, H, 64) layout.
__global__ void fa2_delta(const bf16* __restrict__ dout, const bf16* __restrict__ out, float* __restrict__ delta,
                          int64_t rows, int L, int H) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= rows) return;
  const __nv_bfloat162 a = reinterpret_cast<const __nv_bfloat162*>(dout + w * kD)[lane],
                       o = reinterpret_cast<const __nv_bfloat162*>(out + w * kD)[lane];
  const float v = cu::warp_sum(__low2float(a) * __low2float(o) + __high2float(a) * __high2float(o));
  const int64_t bi = w / H;  // b·L + i
  if (lane == 0) delta[(bi / L * H + w % H) * L + bi % L] = v;
}

// dK, dV of one 64-key block (4 warps × 16 keys) over the 32-query tiles that see it (Q, dO, lse, δ
// double-buffered); 1-D grid of nk·B·H blocks, key block fastest.
__global__ void __launch_bounds__(kWarps * 32, 4) fa2_backward_kv(const bf16* __restrict__ qkv,
                                                                   const bf16* __restrict__ dout,
                                                                   const float* __restrict__ lse,
                                                                   const float* __restrict__ delta,
                                                                   bf16* __restrict__ dqkv, int L, int H, int nk,
                                                                   float c, float scale, bool causal) {
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
__global__ void __launch_bounds__(kWarps * 32, 4) fa2_backward_q(const bf16* __restrict__ qkv,
                                                                  const bf16* __restrict__ dout,
                                                                  const float* __restrict__ lse,
                                                                  const float* __restrict__ delta,
                                                                  bf16* __restrict__ dqkv, int L, int H, int nq,
                                                                  float c, float scale, bool causal) {
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

struct Geo {
  int B, L, H, nq;
};

void check_like(const Tensor& t, const Tensor& like, const char* what) {
  MO_CHECK(t.shape() == like.shape() && t.dtype() == DType::bf16 && t.is_contiguous() && cu::aligned16(t.raw_data()),
           "fa2 attention: {} {} must be a contiguous, 16-byte aligned bfloat16 shaped like {}", what, t.str(),
           like.str());
}

Geo check_geo(const Tensor& qkv, int64_t heads, const Tensor& out, const Tensor& lse) {
  MO_CHECK(qkv.dim() == 3 && heads > 0 && qkv.size(2) == 3 * heads * kD && qkv.dtype() == DType::bf16 &&
               qkv.is_contiguous() && cu::aligned16(qkv.raw_data()),
           "fa2 attention: qkv {} with {} heads must be a contiguous, 16-byte aligned bfloat16 (B, L, 3·heads·64)",
           qkv.str(), heads);
  const int64_t B = qkv.size(0), L = qkv.size(1);
  MO_CHECK(out.dim() == 3 && out.size(0) == B && out.size(1) == L && out.size(2) == heads * kD &&
               out.dtype() == DType::bf16 && out.is_contiguous() && cu::aligned16(out.raw_data()),
           "fa2 attention: out {} must be a contiguous, 16-byte aligned bfloat16 (B, L, heads·64) for qkv {}",
           out.str(), qkv.str());
  MO_CHECK(lse.dim() == 3 && lse.size(0) == B && lse.size(1) == heads && lse.size(2) == L &&
               lse.dtype() == DType::f32 && lse.is_contiguous(),
           "fa2 attention: lse {} must be a contiguous float32 (B, heads, L) for qkv {}", lse.str(), qkv.str());
  const int64_t nq = (L + kBM - 1) / kBM;
  MO_CHECK(nq * B * heads <= INT_MAX && L * qkv.size(2) <= INT_MAX,
           "fa2 attention: qkv {} with {} heads is past the launch limits (⌈L/64⌉·B·heads and L·3·heads·64 < 2^31)",
           qkv.str(), heads);
  return {static_cast<int>(B), static_cast<int>(L), static_cast<int>(heads), static_cast<int>(nq)};
}

// The largest shared-memory carveout, so that 4 blocks of 37–46 KB fit an SM whatever the driver's default.
template <typename K>
void max_shared(K* kernel) {
  CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
}

constexpr float kC = kLog2e / 8.0f;  // log₂e/√64
constexpr float kScale = 0.125f;                    // 1/√64

}  // namespace

void fa2_attention_forward(const Tensor& qkv, int64_t heads, bool causal, const Tensor& out, const Tensor& lse) {
  const Geo g = check_geo(qkv, heads, out, lse);
  if (g.B == 0 || g.L == 0) return;
  max_shared(fa2_forward);
  fa2_forward<<<static_cast<unsigned>(g.nq) * g.B * g.H, kWarps * 32, 0, stream()>>>(
      cu::ptr<bf16>(qkv), cu::ptr<bf16>(out), cu::ptr<float>(lse), g.L, g.H, g.nq, kC, causal);
  CUDA_CHECK_LAUNCH();
}

void fa2_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                            int64_t heads, bool causal, const Tensor& dqkv) {
  const Geo g = check_geo(qkv, heads, out, lse);
  check_like(dout, out, "dout");
  check_like(dqkv, qkv, "dqkv");
  if (g.B == 0 || g.L == 0) return;
  Tensor delta = Tensor::empty({g.B, g.H, g.L}, DType::f32, qkv.device());
  const int64_t rows = static_cast<int64_t>(g.B) * g.L * g.H;
  fa2_delta<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream()>>>(cu::ptr<bf16>(dout), cu::ptr<bf16>(out),
                                                                         cu::ptr<float>(delta), rows, g.L, g.H);
  CUDA_CHECK_LAUNCH();
  const unsigned blocks = static_cast<unsigned>(g.nq) * g.B * g.H;  // 64-key blocks = 64-query blocks
  max_shared(fa2_backward_kv);
  max_shared(fa2_backward_q);
  fa2_backward_kv<<<blocks, kWarps * 32, 0, stream()>>>(cu::ptr<bf16>(qkv), cu::ptr<bf16>(dout), cu::ptr<float>(lse),
                                                        cu::ptr<float>(delta), cu::ptr<bf16>(dqkv), g.L, g.H, g.nq,
                                                        kC, kScale, causal);
  CUDA_CHECK_LAUNCH();
  fa2_backward_q<<<blocks, kWarps * 32, 0, stream()>>>(cu::ptr<bf16>(qkv), cu::ptr<bf16>(dout), cu::ptr<float>(lse),
                                                       cu::ptr<float>(delta), cu::ptr<bf16>(dqkv), g.L, g.H, g.nq, kC,
                                                       kScale, causal);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mo::bench

// attention_fa2.cu: the FlashAttention-2-style bf16 forward (head dim 64) that mo_bench_kernels times
// against the op's WMMA kernel (docs/optimization_notes.md item 23). Not part of the library until it wins.
//
// Block: 4 warps × 16 query rows of one (batch, head); 64-key tiles of K and V in shared memory, double-
// buffered with cp.async (tile t+1 lands while tile t is computed; one barrier per tile). Per warp and tile:
//   S (16 × 64, fp32) = Q·Kᵀ with raw mma.sync.m16n8k16 (A fragments of Q and B fragments of K by
//   ldmatrix; Q is re-read per tile, as FlashAttention-2 does, which keeps a lane at ≤ 128 registers), then the online softmax in registers: the accumulator layout of
//   m16n8k16 (PTX ISA "Matrix Fragments for mma.m16n8k16") gives lane (g = lane/4, t = lane%4) rows g and
//   g+8, columns 8·n + 2t, 2t+1 of each 8-key block n, so a row's max is 16 values per lane and two xor-
//   shuffles over the 4 lanes of the row; m' = max(m, max_j s_j·c), O ← O·2^{m−m'}, P = 2^{s·c−m'}
//   (c = log₂e/√64), l ← l·2^{m−m'} + Σ P (lane-partial, summed over the row's lanes once at the end);
//   P rounded to bf16 in registers is exactly the A fragment of P·V (the C layout of key blocks 2k, 2k+1
//   is the A layout of the 16-key step k), and V's B fragments come by ldmatrix.trans. O (16 × 64 fp32,
//   32 registers a lane) never leaves the registers until the end: O/l through the warp's own Q rows in
//   shared memory to 16-byte stores; lse = (m + log₂ l)·ln 2, as the op writes it.
// Edges: rows at or past L are zero-filled (their results are not stored); a warp whose rows all lie past
// L only helps load. Keys: 8-key blocks (for S) and 16-key steps (for P·V) at or past the warp's last
// needed key are skipped, so L = 197 computes 200/208 keys, not 256; masking (key ≥ L, causal key > row)
// runs only on the tiles that need it. Causal: a block stops at the tile holding its last row.
// Why 4 warps and not 8 (128 rows): at ViT's L = 197 a (batch, head) has only 4 blocks of 64 rows; with
// 46 KB of shared memory and ≤ 128 registers a lane, 4 such blocks fit an SM (16 warps), each block's
// prologue (Q and the first tile) hides behind the others' math, and the partly empty last block of each
// head costs a quarter of the time 8 warps would hold idle. K/V reuse: the blocks of one head are
// adjacent in launch order (1-D grid, query block fastest), so K/V come from L2 after the first read.
#include "tools/bench/attention_fa2.h"

#include <climits>
#include <cmath>
#include <cstdint>

#include "ops/cuda_utils.cuh"

namespace mo::bench {

namespace {

using cu::bf16;
constexpr int kD = 64;                 // head dim
constexpr int kBM = 64, kBN = 64;      // query rows per block, keys per tile
constexpr int kWarps = kBM / 16;       // 16 query rows per warp
constexpr int kPitch = 72;             // shared row pitch (bf16): 144 bytes, ldmatrix without bank conflicts
constexpr int kTile = 64 * kPitch;     // elements of one 64-row tile
constexpr unsigned kFull = 0xffffffffu;

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
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {  // lo in the low half (lower column)
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// tile[r][0, 64) = src row r0 + r (zeros at or past L); 512 16-byte copies over the block's 128 lanes.
__device__ __forceinline__ void load_tile(bf16* tile, const bf16* src, int pitch, int r0, int L) {
#pragma unroll
  for (int j = 0; j < 64 * 8 / (kWarps * 32); ++j) {
    const int e = threadIdx.x + j * kWarps * 32, r = e / 8, c = e % 8 * 8, gr = r0 + r;
    cp_async16(tile + r * kPitch + c, src + (min(gr, L - 1) * pitch + c), gr < L);
  }
}

// 1-D grid of nq·B·H blocks (nq = ⌈L/64⌉, query block fastest); qkv (B, L, 3, H, 64), out (B, L, H, 64),
// lse (B, H, L). c = log₂e/√64. Offsets inside one batch's qkv are 32-bit (the launcher checks they fit).
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
  const bf16 *ksrc = qsrc + static_cast<int64_t>(H) * kD, *vsrc = qsrc + 2LL * H * kD;
  const int kend_block = causal ? min(L, q0 + kBM) : L;  // keys [0, kend) seen by some row of the block
  const int kend = causal ? min(L, w0 + 16) : L;          // ... of this warp
  const int ntiles = (kend_block + kBN - 1) / kBN;
  const bool active = w0 < L;
  load_tile(Qs, qsrc, pitch, q0, L);
  load_tile(Ks[0], ksrc, pitch, 0, L);
  load_tile(Vs[0], vsrc, pitch, 0, L);
  cp_async_commit();

  float o[8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // O: 8-dim blocks; m, l: rows g, g+8
#pragma unroll
  for (int nd = 0; nd < 8; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
  for (int it = 0; it < ntiles; ++it) {
    cp_async_wait_all();
    __syncthreads();  // tile it has landed for every lane, and every warp is done with tile it−1's buffers
    const int k0 = it * kBN;
    if (it + 1 < ntiles) {
      load_tile(Ks[(it + 1) & 1], ksrc, pitch, k0 + kBN, L);
      load_tile(Vs[(it + 1) & 1], vsrc, pitch, k0 + kBN, L);
      cp_async_commit();
    }
    if (!active || k0 >= kend) continue;  // warp-uniform
    uint32_t qf[4][4];  // Q's A fragments, 16-dim steps kk (re-read per tile: 16 registers fewer, 4 blocks/SM)
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      ldsm_x4(qf[kk], Qs + (warp * 16 + lane % 8 + 8 * (lane / 8 % 2)) * kPitch + kk * 16 + 8 * (lane / 16));
    const bf16 *kt = Ks[it & 1], *vt = Vs[it & 1];
    float s[8][4];  // S of 8-key blocks nb: [0], [1] row g, keys 8nb + 2t, +1; [2], [3] row g + 8
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
      s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
      if (k0 + nb * 8 < kend) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {  // matrices: dims 32·half + 8j of keys 8nb..8nb+7
          uint32_t kf[4];
          ldsm_x4(kf, kt + (nb * 8 + lane % 8) * kPitch + half * 32 + 8 * (lane / 8));
          mma_bf16(s[nb], qf[2 * half], kf[0], kf[1]);
          mma_bf16(s[nb], qf[2 * half + 1], kf[2], kf[3]);
        }
      }
    }
    if (k0 + kBN > L || (causal && k0 + kBN - 1 > w0)) {  // the tile holds masked keys for some row
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
      const float alpha = exp2f(m[r] - mref);              // m = −∞ → 0
      m[r] = mnew;
      float sum = 0.0f;
#pragma unroll
      for (int nb = 0; nb < 8; ++nb) {
        s[nb][2 * r] = exp2f(fmaf(s[nb][2 * r], c, -mref));
        s[nb][2 * r + 1] = exp2f(fmaf(s[nb][2 * r + 1], c, -mref));
        sum += s[nb][2 * r] + s[nb][2 * r + 1];
      }
      l[r] = l[r] * alpha + sum;
#pragma unroll
      for (int nd = 0; nd < 8; ++nd) o[nd][2 * r] *= alpha, o[nd][2 * r + 1] *= alpha;
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {  // O += P·V over 16-key steps: P's A fragment from key blocks 2kk, 2kk+1
      if (k0 + kk * 16 >= kend) continue;
      const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < 4; ++dp) {  // matrices: keys 16kk + 8(j%2), dims 16dp + 8(j/2), transposed
        uint32_t vf[4];
        ldsm_x4_trans(vf, vt + (kk * 16 + lane % 8 + 8 * (lane / 8 % 2)) * kPitch + dp * 16 + 8 * (lane / 16));
        mma_bf16(o[2 * dp], pa, vf[0], vf[1]);
        mma_bf16(o[2 * dp + 1], pa, vf[2], vf[3]);
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFull, l[r], 1);
    l[r] += __shfl_xor_sync(kFull, l[r], 2);
  }
  const float inv0 = l[0] > 0.0f ? 1.0f / l[0] : 0.0f, inv1 = l[1] > 0.0f ? 1.0f / l[1] : 0.0f;
  bf16* ow = Qs + warp * 16 * kPitch;  // the warp's own Q rows (its fragments are in registers)
  __syncwarp();
#pragma unroll
  for (int nd = 0; nd < 8; ++nd) {
    *reinterpret_cast<uint32_t*>(ow + g * kPitch + nd * 8 + 2 * t) = pack_bf16(o[nd][0] * inv0, o[nd][1] * inv0);
    *reinterpret_cast<uint32_t*>(ow + (g + 8) * kPitch + nd * 8 + 2 * t) = pack_bf16(o[nd][2] * inv1, o[nd][3] * inv1);
  }
  __syncwarp();
#pragma unroll
  for (int e = lane; e < 16 * 8; e += 32) {  // 16 rows of 8 16-byte pieces
    const int r = e / 8, col = e % 8 * 8, row = w0 + r;
    if (row < L)
      *reinterpret_cast<uint4*>(out + ((static_cast<int64_t>(b) * L + row) * H + h) * kD + col) =
          *reinterpret_cast<const uint4*>(ow + r * kPitch + col);
  }
  if (t == 0) {
    constexpr float kLn2 = 0.6931471805599453f;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = w0 + g + 8 * r;
      if (row < L) lse[static_cast<int64_t>(bh) * L + row] = m[r] * kLn2 + logf(l[r]);
    }
  }
}

}  // namespace

void fa2_attention_forward(const Tensor& qkv, int64_t heads, bool causal, const Tensor& out, const Tensor& lse) {
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
  if (B == 0 || L == 0) return;
  const float c = 1.4426950408889634f / std::sqrt(static_cast<float>(kD));
  fa2_forward<<<static_cast<unsigned>(nq * B * heads), kWarps * 32, 0, stream()>>>(
      cu::ptr<bf16>(qkv), cu::ptr<bf16>(out), cu::ptr<float>(lse), static_cast<int>(L), static_cast<int>(heads),
      static_cast<int>(nq), c, causal);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mo::bench

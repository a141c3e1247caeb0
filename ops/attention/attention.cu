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

#include "ops/attention/attention_mma.inc"  // the bfloat16 kernels (tensor cores)

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

// gated_dwconv.cu: the fused gate of the Gated CNN block on CUDA (maths and the CPU twin:
// gated_dwconv.cpp). z (B, H, W, 2h) = [g (h) | i (h − cc) | c (cc)], id = h − cc.
//   forward : (1) a streaming pass m[:, :id] = act(g[:, :id]) ⊙ i (16-byte vectors, two per thread in
//                 flight); (2) the conv kernel m[:, id:] = act(g[:, id:]) ⊙ dwconv7x7(c), and conv_out =
//                 dwconv(c) only when a backward will run (training), never in inference.
//   backward: (1) one elementwise pass over (pixel, j < h): dg (all h), di, and dconv = dm[:, id:] ⊙
//                 act(g[:, id:]) into a (B, H, W, cc) scratch, and on request m again (the forward's
//                 bits: same expressions), for a fc2 whose forward did not keep m (gated_dwconv_linear);
//             (2) the depthwise input-gradient kernel (dwconv2d_kernels.cuh) writes dc straight into
//                 dz[:, 2h−cc:] (row stride 2h);
//             (3) the weight-gradient kernel (dconv ⊗ c) → per-slice partials → fixed-order sum (dw, db).
// act is GELU (erf by Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7, as the CPU kernels) or SiLU in fp32; every kernel reads T (f32 / bf16) and computes in fp32.
//
// The kernels live in gated_dwconv_forward.inc and gated_dwconv_backward.inc (included below); this file
// holds their shared device helpers and the host side.
// Forward conv tiling (gate_conv_kernel). A block owns CB = 32 conv channels and walks over TH×7-pixel
// output tiles, TH ∈ {28, 14, 7} fitted to the map (persistent: block (cb, s) takes tiles s, s+S, ...;
// S fills the GPU once, rounded down) with two shared-memory stages: while tile t is computed, cp.async
// copies tile t + S's (TH+6)×13-pixel halo of c and its g (raw T, 16-byte items where the slices allow,
// zero-filled outside the image) into the other stage. Thread (warp w, lane l) computes output rows
// 4w .. 4w+3 × 7 columns of channel l with the channel's 49 weights in registers: each of its 10 halo
// rows is read and converted once (130 loads for 1372 FMA), and the activation is a template parameter.
// The input gradient (conv14_kernel) keeps 14×7 tiles of 2 rows a thread. Widths or pointers that do not
// allow 16-byte items take 8/4-byte cp.async items or 2-byte plain copies. No atomics anywhere.
//
// Bytes and time, mambaout_tiny stage 1, batch 256, bf16 (P = 802,816 pixels, h = 256, cc = 96,
// id = 160; one channel of all pixels = 1.6 MB); measured on one H200 (tools/mo_bench_kernels):
//   forward : read z 822 MB, write m 411 MB (+ conv_out 154 MB in training): ~330 / 375 µs of memory at
//             ~3.7 TB/s. Inference 0.82 ms with the 14-row kernel of 2 rows a thread, 0.59 ms with
//             gate_conv_kernel (stage 2 0.41 → 0.29, stage 3 0.21 → 0.18, stage 4 0.19 → 0.09 ms; the
//             18 forward calls of tiny 6.1 → 4.6 ms): docs/optimization_notes.md item 24.
//   backward: elementwise pass 2.06 GB (~560 µs of memory), dgrad and wgrad 308 MB each; 1.30 ms measured.
//   History, predictions and the variants that lost: docs/optimization_notes.md items 12–18 and 24.
#include "ops/fused/gated_dwconv.h"

#include "ops/conv/dwconv2d_kernels.cuh"

namespace mo::cuda {

namespace {

constexpr int K = 7, R = 3, KK = K * K;          // kernel, padding, taps
constexpr int TH = 14, TW = 7;                    // output tile: rows × columns
constexpr int HH = TH + K - 1, HW = TW + K - 1;   // halo: 20 × 13
constexpr int HPIX = HH * HW, TPIX = TH * TW;     // 260, 98
constexpr int CB = 32, NWARP = TH / 2, THREADS = 32 * NWARP;
// Blocks per SM the 14×7 kernels' registers are sized for (measured on the earlier single-stage
// forward kernel, sum of the 18 tiny forward calls, b256 bf16: 2 → 8.03 ms, 3 → 8.98 ms, 4 → 9.56 ms;
// 3 and 4 spilled). The conv kernels keep their channel's 49 weights in registers (128 / 114 registers,
// no spills for bf16, nvcc 13 -Xptxas -v).
constexpr int kForwardMinBlocks = 2;

struct Geo {
  int64_t B = 0, tiles = 0;
  int H = 0, W = 0, tiles_h = 0, tiles_w = 0, ncb = 1;
  int h = 0, id = 0, cc = 0;  // widths
  FastDiv div_w, div_h;        // by tiles_w, tiles_h
};

template <typename T, int V>
using Vec = dwk::Vec<T, V>;

template <typename T, int V>
__device__ __forceinline__ Vec<T, V> ldv(const T* p) {
  return *reinterpret_cast<const Vec<T, V>*>(p);
}
template <typename T, int V>
__device__ __forceinline__ void stv(T* p, const Vec<T, V>& v) {
  *reinterpret_cast<Vec<T, V>*>(p) = v;
}
// erf(u) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7, branch-free; the CPU kernels use the same
// formula), given e = exp(−u²), which GELU's derivative reuses: ~12 instructions against erff's ~25.
// FTZ: the reciprocal as the flush-to-zero MUFU instruction, without __fdividef's denormal guards: d =
// 1 + 0.33|u| ≥ 1 is never denormal, so the bits are the same (docs/optimization_notes.md item 24).
__device__ __forceinline__ float rcp_ftz(float d) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(d));
  return r;
}
// __expf's 2^(x · log2 e) without its denormal guard: where exp(−u²) is denormal (|u| > 9.3) and flushed
// to 0, erf's 1 − p·t·e rounds to 1 either way, so GELU's value keeps its bits
__device__ __forceinline__ float exp_ftz(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x * 1.4426950408889634f));
  return r;
}
template <bool FTZ = false>
__device__ __forceinline__ float erf_as(float u, float e) {
  const float au = fabsf(u);
  const float t = FTZ ? rcp_ftz(fmaf(0.3275911f, au, 1.0f)) : __fdividef(1.0f, fmaf(0.3275911f, au, 1.0f));
  float p = fmaf(1.061405429f, t, -1.453152027f);
  p = fmaf(p, t, 1.421413741f);
  p = fmaf(p, t, -0.284496736f);
  p = fmaf(p, t, 0.254829592f);
  return copysignf(fmaf(-p * t, e, 1.0f), u);
}
// act(x) for the forward; the same expressions as act_fd's value, so that the backward's recomputed m
// equals the forward's bits
__device__ __forceinline__ float act_f(Act a, float x) {
  if (a == Act::gelu) {
    const float u = x * 0.70710678118654752440f;
    return x * fmaf(0.5f, erf_as(u, __expf(-u * u)), 0.5f);
  }
  return x * (1.0f / (1.0f + expf(-x)));
}
// act_f with the activation known at compile time (no branch per output) and GELU's guards dropped (FTZ):
// the same bits as act_f
template <Act A>
__device__ __forceinline__ float act_t(float x) {
  if constexpr (A == Act::gelu) {
    const float u = x * 0.70710678118654752440f;
    return x * fmaf(0.5f, erf_as<true>(u, exp_ftz(-u * u)), 0.5f);
  } else {
    return x * (1.0f / (1.0f + expf(-x)));
  }
}
// value and derivative together (one exponential)
__device__ __forceinline__ void act_fd(Act a, float x, float& v, float& d) {
  if (a == Act::gelu) {
    const float u = x * 0.70710678118654752440f;
    const float e = __expf(-u * u);  // exp(−x²/2)
    const float cdf = fmaf(0.5f, erf_as(u, e), 0.5f);
    v = x * cdf;
    d = fmaf(x * e, 0.39894228040143267794f, cdf);
  } else {
    const float s = 1.0f / (1.0f + expf(-x));
    v = x * (s);
    d = s * (1.0f + x * (1.0f - s));
  }
}

// tile t -> (image b, first row i0, first column j0); 32-bit FastDiv (tiles < 2^31, checked on the
// host): a 64-bit division is a ~70-instruction subroutine, and two of them ran per tile per thread.
__device__ __forceinline__ void decode_tile(int64_t t, const Geo& g, int64_t& b, int& i0, int& j0) {
  uint32_t q, r;
  g.div_w.divmod(static_cast<uint32_t>(t), q, r);
  j0 = static_cast<int>(r) * TW;
  uint32_t q2, r2;
  g.div_h.divmod(q, q2, r2);
  i0 = static_cast<int>(r2) * TH;
  b = q2;
}
__device__ __forceinline__ int64_t pixel(const Geo& g, int64_t b, int i, int j) {
  return (b * g.H + i) * g.W + j;
}

// Starts copying the ER×EC-pixel block of a slice whose top-left image pixel is (pi, pj) into shared
// memory s ([pixel][CB], raw T): element (p, ch) at src[p·ld + ch], channels c0 .. c0+CB of which those
// < C exist; out-of-image pixels and missing channels read as 0. Items of V elements: 4-, 8- and
// 16-byte items go through cp.async (complete after cp_async_wait + __syncthreads), 2-byte items
// (bf16 that is not 4-byte aligned) are plain copies.
template <typename T, int V, int ER, int EC>
__device__ __forceinline__ void issue_block(T* __restrict__ s, const T* __restrict__ src, int64_t ld, int C,
                                            const Geo& g, int64_t b, int pi, int pj, int c0) {
  constexpr int NQ = CB / V, N = ER * EC * NQ, BYTES = V * static_cast<int>(sizeof(T));
  for (int e = threadIdx.x; e < N; e += THREADS) {
    const int pix = e / NQ, ch = c0 + (e % NQ) * V;
    const int gi = pi + pix / EC, gj = pj + pix % EC;
    const bool inside = gi >= 0 && gi < g.H && gj >= 0 && gj < g.W;
    const int nvalid = inside ? max(0, min(V, C - ch)) : 0;
    const T* p = nvalid > 0 ? src + pixel(g, b, gi, gj) * ld + ch : src;
    if constexpr (BYTES >= 4) {
      dwk::cp_async<BYTES>(s + e * V, p, nvalid * static_cast<int>(sizeof(T)));
    } else {
      s[e] = nvalid > 0 ? *p : cu::from_float<T>(0.0f);
    }
  }
}

// The thread's 49 weights of channel c0 + lane in registers, wr[tap] = w[c][tap] (FLIP: w[c][48 − tap],
// the input gradient's kernel); 0 for channels >= cc. The block's 32 × 49 weights are read once,
// coalesced, into `scratch` (≥ 32 · 49 floats of shared memory no copy is writing to), then each thread
// takes its channel's: a direct per-thread read strides 49 elements across the lanes (a sector per
// lane per tap, which cost ~25% of the small stage-4 maps).
template <typename T, bool FLIP, int NT = THREADS>
__device__ __forceinline__ void load_weights(float (&wr)[KK], const T* __restrict__ w, int c0, int lane, int cc,
                                             float* scratch) {
  for (int e = threadIdx.x; e < CB * KK; e += NT) {
    const int l = e / KK, tap = e % KK;
    scratch[tap * CB + l] = c0 + l < cc ? cu::to_float(w[static_cast<int64_t>(c0) * KK + e]) : 0.0f;
  }
  __syncthreads();
#pragma unroll
  for (int tap = 0; tap < KK; ++tap) wr[tap] = scratch[(FLIP ? KK - 1 - tap : tap) * CB + lane];
  __syncthreads();  // scratch is a copy stage: everyone has read it before copies are issued into it
}

// acc[a][j] = b0 + Σ_{u,v} w[u,v] · x[a + u][j + v] for NR rows from the halo rows at sx (raw, converted
// as read, each row once for the NR outputs it feeds); per output u, v ascending (a fixed order).
template <typename T, int NR>
__device__ __forceinline__ void conv_rows(const T* __restrict__ sx, const float (&wr)[KK], float b0,
                                          float (&acc)[NR][TW]) {
#pragma unroll
  for (int a = 0; a < NR; ++a)
#pragma unroll
    for (int j = 0; j < TW; ++j) acc[a][j] = b0;
#pragma unroll
  for (int q = 0; q < NR + K - 1; ++q) {
    float x[HW];
#pragma unroll
    for (int k = 0; k < HW; ++k) x[k] = cu::to_float(sx[(q * HW + k) * CB]);
#pragma unroll
    for (int a = 0; a < NR; ++a) {
      const int u = q - a;
      if (u < 0 || u >= K) continue;
#pragma unroll
      for (int v = 0; v < K; ++v)
#pragma unroll
        for (int j = 0; j < TW; ++j) acc[a][j] = fmaf(wr[u * K + v], x[j + v], acc[a][j]);
    }
  }
}

#include "ops/fused/gated_dwconv_forward.inc"  // the forward kernels
#include "ops/fused/gated_dwconv_backward.inc"  // the backward kernels

// Shared memory of conv14_kernel (two raw stages of the halo), of gate_conv_kernel (two of the halo and of
// g) and of wgrad14_kernel (two stages of the x halo and the dy tile; the warps' sums).
template <typename T>
size_t conv14_smem() {
  return static_cast<size_t>(2 * HPIX) * CB * sizeof(T);
}
template <typename T, int TH>
size_t gate_conv_smem() {
  return static_cast<size_t>(2 * (GateTile<TH, sizeof(T)>::HPIX + GateTile<TH, sizeof(T)>::TPIX)) * CB * sizeof(T);
}
template <typename T>
size_t wgrad14_smem() {
  return static_cast<size_t>(2 * (HPIX + TPIX)) * CB * sizeof(T) + static_cast<size_t>(KK + 1) * CB * sizeof(float);
}

// Slices of a persistent launch of `kern` (NT threads, `smem` bytes a block, after allowing that much and
// the largest shared-memory carveout): as many as fit on the GPU at once beside each other for the ncb
// channel blocks, rounded down (rounded up, a second wave of a few blocks starts when the first ends:
// stage 4's 18 channel blocks × 15 slices were 270 blocks for 264 resident), at most one per tile.
template <typename Kern>
int64_t slices(Kern kern, int nt, size_t smem, int dev, int64_t ncb, int64_t tiles) {
  CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
  return std::max<int64_t>(1, std::min<int64_t>(tiles, cu::resident_blocks(kern, nt, smem, dev) / ncb));
}

// Of the forward conv's tile heights {28, 14, 7}, the one that computes the fewest rows of an H-row map
// (ties: the taller): no empty rows at any mambaout stage (56, 28, 14, 7).
int gate_tile_height(int64_t H) {
  int best = 28;
  for (int th : {14, 7})
    if ((H + th - 1) / th * th < (H + best - 1) / best * best) best = th;
  return best;
}

template <typename T, int V, int TH, Act A, bool OUT>
void launch_gate_conv(const T* zp, int64_t h, int64_t id, const T* w, const T* b, T* mp, T* cp, const GateGeo& g,
                      int dev) {
  auto kern = gate_conv_kernel<T, V, TH, A, OUT>;
  constexpr int NT = GateTile<TH, sizeof(T)>::THREADS;
  const int64_t S = slices(kern, NT, gate_conv_smem<T, TH>(), dev, g.ncb, g.tiles);
  kern<<<static_cast<unsigned>(S * g.ncb), NT, gate_conv_smem<T, TH>(), stream()>>>(zp + h + id, zp + id, w, b,
                                                                                  mp + id, cp, g);
  CUDA_CHECK_LAUNCH();
}

void check_gated(const char* op, const Tensor& z, const Tensor& w, const Tensor& b, int64_t h) {
  MO_CHECK(w.dim() == 4 && w.size(2) == K && w.size(3) == K && w.is_contiguous(),
           "{} (CUDA): only contiguous 7x7 depthwise weights are implemented, got {}", op, w.str());
  MO_CHECK(z.dim() == 4 && z.is_contiguous() && z.size(3) == 2 * h && w.size(0) <= h,
           "{} (CUDA): z {} must be contiguous (B, H, W, 2h) with h = {} >= cc = {}", op, z.str(), h, w.size(0));
  MO_CHECK(b.is_contiguous() && b.numel() == w.size(0) && b.dtype() == w.dtype() && w.dtype() == z.dtype(),
           "{} (CUDA): bias {} must be a contiguous ({}) tensor of z's dtype", op, b.str(), w.size(0));
  MO_CHECK(h <= (1 << 28) && z.size(1) <= (1 << 20) && z.size(2) <= (1 << 20),
           "{} (CUDA): z {} with h = {} is out of range", op, z.str(), h);
}

Geo make_geo(const Tensor& z, int64_t h, int64_t cc) {
  Geo g;
  g.B = z.size(0);
  g.H = static_cast<int>(z.size(1));
  g.W = static_cast<int>(z.size(2));
  g.h = static_cast<int>(h);
  g.cc = static_cast<int>(cc);
  g.id = static_cast<int>(h - cc);
  g.tiles_h = (g.H + TH - 1) / TH;
  g.tiles_w = (g.W + TW - 1) / TW;
  g.tiles = g.B * g.tiles_h * g.tiles_w;
  MO_CHECK(g.tiles < (int64_t{1} << 31), "gated_dwconv (CUDA): z {} has {} 14x7 tiles, more than 2^31 - 1",
           z.str(), g.tiles);
  g.div_w = FastDiv(g.tiles_w);
  g.div_h = FastDiv(g.tiles_h);
  g.ncb = (g.cc + CB - 1) / CB;
  return g;
}

template <typename T, typename F>
void with_vec(int v, F&& f) {
  if (v == 1) f(std::integral_constant<int, 1>{});
  else f(std::integral_constant<int, cu::Pack<T>::N>{});
}

}  // namespace

void gated_dwconv_forward(const Tensor& z, const Tensor& w, const Tensor& b, int64_t h, Act act, const Tensor& m,
                          const Tensor& conv_out) {
  check_gated("gated_dwconv", z, w, b, h);
  cu::float_dispatch("gated_dwconv (CUDA)", z, [&](auto tag) {
    using T = decltype(tag);
    const int64_t cc = w.size(0), P = z.size(0) * z.size(1) * z.size(2), id = h - cc;
    MO_CHECK(m.is_contiguous() && m.numel() == P * h && m.dtype() == z.dtype(),
             "gated_dwconv (CUDA): output m {} does not match z {} (h = {})", m.str(), z.str(), h);
    MO_CHECK(!conv_out.defined() ||
                 (conv_out.is_contiguous() && conv_out.numel() == P * cc && conv_out.dtype() == z.dtype()),
             "gated_dwconv (CUDA): conv output {} does not match z {} (cc = {})", conv_out.str(), z.str(), cc);
    if (P == 0 || h == 0) return;
    const T* zp = cu::ptr<T>(z);
    T* mp = cu::ptr<T>(m);
    T* cp = conv_out.defined() && cc > 0 ? cu::ptr<T>(conv_out) : nullptr;
    const int dev = z.device().index;
    constexpr int VI = cu::Pack<T>::N;
    if (id > 0) {  // identity part: 16-byte vectors when id, h and both pointers allow them
      with_vec<T>(id % VI == 0 && h % VI == 0 && cu::aligned16(zp) && cu::aligned16(mp) ? VI : 1, [&](auto vw) {
        constexpr int V = decltype(vw)::value;
        const int64_t nv = id / V, n = P * nv;
        const bool fast = n < (int64_t{1} << 31);
        auto kern = fast ? gate_identity_forward<T, V, true> : gate_identity_forward<T, V, false>;
        const int64_t resident = cu::resident_blocks(kern, 256, 0, dev);
        const int grid = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + 255) / 256, resident)));
        kern<<<grid, 256, 0, stream()>>>(zp, mp, n, FastDiv(std::min<int64_t>(nv, (int64_t{1} << 31) - 1)), nv, h, act);
        CUDA_CHECK_LAUNCH();
      });
    }
    if (cc == 0) return;
    // conv part: copy items as wide as both slices (g and c of z, row stride 2h) allow
    const int64_t B = z.size(0), H = z.size(1), W = z.size(2);
    MO_CHECK(H * W * 2 * h < (int64_t{1} << 31), "gated_dwconv (CUDA): z {} has 2^31 or more elements per image",
             z.str());
    const int th = gate_tile_height(H);
    const int64_t tiles = B * ((H + th - 1) / th) * ((W + TW - 1) / TW);
    MO_CHECK(tiles < (int64_t{1} << 30), "gated_dwconv (CUDA): z {} has 2^30 or more tiles", z.str());
    GateGeo g;
    g.H = static_cast<int>(H);
    g.W = static_cast<int>(W);
    g.cc = static_cast<int>(cc);
    g.ld = static_cast<int>(2 * h);
    g.ld_out = static_cast<int>(h);
    g.img = H * W * 2 * h;
    g.img_out = static_cast<int>(H * W * h);
    g.img_conv = static_cast<int>(H * W * cc);
    g.tiles = static_cast<int>(tiles);
    g.div_w = FastDiv((W + TW - 1) / TW);
    g.div_h = FastDiv((H + th - 1) / th);
    g.ncb = static_cast<int>((cc + CB - 1) / CB);
    const T *wp = cu::ptr<T>(w), *bp = cu::ptr<T>(b);
    dwk::with_width<T>(dwk::load_width<T>({{zp + id, 2 * h}, {zp + h + id, 2 * h}}), [&](auto vwc) {
      constexpr int V = decltype(vwc)::value;
      auto by_th = [&](auto th_c) {
        constexpr int TH = decltype(th_c)::value;
        auto by_act = [&](auto out_c) {
          constexpr bool OUT = decltype(out_c)::value;
          if (act == Act::gelu) launch_gate_conv<T, V, TH, Act::gelu, OUT>(zp, h, id, wp, bp, mp, cp, g, dev);
          else launch_gate_conv<T, V, TH, Act::silu, OUT>(zp, h, id, wp, bp, mp, cp, g, dev);
        };
        if (cp != nullptr) by_act(std::true_type{});
        else by_act(std::false_type{});
      };
      if (th == 28) by_th(std::integral_constant<int, 28>{});
      else if (th == 14) by_th(std::integral_constant<int, 14>{});
      else by_th(std::integral_constant<int, 7>{});
    });
  });
}

void gated_dwconv_backward(const Tensor& dm, const Tensor& z, const Tensor& w, const Tensor& conv_out, int64_t h,
                           Act act, const Tensor& dz, const Tensor& dw, const Tensor& db, const Tensor& m_out) {
  MO_CHECK(w.dim() == 4 && w.size(2) == K && w.size(3) == K && w.is_contiguous() && z.dim() == 4 &&
               z.is_contiguous() && z.size(3) == 2 * h && w.size(0) <= h,
           "gated_dwconv backward (CUDA): z {} / weight {} must be contiguous (B, H, W, 2h), (cc, 1, 7, 7), h = {}",
           z.str(), w.str(), h);
  cu::float_dispatch("gated_dwconv backward (CUDA)", z, [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = z.size(0), H = z.size(1), W = z.size(2), Z = 2 * h, cc = w.size(0), id = h - cc;
    const int64_t P = B * H * W;
    MO_CHECK(dm.is_contiguous() && dm.numel() == P * h && dm.dtype() == z.dtype() && conv_out.is_contiguous() &&
                 conv_out.numel() == P * cc && conv_out.dtype() == z.dtype() && dz.is_contiguous() &&
                 dz.shape() == z.shape() && dz.dtype() == z.dtype(),
             "gated_dwconv backward (CUDA): dm {} / conv {} / dz {} do not match z {} (h = {}, cc = {})", dm.str(),
             conv_out.str(), dz.str(), z.str(), h, cc);
    MO_CHECK(dw.is_contiguous() && dw.numel() == w.numel() && dw.dtype() == w.dtype() &&
                 (!db.defined() || (db.is_contiguous() && db.numel() == cc && db.dtype() == w.dtype())),
             "gated_dwconv backward (CUDA): dw {} / db {} do not match weight {}", dw.str(), db.str(), w.str());
    MO_CHECK(!m_out.defined() || (m_out.is_contiguous() && m_out.numel() == P * h && m_out.dtype() == z.dtype()),
             "gated_dwconv backward (CUDA): m {} does not match z {} (h = {})", m_out.str(), z.str(), h);
    MO_CHECK(h <= (1 << 28) && H <= (1 << 20) && W <= (1 << 20),
             "gated_dwconv backward (CUDA): z {} with h = {} is out of range", z.str(), h);
    const int dev = z.device().index;
    if (P == 0 || h == 0) {
      Tensor(dw).zero_();
      if (db.defined()) Tensor(db).zero_();
      return;
    }
    const T *zp = cu::ptr<T>(z), *dmp = cu::ptr<T>(dm), *cp = cc > 0 ? cu::ptr<T>(conv_out) : nullptr;
    T* dzp = cu::ptr<T>(dz);
    T* mp = m_out.defined() ? cu::ptr<T>(m_out) : nullptr;
    Tensor dconv = Tensor::empty({B, H, W, cc}, z.dtype(), z.device());  // dm[:, id:] ⊙ act(g[:, id:])
    T* dcp = cc > 0 ? cu::ptr<T>(dconv) : nullptr;
    constexpr int V = cu::Pack<T>::N;
    const bool vec = h % V == 0 && id % V == 0 && cu::aligned16(zp) && cu::aligned16(dmp) && cu::aligned16(cp) &&
                     cu::aligned16(dzp) && cu::aligned16(dcp) && cu::aligned16(mp);
    auto launch = [&](auto kern) {
      const int64_t resident = cu::resident_blocks(kern, 256, 0, dev);
      const int grid = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((P + 7) / 8, resident)));
      kern<<<grid, 256, 0, stream()>>>(dmp, zp, cp, dzp, dcp, mp, P, h, id, cc, act);
      CUDA_CHECK_LAUNCH();
    };
    if (vec) launch(gate_backward_ew<T, V>);
    else launch(gate_backward_ew<T, 1>);
    if (cc == 0) return;  // nothing convolved: dw, db are empty
    const Geo gg = make_geo(z, h, cc);
    // dc = dconv ⋆ flipped w, straight into dz's last cc channels
    dwk::with_width<T>(dwk::load_width<T>({{dcp, cc}}), [&](auto vwc) {
      constexpr int V = decltype(vwc)::value;
      auto kern = conv14_kernel<T, V>;
      const size_t smem = conv14_smem<T>();
      const int64_t S = slices(kern, THREADS, smem, dev, gg.ncb, gg.tiles);
      kern<<<static_cast<unsigned>(S * gg.ncb), THREADS, smem, stream()>>>(dcp, cc, cu::ptr<T>(w), dzp + h + id, Z, gg);
      CUDA_CHECK_LAUNCH();
    });
    // dw, db: per-slice partials, then a fixed-order sum over the slices
    dwk::with_width<T>(dwk::load_width<T>({{dcp, cc}, {zp + h + id, Z}}), [&](auto vwc) {
      constexpr int V = decltype(vwc)::value;
      auto kern = wgrad14_kernel<T, V>;
      const size_t smem = wgrad14_smem<T>();
      const int64_t S = slices(kern, THREADS, smem, dev, gg.ncb, gg.tiles);
      Tensor part_w = Tensor::empty({S, cc, KK}, DType::f32, z.device());
      Tensor part_b = Tensor::empty({S, cc}, DType::f32, z.device());
      kern<<<static_cast<unsigned>(S * gg.ncb), THREADS, smem, stream()>>>(dcp, cc, zp + h + id, Z, gg,
                                                                          part_w.data<float>(), part_b.data<float>());
      CUDA_CHECK_LAUNCH();
      cu::column_sum(cu::ColumnLoad<float>{part_w.data<float>(), S, cc * KK}, 1, S, cc * KK, 1.0f, cu::ptr<T>(dw),
                     dw.device());
      if (db.defined())
        cu::column_sum(cu::ColumnLoad<float>{part_b.data<float>(), S, cc}, 1, S, cc, 1.0f, cu::ptr<T>(db), db.device());
    });
  });
}

}  // namespace mo::cuda

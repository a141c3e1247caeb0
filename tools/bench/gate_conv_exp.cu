// gate_conv_exp.cu: the gate's inference forward (identity pass + 7×7 conv fused with act(g) ⊙) with a
// different conv kernel than ops/fused/gated_dwconv.cu's conv14_kernel<T, V, GATE=true>, for
// mo_bench_kernels to time against the op (docs/optimization_notes.md item 24). Same inputs, outputs
// and bits as the op (the identity pass and act are copies; each output's FMAs run in the op's order).
//
// What changes against the op's kernel (14×7 tiles, 7 warps, 2 rows × 7 columns per thread):
//   - 4 output rows × 7 columns per thread: 10 halo rows of 13 read and converted for 4 × 7 outputs
//     (130 loads for 1372 FMA) instead of 8 rows for 2 × 7 (104 for 686);
//   - the tile height TH fitted to the map: 28 rows (7 warps) at 56 and 28, 14 (4 warps: 4+4+4+2 rows)
//     at 14, 7 (2 warps: 4+3) at 7, the one of {28, 14, 7} that computes the fewest rows: no empty
//     rows at any mambaout stage (the op's 14-row tile is half empty on 7×7 maps);
//   - offsets inside an image in 32 bits (the image's base once per tile in 64): H·W·2h < 2^31;
//   - act a template parameter: no branch per output between the unrolled epilogues;
//   - GELU's reciprocal and exponential without the denormal guards that cannot fire (see act_f);
//   - the copies walk pixels with a stepped row and column (no division or channel test per item);
//   - slices rounded down to what fits at once, and the maximum shared-memory carveout requested.
// The halo stays raw T in shared memory: a conversion pass to fp32 after the copies land would cost
// ~11 instructions per 8 halo elements (a 16-byte load, 8 converts, two 16-byte stores; ~3.1 per output
// at 2.26 halo elements per output) and a barrier, and double the stages' shared memory (fewer blocks
// per SM), to save the 4.6 converts per output.
//
// Per-thread instructions per output, bf16, GELU, inference (SASS of nvcc 13 sm_90 read with cuobjdump:
// the tile bodies of conv14_kernel<bf16, 8, true>'s conv_out-free path and of gate_conv_kernel<bf16, 8,
// 28, gelu>; the copy loops from their unrolled bodies × items per thread), old → new:
//   halo loads (LDS.U16) + converts (SHF)  7.4 + 7.4 → 4.6 + 4.6  (104 + 104 per 14 → 130 + 130 per 28)
//   conv FFMA                              49 → 49
//   epilogue (g, GELU, roundings, store)   ~65 → ~35   (the runtime act test, a 64-bit pixel index and
//                                                      ~17 address instructions; GELU's guards: 7)
//   copies of the next tile                ~20 → ~14   (~40 → ~25 instructions per 16-byte item)
//   total                                  ~152 → ~108 (−29%)
// Registers 121-128 (bf16, GELU), no spills anywhere (SiLU: see the launch bounds).

#include "tools/bench/gate_conv_exp.h"

#include "ops/conv/dwconv2d_kernels.cuh"

namespace mo::bench {

namespace {

constexpr int K = 7, R = 3, KK = K * K;  // kernel, padding, taps
constexpr int TW = 7, HW = TW + K - 1;   // tile columns, halo columns
constexpr int CB = 32, RPT = 4;          // channels per block (one per lane), output rows per thread

// Tile of TH rows: NW warps of RPT rows (the last one TH % RPT when that is not 0). MINB, the blocks per
// SM of the launch bounds: bf16 14-16 warps per SM (4 per scheduler: ≤ 128 registers, the register
// file is split among the 4 schedulers); fp32 what its shared memory allows (7-8 warps per SM).
template <int TH, int ES>
struct Tile {
  static constexpr int NW = (TH + RPT - 1) / RPT, THREADS = 32 * NW, HH = TH + K - 1;
  static constexpr int HPIX = HH * HW, TPIX = TH * TW;
  static constexpr int MINB = (ES == 2 ? 16 : 8) / NW;
};

struct Geo {
  int64_t img = 0;  // elements of z per image (H · W · 2h)
  int tiles = 0, H = 0, W = 0, ncb = 1, cc = 0, ld = 0, ld_out = 0, img_out = 0;
  FastDiv div_w, div_h;  // by the tiles per row, per column
};

// erf by Abramowitz & Stegun 7.1.26 and act: the op's expressions with the same bits, but GELU's
// reciprocal and exponential as the flush-to-zero MUFU instructions. The op's __fdividef(1, d) and
// __expf guard denormal inputs and results (4 + 3 instructions per value); here d = 1 + 0.33|u| ≥ 1 is
// never denormal, and where exp(−u²) is denormal (|u| > 9.3) and flushed to 0, 1 − p·t·e rounds to 1
// either way: the bits are the op's (the bench's max |diff| checks it).
__device__ __forceinline__ float rcp_ftz(float d) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(d));
  return r;
}
__device__ __forceinline__ float exp_ftz(float x) {  // __expf's 2^(x · log2 e) without its denormal guard
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x * 1.4426950408889634f));
  return r;
}
__device__ __forceinline__ float erf_as(float u, float e) {
  const float au = fabsf(u);
  const float t = rcp_ftz(fmaf(0.3275911f, au, 1.0f));
  float p = fmaf(1.061405429f, t, -1.453152027f);
  p = fmaf(p, t, 1.421413741f);
  p = fmaf(p, t, -0.284496736f);
  p = fmaf(p, t, 0.254829592f);
  return copysignf(fmaf(-p * t, e, 1.0f), u);
}
template <Act A>
__device__ __forceinline__ float act_f(float x) {
  if constexpr (A == Act::gelu) {
    const float u = x * 0.70710678118654752440f;
    return x * fmaf(0.5f, erf_as(u, exp_ftz(-u * u)), 0.5f);
  } else {
    return x * (1.0f / (1.0f + expf(-x)));
  }
}

// The op's identity pass, m[p, j] = act(g[p, j]) · i[p, j] for j < id (copied: it is memory-bound).
template <typename T, int V, bool FAST>
__global__ void __launch_bounds__(256) identity_pass(const T* __restrict__ z, T* __restrict__ m, int64_t n, FastDiv nvd,
                                                     int64_t nv, int64_t h, Act act) {
  constexpr int NB = 2;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e0 = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e0 < n; e0 += NB * stride) {
    dwk::Vec<T, V> gv[NB], iv[NB];
    int64_t p[NB], j[NB];
#pragma unroll
    for (int k = 0; k < NB; ++k) {
      const int64_t e = e0 + k * stride;
      if (e >= n) continue;
      if constexpr (FAST) {
        uint32_t q, r;
        nvd.divmod(static_cast<uint32_t>(e), q, r);
        p[k] = q;
        j[k] = static_cast<int64_t>(r) * V;
      } else {
        p[k] = e / nv;
        j[k] = (e - p[k] * nv) * V;
      }
      gv[k] = *reinterpret_cast<const dwk::Vec<T, V>*>(z + p[k] * 2 * h + j[k]);
      iv[k] = *reinterpret_cast<const dwk::Vec<T, V>*>(z + p[k] * 2 * h + h + j[k]);
    }
#pragma unroll
    for (int k = 0; k < NB; ++k) {
      if (e0 + k * stride >= n) continue;
      dwk::Vec<T, V> o;
#pragma unroll
      for (int q = 0; q < V; ++q) {
        const float a = act == Act::gelu ? act_f<Act::gelu>(cu::to_float(gv[k].v[q]))
                                         : act_f<Act::silu>(cu::to_float(gv[k].v[q]));
        o.v[q] = cu::from_float<T>(a * cu::to_float(iv[k].v[q]));
      }
      *reinterpret_cast<dwk::Vec<T, V>*>(m + p[k] * h + j[k]) = o;
    }
  }
}

// Starts copying the ER×EC-pixel block at image pixel (pi, pj) of one image's slice `img` (element
// (pixel q, channel ch) at img[q·ld + ch], 32-bit offsets) into s ([pixel][CB], raw T), channels
// c0 .. c0 + CB of which those < cc exist; pixels outside the image and missing channels read as 0.
// A thread keeps one V-channel item position (THREADS is a multiple of CB / V) and walks over pixels
// with its row and column stepped (no division in the loop); the channel test is made once.
template <typename T, int V, int ER, int EC, int THREADS>
__device__ __forceinline__ void issue_block(T* __restrict__ s, const T* __restrict__ img, const Geo& g, int pi, int pj,
                                            int c0) {
  constexpr int NQ = CB / V, BYTES = V * static_cast<int>(sizeof(T)), STEP = THREADS / NQ;
  static_assert(THREADS % NQ == 0, "a thread's channel item must not change between its pixels");
  const int q = static_cast<int>(threadIdx.x) % NQ, ch = c0 + q * V;
  const int cbytes = max(0, min(V, g.cc - ch)) * static_cast<int>(sizeof(T));  // of this item's channels
  int pix = static_cast<int>(threadIdx.x) / NQ, r = pix / EC, col = pix % EC;
  for (; pix < ER * EC; pix += STEP) {
    const int gi = pi + r, gj = pj + col;
    const bool inside = static_cast<unsigned>(gi) < static_cast<unsigned>(g.H) &&
                        static_cast<unsigned>(gj) < static_cast<unsigned>(g.W);
    const int nbytes = inside ? cbytes : 0;
    const int off = nbytes > 0 ? (gi * g.W + gj) * g.ld + ch : 0;
    T* d = s + pix * CB + q * V;
    if constexpr (BYTES >= 4) {
      dwk::cp_async<BYTES>(d, img + off, nbytes);
    } else {
      *d = nbytes > 0 ? img[off] : cu::from_float<T>(0.0f);
    }
    r += STEP / EC;
    col += STEP % EC;
    if (col >= EC) {
      col -= EC;
      ++r;
    }
  }
}

// acc[a][j] = b0 + Σ_{u,v} w[u,v] · x[a + u][j + v] for NR rows from the halo rows at sx (raw, converted
// as read, each row once for the NR outputs it feeds); per output u, v ascending, as the op.
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

// m[p, id + c] = act(g[p, id + c]) · round(bias[c] + (w ⋆ c)[p, c]) for the cc conv channels. Persistent
// blocks (cb, s) take tiles s, s + S, ...; two shared-memory stages (the next tile's halo of c and its g
// arrive by cp.async while the current tile is computed); the 49 weights of the lane's channel in
// registers. `in`, `gsrc`: z's c and g slices (row stride g.ld = 2h); out: m + id (row stride h).
// SiLU kernels take fp32's register budget (its IEEE reciprocal's slow-path call spilled at 128).
template <typename T, int V, int TH, Act A>
__global__ void __launch_bounds__(Tile<TH, sizeof(T)>::THREADS, Tile<TH, A == Act::gelu ? sizeof(T) : 4>::MINB)
    gate_conv_kernel(const T* __restrict__ in, const T* __restrict__ gsrc, const T* __restrict__ w,
                     const T* __restrict__ bias, T* __restrict__ out, Geo g) {
  using TL = Tile<TH, sizeof(T)>;
  constexpr int HPIX = TL::HPIX, TPIX = TL::TPIX, THREADS = TL::THREADS;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* s_x = reinterpret_cast<T*>(smem_raw);  // [2][HPIX][CB] halo of c, raw
  T* s_g = s_x + 2 * HPIX * CB;             // [2][TPIX][CB] g of the tile, raw
  const int cb = static_cast<int>(blockIdx.x % g.ncb);
  const int s0 = static_cast<int>(blockIdx.x / g.ncb), ns = static_cast<int>(gridDim.x / g.ncb);
  const int lane = threadIdx.x % 32, wp = threadIdx.x / 32;
  const int c0 = cb * CB, c = c0 + lane;
  const bool cok = c < g.cc;
  auto decode = [&](int t, int& b, int& i0, int& j0) {
    uint32_t q, r, q2, r2;
    g.div_w.divmod(static_cast<uint32_t>(t), q, r);
    g.div_h.divmod(q, q2, r2);
    j0 = static_cast<int>(r) * TW;
    i0 = static_cast<int>(r2) * TH;
    b = static_cast<int>(q2);
  };
  auto issue = [&](int t, int st) {
    int b, i0, j0;
    decode(t, b, i0, j0);
    const int64_t base = b * g.img;
    issue_block<T, V, TL::HH, HW, THREADS>(s_x + st * HPIX * CB, in + base, g, i0 - R, j0 - R, c0);
    issue_block<T, V, TH, TW, THREADS>(s_g + st * TPIX * CB, gsrc + base, g, i0, j0, c0);
  };
  if (s0 < g.tiles) issue(s0, 0);
  dwk::cp_async_commit();
  // the block's 32 × 49 weights, read coalesced through stage 1 (no copy is writing there yet)
  float wr[KK];
  {
    float* scratch = reinterpret_cast<float*>(s_x + HPIX * CB);
    for (int e = threadIdx.x; e < CB * KK; e += THREADS) {
      const int l = e / KK, tap = e % KK;
      scratch[tap * CB + l] = c0 + l < g.cc ? cu::to_float(w[static_cast<int64_t>(c0) * KK + e]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int tap = 0; tap < KK; ++tap) wr[tap] = scratch[tap * CB + lane];
    __syncthreads();
  }
  const float b0 = cok ? cu::to_float(bias[c]) : 0.0f;
  const int r0 = RPT * wp;  // the warp's first row in the tile
  // NR rows of the tile from r0: conv, then m = act(g) · round(conv) (32-bit offsets inside the image)
  auto rows = [&](auto nr, const T* sx, const T* sg, T* out_img, int i0, int j0) {
    constexpr int NR = decltype(nr)::value;
    float acc[NR][TW];
    conv_rows<T, NR>(sx + r0 * HW * CB + lane, wr, b0, acc);
    if (!cok) return;
    const int ncol = min(TW, g.W - j0);
#pragma unroll
    for (int a = 0; a < NR; ++a) {
      const int i = i0 + r0 + a;
      if (i >= g.H) continue;
      T* po = out_img + (i * g.W + j0) * g.ld_out;
      const T* pg = sg + (r0 + a) * TW * CB + lane;
#pragma unroll
      for (int j = 0; j < TW; ++j, po += g.ld_out) {
        if (j >= ncol) continue;
        const T cq = cu::from_float<T>(acc[a][j]);  // m uses the rounded conv, as the op
        *po = cu::from_float<T>(act_f<A>(cu::to_float(pg[j * CB])) * cu::to_float(cq));
      }
    }
  };
  int buf = 0;
  for (int t = s0; t < g.tiles; t += ns, buf ^= 1) {
    if (t + ns < g.tiles) issue(t + ns, buf ^ 1);
    dwk::cp_async_commit();
    dwk::cp_async_wait<1>();  // this tile's copies (all but the group just committed) are done
    __syncthreads();
    int b, i0, j0;
    decode(t, b, i0, j0);
    const T* sx = s_x + buf * HPIX * CB;
    const T* sg = s_g + buf * TPIX * CB;
    T* out_img = out + b * static_cast<int64_t>(g.img_out) + c;
    if constexpr (TH % RPT == 0) {
      rows(std::integral_constant<int, RPT>{}, sx, sg, out_img, i0, j0);
    } else {
      if (wp < TH / RPT) rows(std::integral_constant<int, RPT>{}, sx, sg, out_img, i0, j0);
      else rows(std::integral_constant<int, TH % RPT>{}, sx, sg, out_img, i0, j0);
    }
    __syncthreads();  // stage `buf` is refilled on the next iteration; everyone must be done reading it
  }
}

template <typename T, int TH>
size_t conv_smem() {
  return static_cast<size_t>(2 * (Tile<TH, sizeof(T)>::HPIX + Tile<TH, sizeof(T)>::TPIX)) * CB * sizeof(T);
}

// Of the tile heights {28, 14, 7}, the one that computes the fewest rows of an H-row map (ties: the taller).
int tile_height(int64_t H) {
  int best = 28;
  for (int th : {14, 7})
    if ((H + th - 1) / th * th < (H + best - 1) / best * best) best = th;
  return best;
}

template <typename T, int V, int TH, Act A>
void launch_conv(const T* zp, int64_t h, int64_t id, const T* w, const T* b, T* mp, Geo g, int dev) {
  auto kern = gate_conv_kernel<T, V, TH, A>;
  const size_t smem = conv_smem<T, TH>();
  CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
  // slices: as many as fit at once, rounded down (the op rounds up: at stage 4, 15 slices × 18 channel
  // blocks = 270 > 264 resident blocks, and the 6 of a second wave start when the first finish)
  const int64_t resident = cu::resident_blocks(kern, Tile<TH, sizeof(T)>::THREADS, smem, dev);
  const int64_t S = std::max<int64_t>(1, std::min<int64_t>(int64_t{g.tiles}, resident / g.ncb));
  kern<<<static_cast<unsigned>(S * g.ncb), Tile<TH, sizeof(T)>::THREADS, smem, stream()>>>(zp + h + id, zp + id, w, b, mp + id, g);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void gated_dwconv_forward_exp(const Tensor& z, const Tensor& w, const Tensor& b, int64_t h, Act act, const Tensor& m) {
  MO_CHECK(w.dim() == 4 && w.size(2) == K && w.size(3) == K && w.is_contiguous() && z.dim() == 4 && z.is_contiguous() &&
               z.size(3) == 2 * h && w.size(0) <= h && b.is_contiguous() && b.numel() == w.size(0) &&
               b.dtype() == z.dtype() && w.dtype() == z.dtype(),
           "gated_dwconv_forward_exp: z {} / weight {} / bias {} must be contiguous (B, H, W, 2h), (cc, 1, 7, 7), (cc) "
           "of one dtype, h = {}", z.str(), w.str(), b.str(), h);
  const int64_t B = z.size(0), H = z.size(1), W = z.size(2), cc = w.size(0), id = h - cc, P = B * H * W;
  MO_CHECK(m.is_contiguous() && m.numel() == P * h && m.dtype() == z.dtype(),
           "gated_dwconv_forward_exp: output m {} does not match z {} (h = {})", m.str(), z.str(), h);
  MO_CHECK(H * W * 2 * h < (int64_t{1} << 31), "gated_dwconv_forward_exp: z {} has 2^31 or more elements per image",
           z.str());
  cu::float_dispatch("gated_dwconv_forward_exp", z, [&](auto tag) {
    using T = decltype(tag);
    if (P == 0 || h == 0) return;
    const T* zp = cu::ptr<T>(z);
    T* mp = cu::ptr<T>(m);
    const int dev = z.device().index;
    constexpr int VI = cu::Pack<T>::N;
    if (id > 0) {  // the op's identity pass: 16-byte vectors when id, h and both pointers allow them
      auto ident = [&](auto vw) {
        constexpr int V = decltype(vw)::value;
        const int64_t nv = id / V, n = P * nv;
        const bool fast = n < (int64_t{1} << 31);
        auto kern = fast ? identity_pass<T, V, true> : identity_pass<T, V, false>;
        const int64_t resident = cu::resident_blocks(kern, 256, 0, dev);
        const int grid = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + 255) / 256, resident)));
        kern<<<grid, 256, 0, stream()>>>(zp, mp, n, FastDiv(std::min<int64_t>(nv, (int64_t{1} << 31) - 1)), nv, h, act);
        CUDA_CHECK_LAUNCH();
      };
      if (id % VI == 0 && h % VI == 0 && cu::aligned16(zp) && cu::aligned16(mp)) ident(std::integral_constant<int, VI>{});
      else ident(std::integral_constant<int, 1>{});
    }
    if (cc == 0) return;
    const int th = tile_height(H);
    Geo g;
    g.H = static_cast<int>(H);
    g.W = static_cast<int>(W);
    g.cc = static_cast<int>(cc);
    g.ld = static_cast<int>(2 * h);
    g.ld_out = static_cast<int>(h);
    g.img = H * W * 2 * h;
    g.img_out = static_cast<int>(H * W * h);
    const int64_t tiles_h = (H + th - 1) / th, tiles_w = (W + TW - 1) / TW;
    MO_CHECK(B * tiles_h * tiles_w < (int64_t{1} << 30), "gated_dwconv_forward_exp: z {} has 2^30 or more tiles",
             z.str());
    g.tiles = static_cast<int>(B * tiles_h * tiles_w);
    g.div_w = FastDiv(tiles_w);
    g.div_h = FastDiv(tiles_h);
    g.ncb = static_cast<int>((cc + CB - 1) / CB);
    const T *wp = cu::ptr<T>(w), *bp = cu::ptr<T>(b);
    dwk::with_width<T>(dwk::load_width<T>({{zp + id, 2 * h}, {zp + h + id, 2 * h}}), [&](auto vwc) {
      constexpr int V = decltype(vwc)::value;
      auto by_act = [&](auto th_c) {
        constexpr int TH = decltype(th_c)::value;
        if (act == Act::gelu) launch_conv<T, V, TH, Act::gelu>(zp, h, id, wp, bp, mp, g, dev);
        else launch_conv<T, V, TH, Act::silu>(zp, h, id, wp, bp, mp, g, dev);
      };
      if (th == 28) by_act(std::integral_constant<int, 28>{});
      else if (th == 14) by_act(std::integral_constant<int, 14>{});
      else by_act(std::integral_constant<int, 7>{});
    });
  });
}

}  // namespace mo::bench

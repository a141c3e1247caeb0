// gated_dwconv.cu: the fused gate of the Gated CNN block on CUDA (maths and the CPU twin:
// gated_dwconv.cpp). z (B, H, W, 2h) = [g (h) | i (h − cc) | c (cc)], id = h − cc.
//   forward : one kernel: m[:, :id] = act(g[:, :id]) ⊙ i and m[:, id:] = act(g[:, id:]) ⊙ dwconv7x7(c);
//             conv_out = dwconv(c) only when a backward will run (training), never in inference.
//   backward: (1) one elementwise pass over (pixel, j < h): dg (all h), di, and dconv = dm[:, id:] ⊙
//                 act(g[:, id:]) into a (B, H, W, cc) scratch;
//             (2) the depthwise input-gradient kernel (dwconv2d_kernels.cuh) writes dc straight into
//                 dz[:, 2h−cc:] (row stride 2h);
//             (3) the weight-gradient kernel (dconv ⊗ c) → per-slice partials → fixed-order sum (dw, db).
// act is exact GELU (erff) or SiLU in fp32; every kernel reads T (f32 / bf16) and computes in fp32.
//
// Forward tiling. A block (7 warps) owns CB = 32 conv channels and walks over 14×7-pixel output tiles
// (persistent: block (cb, s) takes tiles s, s+S, ...; S fills the GPU once). Per tile it loads the
// 20×13-pixel halo of c and the tile's g with 16-byte loads (all of a thread's loads issued before any
// store), converts them to fp32 once into shared memory, and computes; the weights sit in shared
// memory for the whole block. Thread (warp w, lane l) computes output rows 2w and 2w+1 × 7 columns of
// channel l: each of the 8 input rows is read once from shared memory (13 loads for up to 98 FMA), and
// the epilogue reads g from shared memory (no global load behind the stores). The identity channels
// of a tile are shared out among the ncb blocks of that tile (whole 16-byte vectors each), so one
// launch does everything with balanced blocks. Widths that are not multiples of 16 bytes (h, id) or
// unaligned pointers take the same kernel with 1-element items. No atomics anywhere.
//
// Bytes and time, mambaout_tiny stage 1, batch 256, bf16 (P = 802,816 pixels, h = 256, cc = 96,
// id = 160; one channel of all pixels = 1.6 MB); measured on one H200 (tools/mo_bench_kernels):
//   forward : read z 411 MB, write m 206 MB (+ conv_out 154 MB in training) = 617 / 771 MB → ~170 /
//             210 µs of memory at ~3.7 TB/s; issue ~90 instructions per conv output and ~30 per
//             identity element → ~330 µs. Predicted ~0.35 ms; measured 1.07 ms (training), 1.02 ms
//             (inference); was 1.50 ms as two kernels. Nsight Compute: memory 28%, SM 54%, occupancy
//             21% (2 blocks per SM: 128 registers and 52 KB of shared memory each): still latency-bound
//             (each tile's loads wait before its compute; no second stage).
//   backward elementw. : read dm 411, g 411, i 257, conv 154; write dg 411, di 257, dconv 154
//                                                                              = 2.06 GB → ~560 µs
//            dx conv   : read dconv, write dc  = 308 MB → ~85 µs of memory, ~180 µs of instructions
//            dw, db    : read dconv, c         = 308 MB → ~85 µs of memory, ~190 µs of instructions
//            → ~930 µs predicted, 1.57 ms measured (1.7 TB/s).
//   18 blocks of mambaout_tiny (mo_bench --profile): forward 10.7 → 8.35 ms, backward 11.6 ms.
// Stage 4 (7×7, h = 1536, cc = 576): the same traffic per pixel × 6 on 1/64 of the pixels; the 14-row
// tile is half empty there (~4% of the model's conv work).
#include "ops/fused/gated_dwconv.h"

#include "ops/conv/dwconv2d_kernels.cuh"

namespace mo::cuda {

namespace {

constexpr int K = 7, R = 3, KK = K * K;          // kernel, padding, taps
constexpr int TH = 14, TW = 7;                    // output tile: rows × columns
constexpr int HH = TH + K - 1, HW = TW + K - 1;   // halo: 20 × 13
constexpr int HPIX = HH * HW, TPIX = TH * TW;     // 260, 98
constexpr int CB = 32, NWARP = TH / 2, THREADS = 32 * NWARP;
// Forward blocks per SM the registers are sized for, chosen by measurement (sum of the 18 tiny
// forward calls, b256 bf16): 2 → 8.03 ms (128 registers, 28 bytes of spills for bf16), 3 → 8.98 ms,
// 4 → 9.56 ms (80 / 72 registers, 220+ bytes of spills). The 49 weights in registers instead of
// shared memory measured the same (8.03 ms) and are not kept.
constexpr int kForwardMinBlocks = 2;

struct Geo {
  int64_t B = 0, tiles = 0;
  int H = 0, W = 0, tiles_h = 0, tiles_w = 0, ncb = 1;
  int h = 0, id = 0, cc = 0, nv = 0;  // widths; nv = identity vectors per pixel (id / V)
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
template <typename T, int V>
__device__ __forceinline__ Vec<T, V> zerov() {
  Vec<T, V> r;
#pragma unroll
  for (int e = 0; e < V; ++e) r.v[e] = cu::from_float<T>(0.0f);
  return r;
}

__device__ __forceinline__ float act_f(Act a, float x) {
  if (a == Act::gelu) return x * 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
  return x / (1.0f + expf(-x));
}
// value and derivative together (one erff / expf)
__device__ __forceinline__ void act_fd(Act a, float x, float& v, float& d) {
  if (a == Act::gelu) {
    const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
    const float pdf = expf(-0.5f * x * x) * 0.39894228040143267794f;
    v = x * cdf;
    d = cdf + x * pdf;
  } else {
    const float s = 1.0f / (1.0f + expf(-x));
    v = x * s;
    d = s * (1.0f + x * (1.0f - s));
  }
}

__device__ __forceinline__ void decode_tile(int64_t t, const Geo& g, int64_t& b, int& i0, int& j0) {
  j0 = static_cast<int>(t % g.tiles_w) * TW;
  t /= g.tiles_w;
  i0 = static_cast<int>(t % g.tiles_h) * TH;
  b = t / g.tiles_h;
}
__device__ __forceinline__ int64_t pixel(const Geo& g, int64_t b, int i, int j) {
  return (b * g.H + i) * g.W + j;
}

// s[pixel][CB] (fp32) ← the ER×EC-pixel block of a slice whose top-left
// image pixel is (pi, pj): element (p, ch) at src[p·ld + ch], channels c0 .. c0+CB of which those < C
// exist. Out-of-image pixels and missing channels are 0. Up to 8 items per thread are loaded before
// any is stored. V > 1 needs C % V == 0 (a vector is wholly inside or outside).
template <typename T, int V, int ER, int EC>
__device__ __forceinline__ void load_block(float* __restrict__ s, const T* __restrict__ src, int64_t ld, int C,
                                           const Geo& g, int64_t b, int pi, int pj, int c0) {
  constexpr int NQ = CB / V, N = ER * EC * NQ, PER = (N + THREADS - 1) / THREADS, BATCH = PER < 8 ? PER : 8;
#pragma unroll 1
  for (int base = 0; base < PER; base += BATCH) {
    Vec<T, V> buf[BATCH];
#pragma unroll
    for (int k = 0; k < BATCH; ++k) {
      const int e = static_cast<int>(threadIdx.x) + (base + k) * THREADS;
      const int pix = e / NQ, ch = c0 + (e % NQ) * V;
      const int gi = pi + pix / EC, gj = pj + pix % EC;
      const bool ok = e < N && gi >= 0 && gi < g.H && gj >= 0 && gj < g.W && ch < C;
      buf[k] = ok ? ldv<T, V>(src + pixel(g, b, gi, gj) * ld + ch) : zerov<T, V>();
    }
#pragma unroll
    for (int k = 0; k < BATCH; ++k) {
      const int e = static_cast<int>(threadIdx.x) + (base + k) * THREADS;
      if (e >= N) continue;
      float* d = s + (e / NQ) * CB + (e % NQ) * V;
      if constexpr (V % 4 == 0) {
#pragma unroll
        for (int q = 0; q < V; q += 4)
          *reinterpret_cast<float4*>(d + q) =
              make_float4(cu::to_float(buf[k].v[q]), cu::to_float(buf[k].v[q + 1]), cu::to_float(buf[k].v[q + 2]),
                          cu::to_float(buf[k].v[q + 3]));
      } else {
#pragma unroll
        for (int q = 0; q < V; ++q) d[q] = cu::to_float(buf[k].v[q]);
      }
    }
  }
}

// The block's weights, s_w[tap][lane] = w[c0 + lane][tap] (0 for channels >= cc); coalesced reads.
template <typename T>
__device__ __forceinline__ void load_weights(float* __restrict__ s_w, const T* __restrict__ w, int c0, int cc) {
  for (int e = threadIdx.x; e < CB * KK; e += THREADS) {
    const int l = e / KK, tap = e % KK;
    s_w[tap * CB + l] = c0 + l < cc ? cu::to_float(w[static_cast<int64_t>(c0) * KK + e]) : 0.0f;
  }
}

// acc[a][j] = b0 + Σ_{u,v} w[u,v] · x[2w + a + u][j + v] for the thread's rows 2w, 2w+1 and channel
// lane, x the halo in shared memory; the sum runs u, v ascending (a fixed order).
__device__ __forceinline__ void conv_tile(const float* sx, const float* sw, int wp, int lane, float b0,
                                          float (&acc)[2][TW]) {
#pragma unroll
  for (int a = 0; a < 2; ++a)
#pragma unroll
    for (int j = 0; j < TW; ++j) acc[a][j] = b0;
#pragma unroll
  for (int q = 0; q < K + 1; ++q) {
    float x[HW];
#pragma unroll
    for (int k = 0; k < HW; ++k) x[k] = sx[((2 * wp + q) * HW + k) * CB + lane];
#pragma unroll
    for (int a = 0; a < 2; ++a) {
      const int u = q - a;
#pragma unroll
      for (int v = 0; v < K && u >= 0 && u < K; ++v) {
        const int tap = u * K + v;
        const float wt = sw[tap * CB + lane];
#pragma unroll
        for (int j = 0; j < TW; ++j) acc[a][j] = fmaf(wt, x[j + v], acc[a][j]);
      }
    }
  }
}

// The identity channels of a tile, shared out among its ncb blocks: block cb takes vectors
// [cb·nv/ncb, (cb+1)·nv/ncb) of every pixel. f(pixel, first channel) does the work for one vector.
template <typename F>
__device__ __forceinline__ void identity_share(const Geo& g, int64_t b, int i0, int j0, int cb, F&& f) {
  const int k0 = static_cast<int>(static_cast<int64_t>(cb) * g.nv / g.ncb);
  const int n = static_cast<int>(static_cast<int64_t>(cb + 1) * g.nv / g.ncb) - k0;
  if (n <= 0) return;
  f.run(g, b, i0, j0, k0, n);
}

// m[p, j] = act(g[p, j]) · i[p, j] for the share's vectors.
template <typename T, int V>
struct IdentityForward {
  const T* __restrict__ z;
  T* __restrict__ m;
  Act act;
  static constexpr int NB = 2;  // vectors per thread loaded before any store
  __device__ __forceinline__ void run(const Geo& g, int64_t b, int i0, int j0, int k0, int n) const {
    const int items = TPIX * n;
    const int64_t Z = 2 * static_cast<int64_t>(g.h);
#pragma unroll 1
    for (int e0 = threadIdx.x; e0 < items; e0 += NB * THREADS) {
      Vec<T, V> gv[NB], iv[NB];
      int64_t p[NB];
      int ch[NB];
      bool ok[NB];
#pragma unroll
      for (int k = 0; k < NB; ++k) {
        const int e = e0 + k * THREADS, pix = e / n;
        const int i = i0 + pix / TW, j = j0 + pix % TW;
        ch[k] = (k0 + e - pix * n) * V;
        ok[k] = e < items && i < g.H && j < g.W;
        p[k] = ok[k] ? pixel(g, b, i, j) : 0;
        if (ok[k]) {
          gv[k] = ldv<T, V>(z + p[k] * Z + ch[k]);
          iv[k] = ldv<T, V>(z + p[k] * Z + g.h + ch[k]);
        }
      }
#pragma unroll
      for (int k = 0; k < NB; ++k) {
        if (!ok[k]) continue;
        Vec<T, V> o;
#pragma unroll
        for (int e = 0; e < V; ++e)
          o.v[e] = cu::from_float<T>(act_f(act, cu::to_float(gv[k].v[e])) * cu::to_float(iv[k].v[e]));
        stv<T, V>(m + p[k] * g.h + ch[k], o);
      }
    }
  }
};

constexpr size_t kForwardSmem = static_cast<size_t>(HPIX + TPIX + KK) * CB * sizeof(float);

template <typename T, int V>
__global__ void __launch_bounds__(THREADS, kForwardMinBlocks)
    gate_forward_kernel(const T* __restrict__ z, const T* __restrict__ w, const T* __restrict__ bias,
                        T* __restrict__ m, T* __restrict__ conv_out, Geo g, Act act) {
  extern __shared__ __align__(16) float smem[];
  float* s_x = smem;                 // [HPIX][CB] c halo, fp32
  float* s_g = s_x + HPIX * CB;      // [TPIX][CB] g of the conv channels, fp32
  float* s_w = s_g + TPIX * CB;      // [KK][CB]
  const int cb = static_cast<int>(blockIdx.x % g.ncb);
  const int64_t s0 = blockIdx.x / g.ncb, ns = gridDim.x / g.ncb;
  const int lane = threadIdx.x % 32, wp = threadIdx.x / 32;
  const int c0 = cb * CB, c = c0 + lane;
  const bool cok = c < g.cc;
  const int64_t Z = 2 * static_cast<int64_t>(g.h);
  load_weights(s_w, w, c0, g.cc);
  const float b0 = cok ? cu::to_float(bias[c]) : 0.0f;
  const IdentityForward<T, V> ident{z, m, act};
  for (int64_t t = s0; t < g.tiles; t += ns) {
    int64_t b;
    int i0, j0;
    decode_tile(t, g, b, i0, j0);
    __syncthreads();  // the previous tile's shared reads are done
    load_block<T, V, HH, HW>(s_x, z + g.h + g.id, Z, g.cc, g, b, i0 - R, j0 - R, c0);
    load_block<T, V, TH, TW>(s_g, z + g.id, Z, g.cc, g, b, i0, j0, c0);
    identity_share(g, b, i0, j0, cb, ident);
    __syncthreads();
    float acc[2][TW];
    conv_tile(s_x, s_w, wp, lane, b0, acc);
    if (!cok) continue;
#pragma unroll
    for (int a = 0; a < 2; ++a) {
      const int i = i0 + 2 * wp + a;
      const bool iok = i < g.H;
#pragma unroll
      for (int j = 0; j < TW; ++j) {
        if (!iok || j0 + j >= g.W) continue;
        const float gv = s_g[((2 * wp + a) * TW + j) * CB + lane];
        const int64_t p = pixel(g, b, i, j0 + j);
        const T cq = cu::from_float<T>(acc[a][j]);  // m uses the rounded conv, the value backward reads
        if (conv_out != nullptr) conv_out[p * g.cc + c] = cq;
        m[p * g.h + g.id + c] = cu::from_float<T>(act_f(act, gv) * cu::to_float(cq));
      }
    }
  }
}

// Backward elementwise pass, for j < h:  dz[p, j] = dm·[i | conv]·act'(g);  j < id: dz[p, h + j] = dm·act(g);
// j >= id: dconv[p, j − id] = dm·act(g). One warp per pixel. VW > 1 needs id % VW == 0 so a vector never
// straddles the identity / conv boundary.
template <typename T, int VW>
__global__ void __launch_bounds__(256) gate_backward_ew(const T* __restrict__ dm, const T* __restrict__ z,
                                                       const T* __restrict__ conv, T* __restrict__ dz,
                                                       T* __restrict__ dconv, int64_t P, int64_t h, int64_t id,
                                                       int64_t cc, Act act) {
  const int lane = threadIdx.x % 32;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * (256 / 32);
  const int64_t nj = h / VW;
  for (int64_t p = (static_cast<int64_t>(blockIdx.x) * 256 + threadIdx.x) / 32; p < P; p += nwarps) {
    const T *zr = z + p * 2 * h, *dr = dm + p * h, *cr = conv + p * cc;
    T *gz = dz + p * 2 * h, *dcr = dconv + p * cc;
    for (int64_t jv = lane; jv < nj; jv += 32) {
      const int64_t j = jv * VW;
      const auto g = ldv<T, VW>(zr + j), d = ldv<T, VW>(dr + j);
      const bool ident = j < id;
      const auto other = ident ? ldv<T, VW>(zr + h + j) : ldv<T, VW>(cr + (j - id));  // i or conv
      Vec<T, VW> dg, da;
#pragma unroll
      for (int e = 0; e < VW; ++e) {
        float a, ad;
        act_fd(act, cu::to_float(g.v[e]), a, ad);
        const float de = cu::to_float(d.v[e]);
        dg.v[e] = cu::from_float<T>(de * cu::to_float(other.v[e]) * ad);
        da.v[e] = cu::from_float<T>(de * a);
      }
      stv<T, VW>(gz + j, dg);
      if (ident) stv<T, VW>(gz + h + j, da);
      else stv<T, VW>(dcr + (j - id), da);
    }
  }
}

// Blocks of `kern` that fit on the GPU at once with `smem` bytes each, after allowing that much.
template <typename Kern>
int64_t resident_blocks(Kern kern, size_t smem, int dev) {
  CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  return cu::resident_blocks(kern, THREADS, smem, dev);
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

Geo make_geo(const Tensor& z, int64_t h, int64_t cc, int V) {
  Geo g;
  g.B = z.size(0);
  g.H = static_cast<int>(z.size(1));
  g.W = static_cast<int>(z.size(2));
  g.h = static_cast<int>(h);
  g.cc = static_cast<int>(cc);
  g.id = static_cast<int>(h - cc);
  g.nv = g.id / V;
  g.tiles_h = (g.H + TH - 1) / TH;
  g.tiles_w = (g.W + TW - 1) / TW;
  g.tiles = g.B * g.tiles_h * g.tiles_w;
  g.ncb = std::max(1, (g.cc + CB - 1) / CB);  // cc = 0: one block per tile for the identity part
  return g;
}

// 16-byte items when every width and pointer allows them, else 1-element items.
template <typename T>
int vec_width(int64_t h, int64_t cc, std::initializer_list<const void*> ptrs) {
  constexpr int V = cu::Pack<T>::N;
  bool ok = h % V == 0 && cc % V == 0;
  for (const void* p : ptrs) ok = ok && cu::aligned16(p);
  return ok ? V : 1;
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
    const int64_t cc = w.size(0), P = z.size(0) * z.size(1) * z.size(2);
    MO_CHECK(m.is_contiguous() && m.numel() == P * h && m.dtype() == z.dtype(),
             "gated_dwconv (CUDA): output m {} does not match z {} (h = {})", m.str(), z.str(), h);
    MO_CHECK(!conv_out.defined() ||
                 (conv_out.is_contiguous() && conv_out.numel() == P * cc && conv_out.dtype() == z.dtype()),
             "gated_dwconv (CUDA): conv output {} does not match z {} (cc = {})", conv_out.str(), z.str(), cc);
    if (P == 0 || h == 0) return;
    const T* zp = cu::ptr<T>(z);
    T* mp = cu::ptr<T>(m);
    T* cp = conv_out.defined() && cc > 0 ? cu::ptr<T>(conv_out) : nullptr;
    with_vec<T>(vec_width<T>(h, cc, {zp, mp}), [&](auto vw) {
      constexpr int V = decltype(vw)::value;
      const Geo g = make_geo(z, h, cc, V);
      auto kern = gate_forward_kernel<T, V>;
      const int64_t S = std::max<int64_t>(
          1, std::min<int64_t>(g.tiles, (resident_blocks(kern, kForwardSmem, z.device().index) + g.ncb - 1) / g.ncb));
      kern<<<static_cast<unsigned>(S * g.ncb), THREADS, kForwardSmem, stream()>>>(zp, cu::ptr<T>(w), cu::ptr<T>(b),
                                                                                  mp, cp, g, act);
      CUDA_CHECK_LAUNCH();
    });
  });
}

void gated_dwconv_backward(const Tensor& dm, const Tensor& z, const Tensor& w, const Tensor& conv_out, int64_t h,
                           Act act, const Tensor& dz, const Tensor& dw, const Tensor& db) {
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
    const int dev = z.device().index;
    const dwk::Geom g = dwk::make_geom(B, H, W, cc);
    if (P == 0 || h == 0) {
      Tensor(dw).zero_();
      if (db.defined()) Tensor(db).zero_();
      return;
    }
    const T *zp = cu::ptr<T>(z), *dmp = cu::ptr<T>(dm), *cp = cc > 0 ? cu::ptr<T>(conv_out) : nullptr;
    T* dzp = cu::ptr<T>(dz);
    Tensor dconv = Tensor::empty({B, H, W, cc}, z.dtype(), z.device());  // dm[:, id:] ⊙ act(g[:, id:])
    T* dcp = cc > 0 ? cu::ptr<T>(dconv) : nullptr;
    constexpr int V = cu::Pack<T>::N;
    const bool vec = h % V == 0 && id % V == 0 && cu::aligned16(zp) && cu::aligned16(dmp) && cu::aligned16(cp) &&
                     cu::aligned16(dzp) && cu::aligned16(dcp);
    auto launch = [&](auto kern) {
      const int64_t resident = cu::resident_blocks(kern, 256, 0, dev);
      const int grid = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((P + 7) / 8, resident)));
      kern<<<grid, 256, 0, stream()>>>(dmp, zp, cp, dzp, dcp, P, h, id, cc, act);
      CUDA_CHECK_LAUNCH();
    };
    if (vec) launch(gate_backward_ew<T, V>);
    else launch(gate_backward_ew<T, 1>);
    if (cc == 0) return;  // nothing convolved: dw, db are empty
    dwk::launch_conv<T, true>(dcp, cc, cu::ptr<T>(w), nullptr, g, dwk::StoreOut<T>{dzp + h + id, Z}, dev);
    dwk::launch_wgrad<T>(dcp, cc, zp + h + id, Z, g, dw, db, dev);
  });
}

}  // namespace mo::cuda

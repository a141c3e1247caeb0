// conv2d_gemm.cu: the dense channels-last convolution as im2col + cuBLASLt GEMMs, forward and backward.
// It replaced cuDNN (now only in the kernel benchmark, tools/bench/conv2d_cudnn.cu): cuDNN's deterministic
// backward algorithms for NHWC bf16 3×3 stride-2 convolutions with few channels (the stem's Ci = 3) took
// ~120 ms per call on the H200, its forward 12 ms for the five convolutions; these passes take a few ms:
//   cols[M, Kp] = im2col(x)         M = B·Ho·Wo rows, K = kh·kw·Ci columns in (ky, kx, ci) order,
//                                    zero-padded to Kp = ⌈K/8⌉·8 so every leading dimension is
//                                    16-byte aligned (cuBLASLt's tensor-core condition; K = 27 for the stem)
//   y = cols · Wᵣᵀ + b               (forward GEMM with the bias epilogue)
//   dWᵣ[Co, K] = dyᵀ · cols          (GEMM; deterministic), then reordered to OIHW. When the output is
//                                     small and the rows many (the stem's first conv: 48 × 32 outputs
//                                     over 3.2 M rows at tiny b256), cuBLASLt's heuristic runs it on a
//                                     few CTAs (1.8 ms); there wgrad_rows splits the rows over the whole
//                                     GPU instead (fp32 partials per block, summed in a fixed order)
//   dcols[M, K] = dy · Wᵣ            (GEMM), then col2im as a gather: every input element sums the
//                                     ≤ ⌈k/s⌉² output taps that read it, in a fixed order (no atomics)
//   db = Σ_rows dy                  (in the dW GEMM's BGRADB epilogue)
// cols and dcols share one scratch buffer from the caching allocator.
#include "ops/conv/conv2d.h"
#include "ops/cuda_utils.cuh"
#include "ops/linear/linear.h"

namespace mo::cuda {

namespace {

struct Geo {
  int B, H, W, Ci, Co, kh, kw, Ho, Wo, stride, pad;
  int Kp;  // padded row length of cols / Wᵣ
};

Geo make_geo(const Tensor& x, const Tensor& w, int Ho, int Wo, int stride, int pad) {
  Geo g{static_cast<int>(x.size(0)), static_cast<int>(x.size(1)), static_cast<int>(x.size(2)),
        static_cast<int>(x.size(3)), static_cast<int>(w.size(0)), static_cast<int>(w.size(2)),
        static_cast<int>(w.size(3)), Ho, Wo, stride, pad, 0};
  int K = g.kh * g.kw * g.Ci;
  g.Kp = (K + 7) / 8 * 8;
  return g;
}

// Index decoding with 32-bit FastDiv (a multiply-high and a shift each) instead of 64-bit divisions:
// the old kernels spent ~150 (im2col) and ~400 (col2im) integer instructions per element on it.
// Every launch covers < 2^31 items (the host splits larger problems into slices of rows/pixels).
struct Divs {
  cu::FastDiv chunks;  // items per cols row (im2col) or per pixel (col2im)
  cu::FastDiv ci;      // chunks of channels per tap (vector path) or Ci (scalar path)
  cu::FastDiv kw, wo, ho, w, h;
};

// One thread per 16-byte chunk of cols (E = 16 / sizeof(T) elements): row m, chunk j of Kp / E.
// VEC (Ci % E == 0): the chunk is E channels of one tap, one 16-byte load. Otherwise (the stem's Ci = 3)
// the E columns are decoded once and stepped (ci, kx, ky) without further divisions.
template <typename T, bool VEC>
__global__ void __launch_bounds__(256) im2col_nhwc(const T* __restrict__ x, T* __restrict__ cols, Geo g, Divs dv,
                                                   uint32_t row0, uint32_t n) {
  constexpr int E = cu::Pack<T>::N;
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t ml, j;
  dv.chunks.divmod(i, ml, j);
  const uint32_t m = row0 + ml;
  uint32_t r, ox, b, oy;
  dv.wo.divmod(m, r, ox);
  dv.ho.divmod(r, b, oy);
  const int y0 = static_cast<int>(oy) * g.stride - g.pad, x0 = static_cast<int>(ox) * g.stride - g.pad;
  const T* xb = x + static_cast<int64_t>(b) * g.H * g.W * g.Ci;
  T* out = cols + static_cast<int64_t>(m) * g.Kp + static_cast<int64_t>(j) * E;
  cu::Pack<T> v;
  if constexpr (VEC) {
    uint32_t t, c;
    dv.ci.divmod(j, t, c);
    uint32_t ky, kx;
    dv.kw.divmod(t, ky, kx);
    const int iy = y0 + static_cast<int>(ky), ix = x0 + static_cast<int>(kx);
    // (f32: when K = 9·Ci is not a multiple of 8, the last chunk of a row is Kp's zero padding)
    if (static_cast<int>(j) * E < g.kh * g.kw * g.Ci && iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) {
      v = cu::load_pack(xb + (static_cast<int64_t>(iy) * g.W + ix) * g.Ci + static_cast<int64_t>(c) * E);
    } else {
#pragma unroll
      for (int e = 0; e < E; ++e) v.v[e] = cu::from_float<T>(0.0f);
    }
  } else {
    const int K = g.kh * g.kw * g.Ci;
    const int k0 = static_cast<int>(j) * E;
    uint32_t t, ci0, ky0, kx0;
    dv.ci.divmod(static_cast<uint32_t>(min(k0, K - 1)), t, ci0);
    dv.kw.divmod(t, ky0, kx0);
    int ci = static_cast<int>(ci0), kx = static_cast<int>(kx0), ky = static_cast<int>(ky0);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      T val = cu::from_float<T>(0.0f);
      const int iy = y0 + ky, ix = x0 + kx;
      if (k0 + e < K && iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) val = xb[(static_cast<int64_t>(iy) * g.W + ix) * g.Ci + ci];
      v.v[e] = val;
      if (++ci == g.Ci) {
        ci = 0;
        if (++kx == g.kw) kx = 0, ++ky;
      }
    }
  }
  cu::store_pack(out, v);
}

// dx[b, iy, ix, c] = Σ over taps (ky, kx) with oy = (iy + pad − ky) / stride integral and in range, in
// ascending (ky, kx) order (fixed: deterministic). One thread per pixel and channel chunk (VEC: E
// channels, 16-byte loads of dcols) or per element. The taps that hit are stepped by the stride from
// the first one, so the only divisions are the two per thread that find it.
template <typename T, bool VEC>
__global__ void __launch_bounds__(256) col2im_gather_nhwc(const T* __restrict__ dcols, T* __restrict__ dx, Geo g,
                                                          Divs dv, uint32_t pix0, uint32_t n) {
  constexpr int E = VEC ? cu::Pack<T>::N : 1;
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t pl, c;
  dv.chunks.divmod(i, pl, c);
  const uint32_t pix = pix0 + pl;
  uint32_t r, ix, b, iy;
  dv.w.divmod(pix, r, ix);
  dv.h.divmod(r, b, iy);
  const int ny0 = static_cast<int>(iy) + g.pad, nx0 = static_cast<int>(ix) + g.pad;
  const int ky0 = ny0 % g.stride, kx0 = nx0 % g.stride;
  float acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.0f;
  const int64_t rowb = static_cast<int64_t>(b) * g.Ho;
  const int ch = static_cast<int>(c) * E;
  for (int ky = ky0, oy = (ny0 - ky0) / g.stride; ky < g.kh && oy >= 0; ky += g.stride, --oy) {
    if (oy >= g.Ho) continue;
    for (int kx = kx0, ox = (nx0 - kx0) / g.stride; kx < g.kw && ox >= 0; kx += g.stride, --ox) {
      if (ox >= g.Wo) continue;
      const T* src = dcols + ((rowb + oy) * g.Wo + ox) * g.Kp + (ky * g.kw + kx) * g.Ci + ch;
      if constexpr (VEC) {
        const cu::Pack<T> v = cu::load_pack(src);
#pragma unroll
        for (int e = 0; e < E; ++e) acc[e] += cu::to_float(v.v[e]);
      } else {
        acc[0] += cu::to_float(*src);
      }
    }
  }
  T* out = dx + static_cast<int64_t>(pix) * g.Ci + ch;
  if constexpr (VEC) {
    cu::Pack<T> v;
#pragma unroll
    for (int e = 0; e < E; ++e) v.v[e] = cu::from_float<T>(acc[e]);
    cu::store_pack(out, v);
  } else {
    *out = cu::from_float<T>(acc[0]);
  }
}

// Host side: launch over [0, total) items in slices of whole rows (pixels) of `per` items each,
// every slice < 2^31 items, so the kernels' 32-bit indices never wrap.
template <typename Launch>
void for_slices(int64_t rows, int64_t per, const Launch& launch) {
  MO_CHECK(rows < (int64_t{1} << 31), "conv2d: {} output rows/pixels exceed the 2^31 limit of the index math", rows);
  const int64_t max_rows = std::max<int64_t>(1, ((int64_t{1} << 31) - 1) / per);
  for (int64_t r0 = 0; r0 < rows; r0 += max_rows) {
    const int64_t nr = std::min(max_rows, rows - r0);
    const int64_t n = nr * per;
    launch(static_cast<uint32_t>(r0), static_cast<uint32_t>(n), static_cast<unsigned>((n + 255) / 256));
  }
}

template <typename T>
void launch_im2col(const Tensor& x, const Tensor& cols, const Geo& g) {
  constexpr int E = cu::Pack<T>::N;
  const bool vec = g.Ci % E == 0 && cu::aligned16(x.raw_data());
  MO_CHECK(cu::aligned16(cols.raw_data()), "conv2d: im2col buffer not 16-byte aligned");
  Divs dv;
  dv.chunks = cu::FastDiv(g.Kp / E);
  dv.ci = cu::FastDiv(vec ? g.Ci / E : g.Ci);
  dv.kw = cu::FastDiv(g.kw);
  dv.wo = cu::FastDiv(g.Wo);
  dv.ho = cu::FastDiv(g.Ho);
  const int64_t M = static_cast<int64_t>(g.B) * g.Ho * g.Wo;
  for_slices(M, g.Kp / E, [&](uint32_t r0, uint32_t n, unsigned blocks) {
    if (vec) im2col_nhwc<T, true><<<blocks, 256, 0, stream()>>>(cu::ptr<const T>(x), cu::ptr<T>(cols), g, dv, r0, n);
    else im2col_nhwc<T, false><<<blocks, 256, 0, stream()>>>(cu::ptr<const T>(x), cu::ptr<T>(cols), g, dv, r0, n);
    CUDA_CHECK_LAUNCH();
  });
}

template <typename T>
void launch_col2im(const Tensor& dcols, const Tensor& dx, const Geo& g) {
  constexpr int E = cu::Pack<T>::N;
  const bool vec = g.Ci % E == 0 && cu::aligned16(dx.raw_data()) && cu::aligned16(dcols.raw_data());
  const int per = vec ? g.Ci / E : g.Ci;
  Divs dv;
  dv.chunks = cu::FastDiv(per);
  dv.w = cu::FastDiv(g.W);
  dv.h = cu::FastDiv(g.H);
  const int64_t P = static_cast<int64_t>(g.B) * g.H * g.W;
  for_slices(P, per, [&](uint32_t p0, uint32_t n, unsigned blocks) {
    if (vec) col2im_gather_nhwc<T, true><<<blocks, 256, 0, stream()>>>(cu::ptr<const T>(dcols), cu::ptr<T>(dx), g, dv, p0, n);
    else col2im_gather_nhwc<T, false><<<blocks, 256, 0, stream()>>>(cu::ptr<const T>(dcols), cu::ptr<T>(dx), g, dv, p0, n);
    CUDA_CHECK_LAUNCH();
  });
}

// OIHW <-> Wᵣ[Co, Kp] with columns (ky, kx, ci) and zero padding (to_ohwi: the padding is written).
template <typename T>
__global__ void reorder_weight(const T* __restrict__ src, T* __restrict__ dst, Geo g, bool to_ohwi) {
  const int khw = g.kh * g.kw, K = khw * g.Ci;
  int64_t total = static_cast<int64_t>(g.Co) * g.Kp;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t o = i / g.Kp;
    int kk = static_cast<int>(i - o * g.Kp);  // column of Wᵣ
    if (kk >= K) {
      if (to_ohwi) dst[i] = cu::from_float<T>(0.0f);
      continue;
    }
    int ci = kk % g.Ci, k = kk / g.Ci;
    int64_t j = (o * g.Ci + ci) * khw + k;  // OIHW index
    if (to_ohwi) dst[i] = src[j];
    else dst[j] = src[i];
  }
}

// dWᵣ[Co, Kp] = dyᵀ · cols and db = Σ_rows dy for a small output (Co, Kp ≤ 64, ⌈Co/4⌉·⌈Kp/4⌉ ≤ 256)
// over many rows: block s takes rows [s·rpb, (s+1)·rpb) in chunks of RB rows staged in shared memory as
// fp32; thread (group q, tc, tk) keeps the 4 × 4 sums of co 4tc.., k 4tk.. over the chunk rows ≡ q
// (mod the G groups); the groups are added in order 0..G−1 at the end and the block writes its fp32
// partials part_w[s][Co·Kp], part_b[s][Co]. No atomics.
constexpr int kWgRows = 32, kWgThreads = 256, kWgMax = 64;
// One chunk of both wgrad_rows kernels: the rows r ≡ q (mod G) of fp32 shared rows (strides ldy, ldc)
// added into the thread's 4 × 4 tile (co 4tc.., k 4tk..) and its 4 bias sums, rows ascending.
__device__ __forceinline__ void wgrad_rows_sum(const float* sdy, int ldy, const float* scol, int ldc, int nr, int q,
                                               int G, int tc, int tk, float (&acc)[4][4], float (&accb)[4]) {
  for (int r = q; r < nr; r += G) {
    const float4 a = *reinterpret_cast<const float4*>(&sdy[r * ldy + 4 * tc]);
    const float4 b = *reinterpret_cast<const float4*>(&scol[r * ldc + 4 * tk]);
    const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      accb[i] += av[i];
    }
  }
}

// The end of both wgrad_rows kernels: the G groups' 4 × 4 (+ 4 bias) sums added in order 0..G−1 in
// red[(t % per)·20 + ·], then the block's partials written out.
__device__ __forceinline__ void wgrad_rows_finish(const float (&acc)[4][4], const float (&accb)[4], float* red, int t,
                                                  int q, int per, int G, int nk, int Co, int Kp,
                                                  float* __restrict__ part_w, float* __restrict__ part_b) {
  const bool active = q < G;
  for (int g = 0; g < G; ++g) {
    __syncthreads();
    if (active && q == g) {
      float* d = red + (t % per) * 20;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) d[i * 4 + j] = (g == 0 ? 0.0f : d[i * 4 + j]) + acc[i][j];
        d[16 + i] = (g == 0 ? 0.0f : d[16 + i]) + accb[i];
      }
    }
  }
  __syncthreads();
  for (int e = t; e < Co * Kp; e += kWgThreads) {
    const int co = e / Kp, k = e % Kp;
    part_w[static_cast<int64_t>(blockIdx.x) * Co * Kp + e] = red[((co / 4) * nk + k / 4) * 20 + (co % 4) * 4 + k % 4];
  }
  for (int co = t; co < Co; co += kWgThreads)
    part_b[static_cast<int64_t>(blockIdx.x) * Co + co] = red[((co / 4) * nk) * 20 + 16 + co % 4];
}

template <typename T>
__global__ void __launch_bounds__(kWgThreads) wgrad_rows(const T* __restrict__ dy, const T* __restrict__ cols,
                                                        int64_t M, int Co, int Kp, int64_t rpb,
                                                        float* __restrict__ part_w, float* __restrict__ part_b) {
  __shared__ __align__(16) float sdy[kWgRows][kWgMax];
  __shared__ __align__(16) float scol[kWgRows][kWgMax];
  __shared__ float red[kWgThreads * 20];
  const int nc = (Co + 3) / 4, nk = (Kp + 3) / 4, per = nc * nk, G = kWgThreads / per;
  const int t = threadIdx.x, q = t / per, tc = (t % per) / nk, tk = t % nk;
  const bool active = q < G;
  float acc[4][4] = {}, accb[4] = {};
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * rpb, r1 = min(M, r0 + rpb);
  for (int64_t c0 = r0; c0 < r1; c0 += kWgRows) {
    const int nr = static_cast<int>(min(static_cast<int64_t>(kWgRows), r1 - c0));
    __syncthreads();  // the previous chunk's reads are done
    for (int e = t; e < kWgRows * kWgMax; e += kWgThreads) {
      const int r = e / kWgMax, j = e % kWgMax;
      const bool row = r < nr;
      sdy[r][j] = row && j < Co ? cu::to_float(dy[(c0 + r) * Co + j]) : 0.0f;
      scol[r][j] = row && j < Kp ? cu::to_float(cols[(c0 + r) * Kp + j]) : 0.0f;
    }
    __syncthreads();
    if (active) wgrad_rows_sum(&sdy[0][0], kWgMax, &scol[0][0], kWgMax, nr, q, G, tc, tk, acc, accb);
  }
  wgrad_rows_finish(acc, accb, red, t, q, per, G, nk, Co, Kp, part_w, part_b);
}

// The same sums where Co % 8 == 0 (the stems' 24 and 48; Kp is a multiple of 8): a chunk of RB rows
// of dy (RB·Co values) and of cols (RB·Kp) is contiguous, so it moves as 16-byte vectors into shared
// rows of stride Co / Kp, and the next chunk's vectors are loaded into registers while this one is
// summed. The sums run in the same order as wgrad_rows'.
template <typename T>
__global__ void __launch_bounds__(kWgThreads) wgrad_rows_vec(const T* __restrict__ dy, const T* __restrict__ cols,
                                                            int64_t M, int Co, int Kp, int64_t rpb,
                                                            float* __restrict__ part_w, float* __restrict__ part_b) {
  constexpr int E = 8;  // elements per item: one 16-byte vector of bf16, two of f32
  __shared__ __align__(16) float sdy[kWgRows * kWgMax];
  __shared__ __align__(16) float scol[kWgRows * kWgMax];
  __shared__ float red[kWgThreads * 20];
  const int nc = Co / 4, nk = Kp / 4, per = nc * nk, G = kWgThreads / per;
  const int t = threadIdx.x, q = t / per, tc = (t % per) / nk, tk = t % nk;
  const bool active = q < G;
  float acc[4][4] = {}, accb[4] = {};
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * rpb, r1 = min(M, r0 + rpb);
  struct Held {
    float v[E];
    bool ok;
  };
  // thread t moves vector t of the chunk's dy (4·Co ≤ 256 vectors) and of its cols (4·Kp ≤ 256)
  auto fetch = [&](const T* src, int64_t c0, int ld, int nr, Held& h) {
    h.ok = t * E < nr * ld;
    if (!h.ok) return;
    const T* p = src + c0 * ld + static_cast<int64_t>(t) * E;  // 16-byte aligned: see the launch
    if constexpr (sizeof(T) == 2) {
      const uint4 raw = *reinterpret_cast<const uint4*>(p);
      const T* pv = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int e = 0; e < E; ++e) h.v[e] = cu::to_float(pv[e]);
    } else {
      const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
      const float v[E] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
      for (int e = 0; e < E; ++e) h.v[e] = cu::to_float(v[e]);
    }
  };
  Held hd, hc;
  auto rows_in = [&](int64_t c0) { return static_cast<int>(min(static_cast<int64_t>(kWgRows), r1 - c0)); };
  if (r0 < r1) {
    fetch(dy, r0, Co, rows_in(r0), hd);
    fetch(cols, r0, Kp, rows_in(r0), hc);
  }
  for (int64_t c0 = r0; c0 < r1; c0 += kWgRows) {
    const int nr = rows_in(c0);
    __syncthreads();  // the previous chunk's reads are done
    if (hd.ok) {
#pragma unroll
      for (int e = 0; e < E; e += 4)
        *reinterpret_cast<float4*>(&sdy[t * E + e]) = make_float4(hd.v[e], hd.v[e + 1], hd.v[e + 2], hd.v[e + 3]);
    }
    if (hc.ok) {
#pragma unroll
      for (int e = 0; e < E; e += 4)
        *reinterpret_cast<float4*>(&scol[t * E + e]) = make_float4(hc.v[e], hc.v[e + 1], hc.v[e + 2], hc.v[e + 3]);
    }
    __syncthreads();
    if (c0 + kWgRows < r1) {  // the next chunk's loads fly while this one is summed
      fetch(dy, c0 + kWgRows, Co, rows_in(c0 + kWgRows), hd);
      fetch(cols, c0 + kWgRows, Kp, rows_in(c0 + kWgRows), hc);
    }
    if (active) wgrad_rows_sum(sdy, Co, scol, Kp, nr, q, G, tc, tk, acc, accb);
  }
  wgrad_rows_finish(acc, accb, red, t, q, per, G, nk, Co, Kp, part_w, part_b);
}

// wgrad_rows is used when it applies and the rows outnumber the outputs by far.
bool use_wgrad_rows(int64_t M, int Co, int Kp) {
  return Co <= kWgMax && Kp <= kWgMax && ((Co + 3) / 4) * ((Kp + 3) / 4) <= kWgThreads &&
         M >= int64_t{256} * Co * Kp;
}

template <typename T>
void launch_wgrad_rows(const Tensor& dy2, const Tensor& cols, const Tensor& dwr, const Tensor& db, int Co, int Kp) {
  const int64_t M = dy2.size(0);
  const int dev = dy2.device().index;
  const int64_t S = std::min<int64_t>(4 * cu::sm_count(dev), (M + kWgRows - 1) / kWgRows);  // 4 blocks fit per SM
  const int64_t rpb = ((M + S - 1) / S + kWgRows - 1) / kWgRows * kWgRows;
  const int64_t blocks = (M + rpb - 1) / rpb;
  Tensor part_w = Tensor::empty({blocks, static_cast<int64_t>(Co) * Kp}, DType::f32, dy2.device());
  Tensor part_b = Tensor::empty({blocks, Co}, DType::f32, dy2.device());
  // rows start at multiples of kWgRows, so with Co, Kp multiples of 8 every item is 16-byte aligned
  auto kern = Co % 8 == 0 && Kp % 8 == 0 && cu::aligned16(dy2.raw_data()) && cu::aligned16(cols.raw_data())
                  ? wgrad_rows_vec<T>
                  : wgrad_rows<T>;
  kern<<<static_cast<unsigned>(blocks), kWgThreads, 0, stream()>>>(cu::ptr<T>(dy2), cu::ptr<T>(cols), M, Co, Kp, rpb,
                                                                  part_w.data<float>(), part_b.data<float>());
  CUDA_CHECK_LAUNCH();
  cu::column_sum(cu::ColumnLoad<float>{part_w.data<float>(), blocks, static_cast<int64_t>(Co) * Kp}, 1, blocks,
                 static_cast<int64_t>(Co) * Kp, 1.0f, cu::ptr<T>(dwr), dwr.device());
  if (db.defined())
    cu::column_sum(cu::ColumnLoad<float>{part_b.data<float>(), blocks, Co}, 1, blocks, Co, 1.0f, cu::ptr<T>(db),
                   db.device());
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad, const Tensor& y) {
  Geo g = make_geo(x, w, static_cast<int>(y.size(1)), static_cast<int>(y.size(2)), stride, pad);
  const int64_t M = static_cast<int64_t>(g.B) * g.Ho * g.Wo, K = g.Kp;
  Device dev = x.device();
  Tensor cols = Tensor::empty({M, K}, x.dtype(), dev);
  Tensor wr = Tensor::empty({g.Co, K}, w.dtype(), dev);
  cu::float_dispatch("conv2d", x, [&](auto z) {
    using T = decltype(z);
    launch_im2col<T>(x, cols, g);
    reorder_weight<T><<<cu::grid_1d(g.Co * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(w), cu::ptr<T>(wr), g, true);
    CUDA_CHECK_LAUNCH();
  });
  gemm(cols, false, wr, true, y.view({M, g.Co}), 1.0f, 0.0f, b);  // y = cols · Wᵣᵀ + b
}

void conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, int stride, int pad, const Tensor& dx,
                          const Tensor& dw, const Tensor& db) {
  Geo g = make_geo(x, w, static_cast<int>(dy.size(1)), static_cast<int>(dy.size(2)), stride, pad);
  const int64_t M = static_cast<int64_t>(g.B) * g.Ho * g.Wo, K = g.Kp;
  Device dev = x.device();
  Tensor cols = Tensor::empty({M, K}, x.dtype(), dev);
  Tensor dy2 = dy.view({M, g.Co});
  cu::float_dispatch("conv2d", x, [&](auto z) {
    using T = decltype(z);
    launch_im2col<T>(x, cols, g);
    Tensor dwr = Tensor::empty({g.Co, K}, w.dtype(), dev);
    if (use_wgrad_rows(M, g.Co, g.Kp))
      launch_wgrad_rows<T>(dy2, cols, dwr, db, g.Co, g.Kp);         // dWᵣ = dyᵀ · cols, db = Σ_rows dy
    else
      gemm(dy2, true, cols, false, dwr, 1.0f, 0.0f, Tensor(), db);  // the same as one GEMM
    reorder_weight<T><<<cu::grid_1d(g.Co * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(dwr), cu::ptr<T>(dw), g, false);
    CUDA_CHECK_LAUNCH();
    if (dx.defined()) {
      Tensor wr = Tensor::empty({g.Co, K}, w.dtype(), dev);
      reorder_weight<T><<<cu::grid_1d(g.Co * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(w), cu::ptr<T>(wr), g, true);
      CUDA_CHECK_LAUNCH();
      gemm(dy2, false, wr, false, cols, 1.0f, 0.0f, Tensor());  // dcols = dy · Wᵣ (reuses cols)
      launch_col2im<T>(cols, dx, g);
    }
  });
}

}  // namespace mo::cuda

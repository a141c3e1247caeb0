// dwconv2d_kernels.cuh: the CUDA depthwise 7×7 'same' kernels on channels-last data, shared by
// ops/conv/dwconv2d.cu and ops/fused/gated_dwconv.cu (include only from .cu files).
//
// Data are NHWC "slices": element (pixel p, channel c) at ptr[p·ld + c], so a kernel can read the
// conv slice of the fused gate's z (ld = 2h) or write into dz's last cc channels directly.
//
// Tiling. A block = 7 warps = 224 threads owns CB = 32 channels (lane = channel) and walks over
// 7×7-pixel output tiles (7 divides 56, 28, 14 and 7: no idle rows at 224² input). Warp r computes
// output row r of the tile: 7 outputs along the row per thread, the 49 weights of its channel in
// registers, each input row of the 13×13 halo read once from shared memory into registers and reused
// by the 7 outputs (13 shared loads per 49 FMAs; a warp reads 32 consecutive channels: no bank
// conflicts). The input patch is copied raw (T) into shared memory with cp.async in 16-byte items when
// the slice allows it (pointer and row stride aligned), else 8/4-byte items, else (2-byte bf16 items,
// an odd channel offset) plain copies; out-of-image pixels and channels >= C are zero-filled.
// Blocks are persistent: grid = channel blocks × slices S (enough to fill the GPU once), block (cb, s)
// handles tiles s, s+S, ... with two shared-memory stages: the copies of the next tile run while the
// current one is computed. Compute is fp32 FMA: 49 FMA per output, so at stage 1 the FMA pipe
// (~33 TFMA/s on H200) and the memory bus are about equally busy. Registers: ~96-128, no spills
// (nvcc 13.0, sm_90: `--resource-usage`), two blocks per SM.
//
// Weight gradient: the same tiles; each thread accumulates the 49 (+1 bias) sums of its channel over
// its row of every tile it visits (registers), the 7 warps are added in a fixed order in shared memory,
// and block s writes fp32 partials [s][C][49] and [s][C]; cu::column_sum adds the slices in a fixed
// order. No atomics: bit-identical from run to run on a given GPU model.
#pragma once
#include <algorithm>
#include <atomic>
#include <type_traits>

#include "ops/cuda_utils.cuh"

namespace mo::dwk {

constexpr int K = 7, P = 3, KK = K * K;  // kernel size, padding, taps
constexpr int TILE = 7;                  // output tile edge (pixels)
constexpr int HALO = TILE + K - 1;       // input tile edge (13)
constexpr int CB = 32;                   // channels per block, one per lane
constexpr int THREADS = 32 * TILE;       // warp r computes output row r of the tile

struct Geom {
  int64_t B = 0;
  int H = 0, W = 0, C = 0;
  int tiles_h = 0, tiles_w = 0, ncb = 0;
  int64_t tiles = 0;  // B · tiles_h · tiles_w
};

inline Geom make_geom(int64_t B, int64_t H, int64_t W, int64_t C) {
  MO_CHECK(H <= (1 << 20) && W <= (1 << 20) && C <= (1 << 24),
           "dwconv2d (CUDA): map {}x{} with {} channels is out of range", H, W, C);
  Geom g;
  g.B = B;
  g.H = static_cast<int>(H);
  g.W = static_cast<int>(W);
  g.C = static_cast<int>(C);
  g.tiles_h = static_cast<int>((H + TILE - 1) / TILE);
  g.tiles_w = static_cast<int>((W + TILE - 1) / TILE);
  g.ncb = static_cast<int>((C + CB - 1) / CB);
  g.tiles = B * g.tiles_h * g.tiles_w;
  return g;
}

// VW elements moved as one load (VW·sizeof(T) bytes, naturally aligned).
template <typename T, int VW>
struct alignas(sizeof(T) * VW) Vec {
  T v[VW];
};

// cp.async of BYTES (4, 8 or 16) from global to shared memory: the first src_bytes are copied, the
// rest of the BYTES are zero-filled (src_bytes = 0: nothing is read).
template <int BYTES>
__device__ __forceinline__ void cp_async(void* smem, const void* gmem, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if constexpr (BYTES == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(gmem), "n"(BYTES), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Starts copying an EXT×EXT-pixel × CB-channel patch of a slice into shared memory s ([pixel][CB], raw T).
// (pi, pj): image coordinates of its top-left pixel (may be negative). Item e moves VW channels:
// pixel e / (CB/VW), channels c0 + (e % (CB/VW))·VW .., to s[e·VW ..]. Pixels outside the image and
// channels >= C read as 0. 4-, 8- and 16-byte items go through cp.async (complete after
// cp_async_wait + __syncthreads); 2-byte items (bf16 with an odd channel offset) are plain copies.
template <typename T, int VW, int EXT>
__device__ __forceinline__ void issue_patch(T* s, const T* __restrict__ src, int64_t ld, const Geom& g, int64_t b,
                                            int pi, int pj, int c0) {
  constexpr int NQ = CB / VW, NITEMS = EXT * EXT * NQ, BYTES = VW * static_cast<int>(sizeof(T));
  for (int e = threadIdx.x; e < NITEMS; e += THREADS) {
    const int pix = e / NQ, ch = c0 + (e % NQ) * VW;
    const int gi = pi + pix / EXT, gj = pj + pix % EXT;
    const bool inside = gi >= 0 && gi < g.H && gj >= 0 && gj < g.W;
    const int nvalid = inside ? max(0, min(VW, g.C - ch)) : 0;
    const T* p = nvalid > 0 ? src + ((b * g.H + gi) * g.W + gj) * ld + ch : src;
    if constexpr (BYTES >= 4) {
      cp_async<BYTES>(s + e * VW, p, nvalid * static_cast<int>(sizeof(T)));
    } else {
      s[e] = nvalid > 0 ? *p : cu::from_float<T>(0.0f);
    }
  }
}

__device__ __forceinline__ void decode_tile(int64_t t, const Geom& g, int64_t& b, int& i0, int& j0) {
  j0 = static_cast<int>(t % g.tiles_w) * TILE;
  t /= g.tiles_w;
  i0 = static_cast<int>(t % g.tiles_h) * TILE;
  b = t / g.tiles_h;
}

// Plain output: y[p·ld + c] = v.
template <typename T>
struct StoreOut {
  T* y;
  int64_t ld;
  __device__ __forceinline__ void operator()(int64_t p, int c, float v) const { y[p * ld + c] = cu::from_float<T>(v); }
};

// out = bias + Σ_{u,v} w'[c,u,v] · in[i+u−3, j+v−3, c], handed to epi(pixel, channel, value).
// FLIP: w'[u,v] = w[6−u, 6−v] (the input gradient: dx = dy ⋆ flipped w); bias may be null.
// grid = g.ncb × slices; block (blockIdx.x % ncb, blockIdx.x / ncb). Two shared-memory stages: the
// copies of tile t + S run while tile t is computed.
template <typename T, int VW, bool FLIP, typename Epi>
__global__ void __launch_bounds__(THREADS, 2)
    conv_kernel(const T* __restrict__ in, int64_t ld_in, const T* __restrict__ w, const T* __restrict__ bias, Geom g,
                Epi epi) {
  constexpr int PATCH = HALO * HALO * CB;
  __shared__ __align__(16) T s_in[2][PATCH];  // 21.6 KB (bf16) / 43.3 KB (f32)
  const int cb = blockIdx.x % g.ncb;
  const int64_t slice = blockIdx.x / g.ncb, nslices = gridDim.x / g.ncb;
  const int lane = threadIdx.x % 32, r = threadIdx.x / 32;
  const int c0 = cb * CB, c = c0 + lane;
  const bool cok = c < g.C;

  int64_t b = 0;
  int i0 = 0, j0 = 0;
  if (slice < g.tiles) {
    decode_tile(slice, g, b, i0, j0);
    issue_patch<T, VW, HALO>(s_in[0], in, ld_in, g, b, i0 - P, j0 - P, c0);
  }
  cp_async_commit();
  float wr[KK];  // this thread's channel, read once per block
#pragma unroll
  for (int t = 0; t < KK; ++t) wr[t] = cok ? cu::to_float(w[static_cast<int64_t>(c) * KK + (FLIP ? KK - 1 - t : t)]) : 0.0f;
  const float b0 = (bias != nullptr && cok) ? cu::to_float(bias[c]) : 0.0f;

  int buf = 0;
  for (int64_t t = slice; t < g.tiles; t += nslices, buf ^= 1) {
    decode_tile(t, g, b, i0, j0);
    if (t + nslices < g.tiles) {  // start the next tile's copies into the other stage
      int64_t bn;
      int in0, jn0;
      decode_tile(t + nslices, g, bn, in0, jn0);
      issue_patch<T, VW, HALO>(s_in[buf ^ 1], in, ld_in, g, bn, in0 - P, jn0 - P, c0);
    }
    cp_async_commit();
    cp_async_wait<1>();  // this tile's copies (all but the group just committed) are done
    __syncthreads();
    const T* sb = s_in[buf];
    float acc[TILE];
#pragma unroll
    for (int j = 0; j < TILE; ++j) acc[j] = b0;
#pragma unroll
    for (int u = 0; u < K; ++u) {
      float xr[HALO];
#pragma unroll
      for (int q = 0; q < HALO; ++q) xr[q] = cu::to_float(sb[((r + u) * HALO + q) * CB + lane]);
#pragma unroll
      for (int v = 0; v < K; ++v)
#pragma unroll
        for (int j = 0; j < TILE; ++j) acc[j] = fmaf(wr[u * K + v], xr[j + v], acc[j]);
    }
    const int it = i0 + r;
    if (cok && it < g.H) {
      const int64_t p0 = (b * g.H + it) * g.W + j0;
#pragma unroll
      for (int j = 0; j < TILE; ++j)
        if (j0 + j < g.W) epi(p0 + j, c, acc[j]);
    }
    __syncthreads();  // stage `buf` is refilled two iterations on; everyone must be done reading it
  }
}

// Partial weight/bias gradients of slice s = blockIdx.x / ncb:
//   part_w[s][c][tap] = Σ dy[i, j, c] · x[i + u − 3, j + v − 3, c] (tap = u·7 + v),  part_b[s][c] = Σ dy[i, j, c]
// over the tiles s, s+S, ... Both inputs use the same item width VW. Two stages for bf16 (27.9 KB),
// one for f32 (the two would need 55.8 KB of static shared memory).
template <typename T, int VW>
__global__ void __launch_bounds__(THREADS, 2)
    wgrad_kernel(const T* __restrict__ dy, int64_t ld_dy, const T* __restrict__ x, int64_t ld_x, Geom g,
                 float* __restrict__ part_w, float* __restrict__ part_b) {
  constexpr int NST = sizeof(T) == 2 ? 2 : 1;
  __shared__ __align__(16) T s_x[NST][HALO * HALO * CB];
  __shared__ __align__(16) T s_dy[NST][TILE * TILE * CB];
  __shared__ float red[(KK + 1) * CB];
  const int cb = blockIdx.x % g.ncb;
  const int64_t slice = blockIdx.x / g.ncb, nslices = gridDim.x / g.ncb;
  const int lane = threadIdx.x % 32, r = threadIdx.x / 32;
  const int c0 = cb * CB;

  auto issue = [&](int64_t t, int st) {
    int64_t b;
    int i0, j0;
    decode_tile(t, g, b, i0, j0);
    issue_patch<T, VW, HALO>(s_x[st], x, ld_x, g, b, i0 - P, j0 - P, c0);
    issue_patch<T, VW, TILE>(s_dy[st], dy, ld_dy, g, b, i0, j0, c0);
  };
  if (slice < g.tiles) issue(slice, 0);
  cp_async_commit();

  float acc[KK], accb = 0.0f;
#pragma unroll
  for (int t = 0; t < KK; ++t) acc[t] = 0.0f;

  int buf = 0;
  for (int64_t t = slice; t < g.tiles; t += nslices) {
    if constexpr (NST == 2) {
      if (t + nslices < g.tiles) issue(t + nslices, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T *sx = s_x[buf], *sd = s_dy[buf];
    float d[TILE];
#pragma unroll
    for (int j = 0; j < TILE; ++j) {
      d[j] = cu::to_float(sd[(r * TILE + j) * CB + lane]);
      accb += d[j];
    }
#pragma unroll
    for (int u = 0; u < K; ++u) {
      float xr[HALO];
#pragma unroll
      for (int q = 0; q < HALO; ++q) xr[q] = cu::to_float(sx[((r + u) * HALO + q) * CB + lane]);
#pragma unroll
      for (int v = 0; v < K; ++v)
#pragma unroll
        for (int j = 0; j < TILE; ++j) acc[u * K + v] = fmaf(d[j], xr[j + v], acc[u * K + v]);
    }
    __syncthreads();
    if constexpr (NST == 2) {
      buf ^= 1;
    } else {
      if (t + nslices < g.tiles) issue(t + nslices, 0);
      cp_async_commit();
    }
  }

  // Add the 7 rows (warps) in order 0..6 into red[tap][lane] (tap 49 = bias), then write the slice.
  for (int rr = 0; rr < TILE; ++rr) {
    if (r == rr) {
#pragma unroll
      for (int t = 0; t < KK; ++t) red[t * CB + lane] = (rr == 0 ? 0.0f : red[t * CB + lane]) + acc[t];
      red[KK * CB + lane] = (rr == 0 ? 0.0f : red[KK * CB + lane]) + accb;
    }
    __syncthreads();
  }
  for (int e = threadIdx.x; e < CB * KK; e += THREADS) {  // contiguous run part_w[s][c0 ..][49]
    const int l = e / KK, tap = e % KK;
    if (c0 + l < g.C) part_w[(slice * g.C + c0 + l) * KK + tap] = red[tap * CB + l];
  }
  if (threadIdx.x < CB && c0 + static_cast<int>(threadIdx.x) < g.C)
    part_b[slice * g.C + c0 + threadIdx.x] = red[KK * CB + threadIdx.x];
}

// ---- host side ----------------------------------------------------------------------------------------

// Slices for a persistent grid of `kernel`: enough blocks (× ncb) to fill the GPU once, at most one
// slice per tile.
template <typename Kern>
int64_t slices_for(Kern kernel, const Geom& g, int dev) {
  const int64_t resident = cu::resident_blocks(kernel, THREADS, 0, dev);
  const int64_t s = (resident + g.ncb - 1) / g.ncb;
  return std::max<int64_t>(1, std::min<int64_t>(s, g.tiles));
}

// Largest load width (elements) usable for a slice: f32 {4, 1}, bf16 {8, 2, 1}.
template <typename T>
int load_width(std::initializer_list<std::pair<const void*, int64_t>> slices) {
  auto ok = [&](int vw) {
    for (auto& s : slices)
      if (s.second % vw != 0 || reinterpret_cast<uintptr_t>(s.first) % (vw * sizeof(T)) != 0) return false;
    return true;
  };
  constexpr int V = 16 / sizeof(T);
  if (ok(V)) return V;
  if constexpr (sizeof(T) == 2) {
    if (ok(2)) return 2;
  }
  return 1;
}

template <typename T, typename F>
void with_width(int vw, F&& f) {
  using std::integral_constant;
  if constexpr (sizeof(T) == 4) {
    if (vw == 4) f(integral_constant<int, 4>{});
    else f(integral_constant<int, 1>{});
  } else {
    if (vw == 8) f(integral_constant<int, 8>{});
    else if (vw == 2) f(integral_constant<int, 2>{});
    else f(integral_constant<int, 1>{});
  }
}

// epi(p, c, conv(in)[p, c] (+ bias)) for every output; FLIP for the input gradient (no bias then).
template <typename T, bool FLIP, typename Epi>
void launch_conv(const T* in, int64_t ld_in, const T* w, const T* bias, const Geom& g, const Epi& epi, int dev) {
  if (g.tiles == 0 || g.C == 0) return;
  with_width<T>(load_width<T>({{in, ld_in}}), [&](auto vw) {
    constexpr int VW = decltype(vw)::value;
    auto kern = conv_kernel<T, VW, FLIP, Epi>;
    const int64_t ns = slices_for(kern, g, dev);
    kern<<<static_cast<unsigned>(ns * g.ncb), THREADS, 0, stream()>>>(in, ld_in, w, bias, g, epi);
    CUDA_CHECK_LAUNCH();
  });
}

// dw (C, 1, 7, 7) and db (C) (db may be undefined) of type T, from dy and x slices; deterministic.
template <typename T>
void launch_wgrad(const T* dy, int64_t ld_dy, const T* x, int64_t ld_x, const Geom& g, const Tensor& dw,
                  const Tensor& db, int dev) {
  if (g.C == 0) return;
  if (g.tiles == 0) {
    Tensor(dw).zero_();
    if (db.defined()) Tensor(db).zero_();
    return;
  }
  with_width<T>(load_width<T>({{dy, ld_dy}, {x, ld_x}}), [&](auto vw) {
    constexpr int VW = decltype(vw)::value;
    auto kern = wgrad_kernel<T, VW>;
    const int64_t ns = slices_for(kern, g, dev);
    Tensor part_w = Tensor::empty({ns, g.C, KK}, DType::f32, dw.device());
    Tensor part_b = Tensor::empty({ns, g.C}, DType::f32, dw.device());
    kern<<<static_cast<unsigned>(ns * g.ncb), THREADS, 0, stream()>>>(dy, ld_dy, x, ld_x, g, part_w.data<float>(),
                                                                      part_b.data<float>());
    CUDA_CHECK_LAUNCH();
    cu::column_sum(cu::ColumnLoad<float>{part_w.data<float>(), ns, static_cast<int64_t>(g.C) * KK}, 1, ns,
                   static_cast<int64_t>(g.C) * KK, 1.0f, cu::ptr<T>(dw), dw.device());
    if (db.defined())
      cu::column_sum(cu::ColumnLoad<float>{part_b.data<float>(), ns, g.C}, 1, ns, g.C, 1.0f, cu::ptr<T>(db),
                     db.device());
  });
}

}  // namespace mo::dwk

// gated_dwconv.cu: the fused gate of the Gated CNN block on CUDA (maths and the CPU twin:
// gated_dwconv.cpp). z (B, H, W, 2h) = [g (h) | i (h − cc) | c (cc)], id = h − cc.
//   forward : (1) the depthwise kernel reads c straight out of z (row stride 2h), writes conv_out and,
//                 in the same epilogue, m[:, id:] = act(g[:, id:]) ⊙ conv;
//             (2) an elementwise kernel writes m[:, :id] = act(g[:, :id]) ⊙ i.
//   backward: (1) one elementwise pass over (pixel, j < h): dg (all h), di, and dconv = dm[:, id:] ⊙
//                 act(g[:, id:]) into a (B, H, W, cc) scratch;
//             (2) the depthwise input-gradient kernel writes dc straight into dz[:, 2h−cc:] (row stride 2h);
//             (3) the weight-gradient kernel (dconv ⊗ c) → per-slice partials → fixed-order sum (dw, db).
// act is exact GELU (erff) or SiLU in fp32; every op reads T (f32 / bf16) and computes in fp32.
//
// Bytes and expected time, mambaout_tiny stage 1, batch 256, bf16 (P = 802,816 pixels, h = 256,
// cc = 96, id = 160; one channel of all pixels = 1.6 MB), at ~3.7 TB/s:
//   forward  conv+gate : read c, g[id:] 308 MB, write conv_out, m[id:] 308 MB   = 616 MB → ~170 µs;
//                        instruction-bound like dwconv2d (~180 µs) plus one erff per output (~60 µs)
//                        → expect ~240 µs
//            identity  : read g[:id], i 514 MB, write m[:id] 257 MB              = 771 MB → ~210 µs
//   backward elementw. : read dm 411, g 411, i 257, conv 154; write dg 411, di 257, dconv 154
//                                                                              = 2.06 GB → ~560 µs
//            dx conv   : read dconv, write dc  = 308 MB → ~85 µs of memory, ~180 µs of instructions
//            dw, db    : read dconv, c         = 308 MB → ~85 µs of memory, ~190 µs of instructions
//   → forward ~450 µs, backward ~930 µs per block call (memory alone: 380 µs and 730 µs).
// Stage 4 (7×7, h = 1536, cc = 576): the same traffic per pixel × 6 on 1/64 of the pixels: ~10× less.
#include "ops/fused/gated_dwconv.h"

#include "ops/conv/dwconv2d_kernels.cuh"

namespace mo::cuda {

namespace {

constexpr int kThreads = 256;

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

template <typename T, int VW>
__device__ __forceinline__ dwk::Vec<T, VW> ldv(const T* p) {
  return *reinterpret_cast<const dwk::Vec<T, VW>*>(p);
}
template <typename T, int VW>
__device__ __forceinline__ void stv(T* p, const dwk::Vec<T, VW>& v) {
  *reinterpret_cast<dwk::Vec<T, VW>*>(p) = v;
}

// Epilogue of the forward depthwise kernel: conv_out[p, c] = v; m[p, id + c] = act(g[p, id + c]) · v.
// The product uses the stored (rounded) conv value, the one backward sees.
template <typename T>
struct GateOut {
  T* conv;
  int64_t ldc;  // cc
  T* m;         // m + id
  int64_t ldm;  // h
  const T* g;   // z + id
  int64_t ldg;  // 2h
  Act act;
  __device__ __forceinline__ void operator()(int64_t p, int c, float v) const {
    const T vq = cu::from_float<T>(v);
    conv[p * ldc + c] = vq;
    m[p * ldm + c] = cu::from_float<T>(act_f(act, cu::to_float(g[p * ldg + c])) * cu::to_float(vq));
  }
};

// m[p, j] = act(z[p, j]) · z[p, h + j] for j < id. One warp per pixel (grid-stride), VW per lane step.
template <typename T, int VW>
__global__ void __launch_bounds__(kThreads) gate_identity_forward(const T* __restrict__ z, T* __restrict__ m, int64_t P,
                                                                 int64_t h, int64_t id, Act act) {
  const int lane = threadIdx.x % 32;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  const int64_t nj = id / VW;
  for (int64_t p = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32; p < P; p += nwarps) {
    const T* zr = z + p * 2 * h;
    T* mr = m + p * h;
    for (int64_t jv = lane; jv < nj; jv += 32) {
      const int64_t j = jv * VW;
      const auto g = ldv<T, VW>(zr + j), iv = ldv<T, VW>(zr + h + j);
      dwk::Vec<T, VW> o;
#pragma unroll
      for (int e = 0; e < VW; ++e) o.v[e] = cu::from_float<T>(act_f(act, cu::to_float(g.v[e])) * cu::to_float(iv.v[e]));
      stv(mr + j, o);
    }
  }
}

// For j < h:  dz[p, j] = dm·[i | conv]·act'(g);  j < id: dz[p, h + j] = dm·act(g);  j >= id: dconv[p, j − id] = dm·act(g).
// VW > 1 needs id % VW == 0 so a vector never straddles the identity / conv boundary.
template <typename T, int VW>
__global__ void __launch_bounds__(kThreads) gate_backward_ew(const T* __restrict__ dm, const T* __restrict__ z,
                                                            const T* __restrict__ conv, T* __restrict__ dz,
                                                            T* __restrict__ dconv, int64_t P, int64_t h, int64_t id,
                                                            int64_t cc, Act act) {
  const int lane = threadIdx.x % 32;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  const int64_t nj = h / VW;
  for (int64_t p = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32; p < P; p += nwarps) {
    const T *zr = z + p * 2 * h, *dr = dm + p * h, *cr = conv + p * cc;
    T *gz = dz + p * 2 * h, *dcr = dconv + p * cc;
    for (int64_t jv = lane; jv < nj; jv += 32) {
      const int64_t j = jv * VW;
      const auto g = ldv<T, VW>(zr + j), d = ldv<T, VW>(dr + j);
      const bool ident = j < id;
      const auto other = ident ? ldv<T, VW>(zr + h + j) : ldv<T, VW>(cr + (j - id));  // i or conv
      dwk::Vec<T, VW> dg, da;
#pragma unroll
      for (int e = 0; e < VW; ++e) {
        float a, ad;
        act_fd(act, cu::to_float(g.v[e]), a, ad);
        const float de = cu::to_float(d.v[e]);
        dg.v[e] = cu::from_float<T>(de * cu::to_float(other.v[e]) * ad);
        da.v[e] = cu::from_float<T>(de * a);
      }
      stv(gz + j, dg);
      if (ident) stv(gz + h + j, da);
      else stv(dcr + (j - id), da);
    }
  }
}

template <typename K>
int grid_for(K kernel, int64_t P, int dev) {
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0));
  const int64_t resident = static_cast<int64_t>(std::max(1, per_sm)) * dwk::sm_count(dev);
  const int64_t need = (P + kThreads / 32 - 1) / (kThreads / 32);
  return static_cast<int>(std::max<int64_t>(1, std::min(need, resident)));
}

void check_gated(const char* op, const Tensor& z, const Tensor& w, int64_t h) {
  MO_CHECK(w.dim() == 4 && w.size(2) == dwk::K && w.size(3) == dwk::K && w.is_contiguous(),
           "{} (CUDA): only contiguous 7x7 depthwise weights are implemented, got {}", op, w.str());
  MO_CHECK(z.dim() == 4 && z.is_contiguous() && z.size(3) == 2 * h && w.size(0) <= h,
           "{} (CUDA): z {} must be contiguous (B, H, W, 2h) with h = {} >= cc = {}", op, z.str(), h, w.size(0));
}

}  // namespace

void gated_dwconv_forward(const Tensor& z, const Tensor& w, const Tensor& b, int64_t h, Act act, const Tensor& m,
                          const Tensor& conv_out) {
  check_gated("gated_dwconv", z, w, h);
  cu::float_dispatch("gated_dwconv (CUDA)", z, [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = z.size(0), H = z.size(1), W = z.size(2), Z = 2 * h, cc = w.size(0), id = h - cc;
    const int64_t P = B * H * W;
    MO_CHECK(m.is_contiguous() && m.numel() == P * h && conv_out.is_contiguous() && conv_out.numel() == P * cc &&
                 m.dtype() == z.dtype() && conv_out.dtype() == z.dtype(),
             "gated_dwconv (CUDA): outputs m {} / conv {} do not match z {} (h = {}, cc = {})", m.str(),
             conv_out.str(), z.str(), h, cc);
    if (P == 0) return;
    const int dev = z.device().index;
    const T* zp = cu::ptr<T>(z);
    T *mp = cu::ptr<T>(m), *cp = cu::ptr<T>(conv_out);
    Tensor bc = b.contiguous();
    const dwk::Geom g = dwk::make_geom(B, H, W, cc);
    dwk::launch_conv<T, false>(zp + h + id, Z, cu::ptr<T>(w), cu::ptr<T>(bc), g,
                               GateOut<T>{cp, cc, mp + id, h, zp + id, Z, act}, dev);
    if (id > 0) {
      constexpr int V = cu::Pack<T>::N;
      const bool vec = h % V == 0 && id % V == 0 && cu::aligned16(zp) && cu::aligned16(mp);
      auto launch = [&](auto kern) {
        kern<<<grid_for(kern, P, dev), kThreads, 0, stream()>>>(zp, mp, P, h, id, act);
        CUDA_CHECK_LAUNCH();
      };
      if (vec) launch(gate_identity_forward<T, V>);
      else launch(gate_identity_forward<T, 1>);
    }
  });
}

void gated_dwconv_backward(const Tensor& dm, const Tensor& z, const Tensor& w, const Tensor& conv_out, int64_t h,
                           Act act, const Tensor& dz, const Tensor& dw, const Tensor& db) {
  check_gated("gated_dwconv backward", z, w, h);
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
    if (P == 0) {
      Tensor(dw).zero_();
      if (db.defined()) Tensor(db).zero_();
      return;
    }
    const T *zp = cu::ptr<T>(z), *dmp = cu::ptr<T>(dm), *cp = cu::ptr<T>(conv_out);
    T* dzp = cu::ptr<T>(dz);
    Tensor dconv = Tensor::empty({B, H, W, cc}, z.dtype(), z.device());  // dm[:, id:] ⊙ act(g[:, id:])
    T* dcp = cu::ptr<T>(dconv);

    constexpr int V = cu::Pack<T>::N;
    const bool vec = h % V == 0 && id % V == 0 && cu::aligned16(zp) && cu::aligned16(dmp) && cu::aligned16(cp) &&
                     cu::aligned16(dzp) && cu::aligned16(dcp);
    auto launch = [&](auto kern) {
      kern<<<grid_for(kern, P, dev), kThreads, 0, stream()>>>(dmp, zp, cp, dzp, dcp, P, h, id, cc, act);
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

// dwconv2d.cu: CUDA depthwise 7×7 'same' convolution on NHWC (the kernels: dwconv2d_kernels.cuh).
//   forward: y = conv(x) + b                       one conv kernel
//   dx     = dy ⋆ flipped w                        the same kernel with the taps reversed, no bias
//   dw, db = Σ dy ⊗ shifted x, Σ dy               wgrad kernel (per-slice fp32 partials) + fixed-order sum
// Bytes and expected time, mambaout_tiny stage 1 shape, batch 256, bf16 (B·H·W·C = 77.1 M elements,
// 154 MB per tensor; 49 FMA per output = 3.78 G FMA per pass):
//   forward : read x 154 MB, write y 154 MB = 308 MB → ~85 µs of memory at ~3.7 TB/s
//   dx      : read dy, write dx             = 308 MB → ~85 µs of memory
//   dw, db  : read dy, x                    = 308 MB + 2.5 MB partials → ~85 µs of memory
// but each pass is instruction-bound, not memory-bound: per thread and tile 343 FFMA + 91 shared loads
// + 91 bf16→f32 shifts + addressing ≈ 550 instructions for 7 outputs → ~180 µs per pass on H200
// (132 SMs × 4 warp-instructions per clock at 1.98 GHz); f32 data skips the shifts (~150 µs, but
// twice the bytes). The halo (13×13 inputs per 7×7 outputs) is re-read from L2, not from DRAM, when
// neighbouring tiles run together (slice s of every channel block starts at tile s).
#include "ops/conv/dwconv2d.h"

#include "ops/conv/dwconv2d_kernels.cuh"

namespace mo::cuda {

namespace {

void check_conv(const char* op, const Tensor& x, const Tensor& w, int pad) {
  MO_CHECK(w.dim() == 4 && w.size(2) == dwk::K && w.size(3) == dwk::K && pad == dwk::P,
           "{} (CUDA): only 7x7 depthwise kernels with padding 3 are implemented, got weight {} and pad {}", op,
           w.str(), pad);
  MO_CHECK(x.dim() == 4 && x.is_contiguous() && w.is_contiguous() && w.size(0) == x.size(3),
           "{} (CUDA): expected a contiguous (B, H, W, C) input and (C, 1, 7, 7) weight, got {} and {}", op, x.str(),
           w.str());
}

}  // namespace

void dwconv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, int pad, const Tensor& y) {
  check_conv("dwconv2d", x, w, pad);
  cu::float_dispatch("dwconv2d (CUDA)", x, [&](auto tag) {
    using T = decltype(tag);
    MO_CHECK(y.is_contiguous() && y.shape() == x.shape() && y.dtype() == x.dtype(),
             "dwconv2d (CUDA): output {} does not match input {}", y.str(), x.str());
    Tensor bc = b.defined() ? b.contiguous() : Tensor();
    const dwk::Geom g = dwk::make_geom(x.size(0), x.size(1), x.size(2), x.size(3));
    dwk::launch_conv<T, false>(cu::ptr<T>(x), g.C, cu::ptr<T>(w), bc.defined() ? cu::ptr<T>(bc) : nullptr, g,
                               dwk::StoreOut<T>{cu::ptr<T>(y), g.C}, x.device().index);
  });
}

void dwconv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, int pad, const Tensor& dx,
                       const Tensor& dw, const Tensor& db) {
  check_conv("dwconv2d backward", x, w, pad);
  cu::float_dispatch("dwconv2d backward (CUDA)", x, [&](auto tag) {
    using T = decltype(tag);
    MO_CHECK(dy.is_contiguous() && dy.shape() == x.shape() && dy.dtype() == x.dtype() && dw.is_contiguous() &&
                 dw.numel() == w.numel() && dw.dtype() == w.dtype(),
             "dwconv2d backward (CUDA): gradient {} / weight gradient {} do not match input {} / weight {}", dy.str(),
             dw.str(), x.str(), w.str());
    MO_CHECK(!db.defined() || (db.is_contiguous() && db.numel() == w.size(0) && db.dtype() == w.dtype()),
             "dwconv2d backward (CUDA): bias gradient {} does not match weight {}", db.str(), w.str());
    const dwk::Geom g = dwk::make_geom(x.size(0), x.size(1), x.size(2), x.size(3));
    const int dev = x.device().index;
    if (dx.defined()) {
      MO_CHECK(dx.is_contiguous() && dx.shape() == x.shape(), "dwconv2d backward (CUDA): dx {} does not match {}",
               dx.str(), x.str());
      dwk::launch_conv<T, true>(cu::ptr<T>(dy), g.C, cu::ptr<T>(w), nullptr, g, dwk::StoreOut<T>{cu::ptr<T>(dx), g.C},
                                dev);
    }
    dwk::launch_wgrad<T>(cu::ptr<T>(dy), g.C, cu::ptr<T>(x), g.C, g, dw, db, dev);
  });
}

}  // namespace mo::cuda

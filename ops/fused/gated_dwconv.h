// gated_dwconv.h: the token mixer of the Gated CNN block, fused. Given z = fc1(LN(x)) of width 2h,
// split as g = z[0:h], i = z[h : 2h−cc], c = z[2h−cc : 2h], it returns
//   m = act(g) ⊙ concat(i, dwconv(c))      (B, H, W, h)
// where dwconv is the depthwise k×k 'same' convolution (weight (cc, 1, k, k), bias (cc)).
// One op instead of split + permute + conv + permute + concat + act + mul: this is where the
// memory traffic of the model is (see ops/fused/gated_dwconv.cu).
#pragma once
#include "autograd/tensor.h"
#include "ops/activation/activation.h"

namespace mo {

// z (B, H, W, 2h) -> m (B, H, W, h)
Tensor gated_dwconv(const Tensor& z, const Tensor& w, const Tensor& b, int64_t h, Act act);

// The op's halves without autograd, on the tensors' device (for fused ops built on the gate). z, w, b
// contiguous; m (B, H, W, h) and conv (B, H, W, cc) preallocated; conv may be undefined on CUDA when no
// backward will run. Backward: dz like z, dw like w, db (cc); m_out, when defined, receives the
// forward's m again (same bits), for an fc2 whose forward did not keep it.
void check_gated_dwconv_args(const Tensor& z, const Tensor& w, const Tensor& b, int64_t h);
void gated_dwconv_forward_into(const Tensor& z, const Tensor& w, const Tensor& b, int64_t h, Act act, const Tensor& m,
                               const Tensor& conv);
void gated_dwconv_backward_into(const Tensor& dm, const Tensor& z, const Tensor& w, const Tensor& conv, int64_t h,
                                Act act, const Tensor& dz, const Tensor& dw, const Tensor& db, const Tensor& m_out);

namespace cuda {
// m (B, H, W, h) ← act(g) ⊙ [i, dwconv(c)]; conv_out (B, H, W, cc), when defined, receives dwconv(c) for
// backward (training). Inference passes an undefined conv_out: nothing reads it, so it is not written.
void gated_dwconv_forward(const Tensor& z, const Tensor& w, const Tensor& b, int64_t h, Act act, const Tensor& m,
                          const Tensor& conv_out);
// dz (B, H, W, 2h) gets [dg, di, dc]; dw, db (fp32-accumulated, deterministic); m_out (optional) the
// forward's m, recomputed from z and conv_out with the forward's expressions.
void gated_dwconv_backward(const Tensor& dm, const Tensor& z, const Tensor& w, const Tensor& conv_out, int64_t h,
                           Act act, const Tensor& dz, const Tensor& dw, const Tensor& db,
                           const Tensor& m_out = Tensor());
}  // namespace cuda

}  // namespace mo

// gated_dwconv_linear.cpp: the autograd node of r + fc2(gated_dwconv(z)) (maths in the header).
#include "ops/fused/gated_dwconv_linear.h"

#include "ops/common.h"
#include "ops/fused/gated_dwconv.h"
#include "ops/linear/linear.h"

namespace mo {

Tensor gated_dwconv_linear_residual(const Tensor& z_in, const Tensor& w, const Tensor& b, int64_t h, Act act,
                                    const Tensor& w2, const Tensor& b2, const Tensor& r_in) {
  check_gated_dwconv_args(z_in, w, b, h);
  MO_CHECK(w2.dim() == 2 && w2.size(1) == h && (!b2.defined() || (b2.dim() == 1 && b2.size(0) == w2.size(0))),
           "gated_dwconv_linear: fc2 weight {} / bias {} must be (N, h = {}) / (N)", w2.str(), b2.str(), h);
  check_same("gated_dwconv_linear", {&z_in, &w, &b, &w2, &b2, &r_in});
  Tensor z = z_in.contiguous();
  const int64_t B = z.size(0), H = z.size(1), W = z.size(2), cc = w.size(0), N = w2.size(0), M = B * H * W;
  MO_CHECK(r_in.dim() == 4 && r_in.size(0) == B && r_in.size(1) == H && r_in.size(2) == W && r_in.size(3) == N,
           "gated_dwconv_linear: residual {} must be ({}, {}, {}, {})", r_in.str(), B, H, W, N);
  Tensor wc = w.contiguous(), bc = b.contiguous(), w2c = w2.contiguous(), r = r_in.contiguous();
  const bool need_grad = any_requires_grad({&z_in, &w, &b, &w2, &b2, &r_in});
  Tensor conv = need_grad || !z.is_cuda() ? Tensor::empty({B, H, W, cc}, z.dtype(), z.device()) : Tensor();
  Tensor y = Tensor::empty({B, H, W, N}, z.dtype(), z.device());
  {
    Tensor m = Tensor::empty({B, H, W, h}, z.dtype(), z.device());  // dropped after fc2
    gated_dwconv_forward_into(z, wc, bc, h, act, m, conv);
    linear_residual_forward_into(m.view({M, h}), w2c, b2, r.view({M, N}), y.view({M, N}));
  }
  const bool has_b2 = b2.defined();
  record("gated_dwconv_linear", {z_in, w, b, w2, b2, r_in}, {&y},
         [sz = Saved(z, "gated_dwconv_linear"), sw = Saved(wc, "gated_dwconv_linear"),
          sw2 = Saved(w2c, "gated_dwconv_linear"), conv, h, act, cc, M, N,
          has_b2](std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor& z = sz.get();
           const Tensor& w = sw.get();
           const Tensor& w2 = sw2.get();
           Tensor dy = g[0].contiguous().view({M, N});
           Tensor dz = Tensor::empty(z.shape(), z.dtype(), z.device());
           Tensor dw = Tensor::empty(w.shape(), w.dtype(), w.device()), db = Tensor::empty({cc}, w.dtype(), w.device());
           Tensor m = Tensor::empty({z.size(0), z.size(1), z.size(2), h}, z.dtype(), z.device());
           {
             Tensor dm = Tensor::empty(m.shape(), z.dtype(), z.device());
             linear_input_grad_into(dy, w2, dm.view({M, h}));                 // dm = dy · W2
             gated_dwconv_backward_into(dm, z, w, conv, h, act, dz, dw, db, m);  // ... and m again
           }
           Tensor dw2 = Tensor::empty({N, h}, w2.dtype(), w2.device());
           Tensor db2 = has_b2 ? Tensor::empty({N}, w2.dtype(), w2.device()) : Tensor();
           linear_weight_grads_into(dy, m.view({M, h}), dw2, db2);  // dW2 = dyᵀ · m, db2 = Σ_rows dy
           return {dz, dw, db, dw2, db2, g[0]};                      // dr = dy
         });
  return y;
}

}  // namespace mo

// layer_norm_linear.cpp: z = linear(layer_norm(x)) as one autograd node that saves x and the LN
// statistics but not the LN output y (FlashAttention's LayerNormLinearFn idea). Backward recomputes
// y with the same forward kernel (same bits as the forward's y), then
//   dy = dz · W;   dW = dzᵀ · y, db = Σ_rows dz (one GEMM on CUDA);   LN backward(dy) → dx, dγ, dβ.
// Saving C fewer values per pixel for every MambaOut block costs one extra LN forward pass (a read of
// x and a write of y) per block in backward. Both devices: the ops' own device-dispatching halves.
#include "ops/fused/layer_norm_linear.h"

#include "ops/common.h"
#include "ops/linear/linear.h"
#include "ops/norm/layer_norm.h"

namespace mo {

Tensor layer_norm_linear(const Tensor& x_in, const Tensor& ln_w, const Tensor& ln_b, double eps, const Tensor& w,
                         const Tensor& b) {
  MO_CHECK(x_in.dim() >= 1 && ln_w.dim() == 1 && ln_b.dim() == 1 && ln_w.size(0) == x_in.size(-1) &&
               ln_b.size(0) == ln_w.size(0),
           "layer_norm_linear: LayerNorm weight {} / bias {} do not match the last dim of input {}", ln_w.str(),
           ln_b.str(), x_in.str());
  MO_CHECK(w.dim() == 2 && w.size(1) == x_in.size(-1) && (!b.defined() || (b.dim() == 1 && b.size(0) == w.size(0))),
           "layer_norm_linear: linear weight {} / bias {} do not match input {}", w.str(), b.str(), x_in.str());
  check_same("layer_norm_linear", {&x_in, &ln_w, &ln_b, &w, &b});
  Tensor x = x_in.contiguous();
  const int64_t K = w.size(1), N = w.size(0), M = x.numel() / K;
  const DType stat_t = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor mean = Tensor::empty({M}, stat_t, x.device()), rstd = Tensor::empty({M}, stat_t, x.device());
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Tensor z = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor wc = w.contiguous();
  {
    Tensor y = Tensor::empty({M, K}, x.dtype(), x.device());  // dropped after the product
    layer_norm_forward_into(x.view({M, K}), ln_w, ln_b, eps, y, mean, rstd);
    linear_forward_into(y, wc, b, z.view({M, N}));
  }
  const bool has_b = b.defined();
  record("layer_norm_linear", {x_in, ln_w, ln_b, w, b}, {&z},
         [sx = Saved(x, "layer_norm_linear"), sg = Saved(ln_w, "layer_norm_linear"),
          sb = Saved(ln_b, "layer_norm_linear"), sw = Saved(wc, "layer_norm_linear"), mean, rstd, eps, M, N, K,
          has_b](std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor& x = sx.get();
           const Tensor& gamma = sg.get();
           const Tensor& w = sw.get();
           Tensor dz = g[0].contiguous().view({M, N});
           Tensor x2 = x.view({M, K});
           Tensor dy = Tensor::empty({M, K}, x.dtype(), x.device());
           Tensor dw = Tensor::empty({N, K}, w.dtype(), w.device());
           Tensor db = has_b ? Tensor::empty({N}, w.dtype(), w.device()) : Tensor();
           {
             Tensor y = Tensor::empty({M, K}, x.dtype(), x.device());
             Tensor m2 = Tensor::empty({M}, mean.dtype(), x.device()), r2 = Tensor::empty({M}, mean.dtype(), x.device());
             layer_norm_forward_into(x2, gamma, sb.get(), eps, y, m2, r2);  // the forward's y, recomputed
             linear_backward_into(dz, y, w, dy, dw, db);
           }
           Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
           Tensor dgamma = Tensor::empty({K}, gamma.dtype(), gamma.device());
           Tensor dbeta = Tensor::empty({K}, gamma.dtype(), gamma.device());
           layer_norm_backward_into(dy, x2, gamma, mean, rstd, dx.view({M, K}), dgamma, dbeta);
           return {dx, dgamma, dbeta, dw, db};
         });
  return z;
}

}  // namespace mo

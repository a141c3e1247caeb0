// gated_dwconv_linear.h: r + fc2(gated_dwconv(z)), the second half of a Gated CNN block without layer
// scale or drop path, as one autograd node that does not keep the gate's output m. m (B, H, W, h) is
// the largest activation a block saves (h values per pixel against C of the block's input); backward
// forms it again in the gate's elementwise pass, which reads everything m is made of anyway, and only
// then takes fc2's weight gradient:
//   dm = dy · W2;   gate backward(dm) → dz, dw, db and m (the forward's bits);   dW2 = dyᵀ · m, db2 = Σ dy;
//   dr = dy.
// Both devices, through the ops' own device-dispatching halves (gated_dwconv.h, linear.h).
#pragma once
#include "autograd/tensor.h"
#include "ops/activation/activation.h"

namespace mo {

// z (B, H, W, 2h), gate weight (cc, 1, k, k) and bias (cc), fc2 weight (N, h) and bias (N) or undefined,
// r (B, H, W, N) -> r + linear(gated_dwconv(z, w, b, h, act), w2, b2)
Tensor gated_dwconv_linear_residual(const Tensor& z, const Tensor& w, const Tensor& b, int64_t h, Act act,
                                    const Tensor& w2, const Tensor& b2, const Tensor& r);

}  // namespace mo

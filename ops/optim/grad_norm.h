// grad_norm.h: gradient clipping by global norm (torch.nn.utils.clip_grad_norm_, timm's --clip-grad with
// mode norm) over the optimizer's flat fp32 gradient arena, without a host sync:
//   norm = scale · sqrt(Σ g²)          (scale: e.g. 1/accumulation, so the norm is the step's gradient's)
//   coef = min(1, max_norm / (norm + 1e-6))
// Both land in a (2) float32 tensor [norm, coef] on the gradients' device; the optimizer multiplies
// its gradients by coef on the device (adamw_step's grad_coef). The sum of squares is deterministic:
// fixed per-block ranges, fixed reduction trees, fp64 for the final sum (the CPU sums in fp64 too).
// Zero pads of padded parameters add exactly 0 to the sum.
#pragma once

#include "autograd/tensor.h"

namespace mo {

// grad: float32, contiguous, 1-D. max_norm > 0. Returns [norm, coef] (float32) on grad's device.
Tensor clip_grad_norm(const Tensor& grad, double scale, double max_norm);

namespace cuda {
// out: float32 [2] on grad's device.
void clip_grad_norm(const Tensor& grad, double scale, double max_norm, const Tensor& out);
}  // namespace cuda

}  // namespace mo

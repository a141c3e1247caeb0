// ema.h: one update of a model EMA (timm's ModelEmaV3) over flat fp32 buffers, in one pass:
//   e ← lerp(e, p, 1 − decay)   (torch.lerp's two-sided formula, so decay = 0 copies p exactly)
// `ema` and `param` are the same layout (the optimizer's fp32 master arena), so padded parameters keep
// their zero pads. The per-element math is written out in the CUDA kernel with round-to-nearest
// intrinsics, so the CPU and the GPU give the same bits.
#pragma once

#include "autograd/tensor.h"

namespace mo {

// ema, param: float32, contiguous, same numel and device. 0 <= decay <= 1.
void ema_update(const Tensor& ema, const Tensor& param, double decay);

// timm ModelEmaV3.get_decay for 1-based optimizer step `step`: 0 at the first update (the EMA starts as
// a copy), then `decay`, or with warm-up 1 − (1 + (step − 1))^(−2/3) clamped to [0, decay].
double ema_decay_for_step(double decay, bool warmup, int64_t step);

namespace cuda {
void ema_update(const Tensor& ema, const Tensor& param, float w, float one_minus_w);
}  // namespace cuda

}  // namespace mo

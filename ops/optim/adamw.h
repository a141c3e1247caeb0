// adamw.h: one AdamW step (torch.optim.AdamW semantics, decoupled weight decay) over flat buffers:
// fp32 master parameters, gradients (fp32 or bf16), fp32 moments. Segments give each parameter's
// range and whether it is decayed, so the whole model updates in one multi-tensor launch. Optionally
// writes a bf16 copy of the updated parameters (the compute weights of mixed precision).
//   p ← p − lr·wd·p;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
//   p ← p − (lr / (1−β1ᵗ)) · m / (sqrt(v) / sqrt(1−β2ᵗ) + eps)
#pragma once
#include <vector>

#include "autograd/tensor.h"

namespace mo {

struct AdamWSegment {
  int64_t offset = 0, numel = 0;
  bool decay = true;
};

struct AdamWHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.05;
  int64_t step = 1;          // 1-based step count (after increment)
  double grad_scale = 1.0;   // gradients are multiplied by this first (e.g. 1 / accumulation steps)
};

// param, m, v: float32 [N]; grad: float32 or bfloat16 [N]; param_bf16: undefined or bfloat16 [N].
// grad_coef: undefined, or a float32 tensor on param's device whose element `grad_coef_index` further
// multiplies every gradient (the clip coefficient of grad_norm.h, read on the device: no host sync).
void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                const std::vector<AdamWSegment>& segments, const AdamWHyper& hp, const Tensor& param_bf16 = Tensor(),
                const Tensor& grad_coef = Tensor(), int64_t grad_coef_index = 0);

namespace cuda {
// chunks: int64 [n, 3] on the device = (offset, numel, decay) with numel <= 65536 per chunk.
// coef: null, or a device pointer to the gradient multiplier (see above).
void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const Tensor& chunks,
                int64_t num_chunks, const AdamWHyper& hp, const Tensor& param_bf16, const float* coef = nullptr);
}  // namespace cuda

}  // namespace mo

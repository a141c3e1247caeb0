// cross_entropy.h: SoftTargetCrossEntropy (timm): mean over the batch of −Σ_j t_j · log_softmax(z)_j,
// with targets from mixup/cutmix and label smoothing; helpers for smoothed one-hot targets and
// top-k accuracy. Softmax statistics in fp32 (fp64 for fp64 logits).
#pragma once
#include <vector>

#include "autograd/tensor.h"

namespace mo {

// logits (B, N), target (B, N) float -> scalar loss (float32, float64 for f64 logits)
Tensor soft_target_cross_entropy(const Tensor& logits, const Tensor& target);

// labels int64 (B) -> (B, N) with off = smoothing / N and on = 1 − smoothing + off (timm's mixup targets).
Tensor smooth_one_hot(const Tensor& labels, int64_t num_classes, double smoothing, DType dtype = DType::f32,
                      Device dev = Device::cpu());

// Number of rows whose label is among the k largest logits (ties: lower index first, like torch.topk).
int64_t topk_correct(const Tensor& logits, const Tensor& labels, int64_t k);

namespace cuda {
// loss: float32 scalar (shape [] or [1]; mean over rows)
void soft_target_ce_forward(const Tensor& logits, const Tensor& target, const Tensor& loss);
// dlogits = (softmax(z) · Σt − t) · dloss / B; dloss a float32 scalar on the device
void soft_target_ce_backward(const Tensor& logits, const Tensor& target, const Tensor& dloss, const Tensor& dlogits);
}  // namespace cuda

}  // namespace mo

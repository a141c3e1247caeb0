// cross_entropy.cpp: soft-target cross-entropy forward/backward on the CPU, targets, top-k.
//   loss = (1/B) Σ_b −Σ_j t_bj (z_bj − logΣ_k e^{z_bk});   dz_bj = (p_bj Σ_k t_bk − t_bj) · g / B
#include "ops/loss/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "ops/common.h"

namespace mo {

Tensor soft_target_cross_entropy(const Tensor& logits_in, const Tensor& target_in) {
  MO_CHECK(logits_in.dim() == 2 && logits_in.shape() == target_in.shape(),
           "soft_target_cross_entropy: logits {} and target {} must both be (B, N)", logits_in.str(), target_in.str());
  MO_CHECK(logits_in.device() == target_in.device(), "soft_target_cross_entropy: logits {} and target {} are on "
           "different devices", logits_in.str(), target_in.str());
  Tensor z = logits_in.contiguous();
  Tensor t = target_in.dtype() == z.dtype() || z.is_cuda() ? target_in.contiguous() : target_in.to(z.dtype()).contiguous();
  int64_t B = z.size(0), N = z.size(1);
  DType lt = z.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor loss = Tensor::empty({}, lt, z.device());
  if (z.is_cuda()) {
    MO_CUDA_DISPATCH("soft_target_cross_entropy", cuda::soft_target_ce_forward(z, t, loss));
  } else {
    cpu_float_dispatch("soft_target_cross_entropy", z, [&](auto zz) {
      using T = decltype(zz);
      const T *pz = z.data<T>(), *pt = t.data<T>();
      double total = 0;
      for (int64_t b = 0; b < B; ++b) {
        const T *zr = pz + b * N, *tr = pt + b * N;
        T mx = *std::max_element(zr, zr + N);
        double se = 0, st = 0, stz = 0;
        for (int64_t j = 0; j < N; ++j) {
          se += std::exp(static_cast<double>(zr[j] - mx));
          st += tr[j];
          stz += tr[j] * static_cast<double>(zr[j] - mx);
        }
        total += st * std::log(se) - stz;
      }
      *loss.data<T>() = static_cast<T>(total / B);
    });
  }
  record("soft_target_cross_entropy", {logits_in, target_in}, {&loss},
         [sz = Saved(z, "soft_target_cross_entropy"), st = Saved(t, "soft_target_cross_entropy"), B, N](std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor& z = sz.get();
           const Tensor& t = st.get();
           Tensor dz = Tensor::empty(z.shape(), z.dtype(), z.device());
           if (z.is_cuda()) {
             Tensor gl = g[0].to(DType::f32).contiguous();
             MO_CUDA_DISPATCH("soft_target_cross_entropy", cuda::soft_target_ce_backward(z, t, gl, dz));
             return {dz, Tensor()};
           }
           double gs = g[0].item() / B;
           cpu_float_dispatch("soft_target_cross_entropy", z, [&](auto zz) {
             using T = decltype(zz);
             const T *pz = z.data<T>(), *pt = t.data<T>();
             T* pd = dz.data<T>();
#pragma omp parallel for
             for (int64_t b = 0; b < B; ++b) {
               const T *zr = pz + b * N, *tr = pt + b * N;
               T mx = *std::max_element(zr, zr + N);
               double se = 0, st = 0;
               for (int64_t j = 0; j < N; ++j) {
                 se += std::exp(static_cast<double>(zr[j] - mx));
                 st += tr[j];
               }
               for (int64_t j = 0; j < N; ++j)
                 pd[b * N + j] = static_cast<T>((std::exp(static_cast<double>(zr[j] - mx)) / se * st - tr[j]) * gs);
             }
           });
           return {dz, Tensor()};
         });
  return loss;
}

Tensor smooth_one_hot(const Tensor& labels_in, int64_t num_classes, double smoothing, DType dtype, Device dev) {
  MO_CHECK(labels_in.dim() == 1 && labels_in.dtype() == DType::i64, "smooth_one_hot: labels must be int64 (B), got {}",
           labels_in.str());
  auto labels = labels_in.to_vector<int64_t>();
  int64_t B = static_cast<int64_t>(labels.size());
  double off = smoothing / num_classes, on = 1.0 - smoothing + off;
  std::vector<double> v(B * num_classes, off);
  for (int64_t b = 0; b < B; ++b) {
    MO_CHECK(labels[b] >= 0 && labels[b] < num_classes, "smooth_one_hot: label {} out of range [0, {})", labels[b],
             num_classes);
    v[b * num_classes + labels[b]] = on;
  }
  return Tensor::from_vector(v, {B, num_classes}).to(dtype).to(dev);
}

int64_t topk_correct(const Tensor& logits, const Tensor& labels, int64_t k) {
  MO_CHECK(logits.dim() == 2 && labels.dim() == 1 && labels.size(0) == logits.size(0),
           "topk_correct: logits {} and labels {} do not match", logits.str(), labels.str());
  auto z = logits.to_vector<float>();
  auto y = labels.to_vector<int64_t>();
  int64_t B = logits.size(0), N = logits.size(1), correct = 0;
  k = std::min(k, N);
  for (int64_t b = 0; b < B; ++b) {
    const float* zr = z.data() + b * N;
    float target = zr[y[b]];
    // label is in the top k if fewer than k classes rank strictly before it
    int64_t before = 0;
    for (int64_t j = 0; j < N; ++j)
      if (zr[j] > target || (zr[j] == target && j < y[b])) before++;
    if (before < k) correct++;
  }
  return correct;
}

}  // namespace mo

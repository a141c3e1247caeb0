// adamw.cpp: AdamW on the CPU (per element, fp32 math like the CUDA kernel) and the chunk table
// for the CUDA launch.
#include "ops/optim/adamw.h"

#include <cmath>

#include "ops/common.h"

namespace mo {

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                const std::vector<AdamWSegment>& segments, const AdamWHyper& hp, const Tensor& param_bf16,
                const Tensor& grad_coef, int64_t grad_coef_index) {
  MO_CHECK(param.dtype() == DType::f32 && m.dtype() == DType::f32 && v.dtype() == DType::f32,
           "adamw_step: parameters and moments must be float32, got {}, {}, {}", param.str(), m.str(), v.str());
  MO_CHECK(param.numel() == grad.numel() && param.numel() == m.numel() && param.numel() == v.numel(),
           "adamw_step: sizes differ: param {} grad {} m {} v {}", param.str(), grad.str(), m.str(), v.str());
  MO_CHECK(param.is_contiguous() && grad.is_contiguous() && m.is_contiguous() && v.is_contiguous(),
           "adamw_step: buffers must be contiguous");
  MO_CHECK(hp.step >= 1, "adamw_step: step must be >= 1, got {}", hp.step);
  for (auto& s : segments)
    MO_CHECK(s.offset >= 0 && s.numel >= 0 && s.offset + s.numel <= param.numel(),
             "adamw_step: segment [{}, +{}) outside the {} parameters", s.offset, s.numel, param.numel());
  MO_CHECK(!grad_coef.defined() || (grad_coef.dtype() == DType::f32 && grad_coef.is_contiguous() &&
                                     grad_coef.device() == param.device() && grad_coef_index >= 0 &&
                                     grad_coef_index < grad_coef.numel()),
           "adamw_step: grad_coef must be a contiguous float32 tensor on {} holding element {}, got {}",
           param.device().str(), grad_coef_index, grad_coef.str());
  param.bump_version();
  if (param.is_cuda()) {
    const float* coef = grad_coef.defined() ? grad_coef.data<float>() + grad_coef_index : nullptr;
    std::vector<int64_t> chunks;
    for (auto& s : segments)
      for (int64_t o = 0; o < s.numel; o += 65536) {
        chunks.push_back(s.offset + o);
        chunks.push_back(std::min<int64_t>(65536, s.numel - o));
        chunks.push_back(s.decay ? 1 : 0);
      }
    int64_t n = static_cast<int64_t>(chunks.size() / 3);
    if (n == 0) return;
    // The table is the same every step: upload it once per (segments, device), not every step (the upload
    // synchronises the stream, and a synchronising step cannot run ahead of the GPU or be graph-captured).
    struct Cached {
      std::vector<int64_t> chunks;
      Device device;
      Tensor table;
    };
    thread_local std::vector<Cached> cache;  // one entry per optimizer layout in use (usually one)
    const Tensor* table = nullptr;
    for (auto& c : cache)
      if (c.device == param.device() && c.chunks == chunks) table = &c.table;
    if (!table) {
      if (cache.size() >= 8) cache.erase(cache.begin());
      cache.push_back({chunks, param.device(), Tensor::from_vector(chunks, {n, 3}, param.device())});
      table = &cache.back().table;
    }
    MO_CUDA_DISPATCH("adamw_step", cuda::adamw_step(param, grad, m, v, *table, n, hp, param_bf16, coef));
    return;
  }
  float lr = static_cast<float>(hp.lr), b1 = static_cast<float>(hp.beta1), b2 = static_cast<float>(hp.beta2);
  float eps = static_cast<float>(hp.eps), gs = static_cast<float>(hp.grad_scale);
  const bool clip = grad_coef.defined();
  const float coef = clip ? grad_coef.data<float>()[grad_coef_index] : 1.0f;
  float bc1 = 1.0f - static_cast<float>(std::pow(hp.beta1, static_cast<double>(hp.step)));
  float bc2_sqrt = std::sqrt(1.0f - static_cast<float>(std::pow(hp.beta2, static_cast<double>(hp.step))));
  float step_size = lr / bc1;
  float* p = param.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  bool g_bf16 = grad.dtype() == DType::bf16;
  const float* gf = g_bf16 ? nullptr : grad.data<float>();
  const bf16_t* gb = g_bf16 ? grad.data<bf16_t>() : nullptr;
  bf16_t* out16 = param_bf16.defined() ? param_bf16.data<bf16_t>() : nullptr;
  for (auto& s : segments) {
    float decay = s.decay ? 1.0f - lr * static_cast<float>(hp.weight_decay) : 1.0f;
#pragma omp parallel for if (s.numel > 65536)
    for (int64_t i = s.offset; i < s.offset + s.numel; ++i) {
      float g = (g_bf16 ? static_cast<float>(gb[i]) : gf[i]) * gs;
      if (clip) g *= coef;
      float pi = p[i] * decay;
      pm[i] = b1 * pm[i] + (1.0f - b1) * g;
      pv[i] = b2 * pv[i] + (1.0f - b2) * g * g;
      pi -= step_size * pm[i] / (std::sqrt(pv[i]) / bc2_sqrt + eps);
      p[i] = pi;
      if (out16) out16[i] = bf16_t(pi);
    }
  }
}

}  // namespace mo

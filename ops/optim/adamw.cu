// adamw.cu: CUDA half of the multi-tensor AdamW step (see adamw.h).
//
// One launch for the whole model: block c takes row c of the chunk table (offset, numel <= 65536,
// decay) and walks its elements with 256 threads. When the chunk offset is a multiple of 4 and the
// buffers are 16-byte aligned, each thread moves 4 elements at a time (float4 for p, m, v and an fp32
// gradient, 8 bytes for a bf16 gradient or bf16 parameter copy); the remainder goes element-wise.
// The per-element math is the CPU loop of adamw.cpp, written with round-to-nearest intrinsics
// (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn) so nvcc cannot contract it into FMAs: the result is
// the same fp32 arithmetic, operation for operation, as the CPU. The scalar constants (bias
// corrections, step size, decay factor) are computed on the host exactly as the CPU does.
#include "ops/optim/adamw.h"

#include <cmath>

#include "ops/cuda_utils.cuh"

namespace mo::cuda {

namespace {

struct AdamWConsts {
  float b1, b2, omb1, omb2, eps, gs, bc2_sqrt, step_size, decay;
};

// One element: p, m, v updated in place; returns the new parameter.
__device__ __forceinline__ float adamw_elem(float g_raw, float& p, float& m, float& v, float dec, const AdamWConsts& c,
                                            const float* coef) {
  float g = __fmul_rn(g_raw, c.gs);
  if (coef != nullptr) g = __fmul_rn(g, *coef);
  float pi = __fmul_rn(p, dec);
  m = __fadd_rn(__fmul_rn(c.b1, m), __fmul_rn(c.omb1, g));
  v = __fadd_rn(__fmul_rn(c.b2, v), __fmul_rn(__fmul_rn(c.omb2, g), g));
  const float den = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), c.bc2_sqrt), c.eps);
  pi = __fsub_rn(pi, __fdiv_rn(__fmul_rn(c.step_size, m), den));
  p = pi;
  return pi;
}

__device__ __forceinline__ void load4(const float* g, float out[4]) {
  const float4 q = *reinterpret_cast<const float4*>(g);
  out[0] = q.x, out[1] = q.y, out[2] = q.z, out[3] = q.w;
}
__device__ __forceinline__ void load4(const cu::bf16* g, float out[4]) {
  const uint2 q = *reinterpret_cast<const uint2*>(g);  // 4 bf16, 8-byte aligned
  const __nv_bfloat162 lo = *reinterpret_cast<const __nv_bfloat162*>(&q.x);
  const __nv_bfloat162 hi = *reinterpret_cast<const __nv_bfloat162*>(&q.y);
  out[0] = __low2float(lo), out[1] = __high2float(lo), out[2] = __low2float(hi), out[3] = __high2float(hi);
}

template <typename G>
__global__ void adamw_kernel(float* __restrict__ p, const G* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
                             cu::bf16* __restrict__ p16, const int64_t* __restrict__ chunks, bool aligned,
                             AdamWConsts c, const float* __restrict__ coef) {
  const int64_t off = chunks[3 * blockIdx.x], n = chunks[3 * blockIdx.x + 1];
  const float dec = chunks[3 * blockIdx.x + 2] != 0 ? c.decay : 1.0f;
  const int64_t nvec = aligned && off % 4 == 0 ? n / 4 : 0;
  for (int64_t q = threadIdx.x; q < nvec; q += blockDim.x) {
    const int64_t i = off + 4 * q;
    float4 P = *reinterpret_cast<float4*>(p + i), Mv = *reinterpret_cast<float4*>(m + i),
           Vv = *reinterpret_cast<float4*>(v + i);
    float gr[4];
    load4(g + i, gr);
    float r0 = adamw_elem(gr[0], P.x, Mv.x, Vv.x, dec, c, coef);
    float r1 = adamw_elem(gr[1], P.y, Mv.y, Vv.y, dec, c, coef);
    float r2 = adamw_elem(gr[2], P.z, Mv.z, Vv.z, dec, c, coef);
    float r3 = adamw_elem(gr[3], P.w, Mv.w, Vv.w, dec, c, coef);
    *reinterpret_cast<float4*>(p + i) = P;
    *reinterpret_cast<float4*>(m + i) = Mv;
    *reinterpret_cast<float4*>(v + i) = Vv;
    if (p16 != nullptr) {
      __nv_bfloat162 lo = __floats2bfloat162_rn(r0, r1), hi = __floats2bfloat162_rn(r2, r3);
      uint2 out;
      out.x = *reinterpret_cast<const uint32_t*>(&lo);
      out.y = *reinterpret_cast<const uint32_t*>(&hi);
      *reinterpret_cast<uint2*>(p16 + i) = out;
    }
  }
  for (int64_t k = 4 * nvec + threadIdx.x; k < n; k += blockDim.x) {
    const int64_t i = off + k;
    float pi = p[i], mi = m[i], vi = v[i];
    const float r = adamw_elem(cu::to_float(g[i]), pi, mi, vi, dec, c, coef);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if (p16 != nullptr) p16[i] = __float2bfloat16_rn(r);
  }
}

}  // namespace

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const Tensor& chunks,
                int64_t num_chunks, const AdamWHyper& hp, const Tensor& param_bf16, const float* coef) {
  MO_CHECK(param.dtype() == DType::f32 && m.dtype() == DType::f32 && v.dtype() == DType::f32 &&
               (grad.dtype() == DType::f32 || grad.dtype() == DType::bf16),
           "adamw_step: CUDA expects float32 param/m/v and a float32 or bfloat16 grad, got {}, {}, {}, {}", param.str(),
           m.str(), v.str(), grad.str());
  MO_CHECK(param.is_cuda() && grad.device() == param.device() && m.device() == param.device() &&
               v.device() == param.device() && chunks.device() == param.device(),
           "adamw_step: all buffers and the chunk table must be on {}", param.device().str());
  MO_CHECK(param.is_contiguous() && grad.is_contiguous() && m.is_contiguous() && v.is_contiguous() &&
               grad.numel() == param.numel() && m.numel() == param.numel() && v.numel() == param.numel(),
           "adamw_step: contiguous buffers of equal size expected: param {} grad {} m {} v {}", param.str(), grad.str(),
           m.str(), v.str());
  MO_CHECK(chunks.dtype() == DType::i64 && chunks.is_contiguous() && chunks.numel() == 3 * num_chunks,
           "adamw_step: chunk table must be int64 [{}, 3], got {}", num_chunks, chunks.str());
  MO_CHECK(!param_bf16.defined() || (param_bf16.dtype() == DType::bf16 && param_bf16.numel() == param.numel() &&
                                     param_bf16.is_contiguous() && param_bf16.device() == param.device()),
           "adamw_step: param_bf16 must be a contiguous bfloat16 copy of {}, got {}", param.str(), param_bf16.str());
  MO_CHECK(num_chunks >= 0 && num_chunks <= 2147483647, "adamw_step: {} chunks", num_chunks);
  if (num_chunks == 0) return;

  // Host constants, computed exactly like the CPU loop in adamw.cpp.
  const float lr = static_cast<float>(hp.lr), b1 = static_cast<float>(hp.beta1), b2 = static_cast<float>(hp.beta2);
  AdamWConsts c;
  c.b1 = b1;
  c.b2 = b2;
  c.omb1 = 1.0f - b1;
  c.omb2 = 1.0f - b2;
  c.eps = static_cast<float>(hp.eps);
  c.gs = static_cast<float>(hp.grad_scale);
  const float bc1 = 1.0f - static_cast<float>(std::pow(hp.beta1, static_cast<double>(hp.step)));
  c.bc2_sqrt = std::sqrt(1.0f - static_cast<float>(std::pow(hp.beta2, static_cast<double>(hp.step))));
  c.step_size = lr / bc1;
  c.decay = 1.0f - lr * static_cast<float>(hp.weight_decay);

  cu::bf16* p16 = param_bf16.defined() ? cu::ptr<cu::bf16>(param_bf16) : nullptr;
  const bool aligned = cu::aligned16(param.raw_data()) && cu::aligned16(m.raw_data()) &&
                       cu::aligned16(v.raw_data()) && cu::aligned16(grad.raw_data()) &&
                       (p16 == nullptr || cu::aligned16(p16));
  const unsigned blocks = static_cast<unsigned>(num_chunks);
  if (grad.dtype() == DType::bf16) {
    adamw_kernel<cu::bf16><<<blocks, 256, 0, stream()>>>(param.data<float>(), cu::ptr<const cu::bf16>(grad),
                                                         m.data<float>(), v.data<float>(), p16,
                                                         chunks.data<int64_t>(), aligned, c, coef);
  } else {
    adamw_kernel<float><<<blocks, 256, 0, stream()>>>(param.data<float>(), grad.data<float>(), m.data<float>(),
                                                      v.data<float>(), p16, chunks.data<int64_t>(), aligned, c, coef);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace mo::cuda

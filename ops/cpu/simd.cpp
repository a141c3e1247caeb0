// simd.cpp: the vector types and the dispatch of ops/cpu/simd.h. simd_kernels.inc holds the kernel
// bodies once; it is compiled twice here, inside `#pragma GCC target` regions for AVX2 and for
// AVX-512 (only those functions carry the wider ISA, never the whole build), each time over its own
// vector type V with N float lanes and masked tails.
#include "ops/cpu/simd.h"

#include "autograd/cpu_isa.h"

#if MO_X86_SIMD && !defined(__clang__)  // `#pragma GCC target` regions are GCC's
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace mo::simd::avx2 {
struct V {
  using R = __m256;
  static constexpr int N = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R set1(float a) { return _mm256_set1_ps(a); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static R loadn(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static void storen(float* p, R v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R fnma(R a, R b, R c) { return _mm256_fnmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R min(R a, R b) { return _mm256_min_ps(a, b); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R andv(R a, R b) { return _mm256_and_ps(a, b); }
  static R xorv(R a, R b) { return _mm256_xor_ps(a, b); }
  static R round(R a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for integral n in [-126, 127]
  static R pow2i(R n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static float hsum(R v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};
#include "ops/cpu/simd_kernels.inc"
}  // namespace mo::simd::avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
namespace mo::simd::avx512 {
struct V {
  using R = __m512;
  static constexpr int N = 16;
  static R zero() { return _mm512_setzero_ps(); }
  static R set1(float a) { return _mm512_set1_ps(a); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static R loadn(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void storen(float* p, R v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R fnma(R a, R b, R c) { return _mm512_fnmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R andv(R a, R b) { return _mm512_and_ps(a, b); }
  static R xorv(R a, R b) { return _mm512_xor_ps(a, b); }
  static R round(R a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static R pow2i(R n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static float hsum(R v) { return _mm512_reduce_add_ps(v); }
};
#include "ops/cpu/simd_kernels.inc"
}  // namespace mo::simd::avx512
#pragma GCC pop_options

#define MO_SIMD_DISPATCH(call)                                       \
  switch (cpu_isa()) {                                               \
    case CpuIsa::avx512: return avx512::call;                        \
    case CpuIsa::avx2: return avx2::call;                            \
    default: return false;                                           \
  }
#else
#define MO_SIMD_DISPATCH(call) return false;
#endif

namespace mo::simd {

bool dwconv_forward(const float* x, int64_t ldx, const float* wt, const float* b, float* y, int64_t ldy, int64_t B,
                    int64_t H, int64_t W, int64_t C, int k, int pad) {
  MO_SIMD_DISPATCH(dwconv_forward(x, ldx, wt, b, y, ldy, B, H, W, C, k, pad));
}
bool dwconv_weight_grad(const float* dy, int64_t ldy, const float* x, int64_t ldx, float* part, int64_t B,
                        int64_t H, int64_t W, int64_t C, int k, int pad) {
  if (k != 7) return false;
  MO_SIMD_DISPATCH(dwconv_weight_grad7(dy, ldy, x, ldx, part, B, H, W, C, pad));
}
bool layer_norm_forward(const float* x, const float* w, const float* b, float eps, float* y, float* mean,
                        float* rstd, int64_t R, int64_t C) {
  MO_SIMD_DISPATCH(layer_norm_forward(x, w, b, eps, y, mean, rstd, R, C));
}
bool layer_norm_backward(const float* dy, const float* x, const float* w, const float* mean, const float* rstd,
                         float* dx, float* dw, float* db, int64_t R, int64_t C) {
  MO_SIMD_DISPATCH(layer_norm_backward(dy, x, w, mean, rstd, dx, dw, db, R, C));
}
bool act_forward(Act a, const float* x, float* y, int64_t n) { MO_SIMD_DISPATCH(act_forward(a, x, y, n)); }
bool act_backward(Act a, const float* x, const float* dy, float* dx, int64_t n) {
  MO_SIMD_DISPATCH(act_backward(a, x, dy, dx, n));
}
bool gate_forward(Act a, const float* z, const float* conv, float* m, int64_t P, int64_t h, int64_t cc) {
  MO_SIMD_DISPATCH(gate_forward(a, z, conv, m, P, h, cc));
}
bool gate_backward(Act a, const float* z, const float* conv, const float* dm, float* dz, float* dconv, int64_t P,
                   int64_t h, int64_t cc) {
  MO_SIMD_DISPATCH(gate_backward(a, z, conv, dm, dz, dconv, P, h, cc));
}

}  // namespace mo::simd

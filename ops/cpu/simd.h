// simd.h: float32 CPU kernels with AVX2 and AVX-512 bodies, chosen per call by cpu_isa(). Each returns
// false when it has no vector body for the ISA in force (scalar, non-x86, an unsupported kernel
// size); the caller then runs its portable loop, which is also the reference the tests compare to.
#pragma once
#include <cstdint>

#include "ops/activation/activation.h"

namespace mo::simd {

// Depthwise k×k 'same' correlation, NHWC rows of stride ldx/ldy; wt is the weight as (k·k, C).
bool dwconv_forward(const float* x, int64_t ldx, const float* wt, const float* b, float* y, int64_t ldy, int64_t B,
                    int64_t H, int64_t W, int64_t C, int k, int pad);
// Per-sample weight/bias gradient partials: part[bb] = (k·k, C) weight sums then C bias sums (k = 7).
bool dwconv_weight_grad(const float* dy, int64_t ldy, const float* x, int64_t ldx, float* part, int64_t B,
                        int64_t H, int64_t W, int64_t C, int k, int pad);
// LayerNorm over rows of C: y, mean, rstd; and dx with dγ, dβ (fixed-order block sums: deterministic).
bool layer_norm_forward(const float* x, const float* w, const float* b, float eps, float* y, float* mean,
                        float* rstd, int64_t R, int64_t C);
bool layer_norm_backward(const float* dy, const float* x, const float* w, const float* mean, const float* rstd,
                         float* dx, float* dw, float* db, int64_t R, int64_t C);
// y = act(x); dx = dy · act'(x).
bool act_forward(Act a, const float* x, float* y, int64_t n);
bool act_backward(Act a, const float* x, const float* dy, float* dx, int64_t n);
// The gate of gated_dwconv over P pixels: m = act(g) ⊙ v, where per pixel g = z[0..h), v = z[h..h+id)
// then conv[0..cc) (z rows of 2h, conv rows of cc, m rows of h, id = h − cc); backward gives dz's g
// and identity parts and dconv = dm[id..h) ⊙ act(g[id..h)).
bool gate_forward(Act a, const float* z, const float* conv, float* m, int64_t P, int64_t h, int64_t cc);
bool gate_backward(Act a, const float* z, const float* conv, const float* dm, float* dz, float* dconv, int64_t P,
                   int64_t h, int64_t cc);

}  // namespace mo::simd

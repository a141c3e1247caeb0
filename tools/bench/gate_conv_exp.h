// gate_conv_exp.h: an experiment for the gate's forward conv (ops/fused/gated_dwconv.cu), timed by
// mo_bench_kernels beside the op: the same inference forward (conv_out absent) with 4-row register
// tiles and tile heights fitted to the map (docs/optimization_notes.md item 24). Not part of the
// library until it wins.
#pragma once
#include "autograd/tensor.h"
#include "ops/activation/activation.h"

namespace mo::bench {
// m (B, H, W, h) ← act(g) ⊙ [i, dwconv(c)] for z (B, H, W, 2h): cuda::gated_dwconv_forward's contract
// with conv_out undefined, and the same bits (same expressions, same summation order).
void gated_dwconv_forward_exp(const Tensor& z, const Tensor& w, const Tensor& b, int64_t h, Act act, const Tensor& m);
}  // namespace mo::bench

// attention_fa2.h: an experimental FlashAttention-2-style bf16 attention forward (mma.sync m16n8k16,
// online softmax and P in registers; tools/bench/attention_fa2.cu), timed by mo_bench_kernels beside the
// op's WMMA kernel (ops/attention/attention.cu). Not part of the library until it wins there.
// Same contract as mo::cuda::attention_forward for bfloat16 and head dim 64: qkv (B, L, 3·H·64),
// out (B, L, H·64) bfloat16, lse (B, H, L) float32, so the op's backward can consume its results.
#pragma once
#include "autograd/tensor.h"

namespace mo::bench {
void fa2_attention_forward(const Tensor& qkv, int64_t heads, bool causal, const Tensor& out, const Tensor& lse);
}  // namespace mo::bench

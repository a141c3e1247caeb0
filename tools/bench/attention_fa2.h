// attention_fa2.h: experimental FlashAttention-2-style bf16 attention kernels (mma.sync m16n8k16, softmax,
// P and dS in registers; tools/bench/attention_fa2.cu), timed by mo_bench_kernels beside the op's WMMA
// kernels (ops/attention/attention.cu). Not part of the library until they win there.
// Same contracts as mo::cuda::attention_forward / attention_backward for bfloat16 and head dim 64:
// qkv (B, L, 3·H·64), out (B, L, H·64), lse (B, H, L) float32, dqkv like qkv (written in full, no atomics),
// so either backward can consume either forward's out and lse.
#pragma once
#include "autograd/tensor.h"

namespace mo::bench {
void fa2_attention_forward(const Tensor& qkv, int64_t heads, bool causal, const Tensor& out, const Tensor& lse);
void fa2_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                            int64_t heads, bool causal, const Tensor& dqkv);
}  // namespace mo::bench

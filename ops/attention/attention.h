// attention.h: multi-head scaled dot-product attention, softmax(Q·Kᵀ/√D [+ causal mask])·V, fused.
// Layout: the packed output of a ViT block's qkv Linear, qkv (B, L, 3·H·D) read as (B, L, 3, H, D)
// (timm's qkv.reshape(B, N, 3, H, D)), so the model needs no permutes; the result is (B, L, H·D) with
// head h in columns [h·D, (h+1)·D) (timm's (attn @ v).transpose(1, 2).reshape(B, N, C)), ready for proj.
// causal: query t attends to keys ≤ t. Backward needs only qkv, the output and the per-row logsumexp
// (memory linear in L). CPU: any D, float32/float64. CUDA: D = 64, float32/bfloat16 (attention.cu).
#pragma once
#include "autograd/tensor.h"

namespace mo {

// qkv (B, L, 3·heads·D) -> (B, L, heads·D)
Tensor attention(const Tensor& qkv, int64_t heads, bool causal);

namespace cuda {
// out (B, L, H·D) like qkv's dtype; lse float32 (B, H, L): logsumexp of each row of scaled scores.
void attention_forward(const Tensor& qkv, int64_t heads, bool causal, const Tensor& out, const Tensor& lse);
// dqkv (B, L, 3·H·D) written in full (dQ, dK, dV); deterministic (no atomics).
void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int64_t heads,
                        bool causal, const Tensor& dqkv);
}  // namespace cuda

}  // namespace mo

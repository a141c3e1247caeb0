// tokens.h: the token-sequence ops of a Vision Transformer around its blocks: the class token joined to
// the patch tokens with the learned position embedding added (timm's _pos_embed), and one token picked
// out of the sequence (the class token for the head).
#pragma once
#include "autograd/tensor.h"

namespace mo {

// x (B, N, C) patch tokens, cls (1, 1, C), pos (1, N + 1, C) -> (B, N + 1, C). pos[0] belongs to the class
// token, pos[1 + n] to patch n. cls_last = false: [cls, x_0, ..., x_{N−1}] (timm); true: [x_0, ..., cls].
Tensor class_token_embed(const Tensor& x, const Tensor& cls, const Tensor& pos, bool cls_last);

// x (B, L, C) -> x[:, t] (B, C)
Tensor select_token(const Tensor& x, int64_t t);

namespace cuda {
void class_token_embed_forward(const Tensor& x, const Tensor& cls, const Tensor& pos, bool cls_last, const Tensor& out);
// dx (B, N, C); dcls (1, 1, C) and dpos (1, N + 1, C): sums over the batch in a fixed order (fp32).
void class_token_embed_backward(const Tensor& dout, bool cls_last, const Tensor& dx, const Tensor& dcls,
                                const Tensor& dpos);
}  // namespace cuda

}  // namespace mo

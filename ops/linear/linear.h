// linear.h: y = x · Wᵀ + b over the last dim (PyTorch nn.Linear layout, W is [out, in]) and a plain
// 2-D matmul. CPU: OpenBLAS gemm. CUDA: cuBLASLt, bf16/f32 inputs with fp32 accumulation (linear.cu).
#pragma once
#include "autograd/tensor.h"

namespace mo {

// x (..., K), w (N, K), b (N) or undefined -> (..., N)
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);
// linear(x, w, b) + r with r shaped like the output (the residual add of a block's last linear, in the
// product's epilogue on CUDA): dr = dy.
Tensor linear_residual(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& r);
// a (M, K), b (K, N) -> (M, N)
Tensor matmul(const Tensor& a, const Tensor& b);

// The op's halves without autograd, on the tensors' device (for fused ops built from linear): x2 (M, K)
// and dy2 (M, N) contiguous, w (N, K) contiguous, b (N) or undefined; dx2 may be undefined (not needed).
void linear_forward_into(const Tensor& x2, const Tensor& w, const Tensor& b, const Tensor& y2);
void linear_backward_into(const Tensor& dy2, const Tensor& x2, const Tensor& w, const Tensor& dx2, const Tensor& dw,
                          const Tensor& db);
// y2 = x2 · Wᵀ + b + r2 (r2 (M, N) contiguous; on CUDA the add rides in the product's epilogue).
void linear_residual_forward_into(const Tensor& x2, const Tensor& w, const Tensor& b, const Tensor& r2,
                                  const Tensor& y2);
// The two halves of linear_backward_into, for a fused op that needs dx before it can form x:
// dx2 = dy2 · W, and dW = dy2ᵀ · x2, db = Σ_rows dy2 (db may be undefined).
void linear_input_grad_into(const Tensor& dy2, const Tensor& w, const Tensor& dx2);
void linear_weight_grads_into(const Tensor& dy2, const Tensor& x2, const Tensor& dw, const Tensor& db);

namespace cuda {
// Row-major C[M,N] = alpha * op(A) · op(B) + beta * C (+ bias[N] broadcast over rows when given).
// transa: A is stored [K,M] (use Aᵀ); transb: B stored [N,K]. All tensors contiguous, same dtype.
// Implemented in linear.cu (cuBLASLt).
// bias_grad (optional, needs transa and no bias): also bias_grad[M] = Σ_k A[k, :] (the bias gradient of a
// weight-gradient product dW = dyᵀ·x), fused into the GEMM's epilogue where cuBLASLt allows.
// addend (optional, beta 0): C = alpha·op(A)·op(B) (+ bias) + addend in the same pass (a residual add).
void gemm(const Tensor& A, bool transa, const Tensor& B, bool transb, const Tensor& C, float alpha, float beta,
          const Tensor& bias, const Tensor& bias_grad = Tensor(), const Tensor& addend = Tensor());
// out[N] = sum over rows of x[M,N] (fp32 accumulation), for bias gradients.
void sum_rows(const Tensor& x, const Tensor& out);
}  // namespace cuda

}  // namespace mo

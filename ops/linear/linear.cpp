// linear.cpp: linear, linear_residual and matmul: checks, autograd nodes, CPU kernels (OpenBLAS).
//   y = x Wᵀ + b (+ r);   dx = dy W;   dW = dyᵀ x;   db = Σ_rows dy;   dr = dy
#include "ops/linear/linear.h"

#include <cblas.h>

#include "ops/common.h"
#include "ops/reduce/column_sum.h"

namespace mo {

namespace {

// Row-major C[M,N] = op(A) op(B) + beta C on the CPU.
template <typename T>
void cpu_gemm(const T* A, bool ta, const T* B, bool tb, T* C, int64_t M, int64_t N, int64_t K, T beta) {
  auto TA = ta ? CblasTrans : CblasNoTrans;
  auto TB = tb ? CblasTrans : CblasNoTrans;
  int64_t lda = ta ? M : K, ldb = tb ? K : N;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, 1.0f, A, lda, B, ldb, beta, C, N);
  else
    cblas_dgemm(CblasRowMajor, TA, TB, M, N, K, 1.0, A, lda, B, ldb, beta, C, N);
}

// C = op(A) op(B) (+ bias), dispatching on device; A, B, C contiguous 2-D.
void gemm(const Tensor& A, bool ta, const Tensor& B, bool tb, const Tensor& C, float beta, const Tensor& bias) {
  int64_t M = C.size(0), N = C.size(1), K = ta ? A.size(0) : A.size(1);
  if (C.is_cuda()) {
    MO_CUDA_DISPATCH("linear", cuda::gemm(A, ta, B, tb, C, 1.0f, beta, bias));
    return;
  }
  cpu_float_dispatch("linear", C, [&](auto z) {
    using T = decltype(z);
    T* c = C.data<T>();
    if (bias.defined()) {
      const T* bb = bias.data<T>();
#pragma omp parallel for if (M * N > 65536)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) c[i * N + j] = (beta != 0 ? c[i * N + j] * static_cast<T>(beta) : T(0)) + bb[j];
      beta = 1.0f;
    }
    cpu_gemm<T>(A.data<T>(), ta, B.data<T>(), tb, c, M, N, K, static_cast<T>(beta));
  });
}

void sum_rows(const Tensor& x, const Tensor& out);

// dW = dyᵀ x and, when db is defined, db = Σ_rows dy: one pass on CUDA (the GEMM's BGRADB epilogue).
void weight_grads(const Tensor& dy, const Tensor& x, const Tensor& dw, const Tensor& db) {
  if (dy.is_cuda()) {
    MO_CUDA_DISPATCH("linear", cuda::gemm(dy, true, x, false, dw, 1.0f, 0.0f, Tensor(), db));
    return;
  }
  gemm(dy, true, x, false, dw, 0.0f, Tensor());
  if (db.defined()) sum_rows(dy, db);
}

void sum_rows(const Tensor& x, const Tensor& out) {  // out[N] = Σ_i x[i, :]
  if (x.is_cuda()) {
    MO_CUDA_DISPATCH("linear", cuda::sum_rows(x, out));
    return;
  }
  int64_t M = x.size(0), N = x.size(1);
  cpu_float_dispatch("linear", x, [&](auto z) {  // streams x once, in fixed row blocks (ops/reduce/column_sum.h)
    using T = decltype(z);
    column_sum_cpu<T>(x.data<T>(), M, N, out.data<T>());
  });
}

}  // namespace

void linear_forward_into(const Tensor& x2, const Tensor& w, const Tensor& b, const Tensor& y2) {
  gemm(x2, false, w, true, y2, 0.0f, b);
}

void linear_backward_into(const Tensor& dy2, const Tensor& x2, const Tensor& w, const Tensor& dx2, const Tensor& dw,
                          const Tensor& db) {
  if (dx2.defined()) gemm(dy2, false, w, false, dx2, 0.0f, Tensor());  // dx = dy W
  weight_grads(dy2, x2, dw, db);                                       // dW = dyᵀ x, db = Σ_rows dy
}

void linear_residual_forward_into(const Tensor& x2, const Tensor& w, const Tensor& b, const Tensor& r2,
                                  const Tensor& y2) {
  if (y2.is_cuda()) {
    MO_CUDA_DISPATCH("linear_residual", cuda::gemm(x2, false, w, true, y2, 1.0f, 0.0f, b, Tensor(), r2));
    return;
  }
  gemm(x2, false, w, true, y2, 0.0f, b);
  Tensor(y2).add_(r2);
}

void linear_input_grad_into(const Tensor& dy2, const Tensor& w, const Tensor& dx2) {
  gemm(dy2, false, w, false, dx2, 0.0f, Tensor());
}

void linear_weight_grads_into(const Tensor& dy2, const Tensor& x2, const Tensor& dw, const Tensor& db) {
  weight_grads(dy2, x2, dw, db);
}

Tensor linear(const Tensor& x_in, const Tensor& w, const Tensor& b) {
  MO_CHECK(x_in.dim() >= 1 && w.dim() == 2 && x_in.size(-1) == w.size(1),
           "linear: input {} does not match weight {} (expected input (..., {}))", x_in.str(), w.str(), w.dim() == 2 ? w.size(1) : -1);
  MO_CHECK(!b.defined() || (b.dim() == 1 && b.size(0) == w.size(0)), "linear: bias {} does not match weight {}",
           b.str(), w.str());
  check_same("linear", {&x_in, &w, &b});
  Tensor x = x_in.contiguous();
  int64_t K = w.size(1), N = w.size(0), M = x.numel() / K;
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor x2 = x.view({M, K}), y2 = y.view({M, N});
  Tensor wc = w.contiguous();
  gemm(x2, false, wc, true, y2, 0.0f, b);
  bool has_b = b.defined();
  record("linear", {x_in, w, b}, {&y}, [sx = Saved(x, "linear"), sw = Saved(wc, "linear"), M, N, K, has_b,
                                       xs = x_in.shape()](std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dy = g[0].contiguous().view({M, N});
    const Tensor& x = sx.get();
    const Tensor& w = sw.get();
    Tensor dx = Tensor::empty(xs, x.dtype(), x.device());
    gemm(dy, false, w, false, dx.view({M, K}), 0.0f, Tensor());  // dx = dy W
    Tensor dw = Tensor::empty({N, K}, w.dtype(), w.device());
    Tensor db = has_b ? Tensor::empty({N}, w.dtype(), w.device()) : Tensor();
    weight_grads(dy, x.view({M, K}), dw, db);  // dW = dyᵀ x, db = Σ_rows dy
    return {dx, dw, db};
  });
  return y;
}

Tensor linear_residual(const Tensor& x_in, const Tensor& w, const Tensor& b, const Tensor& r_in) {
  MO_CHECK(x_in.dim() >= 1 && w.dim() == 2 && x_in.size(-1) == w.size(1),
           "linear_residual: input {} does not match weight {} (expected input (..., {}))", x_in.str(), w.str(),
           w.dim() == 2 ? w.size(1) : -1);
  MO_CHECK(!b.defined() || (b.dim() == 1 && b.size(0) == w.size(0)), "linear_residual: bias {} does not match weight {}",
           b.str(), w.str());
  check_same("linear_residual", {&x_in, &w, &b, &r_in});
  Tensor x = x_in.contiguous();
  int64_t K = w.size(1), N = w.size(0), M = x.numel() / K;
  Shape out_shape = x.shape();
  out_shape.back() = N;
  MO_CHECK(r_in.shape() == out_shape, "linear_residual: residual {} must have the output's shape {}", r_in.str(),
           Tensor::empty(out_shape, x.dtype()).str());
  Tensor r = r_in.contiguous();
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor x2 = x.view({M, K}), y2 = y.view({M, N});
  Tensor wc = w.contiguous();
  linear_residual_forward_into(x2, wc, b, r.view({M, N}), y2);
  bool has_b = b.defined();
  record("linear_residual", {x_in, w, b, r_in}, {&y},
         [sx = Saved(x, "linear_residual"), sw = Saved(wc, "linear_residual"), M, N, K, has_b,
          xs = x_in.shape()](std::vector<Tensor>& g) -> std::vector<Tensor> {
           Tensor dy = g[0].contiguous().view({M, N});
           const Tensor& x = sx.get();
           const Tensor& w = sw.get();
           Tensor dx = Tensor::empty(xs, x.dtype(), x.device());
           Tensor dw = Tensor::empty({N, K}, w.dtype(), w.device());
           Tensor db = has_b ? Tensor::empty({N}, w.dtype(), w.device()) : Tensor();
           linear_backward_into(dy, x.view({M, K}), w, dx.view({M, K}), dw, db);
           return {dx, dw, db, g[0]};  // dr = dy
         });
  return y;
}

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  MO_CHECK(a_in.dim() == 2 && b_in.dim() == 2 && a_in.size(1) == b_in.size(0), "matmul: shapes {} and {} do not match",
           a_in.str(), b_in.str());
  check_same("matmul", {&a_in, &b_in});
  Tensor a = a_in.contiguous(), b = b_in.contiguous();
  int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  Tensor c = Tensor::empty({M, N}, a.dtype(), a.device());
  gemm(a, false, b, false, c, 0.0f, Tensor());
  record("matmul", {a_in, b_in}, {&c}, [sa = Saved(a, "matmul"), sb = Saved(b, "matmul"), M, N, K](std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dc = g[0].contiguous();
    const Tensor& a = sa.get();
    const Tensor& b = sb.get();
    Tensor da = Tensor::empty({M, K}, a.dtype(), a.device());
    Tensor db = Tensor::empty({K, N}, b.dtype(), b.device());
    gemm(dc, false, b, true, da, 0.0f, Tensor());  // dA = dC Bᵀ
    gemm(a, true, dc, false, db, 0.0f, Tensor());  // dB = Aᵀ dC
    return {da, db};
  });
  return c;
}

}  // namespace mo

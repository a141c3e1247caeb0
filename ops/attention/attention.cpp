// attention.cpp: scaled dot-product attention on the CPU, the checks and the autograd node.
//   S = Q·Kᵀ·s (s = 1/√D; causal: S_ij = −∞ for j > i),  P = softmax_rows(S),  O = P·V,  lse_i = log Σ_j e^{S_ij}
//   dV = Pᵀ·dO;  dP = dO·Vᵀ;  δ_i = Σ_d dO_id·O_id;  dS = P ⊙ (dP − δ);  dQ = s·dS·K;  dK = s·dSᵀ·Q
// P is never stored: backward recomputes it from lse (as the CUDA kernels do). One (batch, head) per task.
#include "ops/attention/attention.h"

#include <cmath>
#include <limits>
#include <vector>

#include "ops/common.h"

namespace mo {

namespace {

struct Dims {
  int64_t B, L, H, D;
  int64_t row() const { return 3 * H * D; }  // stride between tokens in qkv
};

// Row i of the scores of (b, h) into s[0..n), n = the keys it sees; returns n.
template <typename T>
int64_t scores(const T* q, const T* k0, const Dims& d, int64_t i, bool causal, T scale, std::vector<T>& s) {
  const int64_t n = causal ? i + 1 : d.L;
  for (int64_t j = 0; j < n; ++j) {
    const T* k = k0 + j * d.row();
    acc_t<T> a = 0;
    for (int64_t c = 0; c < d.D; ++c) a += static_cast<acc_t<T>>(q[c]) * k[c];
    s[j] = static_cast<T>(a) * scale;
  }
  return n;
}

template <typename T>
void forward_cpu(const T* qkv, const Dims& d, bool causal, T* out, T* lse) {
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d.D)));
  const int64_t HD = d.H * d.D;
#pragma omp parallel for collapse(2) if (d.B * d.L * d.L * HD > 65536)
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      std::vector<T> s(d.L);
      std::vector<acc_t<T>> o(d.D);
      const T* base = qkv + b * d.L * d.row() + h * d.D;  // q of token 0; k at +HD, v at +2·HD
      for (int64_t i = 0; i < d.L; ++i) {
        const int64_t n = scores(base + i * d.row(), base + HD, d, i, causal, scale, s);
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < n; ++j) m = std::max(m, s[j]);
        acc_t<T> sum = 0;
        std::fill(o.begin(), o.end(), acc_t<T>(0));
        for (int64_t j = 0; j < n; ++j) {
          const T p = std::exp(s[j] - m);  // ≤ 1: no overflow
          sum += p;
          const T* v = base + 2 * HD + j * d.row();
          for (int64_t c = 0; c < d.D; ++c) o[c] += p * v[c];
        }
        T* orow = out + (b * d.L + i) * HD + h * d.D;
        for (int64_t c = 0; c < d.D; ++c) orow[c] = static_cast<T>(o[c] / sum);
        lse[(b * d.H + h) * d.L + i] = m + static_cast<T>(std::log(sum));
      }
    }
}

template <typename T>
void backward_cpu(const T* dout, const T* qkv, const T* out, const T* lse, const Dims& d, bool causal, T* dqkv) {
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d.D)));
  const int64_t HD = d.H * d.D;
#pragma omp parallel for collapse(2) if (d.B * d.L * d.L * HD > 65536)
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      std::vector<T> s(d.L);
      const T* base = qkv + b * d.L * d.row() + h * d.D;
      T* gbase = dqkv + b * d.L * d.row() + h * d.D;
      for (int64_t i = 0; i < d.L; ++i)  // this task owns dQ, dK, dV of head h in batch b: zero them
        for (int64_t part = 0; part < 3; ++part) std::fill_n(gbase + i * d.row() + part * HD, d.D, T(0));
      for (int64_t i = 0; i < d.L; ++i) {
        const T* q = base + i * d.row();
        const T* go = dout + (b * d.L + i) * HD + h * d.D;
        const T* o = out + (b * d.L + i) * HD + h * d.D;
        acc_t<T> delta = 0;
        for (int64_t c = 0; c < d.D; ++c) delta += static_cast<acc_t<T>>(go[c]) * o[c];
        const T l = lse[(b * d.H + h) * d.L + i];
        const int64_t n = scores(q, base + HD, d, i, causal, scale, s);
        T* dq = gbase + i * d.row();
        for (int64_t j = 0; j < n; ++j) {
          const T* k = base + HD + j * d.row();
          const T* v = base + 2 * HD + j * d.row();
          const T p = std::exp(s[j] - l);
          acc_t<T> dp = 0;
          for (int64_t c = 0; c < d.D; ++c) dp += static_cast<acc_t<T>>(go[c]) * v[c];
          const T ds = p * (static_cast<T>(dp) - static_cast<T>(delta)) * scale;
          T* dk = gbase + HD + j * d.row();
          T* dv = gbase + 2 * HD + j * d.row();
          for (int64_t c = 0; c < d.D; ++c) {
            dq[c] += ds * k[c];
            dk[c] += ds * q[c];
            dv[c] += p * go[c];
          }
        }
      }
    }
}

}  // namespace

Tensor attention(const Tensor& qkv_in, int64_t heads, bool causal) {
  MO_CHECK(qkv_in.dim() == 3 && heads >= 1 && qkv_in.size(2) % (3 * heads) == 0 && qkv_in.size(1) >= 1,
           "attention: qkv {} must be (B, L, 3·heads·D) with L >= 1 and heads = {}", qkv_in.str(), heads);
  Tensor qkv = qkv_in.contiguous();
  const Dims d{qkv.size(0), qkv.size(1), heads, qkv.size(2) / (3 * heads)};
  const DType stat_t = qkv.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor out = Tensor::empty({d.B, d.L, d.H * d.D}, qkv.dtype(), qkv.device());
  Tensor lse = Tensor::empty({d.B, d.H, d.L}, stat_t, qkv.device());
  if (qkv.is_cuda()) {
    MO_CUDA_DISPATCH("attention", cuda::attention_forward(qkv, heads, causal, out, lse));
  } else {
    cpu_float_dispatch("attention", qkv, [&](auto z) {
      using T = decltype(z);
      forward_cpu<T>(qkv.data<T>(), d, causal, out.data<T>(), lse.data<T>());
    });
  }
  // the output is saved detached: a handle with its grad_fn would keep the node (and the graph) alive
  record("attention", {qkv_in}, {&out},
         [sq = Saved(qkv, "attention"), so = Saved(out.detach(), "attention"), lse, d, heads,
          causal](std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor& qkv = sq.get();
           const Tensor& out = so.get();
           Tensor dout = g[0].contiguous();
           Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
           if (qkv.is_cuda()) {
             MO_CUDA_DISPATCH("attention", cuda::attention_backward(dout, qkv, out, lse, heads, causal, dqkv));
           } else {
             cpu_float_dispatch("attention", qkv, [&](auto z) {
               using T = decltype(z);
               backward_cpu<T>(dout.data<T>(), qkv.data<T>(), out.data<T>(), lse.data<T>(), d, causal, dqkv.data<T>());
             });
           }
           return {dqkv};
         });
  return out;
}

}  // namespace mo

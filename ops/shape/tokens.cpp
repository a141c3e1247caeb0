// tokens.cpp: class_token_embed (CPU kernel, checks, autograd node) and select_token (a strided copy).
//   out[b, slot(n)] = x[b, n] + pos[1 + n];  out[b, slot(cls)] = cls + pos[0]
//   dx[b, n] = dout[b, slot(n)];  dpos[1 + n] = Σ_b dout[b, slot(n)];  dcls = dpos[0] = Σ_b dout[b, slot(cls)]
#include "ops/shape/tokens.h"

#include "ops/common.h"

namespace mo {

namespace {

// Sequence position of patch n and of the class token, for a sequence of L = N + 1 tokens.
inline int64_t patch_slot(int64_t n, bool cls_last) { return cls_last ? n : n + 1; }
inline int64_t cls_slot(int64_t L, bool cls_last) { return cls_last ? L - 1 : 0; }

}  // namespace

Tensor class_token_embed(const Tensor& x_in, const Tensor& cls_in, const Tensor& pos_in, bool cls_last) {
  MO_CHECK(x_in.dim() == 3 && cls_in.dim() == 3 && pos_in.dim() == 3 && cls_in.size(0) == 1 && cls_in.size(1) == 1 &&
               pos_in.size(0) == 1 && pos_in.size(1) == x_in.size(1) + 1 && cls_in.size(2) == x_in.size(2) &&
               pos_in.size(2) == x_in.size(2),
           "class_token_embed: tokens {}, class token {} and position embedding {} must be (B, N, C), (1, 1, C) and "
           "(1, N + 1, C)",
           x_in.str(), cls_in.str(), pos_in.str());
  check_same("class_token_embed", {&x_in, &cls_in, &pos_in});
  Tensor x = x_in.contiguous(), cls = cls_in.contiguous(), pos = pos_in.contiguous();
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2), L = N + 1;
  Tensor out = Tensor::empty({B, L, C}, x.dtype(), x.device());
  if (x.is_cuda()) {
    MO_CUDA_DISPATCH("class_token_embed", cuda::class_token_embed_forward(x, cls, pos, cls_last, out));
  } else {
    cpu_float_dispatch("class_token_embed", x, [&](auto z) {
      using T = decltype(z);
      const T *px = x.data<T>(), *pc = cls.data<T>(), *pp = pos.data<T>();
      T* po = out.data<T>();
#pragma omp parallel for if (B * L * C > 65536)
      for (int64_t b = 0; b < B; ++b) {
        T* ob = po + b * L * C;
        for (int64_t c = 0; c < C; ++c) ob[cls_slot(L, cls_last) * C + c] = pc[c] + pp[c];
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < C; ++c)
            ob[patch_slot(n, cls_last) * C + c] = px[(b * N + n) * C + c] + pp[(1 + n) * C + c];
      }
    });
  }
  record("class_token_embed", {x_in, cls_in, pos_in}, {&out},
         [B, N, C, L, cls_last, dt = x.dtype()](std::vector<Tensor>& g) -> std::vector<Tensor> {
           Tensor dout = g[0].contiguous();
           Tensor dx = Tensor::empty({B, N, C}, dt, dout.device());
           Tensor dcls = Tensor::empty({1, 1, C}, dt, dout.device()), dpos = Tensor::empty({1, L, C}, dt, dout.device());
           if (dout.is_cuda()) {
             MO_CUDA_DISPATCH("class_token_embed", cuda::class_token_embed_backward(dout, cls_last, dx, dcls, dpos));
             return {dx, dcls, dpos};
           }
           cpu_float_dispatch("class_token_embed", dout, [&](auto z) {
             using T = decltype(z);
             const T* pd = dout.data<T>();
             T *px = dx.data<T>(), *pp = dpos.data<T>(), *pc = dcls.data<T>();
             for (int64_t b = 0; b < B; ++b)
               for (int64_t n = 0; n < N; ++n)
                 for (int64_t c = 0; c < C; ++c) px[(b * N + n) * C + c] = pd[(b * L + patch_slot(n, cls_last)) * C + c];
#pragma omp parallel for if (B * L * C > 65536)
             for (int64_t t = 0; t < L; ++t) {  // position t of pos; its sequence slot
               const int64_t slot = t == 0 ? cls_slot(L, cls_last) : patch_slot(t - 1, cls_last);
               for (int64_t c = 0; c < C; ++c) {
                 acc_t<T> s = 0;
                 for (int64_t b = 0; b < B; ++b) s += pd[(b * L + slot) * C + c];
                 pp[t * C + c] = static_cast<T>(s);
               }
             }
             for (int64_t c = 0; c < C; ++c) pc[c] = pp[c];
           });
           return {dx, dcls, dpos};
         });
  return out;
}

Tensor select_token(const Tensor& x_in, int64_t t) {
  MO_CHECK(x_in.dim() == 3 && t >= 0 && t < x_in.size(1), "select_token: token {} of {} (expected (B, L, C), 0 <= t < L)",
           t, x_in.str());
  Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  Tensor y = x.as_strided({B, C}, {L * C, 1}, x.offset() + t * C).contiguous();
  record("select_token", {x_in}, {&y}, [B, L, C, t, dt = x.dtype()](std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dx = Tensor::zeros({B, L, C}, dt, g[0].device());
    dx.as_strided({B, C}, {L * C, 1}, t * C).copy_(g[0]);
    return {dx};
  });
  return y;
}

}  // namespace mo

// elementwise.cpp: add / mul / scale / mul_channel with their backward:
//   d(a+b) = (g, g);  d(a⊙b) = (g⊙b, g⊙a);  d(s·a) = s·g;  d(x⊙γ) = (g⊙γ, Σ_rows g⊙x)
#include "ops/elementwise/elementwise.h"

#include "ops/common.h"

namespace mo {

namespace {

Tensor binary(cuda::BinaryOp op, const Tensor& a_in, const Tensor& b_in) {
  const char* name = op == cuda::BinaryOp::add ? "add" : "mul";
  MO_CHECK(a_in.shape() == b_in.shape(), "{}: shapes differ: {} and {}", name, a_in.str(), b_in.str());
  check_same(name, {&a_in, &b_in});
  Tensor a = a_in.contiguous(), b = b_in.contiguous();
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (a.is_cuda()) {
    MO_CUDA_DISPATCH(name, cuda::binary(op, a, b, out));
  } else {
    cpu_float_dispatch(name, a, [&](auto z) {
      using T = decltype(z);
      const T *pa = a.data<T>(), *pb = b.data<T>();
      T* po = out.data<T>();
      int64_t n = a.numel();
      if (op == cuda::BinaryOp::add) {
#pragma omp parallel for if (n > 65536)
        for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i];
      } else {
#pragma omp parallel for if (n > 65536)
        for (int64_t i = 0; i < n; ++i) po[i] = pa[i] * pb[i];
      }
    });
  }
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary(cuda::BinaryOp::add, a, b);
  record("add", {a, b}, {&out}, [](std::vector<Tensor>& g) -> std::vector<Tensor> { return {g[0], g[0]}; });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary(cuda::BinaryOp::mul, a, b);
  bool ga = a.requires_grad(), gb = b.requires_grad();
  record("mul", {a, b}, {&out}, [sa = Saved(a, "mul"), sb = Saved(b, "mul"), ga, gb](std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor da = ga ? binary(cuda::BinaryOp::mul, g[0], sb.get()) : Tensor();
    Tensor db = gb ? binary(cuda::BinaryOp::mul, g[0], sa.get()) : Tensor();
    return {da, db};
  });
  return out;
}

static Tensor scale_raw(const Tensor& a_in, double s) {
  Tensor a = a_in.contiguous();
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (a.is_cuda()) {
    MO_CUDA_DISPATCH("scale", cuda::scale(a, static_cast<float>(s), out));
  } else {
    cpu_float_dispatch("scale", a, [&](auto z) {
      using T = decltype(z);
      const T* pa = a.data<T>();
      T* po = out.data<T>();
      int64_t n = a.numel();
#pragma omp parallel for if (n > 65536)
      for (int64_t i = 0; i < n; ++i) po[i] = static_cast<T>(s) * pa[i];
    });
  }
  return out;
}

Tensor scale(const Tensor& a, double s) {
  Tensor out = scale_raw(a, s);
  record("scale", {a}, {&out}, [s](std::vector<Tensor>& g) -> std::vector<Tensor> { return {scale_raw(g[0], s)}; });
  return out;
}

Tensor mul_channel(const Tensor& x_in, const Tensor& gamma) {
  MO_CHECK(gamma.dim() == 1 && x_in.dim() >= 1 && x_in.size(-1) == gamma.size(0),
           "mul_channel: gamma {} does not match the last dim of {}", gamma.str(), x_in.str());
  check_same("mul_channel", {&x_in, &gamma});
  Tensor x = x_in.contiguous();
  int64_t C = gamma.size(0), R = x.numel() / C;
  auto fwd = [C, R](const Tensor& x, const Tensor& gm) {
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (x.is_cuda()) {
      MO_CUDA_DISPATCH("mul_channel", cuda::mul_channel(x, gm, out));
    } else {
      cpu_float_dispatch("mul_channel", x, [&](auto z) {
        using T = decltype(z);
        const T *px = x.data<T>(), *pg = gm.data<T>();
        T* po = out.data<T>();
#pragma omp parallel for if (R * C > 65536)
        for (int64_t r = 0; r < R; ++r)
          for (int64_t c = 0; c < C; ++c) po[r * C + c] = px[r * C + c] * pg[c];
      });
    }
    return out;
  };
  Tensor out = fwd(x, gamma);
  record("mul_channel", {x_in, gamma}, {&out},
         [sx = Saved(x, "mul_channel"), sg = Saved(gamma, "mul_channel"), fwd, C, R](std::vector<Tensor>& g) -> std::vector<Tensor> {
           Tensor dy = g[0].contiguous();
           const Tensor& x = sx.get();
           Tensor dx = fwd(dy, sg.get());
           Tensor dg = Tensor::empty({C}, x.dtype(), x.device());
           if (x.is_cuda()) {
             MO_CUDA_DISPATCH("mul_channel", cuda::mul_channel_grad_gamma(dy, x, dg));
           } else {
             cpu_float_dispatch("mul_channel", x, [&](auto z) {
               using T = decltype(z);
               const T *pd = dy.data<T>(), *px = x.data<T>();
               T* o = dg.data<T>();
               for (int64_t c = 0; c < C; ++c) o[c] = 0;
               for (int64_t r = 0; r < R; ++r)
                 for (int64_t c = 0; c < C; ++c) o[c] += pd[r * C + c] * px[r * C + c];
             });
           }
           return {dx, dg};
         });
  return out;
}

}  // namespace mo

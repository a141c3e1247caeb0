// gated_dwconv.cpp: the fused gate on the CPU and its autograd node.
//   m = act(g) ⊙ [i, conv];  dg = dm ⊙ [i, conv] ⊙ act'(g);  di = dm[:h−cc] ⊙ act(g[:h−cc]);
//   dconv = dm[h−cc:] ⊙ act(g[h−cc:]) → depthwise backward → dc, dw, db
// The halves without autograd (gated_dwconv_forward_into / _backward_into) serve gated_dwconv_linear too.
#include "ops/fused/gated_dwconv.h"

#include "ops/common.h"
#include "ops/conv/dwconv2d.h"
#include "ops/cpu/simd.h"

namespace mo {

namespace {
// m = act(g) ⊙ [i, conv] from z (row stride 2h) and the conv output (row stride cc), P pixels.
template <typename T>
void gate_mix_cpu(Act act, const T* pz, const T* pc, T* pm, int64_t P, int64_t h, int64_t cc) {
  if constexpr (std::is_same_v<T, float>)
    if (simd::gate_forward(act, pz, pc, pm, P, h, cc)) return;
  const int64_t id = h - cc, Z = 2 * h;
#pragma omp parallel for
  for (int64_t p = 0; p < P; ++p) {
    const T* zr = pz + p * Z;
    T* mr = pm + p * h;
    for (int64_t j = 0; j < id; ++j) mr[j] = act_value<T>(act, zr[j]) * zr[h + j];
    for (int64_t j = 0; j < cc; ++j) mr[id + j] = act_value<T>(act, zr[id + j]) * pc[p * cc + j];
  }
}
}  // namespace

void check_gated_dwconv_args(const Tensor& z, const Tensor& w, const Tensor& b, int64_t h) {
  MO_CHECK(z.dim() == 4 && z.size(3) == 2 * h, "gated_dwconv: input {} must be (B, H, W, 2h) with h = {}", z.str(),
           h);
  MO_CHECK(w.dim() == 4 && w.size(1) == 1 && w.size(2) == w.size(3) && w.size(2) % 2 == 1 && w.size(0) <= h &&
               b.dim() == 1 && b.size(0) == w.size(0),
           "gated_dwconv: depthwise weight {} / bias {} must be (cc, 1, k, k) / (cc) with cc <= h = {}", w.str(),
           b.str(), h);
  check_same("gated_dwconv", {&z, &w, &b});
}

void gated_dwconv_forward_into(const Tensor& z, const Tensor& w, const Tensor& b, int64_t h, Act act, const Tensor& m,
                               const Tensor& conv) {
  if (z.is_cuda()) {
    MO_CUDA_DISPATCH("gated_dwconv", cuda::gated_dwconv_forward(z, w, b, h, act, m, conv));
    return;
  }
  MO_CHECK(conv.defined(), "gated_dwconv (CPU): the conv output buffer is required");
  const int64_t B = z.size(0), H = z.size(1), W = z.size(2), cc = w.size(0), id = h - cc, Z = 2 * h;
  const int k = static_cast<int>(w.size(2));
  cpu_float_dispatch("gated_dwconv", z, [&](auto zz) {
    using T = decltype(zz);
    const T* pz = z.data<T>();
    T *pc = conv.data<T>(), *pm = m.data<T>();
    dwconv2d_forward_cpu<T>(pz + h + id, Z, w.data<T>(), b.data<T>(), pc, cc, B, H, W, cc, k, k / 2);
    gate_mix_cpu<T>(act, pz, pc, pm, B * H * W, h, cc);
  });
}

void gated_dwconv_backward_into(const Tensor& dm, const Tensor& z, const Tensor& w, const Tensor& conv, int64_t h,
                                Act act, const Tensor& dz, const Tensor& dw, const Tensor& db, const Tensor& m) {
  if (z.is_cuda()) {
    MO_CUDA_DISPATCH("gated_dwconv", cuda::gated_dwconv_backward(dm, z, w, conv, h, act, dz, dw, db, m));
    return;
  }
  const int64_t B = z.size(0), H = z.size(1), W = z.size(2), cc = w.size(0), id = h - cc, Z = 2 * h;
  const int k = static_cast<int>(w.size(2));
  cpu_float_dispatch("gated_dwconv", z, [&](auto zz) {
    using T = decltype(zz);
    const T *pz = z.data<T>(), *pd = dm.data<T>(), *pc = conv.data<T>();
    T* pdz = dz.data<T>();
    T* pm = m.defined() ? m.data<T>() : nullptr;
    const int64_t P = B * H * W;
    Tensor dconv = Tensor::empty({B, H, W, cc}, z.dtype());
    T* pdc = dconv.data<T>();
    bool done = false;
    if constexpr (std::is_same_v<T, float>) done = simd::gate_backward(act, pz, pc, pd, pdz, pdc, P, h, cc);
#pragma omp parallel for if (!done)
    for (int64_t p = 0; p < (done ? 0 : P); ++p) {
      const T *zr = pz + p * Z, *dr = pd + p * h;
      T* gz = pdz + p * Z;
      for (int64_t j = 0; j < id; ++j) {
        gz[j] = dr[j] * zr[h + j] * act_grad<T>(act, zr[j]);  // dg (identity part)
        gz[h + j] = dr[j] * act_value<T>(act, zr[j]);         // di
      }
      for (int64_t j = 0; j < cc; ++j) {
        T gv = zr[id + j];
        gz[id + j] = dr[id + j] * pc[p * cc + j] * act_grad<T>(act, gv);  // dg (conv part)
        pdc[p * cc + j] = dr[id + j] * act_value<T>(act, gv);             // dconv
      }
    }
    if (pm != nullptr) gate_mix_cpu<T>(act, pz, pc, pm, P, h, cc);  // m again: the forward's own code
    // depthwise backward writes dc straight into dz's last cc channels
    dwconv2d_backward_cpu<T>(pdc, cc, pz + h + id, Z, w.data<T>(), pdz + h + id, Z, dw.data<T>(), db.data<T>(), B, H,
                             W, cc, k, k / 2);
  });
}

Tensor gated_dwconv(const Tensor& z_in, const Tensor& w, const Tensor& b, int64_t h, Act act) {
  check_gated_dwconv_args(z_in, w, b, h);
  Tensor z = z_in.contiguous();
  Tensor wc = w.contiguous();
  const int64_t B = z.size(0), H = z.size(1), W = z.size(2), cc = w.size(0);
  Tensor bc = b.contiguous();
  Tensor m = Tensor::empty({B, H, W, h}, z.dtype(), z.device());
  // dwconv(c), kept for backward; the CUDA kernel skips it when no backward will run (inference)
  const bool need_grad = any_requires_grad({&z_in, &w, &b});
  Tensor conv = need_grad || !z.is_cuda() ? Tensor::empty({B, H, W, cc}, z.dtype(), z.device()) : Tensor();
  gated_dwconv_forward_into(z, wc, bc, h, act, m, conv);
  record("gated_dwconv", {z_in, w, b}, {&m},
         [sz = Saved(z, "gated_dwconv"), sw = Saved(wc, "gated_dwconv"), conv, h, act,
          cc](std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor& z = sz.get();
           const Tensor& w = sw.get();
           Tensor dm = g[0].contiguous();
           Tensor dz = Tensor::empty(z.shape(), z.dtype(), z.device());
           Tensor dw = Tensor::empty(w.shape(), w.dtype(), w.device()), db = Tensor::empty({cc}, w.dtype(), w.device());
           gated_dwconv_backward_into(dm, z, w, conv, h, act, dz, dw, db, Tensor());
           return {dz, dw, db};
         });
  return m;
}

}  // namespace mo

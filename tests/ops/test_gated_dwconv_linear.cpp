// test_gated_dwconv_linear.cpp: the fused second half of a Gated CNN block (ops/fused/gated_dwconv_linear)
// on the CPU: fp64 finite-difference gradients, and equality with the unfused composition
// linear_residual(gated_dwconv(z), ...) in float32 (the same kernels run in the same order, so the
// output and every gradient are the same bits: m recomputed in backward equals the forward's m).
#include <cstring>

#include "ops/fused/gated_dwconv.h"
#include "ops/fused/gated_dwconv_linear.h"
#include "ops/linear/linear.h"
#include "tests/test_util.h"

using namespace mo;
using mo::test::gradcheck;
using mo::test::randn;

namespace {
Tensor leaf(const Shape& s, uint64_t seed, double std = 1.0, DType dt = DType::f64) {
  return randn(s, seed, dt, std).requires_grad_();
}

bool same_bits(const Tensor& a, const Tensor& b) {
  auto va = a.to_vector<float>(), vb = b.to_vector<float>();
  return va.size() == vb.size() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0;
}
}  // namespace

TEST(Gradcheck, GatedDwconvLinear) {
  // h = 5 with cc = 3 (identity part of 2 channels), fc2 5 -> 4, with and without fc2's bias
  for (Act a : {Act::gelu, Act::silu}) {
    EXPECT_TRUE(gradcheck(
        [a](const std::vector<Tensor>& v) { return gated_dwconv_linear_residual(v[0], v[1], v[2], 5, a, v[3], v[4], v[5]); },
        {leaf({2, 4, 5, 10}, 1), leaf({3, 1, 7, 7}, 2, 0.3), leaf({3}, 3), leaf({4, 5}, 4), leaf({4}, 5),
         leaf({2, 4, 5, 4}, 6)},
        1e-6, 1e-6, 200));
  }
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& v) {
        return gated_dwconv_linear_residual(v[0], v[1], v[2], 4, Act::gelu, v[3], Tensor(), v[4]);
      },
      {leaf({1, 3, 9, 8}, 7), leaf({4, 1, 7, 7}, 8, 0.3), leaf({4}, 9), leaf({3, 4}, 10), leaf({1, 3, 9, 3}, 11)}, 1e-6,
      1e-6, 200));
}

TEST(Ops, GatedDwconvLinearMatchesUnfused) {
  // float32 (the SIMD paths on machines that have them) and float64, odd widths and a cc = h case
  struct Case {
    Shape z;
    int64_t h, cc, n;
    Act act;
    DType dt;
  };
  for (const Case& c : {Case{{2, 9, 11, 2 * 24}, 24, 16, 12, Act::gelu, DType::f32},
                        Case{{1, 7, 7, 2 * 13}, 13, 5, 7, Act::silu, DType::f32},
                        Case{{2, 5, 6, 2 * 8}, 8, 8, 3, Act::gelu, DType::f64}}) {
    Tensor zf = leaf(c.z, 1, 1.0, c.dt), zu = zf.detach().requires_grad_();
    Tensor w = leaf({c.cc, 1, 7, 7}, 2, 0.2, c.dt), b = leaf({c.cc}, 3, 1.0, c.dt);
    Tensor w2 = leaf({c.n, c.h}, 4, 0.3, c.dt), b2 = leaf({c.n}, 5, 1.0, c.dt);
    Tensor r = leaf({c.z[0], c.z[1], c.z[2], c.n}, 6, 1.0, c.dt), ru = r.detach().requires_grad_();
    Tensor wu = w.detach().requires_grad_(), bu = b.detach().requires_grad_();
    Tensor w2u = w2.detach().requires_grad_(), b2u = b2.detach().requires_grad_();
    Tensor dy = randn({c.z[0], c.z[1], c.z[2], c.n}, 7, c.dt);
    Tensor yf = gated_dwconv_linear_residual(zf, w, b, c.h, c.act, w2, b2, r);
    yf.backward(dy);
    Tensor yu = linear_residual(gated_dwconv(zu, wu, bu, c.h, c.act), w2u, b2u, ru);
    yu.backward(dy);
    EXPECT_TRUE(same_bits(yf, yu)) << "y " << shape_str(c.z);
    EXPECT_TRUE(same_bits(zf.grad(), zu.grad())) << "dz " << shape_str(c.z);
    EXPECT_TRUE(same_bits(w.grad(), wu.grad())) << "dw " << shape_str(c.z);
    EXPECT_TRUE(same_bits(b.grad(), bu.grad())) << "db " << shape_str(c.z);
    EXPECT_TRUE(same_bits(w2.grad(), w2u.grad())) << "dw2 " << shape_str(c.z);
    EXPECT_TRUE(same_bits(b2.grad(), b2u.grad())) << "db2 " << shape_str(c.z);
    EXPECT_TRUE(same_bits(r.grad(), ru.grad())) << "dr " << shape_str(c.z);
  }
}

TEST(Ops, GatedDwconvLinearRejectsBadShapes) {
  Tensor z = randn({1, 4, 4, 12}, 1), w = randn({4, 1, 7, 7}, 2), b = randn({4}, 3);
  Tensor w2 = randn({5, 6}, 4), r = randn({1, 4, 4, 5}, 5);
  EXPECT_NE(mo::test::error_of([&] { gated_dwconv_linear_residual(z, w, b, 6, Act::gelu, randn({5, 7}, 6), Tensor(), r); })
                .find("fc2 weight"),
            std::string::npos);
  EXPECT_NE(mo::test::error_of([&] {
              gated_dwconv_linear_residual(z, w, b, 6, Act::gelu, w2, Tensor(), randn({1, 4, 4, 6}, 7));
            }).find("residual"),
            std::string::npos);
  EXPECT_NE(mo::test::error_of([&] { gated_dwconv_linear_residual(z, w, b, 5, Act::gelu, w2, Tensor(), r); })
                .find("gated_dwconv"),
            std::string::npos);
}

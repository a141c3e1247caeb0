// test_gated_dwconv_linear.cpp: the fused second half of a Gated CNN block (ops/fused/gated_dwconv_linear)
// on the CPU: equality with the unfused composition linear_residual(gated_dwconv(z), ...) in float32 and
// float64 (the same kernels run in the same order, so the output and every gradient are the same bits: m
// recomputed in backward equals the forward's m), and the errors of bad shapes. Its fp64 gradcheck, PyTorch
// parity and CUDA cases are in the op table (tests/ops/op_table.cpp).
#include "ops/fused/gated_dwconv.h"
#include "ops/fused/gated_dwconv_linear.h"
#include "ops/linear/linear.h"
#include "tests/test_util.h"

using namespace mo;
using mo::test::randn;

namespace {
Tensor leaf(const Shape& s, uint64_t seed, double std = 1.0, DType dt = DType::f64) {
  return randn(s, seed, dt, std).requires_grad_();
}
}  // namespace

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
    EXPECT_TRUE(mo::test::bit_identical(yf, yu, "y " + shape_str(c.z)));
    EXPECT_TRUE(mo::test::bit_identical(zf.grad(), zu.grad(), "dz " + shape_str(c.z)));
    EXPECT_TRUE(mo::test::bit_identical(w.grad(), wu.grad(), "dw " + shape_str(c.z)));
    EXPECT_TRUE(mo::test::bit_identical(b.grad(), bu.grad(), "db " + shape_str(c.z)));
    EXPECT_TRUE(mo::test::bit_identical(w2.grad(), w2u.grad(), "dw2 " + shape_str(c.z)));
    EXPECT_TRUE(mo::test::bit_identical(b2.grad(), b2u.grad(), "db2 " + shape_str(c.z)));
    EXPECT_TRUE(mo::test::bit_identical(r.grad(), ru.grad(), "dr " + shape_str(c.z)));
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

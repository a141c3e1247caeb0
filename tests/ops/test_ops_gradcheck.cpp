// test_ops_gradcheck.cpp: the fp64 finite-difference gradient check of every case of the op table
// (tests/ops/op_table.cpp, those marked kGradcheck), plus what is not one op's case: fused ops against
// their parts, drop_path's draw, top-k, the error messages of user mistakes, number parsing, the
// saved-tensor version check and the RNG's known answer.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <tuple>
#include <utility>
#include <vector>

#include "ops/activation/activation.h"
#include "ops/conv/dwconv2d.h"
#include "ops/elementwise/elementwise.h"
#include "ops/fused/gated_dwconv.h"
#include "ops/linear/linear.h"
#include "ops/loss/cross_entropy.h"
#include "ops/norm/layer_norm.h"
#include "ops/fused/layer_norm_linear.h"
#include "ops/regularize/drop_path.h"
#include "ops/shape/shape.h"
#include "autograd/parse.h"
#include "autograd/rng.h"
#include "tests/ops/op_table.h"
#include "tests/test_util.h"

using namespace mo;
using mo::test::gradcheck;
using mo::test::randn;

// Every case of the op table (tests/ops/op_table.cpp) marked kGradcheck.
class OpGradcheck : public ::testing::TestWithParam<mo::test::OpCase> {};

TEST_P(OpGradcheck, MatchesFiniteDifferences) {
  const mo::test::OpCase& c = GetParam();
  std::vector<Tensor> xs = mo::test::draw_inputs(c);
  for (size_t i = 0; i < xs.size(); ++i)
    if (c.inputs[i].grad) xs[i].requires_grad_();
  EXPECT_TRUE(gradcheck(c.fn, xs, c.gc_eps, c.gc_tol, c.gc_checks)) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Table, OpGradcheck, ::testing::ValuesIn(mo::test::op_cases_with(mo::test::kGradcheck)),
                         mo::test::CaseName());

TEST(Ops, DropPathDrawsPerSampleAndIsIdentityInEval) {
  // rate 0.5 over 16 samples (the table's case): some rows dropped, the rest scaled by 2
  auto s = drop_path_scales(16, 0.5, 42, 7);
  int kept = 0;
  for (float x : s) {
    EXPECT_TRUE(x == 0.0f || x == 2.0f);
    kept += x != 0.0f;
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 16);
  Tensor x = randn({4, 3}, 9, DType::f64);
  EXPECT_TRUE(drop_path(x, 0.5, false, 42, 7).same(x));  // identity in eval
  // statistics of the draw: rate 0.3 over 20000 samples keeps 70% within 5 standard deviations, each
  // kept row scaled by 1 / 0.7 (in float32); another step (stream) draws another mask
  const int64_t n = 20000;
  auto a = drop_path_scales(n, 0.3, 5, 1), b = drop_path_scales(n, 0.3, 5, 2);
  int64_t kept_a = 0, same = 0;
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_TRUE(a[i] == 0.0f || a[i] == 1.0f / 0.7f) << i << ": " << a[i];
    kept_a += a[i] != 0.0f;
    same += (a[i] != 0.0f) == (b[i] != 0.0f);
  }
  const double sd = std::sqrt(n * 0.7 * 0.3);
  EXPECT_NEAR(static_cast<double>(kept_a), 0.7 * n, 5 * sd);
  EXPECT_LT(same, n - 1000);  // independent masks agree on 0.7² + 0.3² = 58% of the rows
}

TEST(Ops, LayerNormLinearEqualsTheTwoOpsBitForBit) {
  // the fused node recomputes the LN output in backward: same bits as layer_norm then linear
  for (DType dt : {DType::f32, DType::f64}) {
    auto mk = [&](const Shape& s, uint32_t seed) { return randn(s, seed, dt).requires_grad_(); };
    Tensor x = mk({2, 5, 3, 12}, 11), g = mk({12}, 12), be = mk({12}, 13), w = mk({20, 12}, 14), b = mk({20}, 15);
    Tensor x2 = x.detach().clone().requires_grad_(), g2 = g.detach().clone().requires_grad_();
    Tensor be2 = be.detach().clone().requires_grad_(), w2 = w.detach().clone().requires_grad_();
    Tensor b2 = b.detach().clone().requires_grad_();
    Tensor r = randn({2, 5, 3, 20}, 16, dt);
    Tensor fused = layer_norm_linear(x, g, be, 1e-6, w, b);
    Tensor ref = linear(layer_norm(x2, g2, be2, 1e-6), w2, b2);
    fused.backward(r);
    ref.backward(r);
    EXPECT_TRUE(mo::test::all_close(fused, ref, 0.0, "layer_norm_linear forward"));
    EXPECT_TRUE(mo::test::all_close(x.grad(), x2.grad(), 0.0, "dx"));
    EXPECT_TRUE(mo::test::all_close(g.grad(), g2.grad(), 0.0, "dgamma"));
    EXPECT_TRUE(mo::test::all_close(be.grad(), be2.grad(), 0.0, "dbeta"));
    EXPECT_TRUE(mo::test::all_close(w.grad(), w2.grad(), 0.0, "dW"));
    EXPECT_TRUE(mo::test::all_close(b.grad(), b2.grad(), 0.0, "db"));
  }
}

TEST(Ops, GatedDwconvMatchesUnfused) {
  // the fused op equals split + dwconv + concat + act + mul
  Tensor z = randn({2, 5, 4, 12}, 1, DType::f64), w = randn({4, 1, 7, 7}, 2, DType::f64), b = randn({4}, 3, DType::f64);
  Tensor fused = gated_dwconv(z, w, b, 6, Act::gelu);
  auto p = split_last(z, {6, 2, 4});
  Tensor ref = mul(gelu(p[0]), concat_last({p[1], dwconv2d(p[2], w, b, 3)}));
  EXPECT_TRUE(mo::test::all_close(fused, ref, 1e-12, "gated_dwconv"));
}

TEST(Ops, TopkAndSmoothing) {
  Tensor logits = Tensor::from_vector<float>({0.1f, 0.9f, 0.5f, 0.3f, 0.2f, 0.4f}, {2, 3});
  Tensor labels = Tensor::from_vector<int64_t>({2, 0}, {2});
  EXPECT_EQ(topk_correct(logits, labels, 1), 0);
  EXPECT_EQ(topk_correct(logits, labels, 2), 2);
  Tensor t = smooth_one_hot(labels, 3, 0.3);
  auto v = t.to_vector<float>();
  EXPECT_NEAR(v[2], 0.8f, 1e-6);
  EXPECT_NEAR(v[0], 0.1f, 1e-6);
}

TEST(Errors, MessagesNameTheOpAndShapes) {
  Tensor a = randn({2, 3}, 1), w = randn({4, 5}, 2);
  try {
    linear(a, w, Tensor());
    FAIL() << "no error";
  } catch (const mo::Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("linear"), std::string::npos) << m;
    EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[4, 5]"), std::string::npos) << m;
  }
  Tensor d = randn({2, 3}, 3, DType::f64);
  EXPECT_THROW(add(a, d), mo::Error);  // dtype mismatch
  EXPECT_THROW(mul(a, randn({3, 2}, 4)), mo::Error);
}

TEST(Errors, RecordWhereTheyWereRaisedAndShowItOnRequest) {
  Tensor a = randn({2, 3}, 1), w = randn({4, 5}, 2);
  auto raise = [&] {
    try {
      linear(a, w, Tensor());
    } catch (const mo::Error& e) {
      return std::make_tuple(std::string(e.what()), std::string(e.file ? e.file : ""), e.line);
    }
    return std::make_tuple(std::string(), std::string(), 0);
  };
  unsetenv("MO_ERROR_LOCATION");
  auto [plain, file, line] = raise();
  EXPECT_NE(file.find("ops/linear/linear.cpp"), std::string::npos) << file;
  EXPECT_GT(line, 0);
  EXPECT_EQ(plain.find("raised at"), std::string::npos) << plain;  // off by default: messages unchanged
  setenv("MO_ERROR_LOCATION", "1", 1);
  auto [shown, file2, line2] = raise();
  unsetenv("MO_ERROR_LOCATION");
  EXPECT_EQ(shown, plain + " [raised at ops/linear/linear.cpp:" + std::to_string(line) + "]");
  EXPECT_EQ(line2, line);
}

TEST(Parse, NumbersAreWholeTextOrNothing) {
  EXPECT_EQ(mo::parse_int("42"), 42);
  EXPECT_EQ(mo::parse_int("+7"), 7);
  EXPECT_EQ(mo::parse_int("-3"), -3);
  for (const char* bad : {"", "+", "-", "12abc", " 1", "1 ", "0x10", "1e3", "99999999999999999999"})
    EXPECT_FALSE(mo::parse_int(bad).has_value()) << bad;
  EXPECT_EQ(mo::parse_float("1e-3"), 1e-3);
  EXPECT_EQ(mo::parse_float("+2.5"), 2.5);
  for (const char* bad : {"", "1.5x", "inf", "nan", "1e999", " 2", "0x1p3"})
    EXPECT_FALSE(mo::parse_float(bad).has_value()) << bad;
  EXPECT_TRUE(std::isinf(*mo::parse_float("inf", /*finite=*/false)));
}

TEST(Autograd, InPlaceEditOfSavedTensorIsAnError) {
  Tensor x = randn({3, 4}, 1, DType::f64).requires_grad_();
  Tensor y = gelu(x);
  Tensor z = mul(y, y);  // saves y
  y.fill_(1.0);          // in-place edit after saving
  try {
    z.backward(randn({3, 4}, 2, DType::f64));
    FAIL() << "no error";
  } catch (const mo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("modified in place"), std::string::npos) << e.what();
  }
}

TEST(Autograd, AccumulatesAndNoGrad) {
  Tensor x = randn({5}, 1, DType::f64).requires_grad_();
  Tensor y = add(mul(x, x), x);  // x used three times
  y.backward(Tensor::full({5}, 1.0, DType::f64));
  auto g = x.grad().to_vector<double>(), xv = x.to_vector<double>();
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(g[i], 2 * xv[i] + 1, 1e-12);
  {
    NoGradGuard ng;
    Tensor z = mul(x, x);
    EXPECT_FALSE(z.requires_grad());
  }
  // a second backward accumulates
  Tensor y2 = scale(x, 2.0);
  y2.backward(Tensor::full({5}, 1.0, DType::f64));
  auto g2 = x.grad().to_vector<double>();
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(g2[i], 2 * xv[i] + 3, 1e-12);
}

TEST(Tensor, ShapesPastInt64AreRefused) {
  // Was: the element count wrapped and the allocation asked for a wrong (or small) size.
  const int64_t big = int64_t(1) << 62;
  auto msg = mo::test::error_of([&] { Tensor::empty({big, 3}, DType::f32); });
  EXPECT_NE(msg.find("empty: shape [4611686018427387904, 3] of float32 is more than 2^63 bytes"), std::string::npos) << msg;
  msg = mo::test::error_of([&] { Tensor::empty({9000000000000000000, 1152}, DType::f32); });
  EXPECT_NE(msg.find("more than 2^63 bytes"), std::string::npos) << msg;
  float x = 0;
  msg = mo::test::error_of([&] { Tensor::from_blob(&x, {big, big}, DType::f32); });
  EXPECT_NE(msg.find("from_blob: shape"), std::string::npos) << msg;
  msg = mo::test::error_of([&] { Tensor::empty({2, -1}, DType::f32); });
  EXPECT_NE(msg.find("empty: negative dimension in shape [2, -1]"), std::string::npos) << msg;
  EXPECT_EQ(Tensor::empty({0, big}, DType::f32).numel(), 0);  // an empty tensor of a wide shape is fine
  EXPECT_EQ(Tensor::empty({big, big, 0}, DType::f32).numel(), 0);
}

TEST(Rng, PhiloxNormalIsAccurate) {
  // philox_box_muller against Box-Muller in double on the same two words: random words, and the ends
  // of both ranges and every quadrant boundary of the cosine (k = q 2^21, q = 0..8, and their neighbours).
  std::vector<uint32_t> ks;
  for (uint32_t q = 0; q <= 8; ++q)
    for (int d : {-1, 0, 1}) {
      const int64_t k = int64_t(q) << 21;
      if (k + d >= 0 && k + d < (1 << 24)) ks.push_back(static_cast<uint32_t>(k + d));
    }
  std::vector<std::pair<uint32_t, uint32_t>> words;
  for (uint32_t n : {0u, 1u, 2u, 0x7FFFFFu, 0x800000u, 0xB504F3u, 0xB504F4u, 0xFFFFFEu, 0xFFFFFFu})
    for (uint32_t k : ks) words.emplace_back(n << 8 | 0x5A, k << 8 | 0xA5);
  for (uint64_t i = 0; i < 200000; ++i) {
    const Philox4 b = philox_block(3, 4, i);
    words.emplace_back(b.v[0], b.v[1]);
  }
  double worst = 0, sum = 0, sum2 = 0;
  for (auto [a, b] : words) {
    const double u1 = double((a >> 8) + 1) / 16777216.0, u2 = double(b >> 8) / 16777216.0;
    const double want = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
    const double got = philox_box_muller(a, b);
    worst = std::max(worst, std::abs(got - want) / std::max(1.0, std::abs(want)));
    sum += got, sum2 += got * got;
  }
  EXPECT_LT(worst, 1e-6);
  const double n = double(words.size());
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sum2 / n, 1.0, 0.01);
  // philox_normal is the pair of block i/2 selected by the parity of i
  const Philox4 b = philox_block(9, 2, 21);
  EXPECT_EQ(philox_normal(9, 2, 42), philox_box_muller(b.v[0], b.v[1]));
  EXPECT_EQ(philox_normal(9, 2, 43), philox_box_muller(b.v[2], b.v[3]));
}

TEST(Rng, PhiloxKnownAnswer) {
  // Random123's published known-answer test for philox4x32-10: counter 0, key 0.
  auto r = philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
}

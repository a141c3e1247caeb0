// test_tokens.cpp: the ViT token ops on the CPU beside their op-table cases (tests/ops/op_table.cpp:
// gradcheck, PyTorch, CUDA): the placement of every token, the graph freed with its output, the errors.
#include "ops/shape/tokens.h"
#include "tests/test_util.h"

using namespace mo;
using mo::test::randn;

namespace {
Tensor leaf(const Shape& s, uint64_t seed) { return randn(s, seed, DType::f64).requires_grad_(); }
}  // namespace

TEST(Tokens, PlacementAndPositionRows) {
  // x[b, n, c] = 100·b + 10·n + c, cls = −1, pos[t, c] = 1000·t: every output names its source
  const int64_t B = 2, N = 3, C = 2;
  std::vector<double> xv, pv;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) xv.push_back(100.0 * b + 10.0 * n + c);
  for (int64_t t = 0; t <= N; ++t)
    for (int64_t c = 0; c < C; ++c) pv.push_back(1000.0 * t);
  Tensor x = Tensor::from_vector(xv, {B, N, C}), cls = Tensor::full({1, 1, C}, -1.0, DType::f64);
  Tensor pos = Tensor::from_vector(pv, {1, N + 1, C});
  for (bool last : {false, true}) {
    auto o = class_token_embed(x, cls, pos, last).to_vector<double>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t cs = last ? N : 0;
        EXPECT_EQ(o[(b * (N + 1) + cs) * C + c], -1.0);  // the class token with pos row 0
        for (int64_t n = 0; n < N; ++n)
          EXPECT_EQ(o[(b * (N + 1) + (last ? n : n + 1)) * C + c], 100.0 * b + 10.0 * n + c + 1000.0 * (n + 1));
      }
    EXPECT_EQ(select_token(class_token_embed(x, cls, pos, last), last ? N : 0).to_vector<double>(),
              std::vector<double>(B * C, -1.0));
  }
}

TEST(Tokens, GraphIsFreedWithItsOutput) {
  Tensor x = leaf({2, 3, 4}, 5), cls = leaf({1, 1, 4}, 6), pos = leaf({1, 4, 4}, 7);
  Tensor y = select_token(class_token_embed(x, cls, pos, true), 3);
  std::weak_ptr<Node> node = y.grad_fn();
  ASSERT_FALSE(node.expired());
  y = Tensor();
  EXPECT_TRUE(node.expired());
}

TEST(Tokens, BadShapesAreNamed) {
  Tensor x = Tensor::zeros({2, 4, 5}), cls = Tensor::zeros({1, 1, 5});
  EXPECT_NE(mo::test::error_of([&] { class_token_embed(x, cls, Tensor::zeros({1, 4, 5}), false); }).find("float32[1, 4, 5]"),
            std::string::npos);
  EXPECT_NE(mo::test::error_of([&] { class_token_embed(x, Tensor::zeros({1, 5}), Tensor::zeros({1, 5, 5}), false); })
                .find("(1, 1, C)"),
            std::string::npos);
  EXPECT_NE(mo::test::error_of([&] { select_token(x, 4); }).find("token 4 of float32[2, 4, 5]"), std::string::npos);
  EXPECT_NE(mo::test::error_of([&] { select_token(x, -1); }).find("0 <= t < L"), std::string::npos);
}

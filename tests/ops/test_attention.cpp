// test_attention.cpp: the attention op on the CPU beside its op-table cases (tests/ops/op_table.cpp: fp64
// gradcheck, float64 PyTorch, CUDA): PyTorch's scaled_dot_product_attention with and without is_causal
// in float64 and float32 up to L = 65, D = 64 (tests/reference/vit_ref.py), rows that ignore later tokens,
// softmax stability on huge scores, the graph freed with its output, and the errors.
#include <cmath>
#include <filesystem>
#include <fstream>

#include "ops/attention/attention.h"
#include "tests/test_util.h"

using namespace mo;
using mo::test::randn;

namespace {

const std::string kRef = std::string(MO_SOURCE_DIR) + "/tests/reference/vit_ref.py";

// out and dqkv of torch on qkv / dout (float64 or float32 files, as given).
std::pair<Tensor, Tensor> torch_sdpa(const Tensor& qkv, const Tensor& dout, int64_t heads, bool causal,
                                     const std::string& tag) {
  const std::string dir = mo::test::temp_dir(tag);
  mo::test::save_npy(dir + "/qkv.npy", qkv);
  mo::test::save_npy(dir + "/dout.npy", dout);
  std::ofstream(dir + "/config.txt") << "heads=" << heads << "\ncausal=" << (causal ? 1 : 0) << "\n";
  EXPECT_EQ(mo::test::run_python(kRef, "attention " + dir), 0);
  auto r = std::make_pair(mo::test::load_npy(dir + "/out.npy"), mo::test::load_npy(dir + "/dqkv.npy"));
  std::filesystem::remove_all(dir);
  return r;
}

}  // namespace

TEST(Attention, CausalRowsIgnoreLaterTokens) {
  // changing the last token leaves every earlier output row of the causal op as it was, bit for bit
  Tensor a = randn({2, 6, 3 * 2 * 4}, 3, DType::f64);
  Tensor b = a.clone();
  auto pb = b.data<double>();
  for (int bi = 0; bi < 2; ++bi)
    for (int c = 0; c < 24; ++c) pb[(bi * 6 + 5) * 24 + c] += 1.0;
  auto oa = attention(a, 2, true).to_vector<double>(), ob = attention(b, 2, true).to_vector<double>();
  for (int bi = 0; bi < 2; ++bi)
    for (int t = 0; t < 6; ++t)
      for (int c = 0; c < 8; ++c) {
        const size_t k = (bi * 6 + t) * 8 + c;
        if (t < 5) EXPECT_EQ(oa[k], ob[k]) << bi << " " << t << " " << c;
        else EXPECT_NE(oa[k], ob[k]);
      }
}

TEST(Attention, GraphIsFreedWithItsOutput) {
  // the node saves the output for backward; it must not keep itself (and every earlier node) alive
  Tensor qkv = randn({1, 4, 6}, 9, DType::f64).requires_grad_();
  Tensor out = attention(qkv, 1, false);
  std::weak_ptr<Node> node = out.grad_fn();
  ASSERT_FALSE(node.expired());
  out = Tensor();
  EXPECT_TRUE(node.expired());
}

TEST(Attention, HugeScoresStayFinite) {
  // scores of ~1e6: a naive exp overflows; the max-subtracted softmax picks the largest key exactly
  Tensor qkv = randn({1, 9, 3 * 1 * 8}, 5, DType::f32, 1.0);
  auto p = qkv.data<float>();
  for (int t = 0; t < 9; ++t)
    for (int c = 0; c < 16; ++c) p[t * 24 + c] *= 1000.0f;  // q and k
  Tensor out = attention(qkv, 1, false);
  for (float v : out.to_vector<float>()) EXPECT_TRUE(std::isfinite(v));
}

TEST(Attention, MatchesTorchScaledDotProductAttention) {
  if (!mo::test::python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is not installed";
  for (bool causal : {false, true})
    for (auto [B, L, H, D] : {std::tuple{2, 17, 3, 8}, std::tuple{1, 65, 3, 64}, std::tuple{2, 1, 1, 16}}) {
      SCOPED_TRACE(testing::Message() << "causal " << causal << " L " << L << " D " << D);
      for (DType dt : {DType::f64, DType::f32}) {
        const double tol = dt == DType::f64 ? 1e-10 : 2e-5;
        Tensor qkv = randn({B, L, 3 * H * D}, 11 + L, dt).requires_grad_();
        Tensor dout = randn({B, L, H * D}, 12 + L, dt);
        auto [ref_out, ref_dqkv] = torch_sdpa(qkv, dout, H, causal, "sdpa");
        Tensor out = attention(qkv, H, causal);
        out.backward(dout);
        EXPECT_TRUE(mo::test::all_close(out, ref_out, tol, "out"));
        EXPECT_TRUE(mo::test::all_close(qkv.grad(), ref_dqkv, tol, "dqkv"));
      }
    }
}

TEST(Attention, BadInputsAreNamed) {
  auto msg = [](const Tensor& t, int64_t heads) { return mo::test::error_of([&] { attention(t, heads, false); }); };
  EXPECT_NE(msg(Tensor::zeros({2, 5, 10}), 2).find("(B, L, 3·heads·D)"), std::string::npos);  // 10 % 6 != 0
  EXPECT_NE(msg(Tensor::zeros({5, 12}), 2).find("float32[5, 12]"), std::string::npos);
  EXPECT_NE(msg(Tensor::zeros({2, 0, 12}), 2).find("L >= 1"), std::string::npos);
  EXPECT_NE(msg(Tensor::zeros({2, 5, 12}), 0).find("heads = 0"), std::string::npos);
  EXPECT_NE(mo::test::error_of([] { attention(Tensor::zeros({2, 3, 12}, DType::bf16), 2, true); }).find("float32 or float64"),
            std::string::npos);
}

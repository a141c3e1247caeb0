// test_pytorch_parity.cpp: the C++ model against our PyTorch reference (tests/reference/mambaout_ref.py)
// on the same weights and input: logits (≤ 1e-5 relative), loss, and every parameter gradient
// (≤ 1e-4), for mambaout_femto at 64×64 / batch 2 and for one Gated CNN block of every stage width
// of the family; plus single ops (float64) against torch.nn.functional.
// Tensors travel as .npy files in a temporary directory.
#include <filesystem>
#include <fstream>

#include "nn/mambaout.h"
#include "ops/activation/activation.h"
#include "ops/conv/conv2d.h"
#include "ops/conv/dwconv2d.h"
#include "ops/linear/linear.h"
#include "ops/loss/cross_entropy.h"
#include "ops/norm/layer_norm.h"
#include "ops/fused/layer_norm_linear.h"
#include "ops/reduce/mean_hw.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn;
using mo::test::load_npy;
using mo::test::randn;
using mo::test::save_npy;

namespace {

const std::string kRef = std::string(MO_SOURCE_DIR) + "/tests/reference/mambaout_ref.py";

void write_config(const std::string& dir, const std::string& text) {
  std::ofstream f(dir + "/config.txt");
  f << text;
}

// The reference layout (a padded model, e.g. base's h = 341 stored as 344, is unpadded).
void save_params(const Module& m, const std::string& dir) {
  for (auto& [n, p] : m.reference_parameters()) save_npy(dir + "/" + n + ".npy", p);
}

// Gradients in the reference layout match PyTorch's; where a parameter is padded, the gradient of every
// pad entry is exactly 0 (padding it back from the reference layout gives the same bits).
void expect_grads_match(const Module& m, const std::string& dir, double tol) {
  for (auto& [n, p] : m.named_parameters()) {
    Tensor ref = load_npy(dir + "/grad/" + n + ".npy");
    ASSERT_TRUE(p.grad().defined()) << n;
    Tensor g = m.to_reference(n, p.grad());
    EXPECT_TRUE(mo::test::all_close(g, ref, tol, n));
    if (m.padding_of(n)) EXPECT_EQ(m.from_reference(n, g).to_vector<float>(), p.grad().to_vector<float>()) << n;
  }
}

}  // namespace

TEST(PyTorchParity, MambaOutFemtoLogitsLossGradients) {
  if (!mo::test::python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is not installed";
  std::string dir = mo::test::temp_dir("parity_femto");
  auto cfg = mambaout_config("mambaout_femto");
  MambaOut m(cfg, 11);
  Tensor x = randn({2, 3, 64, 64}, 5);
  Tensor target = mo::test::rand_uniform({2, 1000}, 6, 0.0, 1.0);
  save_params(m, dir);
  save_npy(dir + "/input.npy", x);
  save_npy(dir + "/target.npy", target);
  write_config(dir, "arch=mambaout_femto\n");
  ASSERT_EQ(mo::test::run_python(kRef, "model " + dir), 0);

  Tensor logits = m.forward(x);
  Tensor loss = soft_target_cross_entropy(logits, target);
  loss.backward();
  EXPECT_TRUE(mo::test::all_close(logits, load_npy(dir + "/logits.npy"), 1e-5, "logits"));
  EXPECT_TRUE(mo::test::all_close(loss.view({1}), load_npy(dir + "/loss.npy"), 1e-5, "loss"));
  expect_grads_match(m, dir, 1e-4);
  std::filesystem::remove_all(dir);
}

TEST(PyTorchParity, GatedCNNBlockEveryStageWidth) {
  if (!mo::test::python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is not installed";
  // every stage width of femto/kobe (48..288), tiny/small (96..576) and base (128..768; 128, 256 and 512
  // have h = 341, 682, 1365, stored padded to 344, 688, 1368)
  int padded = 0;
  for (int64_t dim : {48, 96, 128, 192, 256, 288, 384, 512, 576, 768}) {
    std::string dir = mo::test::temp_dir("parity_block_" + std::to_string(dim));
    MambaOutConfig cfg = mambaout_config("mambaout_femto");
    Init init{static_cast<uint64_t>(dim), 1};
    GatedCNNBlock blk(dim, cfg, 0.0, 0, init);
    padded += blk.stored_hidden != blk.hidden;
    Tensor x = randn({2, 9, 7, dim}, dim + 1).requires_grad_();
    Tensor up = randn({2, 9, 7, dim}, dim + 2);
    save_params(blk, dir);
    save_npy(dir + "/input.npy", x);
    save_npy(dir + "/upstream.npy", up);
    write_config(dir, "dim=" + std::to_string(dim) + "\n");
    ASSERT_EQ(mo::test::run_python(kRef, "block " + dir), 0);
    Tensor y = blk.forward(x, 0, 0);
    y.backward(up);
    EXPECT_TRUE(mo::test::all_close(y, load_npy(dir + "/logits.npy"), 1e-5, "block " + std::to_string(dim)));
    expect_grads_match(blk, dir, 1e-4);
    std::filesystem::remove_all(dir);
  }
  EXPECT_EQ(padded, 3);
}

TEST(PyTorchParity, SingleOpsFloat64) {
  if (!mo::test::python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is not installed";
  std::string dir = mo::test::temp_dir("parity_ops");
  uint64_t seed = 100;
  std::map<std::string, Tensor> in;
  auto mk = [&](const std::string& name, const Shape& s, double std = 1.0) {
    Tensor t = randn(s, seed++, DType::f64, std);
    save_npy(dir + "/" + name + ".npy", t);
    in[name] = t;
    return t.requires_grad_();
  };
  auto ref = [&](const std::string& name) { return load_npy(dir + "/" + name + ".npy"); };
  mk("lin_x", {2, 5, 6}), mk("lin_w", {4, 6}), mk("lin_b", {4}), mk("lin_r", {2, 5, 4});
  mk("conv_x", {2, 9, 8, 3}), mk("conv_w", {5, 3, 3, 3}), mk("conv_b", {5}), mk("conv_r", {2, 5, 4, 5});
  mk("dw_x", {2, 6, 7, 4}), mk("dw_w", {4, 1, 7, 7}), mk("dw_b", {4}), mk("dw_r", {2, 6, 7, 4});
  mk("ln_x", {3, 4, 10}), mk("ln_w", {10}), mk("ln_b", {10}), mk("ln_r", {3, 4, 10});
  mk("linr_x", {2, 5, 6}), mk("linr_w", {4, 6}), mk("linr_b", {4}), mk("linr_res", {2, 5, 4}), mk("linr_r", {2, 5, 4});
  mk("lnl_x", {2, 3, 4, 10}), mk("lnl_g", {10}), mk("lnl_be", {10}), mk("lnl_w", {6, 10}), mk("lnl_b", {6});
  mk("lnl_r", {2, 3, 4, 6});
  mk("gelu_x", {50}, 3.0), mk("gelu_r", {50}), mk("silu_x", {50}, 3.0), mk("silu_r", {50});
  mk("mean_x", {2, 3, 5, 4}), mk("mean_r", {2, 4});
  mk("ce_x", {3, 7}, 2.0);
  Tensor ce_t = mo::test::rand_uniform({3, 7}, seed++, 0.0, 1.0, DType::f64);
  save_npy(dir + "/ce_t.npy", ce_t);
  ASSERT_EQ(mo::test::run_python(kRef, "ops " + dir), 0);

  auto check = [&](const std::string& p, const Tensor& y, const std::vector<std::string>& names,
                   const std::vector<std::string>& grads) {
    EXPECT_TRUE(mo::test::all_close(y, ref(p + "_y"), 1e-10, p + " forward"));
    for (size_t i = 0; i < names.size(); ++i)
      EXPECT_TRUE(mo::test::all_close(in[names[i]].grad(), ref(grads[i]), 1e-10, grads[i]));
  };
  Tensor y = linear(in["lin_x"], in["lin_w"], in["lin_b"]);
  y.backward(in["lin_r"]);
  check("lin", y, {"lin_x", "lin_w", "lin_b"}, {"lin_dx", "lin_dw", "lin_db"});
  y = conv2d(in["conv_x"], in["conv_w"], in["conv_b"], 2, 1);
  y.backward(in["conv_r"]);
  check("conv", y, {"conv_x", "conv_w", "conv_b"}, {"conv_dx", "conv_dw", "conv_db"});
  y = dwconv2d(in["dw_x"], in["dw_w"], in["dw_b"], 3);
  y.backward(in["dw_r"]);
  check("dw", y, {"dw_x", "dw_w", "dw_b"}, {"dw_dx", "dw_dw", "dw_db"});
  y = layer_norm(in["ln_x"], in["ln_w"], in["ln_b"], 1e-6);
  y.backward(in["ln_r"]);
  check("ln", y, {"ln_x", "ln_w", "ln_b"}, {"ln_dx", "ln_dw", "ln_db"});
  y = linear_residual(in["linr_x"], in["linr_w"], in["linr_b"], in["linr_res"]);
  y.backward(in["linr_r"]);
  check("linr", y, {"linr_x", "linr_w", "linr_b", "linr_res"}, {"linr_dx", "linr_dw", "linr_db", "linr_dres"});
  y = layer_norm_linear(in["lnl_x"], in["lnl_g"], in["lnl_be"], 1e-6, in["lnl_w"], in["lnl_b"]);
  y.backward(in["lnl_r"]);
  check("lnl", y, {"lnl_x", "lnl_g", "lnl_be", "lnl_w", "lnl_b"}, {"lnl_dx", "lnl_dg", "lnl_dbe", "lnl_dw", "lnl_db"});
  y = gelu(in["gelu_x"]);
  y.backward(in["gelu_r"]);
  check("gelu", y, {"gelu_x"}, {"gelu_dx"});
  y = silu(in["silu_x"]);
  y.backward(in["silu_r"]);
  check("silu", y, {"silu_x"}, {"silu_dx"});
  y = mean_hw(in["mean_x"]);
  y.backward(in["mean_r"]);
  check("mean", y, {"mean_x"}, {"mean_dx"});
  y = soft_target_cross_entropy(in["ce_x"], ce_t);
  y.backward();
  check("ce", y.view({1}), {"ce_x"}, {"ce_dx"});
  std::filesystem::remove_all(dir);
}

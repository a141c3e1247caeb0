// test_pytorch_parity.cpp: the C++ model against our PyTorch reference (tests/reference/mambaout_ref.py)
// on the same weights and input: logits (≤ 1e-5 relative), loss, and every parameter gradient
// (≤ 1e-4), for mambaout_femto at 64×64 / batch 2 and for one Gated CNN block of every stage width
// of the family; plus every single op of the op table (float64) against its PyTorch expression.
// Tensors travel as .npy files in a temporary directory.
#include <filesystem>
#include <fstream>

#include "nn/mambaout.h"
#include "ops/loss/cross_entropy.h"
#include "tests/ops/op_table.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn;
using mo::test::load_npy;
using mo::test::randn;
using mo::test::save_npy;

namespace {

const std::string kRef = std::string(MO_SOURCE_DIR) + "/tests/reference/mambaout_ref.py";
const std::string kOpRef = std::string(MO_SOURCE_DIR) + "/tests/reference/op_ref.py";

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

// Every case of the op table (tests/ops/op_table.cpp) marked kTorch: our op in float64 against its PyTorch
// expression (tests/reference/op_ref.py), forward and the gradient of every input, from one Python run.
TEST(PyTorchParity, SingleOpsFloat64) {
  if (!mo::test::python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is not installed";
  const std::string dir = mo::test::temp_dir("parity_ops");
  const auto cases = mo::test::op_cases_with(mo::test::kTorch);
  struct Ours {
    Tensor y;
    std::vector<Tensor> grads;
  };
  std::vector<Ours> ours;
  std::ofstream list(dir + "/cases.txt");
  for (const auto& c : cases) {
    const std::string id = mo::test::case_id(c), cd = dir + "/" + id;
    std::filesystem::create_directories(cd);
    std::vector<Tensor> xs = mo::test::draw_inputs(c);
    std::string grads;
    for (size_t i = 0; i < xs.size(); ++i) {
      save_npy(cd + "/x" + std::to_string(i) + ".npy", xs[i]);
      if (c.inputs[i].grad) xs[i].requires_grad_();
      grads += c.inputs[i].grad ? '1' : '0';
    }
    Ours o;
    o.y = c.fn(xs);
    Tensor r = mo::test::draw_upstream(c, o.y.shape());
    save_npy(cd + "/r.npy", r);
    o.y.backward(r);
    for (size_t i = 0; i < xs.size(); ++i) o.grads.push_back(c.inputs[i].grad ? xs[i].grad() : Tensor());
    ours.push_back(o);
    list << id << '\t' << grads << '\t' << c.torch << '\n';
  }
  list.close();
  ASSERT_EQ(mo::test::run_python(kOpRef, dir), 0);
  for (size_t k = 0; k < cases.size(); ++k) {
    SCOPED_TRACE(cases[k].name + ": " + cases[k].torch);
    const std::string cd = dir + "/" + mo::test::case_id(cases[k]);
    const double tol = cases[k].torch_tol;
    EXPECT_TRUE(mo::test::all_close(ours[k].y, load_npy(cd + "/y.npy"), tol, "forward"));
    for (size_t i = 0; i < ours[k].grads.size(); ++i)
      if (ours[k].grads[i].defined())
        EXPECT_TRUE(mo::test::all_close(ours[k].grads[i], load_npy(cd + "/dx" + std::to_string(i) + ".npy"), tol,
                                        "grad of input " + std::to_string(i)));
  }
  std::filesystem::remove_all(dir);
}

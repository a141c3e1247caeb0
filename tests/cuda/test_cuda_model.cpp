// test_cuda_model.cpp: the whole model on the GPU against the CPU: fp32 logits and every parameter
// gradient within 1e-4 relative, bf16 loss within 1e-2, and determinism (the same seed gives
// bit-identical losses over 20 training steps). Skipped where there is no GPU.
#include "autograd/cuda_allocator.h"
#include "nn/adamw.h"
#include "nn/mambaout.h"
#include "ops/loss/cross_entropy.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn;

namespace {

struct Result {
  Tensor logits, loss;
  std::vector<std::pair<std::string, Tensor>> grads;
};

Result forward_backward(const MambaOutConfig& cfg, Device dev, DType dt, const Tensor& x, const Tensor& target) {
  MambaOut m(cfg, 21);
  AdamW opt(m, dev, dt);  // packs parameters on the device, gradients into the fp32 arena
  opt.zero_grad();
  Result r;
  r.logits = m.forward(x.to(dev));
  r.loss = soft_target_cross_entropy(r.logits, target.to(dev));
  r.loss.backward();
  for (auto& [n, p] : m.named_parameters()) r.grads.emplace_back(n, p.grad().cpu().to(DType::f32));
  r.logits = r.logits.cpu().to(DType::f32);
  r.loss = r.loss.cpu().to(DType::f32);
  return r;
}

}  // namespace

TEST(CudaModel, Fp32LogitsAndGradientsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  auto cfg = mambaout_config("mambaout_femto");
  Tensor x = mo::test::randn({4, 3, 64, 64}, 3);
  Tensor t = mo::test::rand_uniform({4, 1000}, 4, 0.0, 1.0);
  Result cpu = forward_backward(cfg, Device::cpu(), DType::f32, x, t);
  Result gpu = forward_backward(cfg, Device::cuda(0), DType::f32, x, t);
  EXPECT_TRUE(mo::test::all_close(gpu.logits, cpu.logits, 1e-4, "logits"));
  EXPECT_TRUE(mo::test::all_close(gpu.loss, cpu.loss, 1e-4, "loss"));
  for (size_t i = 0; i < cpu.grads.size(); ++i)
    EXPECT_TRUE(mo::test::all_close(gpu.grads[i].second, cpu.grads[i].second, 1e-4, cpu.grads[i].first));
}

TEST(CudaModel, Bf16LossWithinOnePercent) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  auto cfg = mambaout_config("mambaout_femto");
  Tensor x = mo::test::randn({8, 3, 64, 64}, 5);
  Tensor t = smooth_one_hot(Tensor::from_vector<int64_t>({1, 5, 9, 100, 300, 999, 0, 42}, {8}), 1000, 0.1);
  Result f32 = forward_backward(cfg, Device::cuda(0), DType::f32, x, t);
  Result b16 = forward_backward(cfg, Device::cuda(0), DType::bf16, x, t);
  EXPECT_TRUE(mo::test::all_close(b16.loss, f32.loss, 1e-2, "bf16 loss"));
}

TEST(CudaModel, TwentyStepsAreBitIdentical) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  auto cfg = mambaout_config("mambaout_femto");
  cfg.drop_path_rate = 0.1;
  cfg.num_classes = 10;
  Tensor x = mo::test::randn({16, 3, 64, 64}, 7).to(Device::cuda(0));
  Tensor t = smooth_one_hot(Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5}, {16}), 10, 0.1,
                            DType::f32, Device::cuda(0));
  auto run = [&]() {
    MambaOut m(cfg, 9);
    AdamW opt(m, Device::cuda(0), DType::bf16);
    std::vector<float> losses;
    for (int s = 0; s < 20; ++s) {
      m.set_drop_path_key(42, s);
      opt.zero_grad();
      Tensor loss = soft_target_cross_entropy(m.forward(x), t);
      loss.backward();
      opt.step(1e-3);
      losses.push_back(static_cast<float>(loss.item()));
    }
    return losses;
  };
  auto a = run(), b = run();
  EXPECT_EQ(a, b);
  EXPECT_LT(a.back(), a.front());  // it learns
}
